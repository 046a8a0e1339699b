// Type declarations for sightline.js: a small client for Sightline's HTTP
// contract v1 (see the README, "For frontends", and docs/openapi.json).
// Checked with `tsc --strict` over e2e/typecheck/example.ts in scripts/test.

/** One item of an order. */
export interface OrderItem {
  /** 1–64 characters, not blank. */
  sku: string;
  /** 1–1000. */
  quantity: number;
  /** 0–10,000,000. */
  unit_price_cents: number;
}

/** The body of `placeOrder`. */
export interface PlaceOrderBody {
  /** A UUID chosen by the client; made by `placeOrder` when absent, so retries never place twice. */
  id?: string;
  /** 1–100 items. */
  items: OrderItem[];
  /** At most 1000 characters. */
  note?: string | null;
  /** ISO 4217 code (three capital letters); default `USD`. */
  currency?: string | null;
}

/** An order's status. */
export type OrderStatus = 'placed' | 'cancelled';

/** An order as the server answers it. */
export interface Order {
  id: string;
  username: string;
  items: OrderItem[];
  /** Computed by the server. */
  total_cents: number;
  currency: string;
  note: string | null;
  /** RFC 3339 time. */
  placed_at: string;
  status: OrderStatus;
  /** 1 when placed, +1 for every change. */
  version: number;
  /** True once search can find the order. */
  visible: boolean;
}

/** The answer to `placeOrder` (201, or 200 when that id was already placed). */
export interface PlacedOrder extends Order {
  /** Present to `GET /api/orders` to see this write before search does. */
  consistency_token: string;
}

/** What `whenVisible` resolves with. */
export interface Visible {
  id: string;
  visible: true;
  /** RFC 3339 time the notice was recorded. */
  visible_at: string;
  version: number;
  status: OrderStatus;
}

/** `order-visible`: the order is searchable at this version. */
export interface OrderVisibleNotice {
  kind: 'order-visible';
  id: string;
  version: number;
  status: OrderStatus;
  visible_at: string;
  /** The stream's opaque cursor after this notice: store it as it is, never parse it. */
  cursor: string;
}

/** `order-failed`: the order committed but cannot be made searchable. */
export interface OrderFailedNotice {
  kind: 'order-failed';
  id: string;
  version: number;
  status: 'failed';
  error: string;
  failed_at: string;
  /** The stream's opaque cursor after this notice. */
  cursor: string;
}

/** Every notice `subscribe` delivers. */
export type Notice = OrderVisibleNotice | OrderFailedNotice;

/** The connection state `onStatus` hears. */
export type ConnectionState = 'connecting' | 'live' | 'reconnecting' | 'polling' | 'offline';

/** How requests reach the server. */
export type Transport = 'auto' | 'poll';

/** Codes of a `SightlineError`: the server's JSON `code`, or one made by the client. */
export type SightlineErrorCode =
  | 'invalid'
  | 'invalid_shape'
  | 'malformed_json'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'order_conflict'
  | 'rate_limited'
  | 'unavailable'
  | 'busy'
  /** The order cannot be made searchable (`whenVisible`). */
  | 'order_failed'
  /** `timeoutMs` passed (`whenVisible`). */
  | 'timeout'
  /** The server could not be reached (`status` 0). */
  | 'unreachable'
  /** An error answer without a JSON code. */
  | 'http_error'
  | (string & {});

/** The JSON body of an error answer. */
export interface ErrorBody {
  error?: string;
  code?: string;
  field?: string;
  /** A 422's every broken rule. */
  errors?: FieldError[];
}

/** One broken rule of a 422: the field (a path such as `items[1].quantity`), a code, plain words. */
export interface FieldError {
  field: string;
  code: string;
  message: string;
}

/** An error answer of the API (or a failure to reach it: `status` 0). */
export class SightlineError extends Error {
  constructor(status: number, body?: ErrorBody | null, fallback?: string);
  readonly name: 'SightlineError';
  /** The HTTP status; 0 when the server was not reached, or for `order_failed` and `timeout`. */
  status: number;
  code: SightlineErrorCode;
  /** The server's message (or the client's). */
  error: string;
  /** The field that broke a rule (422 `invalid`). */
  field?: string;
  /** Every broken rule of a 422. */
  errors?: FieldError[];
  /** For `order_failed`: the server's reason. */
  orderError?: string;
  cause?: unknown;
}

/** Defaults set by `configure`. */
export interface ConfigureOptions {
  /** The Sightline server's origin, e.g. 'https://api.example.com'; default: this page's origin. */
  baseUrl?: string;
  /** Tabs share one stream only within one scope (e.g. the signed-in user's name). */
  scope?: string;
  /** 'poll' never opens a stream. */
  transport?: Transport;
  /** A bearer token instead of the session cookie (EventSource cannot send it, so it implies polling). */
  token?: string | null;
}

export interface PlaceOrderOptions {
  signal?: AbortSignal;
  baseUrl?: string;
  token?: string | null;
  /** Retries after network errors and 503 (default 3). */
  retries?: number;
}

export interface WhenVisibleOptions {
  signal?: AbortSignal;
  /** Wait for this version (or a newer one): after a cancel, the version it returned. */
  version?: number;
  /** Reject with code 'timeout' after this long (default: never). */
  timeoutMs?: number;
  baseUrl?: string;
  scope?: string;
  transport?: Transport;
  token?: string | null;
}

export interface SubscribeOptions {
  /** Hears the connection state; `fresh`: a new stream began, earlier notices may have been missed (refetch). */
  onStatus?: (state: ConnectionState, info: { fresh: boolean }) => void;
  baseUrl?: string;
  scope?: string;
  transport?: Transport;
  token?: string | null;
}

/** Sets defaults for every later call. */
export function configure(options?: ConfigureOptions): void;

/** A random UUID (v4), also where `crypto.randomUUID` is missing. */
export function newOrderId(): string;

/**
 * `POST /api/orders`, always with an `id`, retried (same id) after network
 * errors and 503 — three times, honouring `Retry-After`. Rejects with a
 * `SightlineError` otherwise.
 */
export function placeOrder(body: PlaceOrderBody, options?: PlaceOrderOptions): Promise<PlacedOrder>;

/**
 * Resolves once the order is visible to search (a list request made then
 * includes it). Rejects with a `SightlineError` (`order_failed`, `not_found`,
 * `timeout`, 401, …), or with the signal's reason on abort.
 */
export function whenVisible(id: string, options?: WhenVisibleOptions): Promise<Visible>;

/** Calls `onNotice` for every notice of the signed-in user; returns the function that unsubscribes. */
export function subscribe(onNotice: (notice: Notice) => void, options?: SubscribeOptions): () => void;

/** What `cancelOrder` resolves with: the order as the write side now holds it. */
export interface CancelledOrder extends Order {
  consistency_token: string;
}

export interface RequestOptions {
  signal?: AbortSignal;
  baseUrl?: string;
  token?: string | null;
}

/** `POST /api/orders/{id}/cancel`; pass the answer's `version` to `whenVisible`. */
export function cancelOrder(
  id: string,
  options?: RequestOptions & { keepalive?: boolean },
): Promise<CancelledOrder>;

/** `GET /api/orders/{id}`: from search, or the write side before search has it. */
export function getOrder(id: string, options?: RequestOptions): Promise<Order>;

export interface ListOrdersOptions extends RequestOptions {
  /** Every word must begin a word of the SKUs or note. */
  q?: string;
  limit?: number;
  cursor?: string;
  consistencyToken?: string;
}

/** A page of orders, newest first. */
export interface OrderPage {
  orders: Order[];
  next_cursor: string | null;
  /** `X-Read-Source`: `read-model`, `merged` or `write-db`. */
  readSource: string | null;
}

/** `GET /api/orders` (503 while search is unreachable). */
export function listOrders(options?: ListOrdersOptions): Promise<OrderPage>;

/** The user's counters. */
export interface Summary {
  user_id: string;
  orders_placed: number;
  orders_cancelled: number;
  /** Cents per currency, of orders placed and not cancelled. */
  spent_cents: Record<string, number>;
  last_order_at: string | null;
  /** Bumped on every change. */
  revision: number;
}

/** `GET /api/summary`. */
export function getSummary(options?: RequestOptions): Promise<Summary>;

/** A stage of an order's journey through the pipeline, in the order the pipeline reaches them. */
export type JourneyStageName =
  | 'committed'
  | 'claimed'
  | 'published'
  | 'delivered_to_projector'
  | 'retrying'
  | 'parked'
  | 'indexed'
  | 'searchable'
  | 'noticed'
  | 'sent';

/** A stage reached, and when (RFC 3339 with microseconds, UTC). */
export interface JourneyStep {
  stage: Exclude<JourneyStageName, 'retrying' | 'parked' | 'sent'>;
  at: string;
}

/** `retrying`: the latest passing failure's kind (e.g. `elasticsearch_unreachable`); `parked`: why it was set aside. */
export interface JourneyProblem {
  stage: 'retrying' | 'parked';
  at: string;
  reason: string;
}

/** `sent`: when the notice was first sent to a client, over the stream or a long poll (which instance sent it is shown to operators only). */
export interface JourneySent {
  stage: 'sent';
  at: string;
  via: 'stream' | 'poll';
}

/** One stage of a journey: narrow it on `stage`. */
export type JourneyStage = JourneyStep | JourneyProblem | JourneySent;

/**
 * An order version's journey: its stages in time order; any may be missing
 * (not reached yet; the same-database mode has only `committed`,
 * `searchable`, `noticed`, `sent`; `retrying` and `parked` only on failure).
 */
export interface Journey {
  id: string;
  version: number;
  stages: JourneyStage[];
}

export interface GetJourneyOptions extends RequestOptions {
  /** The version whose journey to show (default: the latest). */
  version?: number;
}

/** `GET /api/orders/{id}/journey` (404 for an order, version or journey the user cannot see). */
export function getJourney(id: string, options?: GetJourneyOptions): Promise<Journey>;

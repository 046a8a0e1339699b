// sightline.js — a small client for Sightline's HTTP contract v1.
// Plain ES module, no build step, no dependencies:
//
//   import { placeOrder, whenVisible, subscribe } from '/static/sightline.js';
//
//   const order = await placeOrder({ items: [{ sku: 'WIDGET-42', quantity: 1, unit_price_cents: 1250 }] });
//   await whenVisible(order.id);            // searchable now: a list request includes it
//   const stop = subscribe((notice) => console.log(notice.kind, notice.id, notice.version, notice.status));
//
// - placeOrder always sends a client-made `id`, so retrying (network errors,
//   503) can never place an order twice; 4xx rejects with a SightlineError
//   carrying the server's `status`, `code`, `error` (and `field`).
// - whenVisible first asks `visibility?wait=0` (an order already visible
//   resolves at once), then listens to the event stream, and long-polls
//   `visibility?wait=25` when EventSource is missing or keeps failing.
// - ONE event stream per browser and origin: tabs elect a leader with the Web
//   Locks API; the leader opens the EventSource and rebroadcasts every notice
//   on BroadcastChannel('sightline'); when it closes, the lock passes on.
//   Without those APIs every tab opens its own stream.
//
// Limits (see README, "For frontends"): subscribe() gets the notices of the
// stream; when a new stream starts (first start, leader change, fallback)
// notices recorded before it are not replayed — `onStatus(…, { fresh: true })`
// says when to refetch. whenVisible() never misses: it re-asks on every fresh
// stream. In polling mode subscribe() gets no notices (nothing to poll for).

const CHANNEL = 'sightline';
const LOCK = 'sightline-stream';
/** Seconds a long poll waits on the server (the contract allows 0–30). */
const POLL_WAIT_SECS = 25;
/** Long polls in flight per tab: HTTP/1.1 allows six connections per origin. */
const MAX_CONCURRENT_POLLS = 4;
/** Consecutive stream errors before falling back to polling: few if the stream
 *  never came up (proxy, old server), more once it has been live (a restart). */
const FAILURES_BEFORE_POLLING = 3;
const FAILURES_BEFORE_POLLING_ONCE_LIVE = 15;
/** While polling, how often the leader tries the stream again. */
const STREAM_RETRY_MS = 30000;
/** How long a stream nobody listens to any more stays open (avoids churn). */
const LINGER_MS = 10000;
const PLACE_RETRY_DELAYS_MS = [500, 1500, 4000];

const defaults = { baseUrl: '', scope: '', transport: 'auto', token: null };

/**
 * Sets defaults for every later call: `baseUrl` (the Sightline server, e.g.
 * 'https://api.example.com'; default: this page's origin), `scope` (e.g. the
 * signed-in user's name: tabs share a stream only within one scope),
 * `transport` ('auto' or 'poll'), `token` (a bearer token instead of the
 * session cookie; EventSource cannot send it, so it implies polling).
 * Types: sightline.d.ts beside this file.
 * @param {import('./sightline.js').ConfigureOptions} [options]
 * @returns {void}
 */
export function configure(options = {}) {
  for (const key of Object.keys(defaults)) {
    if (key in options) defaults[key] = options[key];
  }
}

/**
 * An error answer of the API (or a failure to reach it: `status` 0): `status`,
 * `code` (the server's JSON code, or 'unreachable', 'timeout', 'order_failed',
 * 'http_error'), `error` (the message) and, for a broken rule, `field`.
 */
export class SightlineError extends Error {
  /**
   * @param {number} status the HTTP status, 0 when none
   * @param {{ error?: string, code?: string, field?: string } | null} [body] the JSON error body
   * @param {string} [fallback] the message when the body has none
   */
  constructor(status, body, fallback) {
    const error = (body && typeof body.error === 'string' && body.error) || fallback || `HTTP ${status}`;
    super(error);
    this.name = 'SightlineError';
    this.status = status;
    this.code = (body && body.code) || (status === 0 ? 'unreachable' : 'http_error');
    this.error = error;
    if (body && body.field) this.field = body.field;
    /** Every broken rule of a 422: `[{ field, code, message }]`. */
    if (body && Array.isArray(body.errors)) this.errors = body.errors;
  }
}

/**
 * A random UUID (v4), also where crypto.randomUUID is missing (plain HTTP).
 * @returns {string}
 */
export function newOrderId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') {
    c.getRandomValues(bytes);
  } else {
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ---------------------------------------------------------------------------
// HTTP

function options(overrides = {}) {
  const o = { ...defaults };
  for (const key of Object.keys(defaults)) {
    if (overrides[key] !== undefined) o[key] = overrides[key];
  }
  o.baseUrl = String(o.baseUrl || '').replace(/\/+$/, '');
  return o;
}

function crossOrigin(baseUrl) {
  if (!baseUrl) return false;
  try {
    return new URL(baseUrl, globalThis.location && globalThis.location.href).origin !== globalThis.location.origin;
  } catch {
    return true;
  }
}

function request(o, path, init = {}) {
  const headers = { Accept: 'application/json', ...(init.headers || {}) };
  if (o.token) headers.Authorization = `Bearer ${o.token}`;
  return fetch(o.baseUrl + path, {
    cache: 'no-store',
    // A frontend on another origin sends the session cookie only with
    // `include` (and only to a server that allow-lists it: CORS_ALLOWED_ORIGINS).
    credentials: crossOrigin(o.baseUrl) ? 'include' : 'same-origin',
    ...init,
    headers,
  });
}

function abortError(signal) {
  if (signal && signal.reason !== undefined) return signal.reason;
  return new DOMException('The operation was aborted.', 'AbortError');
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(abortError(signal));
    const done = () => {
      if (signal) signal.removeEventListener('abort', aborted);
      resolve();
    };
    const timer = setTimeout(done, ms);
    const aborted = () => {
      clearTimeout(timer);
      reject(abortError(signal));
    };
    if (signal) signal.addEventListener('abort', aborted, { once: true });
  });
}

function retryAfterMs(response, fallback) {
  const secs = Number(response.headers.get('retry-after'));
  return Number.isFinite(secs) && secs > 0 ? Math.min(secs * 1000, 10000) : fallback;
}

/**
 * POST /api/orders. `body` is `{ id?, items: [{ sku, quantity, unit_price_cents }], note?, currency? }`;
 * an `id` is made here when absent (pass your own to know it up front).
 * Network errors and 503 are retried with the same id (three times, backing
 * off); resolves with the server's JSON (201 placed, or 200: already placed);
 * rejects with a SightlineError (`status`, `code`, `error`) otherwise.
 * @param {import('./sightline.js').PlaceOrderBody} body
 * @param {import('./sightline.js').PlaceOrderOptions} [options]
 * @returns {Promise<import('./sightline.js').PlacedOrder>}
 */
export async function placeOrder(body, { signal, baseUrl, token, retries = PLACE_RETRY_DELAYS_MS.length } = {}) {
  const o = options({ baseUrl, token });
  const order = { ...body, id: body && body.id ? body.id : newOrderId() };
  const payload = JSON.stringify(order);
  for (let attempt = 0; ; attempt++) {
    const delay = PLACE_RETRY_DELAYS_MS[Math.min(attempt, PLACE_RETRY_DELAYS_MS.length - 1)];
    let response;
    try {
      response = await request(o, '/api/orders', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: payload,
        signal,
      });
    } catch (e) {
      if (signal && signal.aborted) throw abortError(signal);
      if (attempt < retries) {
        await sleep(delay, signal);
        continue;
      }
      throw Object.assign(new SightlineError(0, null, 'the server could not be reached'), { cause: e });
    }
    const json = await response.json().catch(() => null);
    if (response.ok) return json;
    if (response.status === 503 && attempt < retries) {
      await sleep(retryAfterMs(response, delay), signal);
      continue;
    }
    throw new SightlineError(response.status, json);
  }
}

async function getJson(o, path, init = {}) {
  let response;
  try {
    response = await request(o, path, init);
  } catch (e) {
    if (init.signal && init.signal.aborted) throw abortError(init.signal);
    throw Object.assign(new SightlineError(0, null, 'the server could not be reached'), { cause: e });
  }
  const json = await response.json().catch(() => null);
  if (!response.ok) throw new SightlineError(response.status, json);
  return { json, response };
}

/**
 * POST /api/orders/{id}/cancel. Resolves with the order as the write side
 * now holds it (`status: 'cancelled'`, `visible: false` until search has the
 * cancellation; pass its `version` to `whenVisible`); rejects with a
 * SightlineError (404 unknown, 409 not cancellable).
 * @param {string} id
 * @param {import('./sightline.js').RequestOptions & { keepalive?: boolean }} [options]
 * @returns {Promise<import('./sightline.js').CancelledOrder>}
 */
export async function cancelOrder(id, { signal, baseUrl, token, keepalive = false } = {}) {
  const o = options({ baseUrl, token });
  const { json } = await getJson(o, `/api/orders/${encodeURIComponent(id)}/cancel`, {
    method: 'POST',
    signal,
    keepalive,
  });
  return json;
}

/**
 * GET /api/orders/{id}: one of the user's orders (from search, or the write
 * side before search has it).
 * @param {string} id
 * @param {import('./sightline.js').RequestOptions} [options]
 * @returns {Promise<import('./sightline.js').Order>}
 */
export async function getOrder(id, { signal, baseUrl, token } = {}) {
  const o = options({ baseUrl, token });
  const { json } = await getJson(o, `/api/orders/${encodeURIComponent(id)}`, { signal });
  return json;
}

/**
 * GET /api/orders: one page of the user's orders, newest first, from search.
 * `q` matches the beginnings of words of SKUs and note ("wid" finds WIDGET-42).
 * Resolves `{ orders, next_cursor, readSource }`; a 503 (search unreachable)
 * rejects with a SightlineError of status 503.
 * @param {import('./sightline.js').ListOrdersOptions} [options]
 * @returns {Promise<import('./sightline.js').OrderPage>}
 */
export async function listOrders({ q, limit, cursor, consistencyToken, signal, baseUrl, token } = {}) {
  const o = options({ baseUrl, token });
  const params = new URLSearchParams();
  if (q) params.set('q', q);
  if (limit) params.set('limit', String(limit));
  if (cursor) params.set('cursor', cursor);
  if (consistencyToken) params.set('consistency_token', consistencyToken);
  const query = params.toString();
  const { json, response } = await getJson(o, `/api/orders${query ? `?${query}` : ''}`, { signal });
  return { ...json, readSource: response.headers.get('x-read-source') };
}

/**
 * GET /api/orders/{id}/journey: when each stage of the pipeline took the
 * order's latest version (or `version`): `{ id, version, stages: [{ stage,
 * at, … }] }`, stages in time order, those not reached yet absent. `at` is
 * RFC 3339 with microseconds. Rejects with a SightlineError (404 for an
 * order, version or journey the user cannot see, 400 for a bad version).
 * @param {string} id
 * @param {import('./sightline.js').GetJourneyOptions} [options]
 * @returns {Promise<import('./sightline.js').Journey>}
 */
export async function getJourney(id, { version, signal, baseUrl, token } = {}) {
  const o = options({ baseUrl, token });
  const query = version === undefined || version === null ? '' : `?version=${encodeURIComponent(String(version))}`;
  const { json } = await getJson(o, `/api/orders/${encodeURIComponent(id)}/journey${query}`, { signal });
  return json;
}

/**
 * GET /api/summary: the user's counters (`orders_placed`,
 * `orders_cancelled`, `spent_cents` per currency, `last_order_at`).
 * @param {import('./sightline.js').RequestOptions} [options]
 * @returns {Promise<import('./sightline.js').Summary>}
 */
export async function getSummary({ signal, baseUrl, token } = {}) {
  const o = options({ baseUrl, token });
  const { json } = await getJson(o, '/api/summary', { signal });
  return json;
}

// ---------------------------------------------------------------------------
// The hub: one per server (and scope) in this tab. It owns this tab's side of
// the shared stream, the connection state, and the long-poll slots.

const hubs = new Map();

function hubFor(o) {
  const transport =
    o.transport === 'poll' || o.token || typeof globalThis.EventSource !== 'function' ? 'poll' : 'sse';
  const key = JSON.stringify([o.baseUrl, o.scope, transport, o.token || '']);
  let hub = hubs.get(key);
  if (!hub) {
    hub = new Hub(o, transport);
    hubs.set(key, hub);
  }
  return hub;
}

function countStreams(delta) {
  globalThis.__sightlineStreams = (globalThis.__sightlineStreams || 0) + delta;
}

class Hub {
  constructor(o, transport) {
    this.o = o;
    this.transport = transport;
    this.state = 'idle'; // connecting | live | reconnecting | polling | offline
    this.users = new Set(); // { onNotice, onStatus }
    this.lingerTimer = 0;
    this.leader = false;
    this.channel = null;
    this.leadership = null; // { abort: AbortController, release: () => void }
    this.source = null;
    this.retryTimer = 0;
    this.failures = 0;
    this.everLive = false;
    this.pollsInFlight = 0;
    this.pollQueue = []; // resolvers waiting for a poll slot, newest last
  }

  get name() {
    const suffix = [this.o.baseUrl, this.o.scope].filter(Boolean).join(' ');
    return suffix ? ` ${suffix}` : '';
  }

  /** Adds a listener; starts the hub if it was idle. Returns its removal. */
  join(user) {
    clearTimeout(this.lingerTimer);
    this.users.add(user);
    if (this.state === 'idle') this.start();
    else if (user.onStatus) user.onStatus(this.state, { fresh: false });
    return () => {
      if (!this.users.delete(user) || this.users.size > 0) return;
      clearTimeout(this.lingerTimer);
      this.lingerTimer = setTimeout(() => {
        if (this.users.size === 0) this.stop();
      }, LINGER_MS);
    };
  }

  start() {
    if (this.transport === 'poll') return this.setState('polling', true);
    this.setState('connecting', false);
    const shared = typeof globalThis.BroadcastChannel === 'function' && globalThis.navigator?.locks?.request;
    if (!shared) return this.lead();
    this.channel = new BroadcastChannel(CHANNEL + this.name);
    this.channel.onmessage = (event) => this.onMessage(event.data);
    // A leader, if there is one, answers with its state.
    this.channel.postMessage({ type: 'hello' });
    const abort = new AbortController();
    const leadership = { abort, release: () => {} };
    this.leadership = leadership;
    navigator.locks
      .request(LOCK + this.name, { signal: abort.signal }, () => {
        if (this.leadership !== leadership) return undefined; // stopped meanwhile
        this.lead();
        // Held until stop() (or until this tab goes away: then the next tab's
        // request is granted and it opens the stream).
        return new Promise((resolve) => {
          leadership.release = resolve;
        });
      })
      .catch(() => {}); // aborted: this tab stopped before it led
  }

  stop() {
    clearTimeout(this.retryTimer);
    this.closeSource();
    if (this.leadership) {
      this.leadership.abort.abort();
      this.leadership.release();
      this.leadership = null;
    }
    if (this.channel) {
      this.channel.close();
      this.channel = null;
    }
    this.leader = false;
    this.state = 'idle';
  }

  // -- the leader (or a tab on its own): the EventSource ---------------------

  lead() {
    this.leader = true;
    this.openSource();
  }

  openSource() {
    const probing = this.state === 'polling';
    const source = new EventSource(`${this.o.baseUrl}/api/events`, {
      withCredentials: crossOrigin(this.o.baseUrl),
    });
    this.source = source;
    countStreams(1);
    this.failures = 0;
    const fresh = () => {
      this.failures = 0;
      this.everLive = true;
      this.setState('live', true);
    };
    // `ready` opens every stream (after a reconnect too, with Last-Event-ID:
    // the missed notices follow it); `reset`: the log could not vouch for the
    // cursor (too old, unknown, malformed), nothing is replayed, so listeners
    // hear `fresh` and refetch; its id is the head to resume from.
    source.addEventListener('ready', fresh);
    source.addEventListener('reset', fresh);
    for (const kind of ['order-visible', 'order-failed']) {
      source.addEventListener(kind, (event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        if (!data || typeof data.id !== 'string') return;
        // The cursor is opaque (`<position>-<chain>` today): kept as the
        // string it is, never parsed or compared; EventSource itself sends
        // the last one back as Last-Event-ID when it reconnects.
        const notice = { ...data, kind, cursor: event.lastEventId };
        this.dispatch(notice);
        if (this.channel) this.channel.postMessage({ type: 'notice', notice });
      });
    }
    // `session-ended`: signed out (here, in another browser, or everywhere)
    // or past the session's end. Reconnecting would only get 401: stop, and
    // let the page say so.
    source.addEventListener('session-ended', () => {
      if (this.source !== source) return;
      this.closeSource();
      this.setState('offline', false);
    });
    source.addEventListener('error', () => {
      if (this.source !== source) return;
      this.failures++;
      const limit = this.everLive ? FAILURES_BEFORE_POLLING_ONCE_LIVE : FAILURES_BEFORE_POLLING;
      // CLOSED: the browser gave up (401, not an event stream, CORS refused).
      if (source.readyState === EventSource.CLOSED || this.failures >= limit) {
        this.closeSource();
        this.setState('polling', true);
        this.retryTimer = setTimeout(() => {
          if (this.leader && this.state === 'polling') this.openSource();
        }, STREAM_RETRY_MS);
      } else if (!probing) {
        this.setState('reconnecting', false);
      }
    });
  }

  closeSource() {
    if (!this.source) return;
    this.source.close();
    this.source = null;
    countStreams(-1);
  }

  // -- every tab -------------------------------------------------------------

  onMessage(message) {
    if (!message || typeof message !== 'object') return;
    if (message.type === 'hello') {
      if (this.leader && this.state !== 'idle') {
        this.channel.postMessage({ type: 'state', state: this.state, fresh: false });
      }
    } else if (message.type === 'state') {
      if (!this.leader && typeof message.state === 'string') this.setState(message.state, Boolean(message.fresh), true);
    } else if (message.type === 'notice') {
      if (!this.leader && message.notice) this.dispatch(message.notice);
    }
  }

  /** `fresh`: a new stream started, notices before it may be missing. */
  setState(state, fresh, fromLeader = false) {
    const changed = state !== this.state;
    this.state = state;
    if (this.leader && this.channel && !fromLeader) {
      this.channel.postMessage({ type: 'state', state, fresh });
    }
    if (!changed && !fresh) return;
    for (const user of [...this.users]) {
      if (user.onStatus) user.onStatus(state, { fresh });
    }
  }

  dispatch(notice) {
    for (const user of [...this.users]) {
      if (user.onNotice) {
        try {
          user.onNotice(notice);
        } catch (e) {
          setTimeout(() => {
            throw e;
          });
        }
      }
    }
  }

  /** Waits for one of the tab's long-poll slots; the newest caller goes first. */
  async pollSlot(signal) {
    if (this.pollsInFlight < MAX_CONCURRENT_POLLS) {
      this.pollsInFlight++;
      return () => this.freeSlot();
    }
    await new Promise((resolve, reject) => {
      const entry = { resolve, reject };
      this.pollQueue.push(entry);
      signal.addEventListener(
        'abort',
        () => {
          const i = this.pollQueue.indexOf(entry);
          if (i >= 0) this.pollQueue.splice(i, 1);
          reject(abortError(signal));
        },
        { once: true },
      );
    });
    return () => this.freeSlot();
  }

  freeSlot() {
    const next = this.pollQueue.pop();
    if (next) next.resolve();
    else this.pollsInFlight--;
  }
}

// ---------------------------------------------------------------------------
// Public: subscribe and whenVisible

/**
 * Calls `onNotice({ kind, id, version, status, visible_at | failed_at, error?, cursor })`
 * for every `order-visible` / `order-failed` notice of the signed-in user, from
 * the tab's shared stream. `onStatus(state, { fresh })` (optional) hears the
 * connection state: 'connecting', 'live', 'reconnecting', 'polling', 'offline';
 * `fresh` means a new stream began and earlier notices may have been missed.
 * Returns the function that unsubscribes.
 * @param {(notice: import('./sightline.js').Notice) => void} onNotice
 * @param {import('./sightline.js').SubscribeOptions} [options]
 * @returns {() => void}
 */
export function subscribe(onNotice, { onStatus, baseUrl, scope, transport, token } = {}) {
  const hub = hubFor(options({ baseUrl, scope, transport, token }));
  return hub.join({ onNotice, onStatus });
}

/**
 * Resolves `{ id, visible: true, visible_at, version, status }` once the order
 * is visible to search (a list request made then includes it) — with
 * `version`, once that version (or a newer one) is: after a cancel, pass the
 * version the cancel returned, or the placing's notice answers. Rejects with a
 * SightlineError: code 'order_failed' when the order cannot be made
 * searchable, 'not_found' for an order that is not the user's, 'timeout'
 * after `timeoutMs` (default: none), 401 when signed out; and with the abort
 * reason when `signal` aborts.
 * @param {string} id the order's id
 * @param {import('./sightline.js').WhenVisibleOptions} [options]
 * @returns {Promise<import('./sightline.js').Visible>}
 */
export function whenVisible(id, { signal, timeoutMs, baseUrl, scope, transport, token, version } = {}) {
  const o = options({ baseUrl, scope, transport, token });
  const hub = hubFor(o);
  const wanted = Number.isInteger(version) && version > 0 ? version : 0;
  const path = (wait) =>
    `/api/orders/${encodeURIComponent(id)}/visibility?wait=${wait}${wanted ? `&version=${wanted}` : ''}`;
  /** Whether an answer or notice is about the version asked for (or newer). */
  const current = (v) => !wanted || (Number.isInteger(v) && v >= wanted);

  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(abortError(signal));
    let settled = false;
    let timer = 0;
    let polling = null; // AbortController of the poll loop
    const inner = new AbortController(); // ends every request of this call

    const finish = (ok, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      inner.abort();
      leave();
      if (signal) signal.removeEventListener('abort', onAbort);
      if (ok) resolve(value);
      else reject(value);
    };
    const onAbort = () => finish(false, abortError(signal));

    /** Settles from a visibility answer; true when it did. */
    const judge = (body) => {
      if (!body) return false;
      if (body.visible && current(body.version)) {
        finish(true, {
          id,
          visible: true,
          visible_at: body.visible_at,
          version: body.version,
          status: body.status,
        });
        return true;
      }
      if (body.failed) {
        finish(false, failed(id, body.error));
        return true;
      }
      return false;
    };

    /** One question; returns the body, or null when the answer says nothing. */
    const ask = async (wait, requestSignal) => {
      const response = await request(o, path(wait), { signal: requestSignal });
      const body = await response.json().catch(() => null);
      if (response.ok) return body;
      if (response.status === 401) hub.setState('offline', false);
      if (response.status >= 400 && response.status < 500) {
        finish(false, new SightlineError(response.status, body));
      }
      return null;
    };

    const check = async () => {
      try {
        judge(await ask(0, inner.signal));
      } catch {
        // Unreachable for now: the stream (or the next poll) will tell.
      }
    };

    const poll = async () => {
      if (polling || settled) return;
      const controller = new AbortController();
      polling = controller;
      const stop = () => controller.abort();
      inner.signal.addEventListener('abort', stop, { once: true });
      let release = null;
      let failures = 0;
      try {
        release = await hub.pollSlot(controller.signal);
        while (!settled && !controller.signal.aborted && hub.state === 'polling') {
          try {
            if (judge(await ask(POLL_WAIT_SECS, controller.signal))) break;
            failures = 0;
          } catch {
            if (controller.signal.aborted) break;
            failures++;
            await sleep(backoff(failures), controller.signal);
          }
        }
      } catch {
        // aborted
      } finally {
        if (release) release();
        inner.signal.removeEventListener('abort', stop);
        if (polling === controller) polling = null;
      }
    };

    const leave = hub.join({
      onNotice(notice) {
        if (notice.id !== id) return;
        if (notice.kind === 'order-visible' && current(notice.version)) {
          finish(true, {
            id,
            visible: true,
            visible_at: notice.visible_at,
            version: notice.version,
            status: notice.status,
          });
        } else if (notice.kind === 'order-failed') {
          finish(false, failed(id, notice.error));
        }
      },
      onStatus(state, { fresh }) {
        if (state === 'polling') {
          poll();
        } else if (polling) {
          polling.abort();
        }
        // A new stream does not replay what came before it: ask once more.
        if (fresh && state === 'live') check();
      },
    });
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
    if (Number.isFinite(timeoutMs) && timeoutMs >= 0) {
      timer = setTimeout(() => {
        finish(false, new SightlineError(0, { code: 'timeout', error: `order ${id} was not visible within ${timeoutMs} ms` }));
      }, timeoutMs);
    }
    // Subscribed first, then asked: a notice recorded in between still arrives.
    check();
    if (hub.state === 'polling') poll();
  });
}

function failed(id, error) {
  const e = new SightlineError(0, {
    code: 'order_failed',
    error: `order ${id} could not be made searchable${error ? `: ${error}` : ''}`,
  });
  e.orderError = error;
  return e;
}

function backoff(failures) {
  return Math.min(30000, 500 * 2 ** Math.min(failures, 6)) * (0.75 + Math.random() / 2);
}

// A frontend's use of every export of sightline.js, type-checked with
// `tsc --noEmit --strict` (scripts/test, through tests/api/typed_client.rs)
// against static/sightline.d.ts, depended on by path as a package would be
// ("sightline": "file:../static" in e2e/package.json). Never run.
import {
  SightlineError,
  cancelOrder,
  configure,
  getJourney,
  getOrder,
  getSummary,
  listOrders,
  newOrderId,
  placeOrder,
  subscribe,
  whenVisible,
  type FieldError,
  type ConnectionState,
  type Journey,
  type JourneyStage,
  type Notice,
  type PlacedOrder,
  type Visible,
} from 'sightline';

configure({ baseUrl: 'https://api.example.com', scope: 'ada', transport: 'auto' });
configure({ token: 'a-bearer-token' });
configure();

const seen: string[] = [];
const stop: () => void = subscribe(
  (notice: Notice) => {
    switch (notice.kind) {
      case 'order-visible':
        seen.push(`${notice.id} v${notice.version} ${notice.status} at ${notice.visible_at}`);
        break;
      case 'order-failed':
        seen.push(`${notice.id} failed: ${notice.error} at ${notice.failed_at}`);
        break;
    }
    const cursor: string = notice.cursor;
    seen.push(cursor);
  },
  {
    onStatus(state: ConnectionState, { fresh }) {
      if (fresh && state === 'live') seen.push('refetch the list');
    },
  },
);

export async function buy(signal: AbortSignal): Promise<Visible | null> {
  const id: string = newOrderId();
  try {
    const order: PlacedOrder = await placeOrder(
      {
        id,
        items: [{ sku: 'WIDGET-42', quantity: 2, unit_price_cents: 1250 }],
        note: 'gift wrap',
        currency: 'EUR',
      },
      { signal, retries: 3 },
    );
    const total: number = order.total_cents;
    const token: string = order.consistency_token;
    seen.push(`${total} ${token} ${order.placed_at} ${order.visible}`);
    const visible = await whenVisible(order.id, { signal, timeoutMs: 30_000 });
    const status: 'placed' | 'cancelled' = visible.status;
    seen.push(status);
    return visible;
  } catch (e) {
    if (e instanceof SightlineError) {
      const status: number = e.status;
      if (e.code === 'order_failed') seen.push(e.orderError ?? e.error);
      if (e.code === 'invalid' && e.field) seen.push(`${e.field}: ${e.error}`);
      seen.push(`${status} ${e.code}`);
      return null;
    }
    throw e;
  } finally {
    stop();
  }
}

export async function manage(id: string): Promise<number> {
  const order = await getOrder(id);
  const cancelled = await cancelOrder(order.id);
  // The placing's notice does not answer this: the cancel's version does.
  await whenVisible(cancelled.id, { version: cancelled.version });
  const page = await listOrders({ q: 'wid', limit: 20 });
  seen.push(`${page.orders.length} ${page.next_cursor ?? ''} ${page.readSource ?? ''}`);
  const summary = await getSummary();
  try {
    await placeOrder({ items: [{ sku: '', quantity: 0, unit_price_cents: 1 }] });
  } catch (e) {
    if (e instanceof SightlineError && e.errors) {
      const rules: FieldError[] = e.errors;
      seen.push(...rules.map((r) => `${r.field} ${r.code}: ${r.message}`));
    }
  }
  return summary.orders_placed + (summary.spent_cents['USD'] ?? 0);
}

/** How long each stage of an order's journey came after it was committed. */
export async function journeyOf(id: string, version?: number): Promise<string[]> {
  const journey: Journey = await getJourney(id, { version });
  const micros = (at: string): number => Date.parse(at) * 1000 + Number((/\.(\d{1,6})/.exec(at)?.[1] ?? '').padEnd(6, '0').slice(3));
  const start = journey.stages.find((s) => s.stage === 'committed');
  return journey.stages.map((s: JourneyStage) => {
    const offset = start ? (micros(s.at) - micros(start.at)) / 1000 : 0;
    switch (s.stage) {
      case 'sent':
        return `v${journey.version} sent over ${s.via === 'stream' ? 'the stream' : 'a long poll'} +${offset} ms`;
      case 'retrying':
      case 'parked':
        return `${s.stage} (${s.reason}) +${offset} ms`;
      default:
        return `${s.stage} +${offset} ms`;
    }
  });
}

// Mistakes the declarations catch.
// @ts-expect-error items are required
void placeOrder({});
// @ts-expect-error quantity is a number
void placeOrder({ items: [{ sku: 'A', quantity: '1', unit_price_cents: 1 }] });
// @ts-expect-error the transport is 'auto' or 'poll'
configure({ transport: 'websocket' });
// @ts-expect-error whenVisible wants the order's id
void whenVisible(42);
subscribe((notice) => {
  // @ts-expect-error failed_at exists only on order-failed notices
  if (notice.kind === 'order-visible') seen.push(notice.failed_at);
});
void getJourney('an-id').then((journey) => {
  for (const stage of journey.stages) {
    // @ts-expect-error reason exists only on retrying and parked stages
    if (stage.stage === 'indexed') seen.push(stage.reason);
  }
});
// @ts-expect-error the version is a number
void getJourney('an-id', { version: '2' });

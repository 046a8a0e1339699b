// Behaviours of /static/sightline.js, in Chromium against the real server,
// with faults injected by routing its requests (network errors, 503s, a
// stream that cannot connect, an order-failed notice).
import type { Page, Route } from '@playwright/test';
import { test, expect } from '../fixtures';

declare global {
  interface Window {
    sightline: typeof import('sightline');
    states: string[];
    __sightlineStreams?: number;
  }
}

/** A page on the server's origin with a fresh instance of the module as `window.sightline`. */
async function openModule(page: Page) {
  // Any same-origin document will do; /healthz is the smallest.
  await page.goto('/healthz');
  await page.evaluate(async () => {
    window.sightline = await import('/static/sightline.js' as string);
    window.states = [];
  });
}

const ITEMS = [{ sku: 'JS-RETRY', quantity: 1, unit_price_cents: 100 }];

test('placeOrder retries network errors and 503s with the same id, honouring Retry-After', async ({ page, user }) => {
  await openModule(page);
  const seen: { at: number; id: string }[] = [];
  await page.route('**/api/orders', async (route: Route) => {
    seen.push({ at: Date.now(), id: JSON.parse(route.request().postData() ?? '{}').id });
    if (seen.length === 1) return route.abort('connectionreset');
    if (seen.length === 2) {
      // 2 s, where the client's own delay before its third try is 1.5 s.
      return route.fulfill({ status: 503, headers: { 'Retry-After': '2' }, json: { error: 'busy', code: 'unavailable' } });
    }
    if (seen.length === 3) return route.fulfill({ status: 503, json: { error: 'busy', code: 'unavailable' } });
    return route.continue();
  });
  const order = await page.evaluate((items) => window.sightline.placeOrder({ items }), ITEMS);
  expect(seen).toHaveLength(4);
  expect(new Set(seen.map((s) => s.id))).toEqual(new Set([order.id]));
  expect(seen[2].at - seen[1].at).toBeGreaterThanOrEqual(1900);
  expect(order.username).toBe(user.username);

  // Placed once: the server has exactly this order.
  const list = await page.request.get('/api/orders', { headers: { 'X-Consistency-Token': order.consistency_token } });
  const ids = ((await list.json()) as { orders: { id: string }[] }).orders.map((o) => o.id);
  expect(ids).toEqual([order.id]);
});

test('placeOrder gives up after three retries with the last answer', async ({ page, user }) => {
  await openModule(page);
  let tries = 0;
  await page.route('**/api/orders', (route) => {
    tries++;
    return route.fulfill({ status: 503, headers: { 'Retry-After': '1' }, json: { error: 'search is unavailable', code: 'unavailable' } });
  });
  const error = await page.evaluate(async (items) => {
    try {
      await window.sightline.placeOrder({ items });
      return null;
    } catch (e) {
      const { name, status, code } = e as { name: string; status: number; code: string };
      return { name, status, code };
    }
  }, ITEMS);
  expect(error).toEqual({ name: 'SightlineError', status: 503, code: 'unavailable' });
  expect(tries).toBe(4);
  expect(user.token).toBeTruthy();
});

test('the stream falls back to polling after failed attempts, then returns', async ({ page, user }) => {
  await page.clock.install();
  await openModule(page);
  // The stream cannot connect: every attempt is a network error.
  await page.route('**/api/events', (route) => route.abort('connectionrefused'));
  await page.evaluate(() => {
    window.sightline.subscribe(() => {}, {
      onStatus: (state, { fresh }) => window.states.push(fresh ? `${state}+fresh` : state),
    });
  });
  await expect.poll(() => page.evaluate(() => window.states.includes('polling+fresh')), { timeout: 45_000 }).toBe(true);
  expect(await page.evaluate(() => window.states)).toEqual(
    expect.arrayContaining(['connecting', 'reconnecting', 'polling+fresh']),
  );
  expect(await page.evaluate(() => window.__sightlineStreams)).toBe(0);

  // While polling, whenVisible long-polls and still resolves.
  const placed = await page.request.post('/api/orders', { data: { items: ITEMS } });
  const { id } = (await placed.json()) as { id: string };
  const visible = await page.evaluate((id) => window.sightline.whenVisible(id, { timeoutMs: 30_000 }), id);
  expect(visible).toMatchObject({ id, visible: true, version: 1, status: 'placed' });

  // The stream works again; the retry, 30 s later, finds it.
  await page.unroute('**/api/events');
  await page.clock.runFor(30_000);
  await expect.poll(() => page.evaluate(() => window.states.at(-1)), { timeout: 30_000 }).toBe('live+fresh');
  expect(await page.evaluate(() => window.__sightlineStreams)).toBe(1);
  expect(user.username).toBeTruthy();
});

test('order-failed rejects whenVisible with order_failed', async ({ page, user }) => {
  await openModule(page);
  const placed = await page.request.post('/api/orders', { data: { items: ITEMS } });
  const { id } = (await placed.json()) as { id: string };
  // The server's answer for an order whose event was dead-lettered, until
  // the stream delivers the notice: not visible yet, then order-failed.
  await page.route(`**/api/orders/${id}/visibility**`, (route) =>
    route.fulfill({ json: { id, visible: false, failed: false } }),
  );
  const failedAt = new Date().toISOString();
  await page.route('**/api/events', (route) =>
    route.fulfill({
      status: 200,
      headers: { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store' },
      body:
        'retry: 60000\nevent: ready\nid: 4-00000000\ndata: {"cursor":"4-00000000"}\n\n' +
        `event: order-failed\nid: 5-0000abcd\ndata: ${JSON.stringify({
          id,
          version: 1,
          status: 'failed',
          error: 'document_parsing_exception',
          failed_at: failedAt,
        })}\n\n`,
    }),
  );
  const error = await page.evaluate(async (id) => {
    try {
      await window.sightline.whenVisible(id, { timeoutMs: 30_000 });
      return null;
    } catch (e) {
      const { name, status, code, orderError } = e as { name: string; status: number; code: string; orderError: string };
      return { name, status, code, orderError };
    }
  }, id);
  expect(error).toEqual({ name: 'SightlineError', status: 0, code: 'order_failed', orderError: 'document_parsing_exception' });
  expect(user.username).toBeTruthy();
});

test('configure({ token }) sends the bearer token and polls instead of streaming', async ({ browser, user, baseURL }) => {
  // A context with no session cookie: only the token can sign requests.
  const context = await browser.newContext({ baseURL });
  const page = await context.newPage();
  await openModule(page);
  const authorizations: (string | undefined)[] = [];
  await page.route('**/api/**', (route) => {
    authorizations.push(route.request().headers()['authorization']);
    return route.continue();
  });
  const visible = await page.evaluate(async (token) => {
    window.sightline.configure({ token });
    const order = await window.sightline.placeOrder({ items: [{ sku: 'JS-TOKEN', quantity: 1, unit_price_cents: 1 }] });
    return window.sightline.whenVisible(order.id, { timeoutMs: 30_000 });
  }, user.token);
  expect(visible).toMatchObject({ visible: true, status: 'placed' });
  expect(authorizations.length).toBeGreaterThanOrEqual(2);
  expect(new Set(authorizations)).toEqual(new Set([`Bearer ${user.token}`]));
  // EventSource cannot carry a token: no stream was opened.
  expect(await page.evaluate(() => window.__sightlineStreams ?? 0)).toBe(0);
  await context.close();
});

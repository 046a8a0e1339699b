// The recipe's two pieces, for a team's own tests against a Sightline page:
//
// - the `user` fixture signs a fresh user up through the API and logs the
//   test's browser context in (the session cookie lands in the context, so
//   `page` is signed in);
// - `expectOrderState` waits for an order's row on /orders to reach a state.
//   Rows are `[data-order-id="<id>"]` with `data-state` = pending | visible |
//   delayed | rejected | failed; the state changes when the server's notice
//   arrives, so waiting for it replaces every sleep.
import { test as base, expect, type Page } from '@playwright/test';

export interface User {
  username: string;
  password: string;
  /** A bearer token of its own session (the cookie holds another). */
  token: string;
}

export type OrderState = 'pending' | 'visible' | 'delayed' | 'rejected' | 'failed';

export const test = base.extend<{ user: User }>({
  user: async ({ page }, use) => {
    const username = `e2e_${Math.random().toString(36).slice(2, 12)}`;
    const password = 'correct horse battery';
    // page.request shares the context's cookie jar: logging in through it
    // signs the page in.
    const signedUp = await page.request.post('/api/users', { data: { username, password } });
    expect(signedUp.status(), await signedUp.text()).toBe(201);
    const session = await page.request.post('/api/sessions', { data: { username, password } });
    expect(session.status(), await session.text()).toBe(200);
    const { token } = (await session.json()) as { token: string };
    await use({ username, password, token });
  },
});

export { expect };

/** The row of an order on the /orders page. */
export function orderRow(page: Page, id: string) {
  return page.locator(`[data-order-id="${id}"]`);
}

/** Waits until the order's row is in `state` (default: up to 30 s). */
export async function expectOrderState(page: Page, id: string, state: OrderState, timeout = 30_000) {
  await expect(orderRow(page, id)).toHaveAttribute('data-state', state, { timeout });
}

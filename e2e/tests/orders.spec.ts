// The recipe: tests a team would write against a Sightline page, waiting for
// eventual consistency through the rows' `data-state`, never by sleeping.
import { expectOrderState, orderRow, test, expect } from '../fixtures';

test('an order placed through the API shows up and turns visible', async ({ page, user }) => {
  const placed = await page.request.post('/api/orders', {
    data: { items: [{ sku: 'E2E-API', quantity: 2, unit_price_cents: 1250 }], note: 'from the recipe' },
  });
  expect(placed.status()).toBe(201);
  const order = (await placed.json()) as { id: string; consistency_token: string };

  // The token makes the page show the order even before search does.
  await page.goto(`/orders?consistency_token=${encodeURIComponent(order.consistency_token)}`);
  await expect(orderRow(page, order.id)).toBeVisible();
  await expectOrderState(page, order.id, 'visible');
  await expect(orderRow(page, order.id)).toContainText('E2E-API');
  expect(user.username).toMatch(/^e2e_/);
});

test('an order placed on the page turns visible when its notice arrives', async ({ page, user }) => {
  await page.goto('/orders');
  await expect(page).toHaveURL(/\/orders$/);
  expect(user.username).toBeTruthy();
  const sku = `E2E-FORM-${Date.now()}`;
  await page.locator('#sku').fill(sku);
  await page.locator('#quantity').fill('3');
  await page.locator('#unit_price').fill('4.99'); // in dollars, as a person types it
  await page.locator('#place-order').click();

  const row = page.locator('[data-order-id]', { hasText: sku });
  await expect(row).toHaveCount(1);
  const id = await row.getAttribute('data-order-id');
  expect(id).toBeTruthy();
  await expectOrderState(page, id!, 'visible');
});

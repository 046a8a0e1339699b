// Playwright against a running Sightline, with Debian's Chromium: Playwright
// never downloads a browser here (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 when
// installing; `executablePath` below).
//
//   SIGHTLINE_URL=http://127.0.0.1:3000 npx playwright test
//
// scripts/test runs it against a fresh server through tests/api/e2e.rs.
import { defineConfig } from '@playwright/test';

export default defineConfig({
  testDir: './tests',
  timeout: 60_000,
  expect: { timeout: 30_000 },
  // Two cores: the server, PostgreSQL, Elasticsearch and the browser share them.
  workers: 2,
  fullyParallel: true,
  forbidOnly: true,
  reporter: [['list']],
  // Beside the Rust browser tests' screenshots (git-ignored).
  outputDir: '../test-artifacts/e2e',
  use: {
    baseURL: process.env.SIGHTLINE_URL ?? 'http://127.0.0.1:3000',
    browserName: 'chromium',
    launchOptions: { executablePath: process.env.CHROME_BIN ?? '/usr/bin/chromium' },
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
  },
});

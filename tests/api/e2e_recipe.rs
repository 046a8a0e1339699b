//! The Playwright recipe (`e2e/`) and the browser behaviours of
//! `sightline.js`, run by @playwright/test (pinned in e2e/package-lock.json)
//! in Debian's Chromium against a fresh server.

use std::path::Path;
use std::process::Stdio;

use crate::helpers::{spawn_app_with, test_settings};

#[tokio::test]
async fn the_playwright_recipe_passes() {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e");
    let playwright = e2e.join("node_modules/.bin/playwright");
    assert!(
        playwright.exists(),
        "{} is missing: run scripts/tools",
        playwright.display()
    );
    let mut settings = test_settings().await;
    // Each test signs up and logs in once.
    settings.login_address_burst = 10_000;
    let app = spawn_app_with(settings).await;
    let chromium = std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let output = tokio::process::Command::new(&playwright)
        .arg("test")
        .env("SIGHTLINE_URL", app.url(""))
        .env("CHROME_BIN", chromium)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .env("CI", "1")
        .current_dir(&e2e)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("could not run playwright");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Playwright failed (traces and screenshots in test-artifacts/e2e):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed"), "{stdout}");
    assert!(!stdout.contains(" skipped"), "{stdout}");
}

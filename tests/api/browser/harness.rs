//! The browser harness: chromedriver on a free port, one Chromium session
//! per test (one at a time), a screenshot on failure.

use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use axum::http::Method;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use futures::FutureExt;
use serde_json::{Value, json};
use uuid::Uuid;

use super::WAIT;
use super::page::screenshot;

/// One browser at a time: the machine is small and Chromium is not.
static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Browser {
    JavaScript,
    NoJavaScript,
}

/// Runs `test` against a fresh browser, then closes the browser and stops
/// chromedriver whatever happened (a failure also leaves a screenshot).
pub(super) async fn with_browser<F>(kind: Browser, name: &str, test: F)
where
    F: AsyncFnOnce(Client) -> anyhow::Result<()>,
{
    let _one_at_a_time = BROWSERS.lock().await;
    let driver = Driver::start().await.expect("Failed to start chromedriver");
    let client = driver
        .connect(kind)
        .await
        .expect("Failed to open a browser session");
    let outcome = AssertUnwindSafe(test(client.clone())).catch_unwind().await;
    if !matches!(outcome, Ok(Ok(()))) {
        let _ = screenshot(&client, &format!("{name}-failure")).await;
    }
    let _ = client.close().await;
    drop(driver);
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{name}: {e:?}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Like [`with_browser`], with two separate browsers (own profiles: nothing
/// shared between them, as for two people on two machines).
pub(super) async fn with_two_browsers<F>(name: &str, test: F)
where
    F: AsyncFnOnce(Client, Client) -> anyhow::Result<()>,
{
    let _one_at_a_time = BROWSERS.lock().await;
    let driver = Driver::start().await.expect("Failed to start chromedriver");
    let first = driver
        .connect(Browser::JavaScript)
        .await
        .expect("Failed to open the first browser session");
    let second = driver
        .connect(Browser::JavaScript)
        .await
        .expect("Failed to open the second browser session");
    let outcome = AssertUnwindSafe(test(first.clone(), second.clone()))
        .catch_unwind()
        .await;
    if !matches!(outcome, Ok(Ok(()))) {
        let _ = screenshot(&first, &format!("{name}-failure-a")).await;
        let _ = screenshot(&second, &format!("{name}-failure-b")).await;
    }
    let _ = first.close().await;
    let _ = second.close().await;
    drop(driver);
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{name}: {e:?}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A chromedriver process; dropping it stops chromedriver and any browser it
/// started (they share its process group) and removes the browser profiles.
pub(super) struct Driver {
    child: Child,
    url: String,
    /// One per session: two sessions are two separate browsers (no shared
    /// cookies, storage, BroadcastChannel or locks).
    profiles: std::sync::Mutex<Vec<PathBuf>>,
}

impl Driver {
    async fn start() -> anyhow::Result<Driver> {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let binary =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned());
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(&binary)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .with_context(|| {
                    format!("Failed to run {binary} (apt-get install chromium chromium-driver)")
                })?
        };
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profiles: Default::default(),
        };

        // Wait until it answers (start-up, not consistency: nothing to observe).
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = http
                .get(format!("{}/status", driver.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(response) = status
                && response.status().is_success()
            {
                return Ok(driver);
            }
            if let Some(exit) = driver.child.try_wait()? {
                bail!("chromedriver exited at start-up: {exit}");
            }
            ensure!(
                Instant::now() < deadline,
                "chromedriver did not answer in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn connect(&self, kind: Browser) -> anyhow::Result<Client> {
        let profile = std::env::temp_dir().join(format!("sightline-chromium-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&profile)?;
        self.profiles.lock().unwrap().push(profile.clone());
        let chrome = std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let mut options = json!({
            "binary": chrome,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        });
        if kind == Browser::NoJavaScript {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        // Two rustls providers are compiled in; choose one (a second call is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ClientBuilder::rustls()?
            .capabilities(capabilities)
            .connect(&self.url)
            .await?;
        client
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(Duration::from_secs(30)),
                Some(WAIT),
                Some(Duration::ZERO),
            ))
            .await?;
        Ok(client)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group id is chromedriver's pid (process_group(0) above).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for profile in self.profiles.lock().unwrap().drain(..) {
            let _ = std::fs::remove_dir_all(profile);
        }
    }
}

/// A Chrome DevTools Protocol command, through chromedriver's
/// `goog/cdp/execute` endpoint.
#[derive(Debug)]
pub(super) struct Cdp {
    body: Value,
}

impl Cdp {
    pub(super) fn new(cmd: &str, params: Value) -> Self {
        Cdp {
            body: json!({ "cmd": cmd, "params": params }),
        }
    }
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (Method, Option<String>) {
        (Method::POST, Some(self.body.to_string()))
    }
}

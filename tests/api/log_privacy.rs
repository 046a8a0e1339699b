//! What users type stays out of the logs: a search's text is logged by its
//! length (`q_len`), and a failed login's username (it may be a password
//! typed into the wrong box) not at all.

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::helpers::spawn_app;

/// Every line the app logs on this test's thread, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// A current-thread runtime (the default): the app's tasks run on this
// thread, where the capturing subscriber is the default.
#[tokio::test]
async fn search_text_and_failed_usernames_stay_out_of_the_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = spawn_app().await;
    let user = app.new_user().await;
    let secret = "zebraquartzsecret";
    // Other tests in this process register the same callsites with no
    // subscriber of their own, and one registering while this thread's
    // subscriber was being registered can keep a "never" interest (tracing
    // computes a callsite's interest before listing it). Ask every callsite
    // again, now that this subscriber is in place, just before the requests.
    tracing::callsite::rebuild_interest_cache();
    let list = app
        .get(&user, &format!("/api/orders?q={secret}%20words"))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK);
    let page = app
        .http
        .get(app.url(&format!("/orders?q={secret}")))
        .header(
            reqwest::header::COOKIE,
            crate::helpers::TestApp::session_cookie(&user),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let mistyped = "hunter2-typed-as-username";
    let failed = app.log_in(mistyped, "whatever-password").await;
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);

    let logs = captured.text();
    assert!(
        logs.contains("q_len=23"),
        "the search's length is logged: {logs}"
    );
    assert!(!logs.contains(secret), "the search text was logged: {logs}");
    assert!(
        !logs.contains(mistyped),
        "a failed login's username was logged: {logs}"
    );
}

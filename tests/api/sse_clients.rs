//! The stream as SSE client libraries the project did not write see it.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::helpers::{WAIT, spawn_app_with, test_settings};

/// Heartbeats must be nothing to a client. `httpx-sse` (Python) dispatches
/// an empty `message` event at every blank line once it has seen an id, so a
/// heartbeat of `:` plus a blank line reached its users as a message; a lone
/// comment line reaches nobody.
#[tokio::test]
async fn heartbeats_are_not_events_to_httpx_sse() {
    let mut settings = test_settings().await;
    settings.sse_heartbeat_secs = 1;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/sse_clients/httpx_sse_client.py"
    );
    // The project's own virtual environment (scripts/tools), never the
    // system's Python: a fresh machine has only what the scripts install.
    let mut child = tokio::process::Command::new(crate::helpers::local_tool("python/bin/python"))
        .arg(script)
        .arg(app.url("/api/events"))
        .arg(&user.token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot start the project's Python (scripts/tools installs it)");
    let mut stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events: Vec<Value> = vec![];
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("httpx-sse saw nothing")
        .unwrap();
    let Some(first) = first else {
        let mut error = String::new();
        stderr.read_to_string(&mut error).await.unwrap();
        panic!("the httpx-sse client failed (scripts/test installs httpx-sse): {error}");
    };
    events.push(serde_json::from_str(&first).unwrap());

    // Our own stream, opened after the library's with the same interval:
    // once it has had two heartbeats, the library's connection has been sent
    // at least two as well, before anything else.
    let (mut raw, _) = app.open_events_ready(&user).await;
    let mut heartbeats = 0;
    while heartbeats < 2 {
        let frame = tokio::time::timeout(WAIT, raw.next_frame())
            .await
            .expect("no heartbeat")
            .expect("stream ended");
        if !frame.is_dispatched() && !frame.comments.is_empty() {
            heartbeats += 1;
        }
    }
    let order = app.place_simple_order(&user, "HEARTBEATS").await;

    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            events.push(serde_json::from_str(&line).unwrap());
        }
    })
    .await
    .expect("httpx-sse never got the order's notice");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["ready", "order-visible"],
        "heartbeats surfaced as events: {events:?}"
    );
    let data: Value = serde_json::from_str(events[1]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["id"], order["id"]);
}

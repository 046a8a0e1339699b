//! The OpenAPI contract, checked by tools others wrote: the document served
//! at `/api/openapi.json` is the committed `docs/openapi.json`, and
//! Schemathesis, fuzzing the real server from it, finds nothing.

use std::path::Path;
use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, test_settings};

const COMMITTED: &str = "docs/openapi.json";

fn committed() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED)).unwrap()
}

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{:?}",
        response.headers()
    );
    let served = response.text().await.unwrap();
    assert!(
        served == committed(),
        "{COMMITTED} is not what the server serves: regenerate it with \
         `cargo run -q -- openapi > {COMMITTED}` and commit it"
    );
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(printed.status.success());
    assert_eq!(String::from_utf8(printed.stdout).unwrap(), served);

    // What the contract promises is in it.
    let doc: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let placed = &doc["paths"]["/api/orders"]["post"]["responses"]["201"];
    assert!(placed["headers"]["Location"].is_object(), "{placed}");
    assert!(placed["headers"]["X-Request-Id"].is_object(), "{placed}");
    assert_eq!(placed["links"]["GetOrder"]["operationId"], "getOrder");
    let limited = &doc["paths"]["/api/orders"]["post"]["responses"]["429"];
    assert!(limited["headers"]["Retry-After"].is_object(), "{limited}");
    let listed = &doc["paths"]["/api/orders"]["get"]["responses"]["200"];
    assert!(listed["headers"]["X-Read-Source"].is_object(), "{listed}");
    let events = &doc["paths"]["/api/events"]["get"]["responses"]["200"];
    assert!(
        events["content"]["text/event-stream"].is_object(),
        "{events}"
    );
    for event in ["ready", "reset", "order-visible", "order-failed"] {
        let schema = events["x-sse-events"][event]["$ref"].as_str().unwrap();
        let name = schema.rsplit('/').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{event}: {schema}"
        );
    }
    let error = &doc["components"]["schemas"]["ErrorBody"]["properties"];
    for field in ["error", "code", "field", "errors"] {
        assert!(error[field].is_object(), "ErrorBody lacks {field}: {error}");
    }
}

/// Schemathesis (pinned in scripts/tools) over every operation but the
/// endless event stream, with all its checks and its stateful phase, as a
/// user signed up through the API. Its configuration, and why each part of
/// it is there, is `tests/api/contract/schemathesis.toml`.
#[tokio::test]
async fn schemathesis_finds_nothing() {
    let schemathesis = crate::helpers::local_tool("python/bin/schemathesis");
    let mut settings = test_settings().await;
    // The fuzzer logs in again after each of its own log-outs; the login
    // limits have tests of their own (login_limits.rs).
    settings.login_address_burst = 100_000;
    settings.login_user_burst = 100_000;
    // Its made-up current passwords for `changePassword` count as failed
    // logins of its user: they must not delay its logins.
    settings.login_free_failures = 100_000;
    let app = spawn_app_with(settings).await;
    // Not the helpers' usual password: that one is the document's example
    // for `current_password`, so Schemathesis's examples phase would change
    // this user's password and lock its own logins out.
    let user = crate::helpers::TestUser {
        username: format!(
            "contract{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        password: "a fuzzer's own passphrase 41".to_owned(),
        token: String::new(),
    };
    assert_eq!(
        app.sign_up(&user.username, &user.password).await.status(),
        StatusCode::CREATED
    );

    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/contract/schemathesis.toml");
    // Its cache and reports go to the target folder, not the source tree.
    let workdir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis");
    std::fs::create_dir_all(&workdir).unwrap();
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "3".to_owned());
    let output = tokio::process::Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &app.url("/api/openapi.json")])
        .args(["--exclude-path", "/api/events"])
        .args(["--workers", "2", "--max-time", "100", "--seed", &seed])
        .args(["--output-sanitize", "false"])
        .env("SIGHTLINE_USERNAME", &user.username)
        .env("SIGHTLINE_PASSWORD", &user.password)
        .env("NO_COLOR", "1")
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("could not run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Schemathesis found problems (seed {seed}; rerun with SCHEMATHESIS_SEED):\n{stdout}\n{stderr}"
    );
    // Shown with `-- --nocapture`: what it tested and how much.
    println!("{stdout}");
    // It really ran every phase, and the stateful one followed links.
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(
            stdout.contains(&format!("✅ {phase}")),
            "{phase} did not pass:\n{stdout}"
        );
    }
    assert!(!stdout.contains("No tests were run"), "{stdout}");
    assert!(!stdout.contains("❌"), "{stdout}");
}

// What Schemathesis found on its first runs, kept as plain tests.

/// PostgreSQL text cannot hold U+0000: an order carrying one was answered
/// 500 (the insert failed); it breaks a rule, so 422 with the field, and
/// nothing is written.
#[tokio::test]
async fn an_order_with_u0000_is_refused_with_its_field() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    for (body, field) in [
        (
            serde_json::json!({ "items": [{ "sku": "A\u{0}B", "quantity": 1, "unit_price_cents": 1 }] }),
            "items[0].sku",
        ),
        (
            serde_json::json!({ "items": [{ "sku": "A", "quantity": 1, "unit_price_cents": 1 }], "note": "x\u{0}" }),
            "note",
        ),
    ] {
        let response = app.place_order(&user, &body).await;
        let error =
            crate::helpers::assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid")
                .await;
        assert_eq!(error["field"], field, "{error}");
    }
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
}

/// JSON Schema counts `2.0` as an integer, so the document allows it and
/// generated clients may send it; it was refused as the wrong shape (422).
/// A real fraction still is.
#[tokio::test]
async fn integers_written_with_a_zero_fraction_are_integers() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let response = app
        .place_order(
            &user,
            &serde_json::json!({ "items": [{ "sku": "FLOAT", "quantity": 2.0, "unit_price_cents": 150.0 }] }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["items"][0]["quantity"], 2);
    assert_eq!(order["total_cents"], 300);

    for quantity in [serde_json::json!(1.5), serde_json::json!(1e300)] {
        let response = app
            .place_order(
                &user,
                &serde_json::json!({ "items": [{ "sku": "FLOAT", "quantity": quantity, "unit_price_cents": 1 }] }),
            )
            .await;
        crate::helpers::assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_shape")
            .await;
    }
}

/// The stream's events as a client receives them match the JSON Schema the
/// document gives for each event's `data` (validated by jsonschema-rs, which
/// Schemathesis installs): `ready`, `order-visible` (placed and cancelled),
/// and `reset`.
#[tokio::test]
async fn every_event_of_the_stream_matches_its_schema_in_the_document() {
    use tokio::io::AsyncWriteExt;

    let python = crate::helpers::local_tool("python/bin/python");
    let app = spawn_app().await;
    let user = app.new_user().await;
    let mut events = vec![];
    let (mut stream, _) = app.open_events_ready(&user).await;
    let ready = ready_event(&app, &user).await;
    events.push(ready);
    let order = app.place_simple_order(&user, "SCHEMA").await;
    let id = order["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        if events.len() == 2 {
            assert_eq!(app.cancel_order(&user, &id).await.status(), StatusCode::OK);
        }
        let frame = stream.next_order_visible().await;
        events.push(serde_json::json!({ "event": frame.event, "data": frame.json() }));
    }
    let mut reset = app.open_events(&user, Some("not-a-cursor")).await;
    let frame = reset.next_event().await;
    assert_eq!(frame.event.as_deref(), Some("reset"));
    events.push(serde_json::json!({ "event": frame.event, "data": frame.json() }));

    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/contract/validate_events.py");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for event in &events {
        stdin
            .write_all(format!("{event}\n").as_bytes())
            .await
            .unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches(": ok").count(), 4, "{stdout}");
}

/// The `ready` event of a fresh stream, as `{event, data}`.
async fn ready_event(app: &crate::helpers::TestApp, user: &crate::helpers::TestUser) -> Value {
    let mut stream = app.open_events(user, None).await;
    let frame = stream.next_event().await;
    assert_eq!(frame.event.as_deref(), Some("ready"));
    serde_json::json!({ "event": frame.event, "data": frame.json() })
}

//! `sightline outbox retry --all`, by filter (`--error`, `--parked-after`,
//! `--parked-before`) and `--dry-run`: events parked by a fault that has
//! passed — as an older version parked a write-blocked or closed index's
//! refusals — go back and are delivered, and a dry run changes nothing.

use uuid::Uuid;

use crate::binary::cli;
use crate::direct_writes::{Owner, insert_order, one_item};
use crate::helpers::{TestApp, order_ids, spawn_app};

/// Runs `sightline outbox <args>`; returns (success, stdout, stderr).
async fn outbox(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    cli(&app.settings, &[&["outbox"], args].concat()).await
}

async fn outbox_ok(app: &TestApp, args: &[&str]) -> String {
    let (ok, stdout, stderr) = outbox(app, args).await;
    assert!(ok, "sightline outbox {args:?} failed: {stderr}\n{stdout}");
    stdout
}

/// The outbox ids a retry listing names (its tab-separated lines).
fn listed(stdout: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = stdout
        .lines()
        .filter_map(|l| l.split('\t').next()?.parse().ok())
        .collect();
    ids.sort();
    ids
}

/// Commits an order whose event is already parked with `error`, `ago` (an
/// SQL interval) in the past, as an older version would have left it. In
/// one transaction, so the relay never sees it unparked.
async fn parked_order(
    app: &TestApp,
    owner: &Owner,
    sku: &str,
    error: &str,
    ago: &str,
) -> (Uuid, i64) {
    let id = Uuid::new_v4();
    let mut tx = app.db.begin().await.unwrap();
    let outbox_id = insert_order(&mut tx, owner, id, one_item(sku), 2)
        .await
        .unwrap();
    sqlx::query("UPDATE outbox SET parked = true WHERE id = $1")
        .bind(outbox_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO dead_letters (outbox_id, error, parked_at)
         VALUES ($1, $2, now() - $3::interval)",
    )
    .bind(outbox_id)
    .bind(error)
    .bind(ago)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    (id, outbox_id)
}

async fn parked(app: &TestApp) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM outbox WHERE parked ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

const BLOCKED: &str = r#"{"type":"cluster_block_exception","reason":"index [sightline-orders_v1] blocked by: [FORBIDDEN/8/index write (api)];"}"#;
const CLOSED: &str =
    r#"{"type":"index_closed_exception","reason":"closed","index":"sightline-orders_v1"}"#;
const POISON: &str = r#"{"type":"document_parsing_exception","reason":"failed to parse field [skus.raw] of type [keyword]"}"#;

#[tokio::test]
async fn outbox_retry_puts_back_all_or_what_a_filter_selects_and_a_dry_run_changes_nothing_needs_elasticsearch()
 {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    let owner = Owner {
        id: app.user_id(&user).await,
        username: user.username.clone(),
    };
    let (mut events, _) = app.open_events_ready(&user).await;

    let (blocked_old, blocked_old_id) =
        parked_order(&app, &owner, "BLOCKED-OLD", BLOCKED, "3 hours").await;
    let (blocked_new, blocked_new_id) =
        parked_order(&app, &owner, "BLOCKED-NEW", BLOCKED, "10 minutes").await;
    let (closed, closed_id) = parked_order(&app, &owner, "CLOSED", CLOSED, "10 minutes").await;
    let immense = "X".repeat(40_000);
    let (poison, poison_id) = parked_order(&app, &owner, &immense, POISON, "0 minutes").await;
    let all = vec![blocked_old_id, blocked_new_id, closed_id, poison_id];
    assert_eq!(parked(&app).await, all);

    // Neither an id nor a selection, or both: refused.
    let (ok, _, stderr) = outbox(&app, &["retry"]).await;
    assert!(!ok && stderr.contains("--all"), "{stderr}");
    let (ok, _, _) = outbox(&app, &["retry", &poison_id.to_string(), "--all"]).await;
    assert!(!ok, "an id with --all was accepted");
    let (ok, _, stderr) = outbox(&app, &["retry", "--parked-after", "soon"]).await;
    assert!(!ok && stderr.contains("--parked-after"), "{stderr}");

    // Dry runs list what would go and change nothing.
    let out = outbox_ok(&app, &["retry", "--all", "--dry-run"]).await;
    assert_eq!(listed(&out), all, "{out}");
    assert!(out.contains("would put 4 parked events back"), "{out}");
    let out = outbox_ok(
        &app,
        &[
            "retry",
            "--error",
            "CLUSTER_BLOCK",
            "--parked-after",
            "1h",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(listed(&out), vec![blocked_new_id], "{out}");
    let out = outbox_ok(&app, &["retry", "--parked-before", "1h", "--dry-run"]).await;
    assert_eq!(listed(&out), vec![blocked_old_id], "{out}");
    let out = outbox_ok(&app, &["retry", &poison_id.to_string(), "--dry-run"]).await;
    assert_eq!(listed(&out), vec![poison_id], "{out}");
    assert_eq!(parked(&app).await, all, "a dry run changed something");

    // By error text (any case): both write-block victims go back and are
    // delivered; the others stay parked.
    let out = outbox_ok(&app, &["retry", "--error", "Cluster_Block_Exception"]).await;
    assert_eq!(listed(&out), vec![blocked_old_id, blocked_new_id], "{out}");
    assert!(out.contains("put 2 parked events back"), "{out}");
    let mut visible = vec![
        crate::helpers::visible_id(&events.next_order_visible().await),
        crate::helpers::visible_id(&events.next_order_visible().await),
    ];
    visible.sort();
    let mut expected = vec![blocked_old.to_string(), blocked_new.to_string()];
    expected.sort();
    assert_eq!(visible, expected);

    // By time range: the closed-index victim (parked 10 minutes ago).
    let out = outbox_ok(
        &app,
        &["retry", "--parked-after", "1h", "--parked-before", "5min"],
    )
    .await;
    assert_eq!(listed(&out), vec![closed_id], "{out}");
    let frame = events.next_order_visible().await;
    assert_eq!(crate::helpers::visible_id(&frame), closed.to_string());
    assert_eq!(parked(&app).await, vec![poison_id]);

    // `--all`: the rest goes back; the real poison is refused again and
    // parked again, one more attempt counted, and its owner hears it failed.
    let out = outbox_ok(&app, &["retry", "--all"]).await;
    assert_eq!(listed(&out), vec![poison_id], "{out}");
    let frame = events.next_event().await;
    assert_eq!(frame.event.as_deref(), Some("order-failed"), "{frame:?}");
    assert_eq!(frame.json()["id"], poison.to_string());
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    while app
        .count(&format!(
            "SELECT count(*) FROM dead_letters WHERE outbox_id = {poison_id} AND attempts = 2"
        ))
        .await
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poison was not parked again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(parked(&app).await, vec![poison_id]);
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 1);

    let (_, list) = app.list(&user, "/api/orders?limit=10").await;
    let mut ids = order_ids(&list);
    ids.sort();
    let mut expected = vec![
        blocked_old.to_string(),
        blocked_new.to_string(),
        closed.to_string(),
    ];
    expected.sort();
    assert_eq!(ids, expected);

    // Nothing left to select: a retry by filter says so and succeeds.
    let out = outbox_ok(&app, &["retry", "--error", "index_closed_exception"]).await;
    assert!(out.contains("put 0 parked events back"), "{out}");
}

//! Sessions: an opaque random token, stored only as a SHA-256 hash, presented
//! either as the HttpOnly cookie (browsers) or as `Authorization: Bearer`
//! (API and SSE clients).
//!
//! A session ends at its absolute lifetime (`SESSION_TTL_HOURS`) or after
//! `SESSION_IDLE_MINUTES` unused, whichever comes first. `expires_at` is that
//! effective end: use moves it forward (at most once a minute, never past
//! `absolute_expires_at`), so an idle session is simply an expired row and
//! anything that deletes `expires_at < now()` deletes it too.
//!
//! How a request carries the token (the cookie, the bearer header) and the
//! extractors that find its user are `web::extract::session`'s.

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Settings;

/// Use moves a session's idle end forward only when it would move by more
/// than this: not a write per request.
const IDLE_BUMP_SECS: i64 = 60;

/// The authenticated user of a request.
#[derive(Clone, Debug)]
pub struct CurrentUser {
    pub id: Uuid,
    pub username: String,
    /// How the request authenticated; only cookie requests can be forged
    /// cross-site, so only they get the CSRF check.
    pub via_cookie: bool,
    /// The session's key (the token's hash), to keep per-session state.
    pub session_key: Vec<u8>,
    /// The latest consistency token the no-JS pages stored in this session.
    pub session_consistency_token: Option<String>,
}

pub struct NewSession {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[tracing::instrument(skip(db, settings))]
pub async fn create(db: &PgPool, user_id: Uuid, settings: &Settings) -> anyhow::Result<NewSession> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let now = Utc::now();
    let absolute = now + Duration::hours(settings.session_ttl_hours);
    let idle_end = now + Duration::minutes(settings.session_idle_minutes);
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, expires_at, absolute_expires_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(token_hash(&token))
    .bind(user_id)
    .bind(absolute.min(idle_end))
    .bind(absolute)
    .execute(db)
    .await
    .context("Failed to store the session")?;
    // The client is told the absolute end: the idle end moves with use.
    Ok(NewSession {
        token,
        expires_at: absolute,
    })
}

/// Keeps `consistency_token` in the session (the no-JS read-your-writes flow).
pub async fn remember_consistency_token(
    db: &PgPool,
    user: &CurrentUser,
    consistency_token: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET consistency_token = $2 WHERE token_hash = $1")
        .bind(&user.session_key)
        .bind(consistency_token)
        .execute(db)
        .await?;
    Ok(())
}

/// Ends the session `token` opens. Its key goes out on the session watch's
/// channel in the same transaction, so every instance closes the streams
/// and polls it opened once (and only if) the delete commits.
pub async fn delete(db: &PgPool, token: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let gone: Vec<Vec<u8>> =
        sqlx::query_scalar("DELETE FROM sessions WHERE token_hash = $1 RETURNING token_hash")
            .bind(token_hash(token))
            .fetch_all(&mut *tx)
            .await?;
    announce(&mut tx, &gone).await?;
    tx.commit().await
}

/// Ends every session of `user_id` ("sign out everywhere"), announced as
/// [`delete`] announces one.
pub async fn delete_all(db: &PgPool, user_id: Uuid) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    let ended = end_all_but(&mut tx, user_id, None).await?;
    tx.commit().await?;
    Ok(ended)
}

/// Where sign-outs announce the keys of the sessions they ended (hex); each
/// instance's `session_watch` listens.
pub const ENDED_CHANNEL: &str = "sightline_sessions";

/// Sends the keys of ended sessions on the session watch's channel
/// (comma-separated hex, 100 to a payload: well under PostgreSQL's 8000
/// bytes). A NOTIFY is delivered at commit, and not at all on rollback.
pub async fn announce(conn: &mut sqlx::PgConnection, keys: &[Vec<u8>]) -> sqlx::Result<()> {
    for chunk in keys.chunks(100) {
        let payload = chunk
            .iter()
            .map(|key| key.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(ENDED_CHANNEL)
            .bind(payload)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Of `keys`, the sessions the database still holds: true while open,
/// false once past their end. A key missing from the answer has no row.
pub async fn open_among(
    db: &PgPool,
    keys: &[Vec<u8>],
) -> sqlx::Result<std::collections::HashMap<Vec<u8>, bool>> {
    let rows: Vec<(Vec<u8>, bool)> = sqlx::query_as(
        "SELECT token_hash, expires_at > now() FROM sessions WHERE token_hash = ANY($1)",
    )
    .bind(keys)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().collect())
}

/// How many sessions are past their end (idle or absolute).
pub async fn count_expired(db: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM sessions WHERE expires_at < now()")
        .fetch_one(db)
        .await
}

/// Deletes sessions past their end, `batch` per statement (retention).
/// Returns how many went.
pub async fn delete_expired(db: &PgPool, batch: i64) -> sqlx::Result<i64> {
    let batch = batch.max(1);
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM sessions WHERE token_hash IN (
               SELECT token_hash FROM sessions WHERE expires_at < now() LIMIT $1)",
        )
        .bind(batch)
        .execute(db)
        .await?
        .rows_affected() as i64;
        total += deleted;
        if deleted < batch {
            return Ok(total);
        }
    }
}

/// Ends every session of `user_id` but `keep` (a session's key), inside the
/// caller's transaction, announced as [`delete`] announces one: a password
/// change keeps the session it came through and ends the rest.
pub async fn end_all_but(
    conn: &mut sqlx::PgConnection,
    user_id: Uuid,
    keep: Option<&[u8]>,
) -> Result<u64, sqlx::Error> {
    let gone: Vec<Vec<u8>> = sqlx::query_scalar(
        "DELETE FROM sessions WHERE user_id = $1 AND token_hash IS DISTINCT FROM $2
         RETURNING token_hash",
    )
    .bind(user_id)
    .bind(keep)
    .fetch_all(&mut *conn)
    .await?;
    announce(conn, &gone).await?;
    Ok(gone.len() as u64)
}

type SessionRow = (Uuid, String, Option<String>, bool);

/// The user of the session `token` opens, if it is neither past its end nor
/// idle too long; moves its idle end forward when that is due. `via_cookie`:
/// how the token was presented.
pub async fn lookup(
    db: &PgPool,
    token: &str,
    idle_minutes: i64,
    via_cookie: bool,
) -> Result<Option<CurrentUser>, sqlx::Error> {
    let hash = token_hash(token);
    // `due`: the idle end now wanted differs from the stored one by more than
    // a minute (it is short of it, or the setting was lowered).
    let row: Option<SessionRow> = sqlx::query_as(
        "SELECT u.id, u.username, s.consistency_token,
                abs(extract(epoch FROM
                    LEAST(s.absolute_expires_at, now() + make_interval(mins => $2::int))
                    - s.expires_at))::float8 > $3 AS due
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = $1 AND s.expires_at > now()",
    )
    .bind(&hash)
    .bind(i32::try_from(idle_minutes).unwrap_or(i32::MAX))
    .bind(IDLE_BUMP_SECS as f64)
    .fetch_optional(db)
    .await?;
    let Some((id, username, consistency_token, due)) = row else {
        return Ok(None);
    };
    if due {
        sqlx::query(
            "UPDATE sessions
             SET expires_at = LEAST(absolute_expires_at, now() + make_interval(mins => $2::int))
             WHERE token_hash = $1 AND expires_at > now()",
        )
        .bind(&hash)
        .bind(i32::try_from(idle_minutes).unwrap_or(i32::MAX))
        .execute(db)
        .await?;
    }
    Ok(Some(CurrentUser {
        id,
        username,
        via_cookie,
        session_key: hash,
        session_consistency_token: consistency_token,
    }))
}

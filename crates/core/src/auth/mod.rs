//! Users and sessions: sign-up, login, logout (of one session or all), and
//! changing a password.
//!
//! Login and sign-up are guarded by `throttle` (counted before the password
//! is checked) and by `password::Hashing` (a small bound on hashes at once);
//! a password change checks the current password through the same two, as
//! a login. A new password is 8 to 128 characters and not on
//! `common_passwords`' list. Usernames are unique whatever their case (a
//! unique index on `lower(username)`) and kept as typed at sign-up.
//! Nothing here knows HTTP: the handlers, the cookie and the `CurrentUser`
//! extractor are `web`'s, and failures are [`AuthError`]s.

pub mod common_passwords;
pub mod password;
pub mod session;
pub mod session_watch;
pub mod throttle;

use anyhow::Context;
use std::net::IpAddr;

use serde::Deserialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

pub use session::CurrentUser;

use self::password::Hashing;
use self::throttle::{Refused, Throttle};
use crate::config::Settings;

// A username and password as a client sends them (sign-up and login). A
// plain comment: a doc comment would become the schema's description.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// 3 to 32 of `A-Z a-z 0-9 _ -`.
    #[schema(pattern = "^[A-Za-z0-9_-]{3,32}$", example = "ada")]
    pub username: String,
    /// 8 to 128 characters; at sign-up, not a common password.
    #[schema(min_length = 8, max_length = 128, example = "correct horse battery")]
    pub password: String,
}

// A password change as a client sends it (plain comment: see Credentials).
#[derive(Deserialize, ToSchema)]
pub struct PasswordChange {
    /// The password now; checked (and counted) as a login's.
    #[schema(example = "correct horse battery")]
    pub current_password: String,
    /// 8 to 128 characters, not a common password.
    #[schema(min_length = 8, max_length = 128, example = "a plum kettle at noon")]
    pub new_password: String,
}

/// Why a sign-up or login did not happen.
#[derive(thiserror::Error, Debug)]
pub enum AuthError {
    /// A new username or password breaks a rule (sign-up, password change);
    /// `code` is `invalid` or `common_password`.
    #[error("{message}")]
    Invalid {
        field: &'static str,
        code: &'static str,
        message: &'static str,
    },
    #[error("that username is taken")]
    UsernameTaken,
    #[error("wrong username or password")]
    BadCredentials,
    /// A password change whose current password is wrong.
    #[error("the current password is wrong")]
    WrongCurrentPassword,
    /// Too many attempts for this name or address.
    #[error("too many attempts, try again in {retry_after} s")]
    Throttled { retry_after: u64 },
    /// Every password-hashing permit is taken.
    #[error("the server is busy, try again in a moment")]
    Busy,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What sign-up and login need: the write database, the throttle, the
/// bound on hashes and the session settings.
pub struct Accounts<'a> {
    pub db: &'a PgPool,
    pub throttle: &'a Throttle,
    pub hashing: &'a Hashing,
    pub settings: &'a Settings,
}

/// Whether `name` follows the username rules (and so may become a key of
/// the throttle's tables: at most 32 bytes).
fn valid_username(name: &str) -> bool {
    (3..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn throttled(refused: Refused) -> AuthError {
    refused.limit.count();
    AuthError::Throttled {
        retry_after: refused.retry_after,
    }
}

/// Whether `password` may become one (`field`: where the client sent it).
/// The length is checked first, so at most 128 characters are lowered and
/// looked up.
fn check_new_password(field: &'static str, password: &str) -> Result<(), AuthError> {
    if !(8..=128).contains(&password.chars().count()) {
        return Err(AuthError::Invalid {
            field,
            code: "invalid",
            message: "password must be 8 to 128 characters",
        });
    }
    if common_passwords::is_common(password) {
        return Err(AuthError::Invalid {
            field,
            code: "common_password",
            message: "that password is too common: choose another",
        });
    }
    Ok(())
}

impl Credentials {
    fn validate(&self) -> Result<(), AuthError> {
        if !valid_username(&self.username) {
            return Err(AuthError::Invalid {
                field: "username",
                code: "invalid",
                message: "username must be 3 to 32 characters of A-Z, a-z, 0-9, _ and -",
            });
        }
        check_new_password("password", &self.password)
    }
}

impl Accounts<'_> {
    /// Creates a user; [`AuthError::UsernameTaken`] when the name is taken
    /// in any case (`Ada` when `ada` exists). The name is stored as typed.
    /// Counted per client address (`client`: the address as the limits key
    /// it).
    // The name is logged once it is an account's: what a refused sign-up
    // typed stays out of the logs.
    #[tracing::instrument(skip_all, fields(username = tracing::field::Empty))]
    pub async fn register(
        &self,
        credentials: Credentials,
        client: IpAddr,
    ) -> Result<Uuid, AuthError> {
        credentials.validate()?;
        let permit = self.hashing.try_permit().ok_or(AuthError::Busy)?;
        self.throttle.begin_signup(client).map_err(throttled)?;
        let hash = password::hash(permit, credentials.password).await?;
        let id = Uuid::new_v4();
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, password_hash) VALUES ($1, $2, $3)
             ON CONFLICT ((lower(username))) DO NOTHING",
        )
        .bind(id)
        .bind(&credentials.username)
        .bind(hash)
        .execute(self.db)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(AuthError::UsernameTaken);
        }
        tracing::Span::current().record("username", credentials.username.as_str());
        Ok(id)
    }

    /// Checks credentials and opens a session. The attempt is counted before
    /// the password is checked (and given back if it is right or was never
    /// checked).
    // The name is logged only once the password matched: a failed attempt's
    // "username" may be a password typed into the wrong box.
    #[tracing::instrument(skip_all, fields(username = tracing::field::Empty))]
    pub async fn authenticate(
        &self,
        credentials: Credentials,
        client: IpAddr,
    ) -> Result<session::NewSession, AuthError> {
        // A name that breaks the rules has no account, and must not become a
        // key of the throttle: refused without a hash.
        if !valid_username(&credentials.username) {
            return Err(AuthError::BadCredentials);
        }
        let attempt = self
            .throttle
            .begin_login(&credentials.username, client)
            .map_err(throttled)?;
        let Some(permit) = self.hashing.try_permit() else {
            self.throttle.not_checked(attempt);
            return Err(AuthError::Busy);
        };
        let checked = async {
            let row: Option<(Uuid, String)> =
                // Any case finds the one user (the unique index on lower()).
                sqlx::query_as("SELECT id, password_hash FROM users WHERE lower(username) = lower($1)")
                    .bind(&credentials.username)
                    .fetch_optional(self.db)
                    .await?;
            let (user_id, stored) = row.map_or((None, None), |(id, h)| (Some(id), Some(h)));
            let matches = password::verify(permit, credentials.password, stored).await?;
            Result::<_, AuthError>::Ok(user_id.filter(|_| matches))
        };
        let user_id = match checked.await {
            Ok(Some(user_id)) => {
                self.throttle.succeeded(attempt);
                tracing::Span::current().record("username", credentials.username.as_str());
                user_id
            }
            Ok(None) => {
                self.throttle.failed(attempt);
                return Err(AuthError::BadCredentials);
            }
            Err(e) => {
                self.throttle.not_checked(attempt);
                return Err(e);
            }
        };
        Ok(session::create(self.db, user_id, self.settings)
            .await
            .context("Failed to open a session")?)
    }
    /// Changes the password of the signed-in `user` and ends every other
    /// session of theirs, keeping the one the change came through (those
    /// other sessions may belong to whoever learnt the old password).
    ///
    /// The current password is checked as a login checks it — counted by
    /// the throttle under the user's name and this client's address before
    /// it is verified, under a hashing permit — so this is no way around the
    /// login limits to guess it. The new hash and the end of the other
    /// sessions commit in one transaction.
    #[tracing::instrument(skip_all, fields(username = %user.username))]
    pub async fn change_password(
        &self,
        user: &CurrentUser,
        change: PasswordChange,
        client: IpAddr,
    ) -> Result<(), AuthError> {
        check_new_password("new_password", &change.new_password)?;
        let attempt = self
            .throttle
            .begin_login(&user.username, client)
            .map_err(throttled)?;
        let Some(permit) = self.hashing.try_permit() else {
            self.throttle.not_checked(attempt);
            return Err(AuthError::Busy);
        };
        let changed = async {
            let stored: Option<String> =
                sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
                    .bind(user.id)
                    .fetch_optional(self.db)
                    .await?;
            let Some(new_hash) = password::verify_then_hash(
                permit,
                change.current_password,
                stored.clone(),
                change.new_password,
            )
            .await?
            else {
                return Result::<_, AuthError>::Ok(false);
            };
            let mut tx = self.db.begin().await?;
            // Only over the hash just verified: of two changes racing with
            // the same current password, the second finds it replaced and
            // is refused as a wrong password, rather than both succeeding.
            let updated = sqlx::query(
                "UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3",
            )
            .bind(user.id)
            .bind(new_hash)
            .bind(stored)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                return Ok(false);
            }
            session::end_all_but(&mut tx, user.id, Some(&user.session_key)).await?;
            tx.commit().await?;
            Ok(true)
        };
        match changed.await {
            Ok(true) => {
                self.throttle.succeeded(attempt);
                Ok(())
            }
            Ok(false) => {
                self.throttle.failed(attempt);
                Err(AuthError::WrongCurrentPassword)
            }
            Err(e) => {
                self.throttle.not_checked(attempt);
                Err(e)
            }
        }
    }
}

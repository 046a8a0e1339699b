//! Configuration, read from the environment (and `.env`) or from flags.
//!
//! Every default points at what `scripts/services start` runs, so
//! `cargo run -- serve` works on a machine set up by the scripts.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

#[derive(Args, Clone, Debug)]
pub struct Settings {
    /// Address the HTTP server listens on (port 0 picks a free port).
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:3000")]
    pub bind_addr: SocketAddr,

    /// The write database: users, sessions, orders, outbox and notice log.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://sightline@127.0.0.1:5433/sightline"
    )]
    pub database_url: String,

    /// The read store.
    #[arg(
        long,
        env = "ELASTICSEARCH_URL",
        default_value = "http://127.0.0.1:9200"
    )]
    pub elasticsearch_url: String,

    /// Prefix of every Elasticsearch index and alias this instance uses.
    #[arg(long, env = "INDEX_PREFIX", default_value = "sightline-")]
    pub index_prefix: String,

    /// Most outbox events the relay takes in one batch.
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = 500)]
    pub relay_batch_size: i64,

    /// Most relay batches in flight at once: a commit need not wait for the
    /// batch ahead of it to become searchable before its own batch starts.
    #[arg(long, env = "RELAY_CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub relay_concurrency: u16,

    /// How often the relay looks for work when no notification arrives
    /// (a safety net: commits wake it through LISTEN/NOTIFY).
    #[arg(long, env = "RELAY_POLL_MS", default_value_t = 2000)]
    pub relay_poll_ms: u64,

    /// What wakes the relay between polls: `notify` (a commit's NOTIFY wakes
    /// it at once) or `poll` (ignore NOTIFY; only the `RELAY_POLL_MS` timer —
    /// kept as a knob for comparison, see `scripts/bench`).
    #[arg(long, env = "RELAY_WAKE", value_enum, default_value_t = RelayWake::Notify)]
    pub relay_wake: RelayWake,

    /// How a batch is made searchable before its notices are recorded.
    #[arg(long, env = "REFRESH_MODE", value_enum, default_value_t = RefreshMode::Explicit)]
    pub refresh_mode: RefreshMode,

    /// The index's scheduled refresh interval (Elasticsearch syntax, e.g. `1s`).
    #[arg(long, env = "INDEX_REFRESH_INTERVAL", default_value = "1s")]
    pub index_refresh_interval: String,

    /// Notices buffered per user for live SSE clients; a client that falls
    /// further behind is disconnected and resumes from the notice log.
    #[arg(long, env = "SSE_BUFFER", default_value_t = 256)]
    pub sse_buffer: usize,

    /// Seconds between SSE heartbeat comments.
    #[arg(long, env = "SSE_HEARTBEAT_SECS", default_value_t = 15)]
    pub sse_heartbeat_secs: u64,

    /// After how many milliseconds a still-pending order is shown as `delayed`.
    #[arg(long, env = "LAG_SLO_MS", default_value_t = 5000)]
    pub lag_slo_ms: u64,

    /// How long a login session lasts, in hours.
    #[arg(long, env = "SESSION_TTL_HOURS", default_value_t = 24 * 14)]
    pub session_ttl_hours: i64,

    /// Mark the session cookie `Secure` (set this behind HTTPS).
    #[arg(long, env = "COOKIE_SECURE", default_value_t = false)]
    pub cookie_secure: bool,

    /// `SameSite` of the session cookie: `lax` (default), `strict`, or `none`
    /// (for frontends on another site; `none` always adds `Secure`).
    #[arg(long, env = "COOKIE_SAMESITE", value_enum, default_value_t = SameSite::Lax)]
    pub cookie_samesite: SameSite,

    /// Origins of frontends allowed to call the API with credentials (CORS),
    /// comma-separated and exact (`https://shop.example.com`); empty: no CORS.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_allowed_origins: Vec<String>,

    /// What this instance runs: `web` (HTTP API, pages, SSE, polling),
    /// `relay` and `projector` (the pipeline; with the in-process bus they go
    /// together). Several web instances can share one pipeline.
    #[arg(
        long,
        env = "ROLES",
        value_enum,
        value_delimiter = ',',
        default_value = "web,relay,projector"
    )]
    pub roles: Vec<Role>,

    /// Most PostgreSQL connections in the pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,

    /// Most open HTTP connections on this instance; past it a new connection
    /// gets a bare 503 and is closed, while open ones (streams too) go on.
    /// Unset: sized from the process's open-file limit, leaving room for the
    /// database pool and Elasticsearch (see [`Settings::connection_limit`]).
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Seconds a client gets to send a whole request body once its head has
    /// arrived; a slower one is answered 408 and disconnected.
    #[arg(long, env = "BODY_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_secs: u64,

    /// Open `/api/events` streams one user may hold on this instance (the
    /// browser shares one stream among its tabs); past it → 429.
    #[arg(long, env = "MAX_STREAMS_PER_USER", default_value_t = 32)]
    pub max_streams_per_user: usize,

    /// Open `/api/events` streams from one client address (the peer's: a
    /// forwarded-for header is not trusted); past it → 429.
    #[arg(long, env = "MAX_STREAMS_PER_ADDRESS", default_value_t = 256)]
    pub max_streams_per_address: usize,

    /// Waiting long polls (`visibility?wait=N`, N > 0) one user may hold at once.
    #[arg(long, env = "MAX_POLLS_PER_USER", default_value_t = 32)]
    pub max_polls_per_user: usize,

    /// Waiting long polls from one client address at once.
    #[arg(long, env = "MAX_POLLS_PER_ADDRESS", default_value_t = 256)]
    pub max_polls_per_address: usize,

    /// Open `/status/stream` streams on this instance, everyone together.
    #[arg(long, env = "MAX_STATUS_STREAMS", default_value_t = 32)]
    pub max_status_streams: usize,

    /// When set, `/status`, `/status/stream` and `/metrics` require it, as
    /// `Authorization: Bearer <token>` or `?token=<token>`. `/healthz` and
    /// `/readyz` stay open for load balancers.
    #[arg(long, env = "OPS_TOKEN", hide_env_values = true)]
    pub ops_token: Option<String>,

    /// Writes (`POST /api/orders`, cancels) one user may make in a burst;
    /// the bucket refills at `WRITE_RATE_PER_MIN`. 0 turns the limit off.
    #[arg(long, env = "WRITE_BURST", default_value_t = 60)]
    pub write_burst: u32,

    /// Writes per minute one user may sustain once the burst is spent.
    #[arg(long, env = "WRITE_RATE_PER_MIN", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    pub write_rate_per_min: u32,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Web,
    Relay,
    Projector,
}

/// What wakes the relay to look for new outbox events.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayWake {
    /// LISTEN on the outbox channel (with the safety poll behind it).
    Notify,
    /// Only the poll timer: every commit waits for the next tick.
    Poll,
}

/// The session cookie's `SameSite` attribute.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    /// Sent on cross-site requests too; browsers require `Secure` with it.
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// One allowed CORS origin, as a browser serialises it in `Origin`:
/// `scheme://host[:port]`, lower case, no default port, no path.
/// An empty entry (e.g. `CORS_ALLOWED_ORIGINS=`) stands for nothing.
pub fn parse_origin(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(String::new());
    }
    let bad = || format!("{raw:?} is not an origin like https://app.example.com");
    let url = url::Url::parse(raw).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(bad());
    }
    Ok(url.origin().ascii_serialization())
}

/// How the projector makes a bulk write searchable.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshMode {
    /// Bulk write, then `POST <orders>/_refresh`: searchable as soon as the
    /// refresh returns.
    Explicit,
    /// Bulk write with `refresh=wait_for`: returns after the next scheduled refresh.
    WaitFor,
}

impl Settings {
    /// The settings as the environment gives them, without any flags.
    pub fn from_env() -> anyhow::Result<Self> {
        #[derive(clap::Parser)]
        struct OnlyEnv {
            #[command(flatten)]
            settings: Settings,
        }
        use clap::Parser;
        Ok(OnlyEnv::try_parse_from(["sightline"])?.settings)
    }

    pub fn runs(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The in-process bus hands events straight to the projector, so an
    /// instance runs both or neither.
    pub fn check_roles(&self) -> anyhow::Result<()> {
        if self.roles.is_empty() {
            anyhow::bail!("ROLES names nothing to run (choose from web, relay, projector)");
        }
        if self.runs(Role::Relay) != self.runs(Role::Projector) {
            anyhow::bail!(
                "the in-process bus runs the relay and the projector together: use --roles relay,projector"
            );
        }
        Ok(())
    }

    pub fn relay_poll(&self) -> Duration {
        Duration::from_millis(self.relay_poll_ms)
    }

    pub fn sse_heartbeat(&self) -> Duration {
        Duration::from_secs(self.sse_heartbeat_secs)
    }

    pub fn lag_slo(&self) -> Duration {
        Duration::from_millis(self.lag_slo_ms)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }

    /// `MAX_CONNECTIONS`, or, unset, the open-file limit less what the rest
    /// of the process needs: the database pool, Elasticsearch's connections,
    /// the listener, logs and files (a fixed 128) — never below 16.
    pub fn connection_limit(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let files = crate::web::limits::open_file_limit();
            let reserve = self.database_max_connections as usize + 128;
            files.saturating_sub(reserve).max(16)
        })
    }

    /// The CORS allowlist without empty entries.
    pub fn cors_origins(&self) -> impl Iterator<Item = &str> {
        self.cors_allowed_origins
            .iter()
            .map(String::as_str)
            .filter(|o| !o.is_empty())
    }

    /// Whether `origin` (an `Origin` header's value) is on the CORS allowlist.
    pub fn cors_allows(&self, origin: &str) -> bool {
        self.cors_origins().any(|allowed| allowed == origin)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_origin;

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        assert_eq!(
            parse_origin(" https://Shop.Example.com/ ").unwrap(),
            "https://shop.example.com"
        );
        assert_eq!(
            parse_origin("https://shop.example.com:443").unwrap(),
            "https://shop.example.com"
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:5173").unwrap(),
            "http://127.0.0.1:5173"
        );
        assert_eq!(parse_origin("").unwrap(), "");
        for bad in [
            "shop.example.com",
            "https://shop.example.com/app",
            "https://shop.example.com?x=1",
            "ftp://shop.example.com",
            "*",
            "null",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad} accepted");
        }
    }
}

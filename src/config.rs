//! Configuration, read from the environment (and `.env`) or from flags.
//!
//! Every default points at what `scripts/services start` runs, so
//! `cargo run -- serve` works on a machine set up by the scripts.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::{Args, ValueEnum};
use ipnet::IpNet;

#[derive(Args, Clone)]
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

    /// Where query handlers read: `elasticsearch` (a separate read store fed
    /// by the relay and projector) or `postgres` (a read shape over the same
    /// database: an order is visible, and noticed, the moment it commits;
    /// no relay, no projector, no Elasticsearch needed).
    #[arg(long, env = "READ_STORE", value_enum, default_value_t = ReadStoreKind::Elasticsearch)]
    pub read_store: ReadStoreKind,

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

    /// Days a client may be away and still resume its event stream
    /// completely (`Last-Event-ID`); a cursor whose first missed notice is
    /// older gets `event: reset`. `sightline prune` deletes notices older
    /// than this.
    #[arg(long, env = "NOTICE_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub notice_retention_days: u32,

    /// After how many milliseconds a still-pending order is shown as `delayed`.
    #[arg(long, env = "LAG_SLO_MS", default_value_t = 5000)]
    pub lag_slo_ms: u64,

    /// How long a login session lasts, in hours.
    #[arg(long, env = "SESSION_TTL_HOURS", default_value_t = 24 * 14)]
    pub session_ttl_hours: i64,

    /// Mark the session cookie `Secure` and name it `__Host-…` (the
    /// default). Browsers keep such a cookie over HTTPS and on
    /// `http://localhost` / `http://127.0.0.1`; set `false` only to serve
    /// plain HTTP on another host (start-up then warns).
    #[arg(
        long,
        env = "COOKIE_SECURE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
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

    /// Most PostgreSQL connections in the web's pool (HTTP handlers). The
    /// pipeline has a pool of its own: see `PIPELINE_DATABASE_MAX_CONNECTIONS`.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,

    /// The longest one statement of a request may run on the web's pool, in
    /// milliseconds (PostgreSQL's `statement_timeout`); past it the request
    /// answers 503 `busy` and its connection is free again. 0 turns it off.
    /// The pipeline's pool and migrations have none.
    #[arg(long, env = "WEB_STATEMENT_TIMEOUT_MS", default_value_t = 5000)]
    pub web_statement_timeout_ms: u64,

    /// Proxies whose `X-Forwarded-For` / `Forwarded` headers are believed,
    /// comma-separated addresses or CIDR ranges (`10.0.0.0/8,127.0.0.1`).
    /// Empty (the default): the socket's peer is the client, whatever the
    /// headers say.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_trusted_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Failed logins for one username from one client address that are
    /// answered at once; after them each attempt waits a delay that doubles
    /// from 1 s (the first attempts of a burst are counted before the
    /// password is checked, so parallel guesses get no more).
    #[arg(long, env = "LOGIN_FREE_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_free_failures: u32,

    /// The longest delay between attempts for one username from one address.
    #[arg(long, env = "LOGIN_MAX_DELAY_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    pub login_max_delay_secs: u64,

    /// Login attempts one client address may make at once, over all
    /// usernames (against password spraying); successful ones are given back.
    #[arg(long, env = "LOGIN_ADDRESS_BURST", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_address_burst: u32,

    /// How fast an address's login attempts come back, per hour.
    #[arg(long, env = "LOGIN_ADDRESS_PER_HOUR", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_address_per_hour: u32,

    /// Failed login attempts one username may take at once from addresses
    /// that have not logged into it before (guessing spread over many
    /// addresses); an address the user logged in from is not held by it.
    #[arg(long, env = "LOGIN_USER_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_user_burst: u32,

    /// How fast a username's attempts from new addresses come back, per hour.
    #[arg(long, env = "LOGIN_USER_PER_HOUR", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_user_per_hour: u32,

    /// Sign-ups one client address may make at once.
    #[arg(long, env = "SIGNUP_ADDRESS_BURST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub signup_address_burst: u32,

    /// How fast an address's sign-ups come back, per hour.
    #[arg(long, env = "SIGNUP_ADDRESS_PER_HOUR", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub signup_address_per_hour: u32,

    /// Most keys each throttle table holds (per username, per address, per
    /// both, per sign-up address); past it the least recently used go first.
    #[arg(long, env = "THROTTLE_MAX_KEYS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub throttle_max_keys: u64,

    /// Password hashes (argon2, ~19 MiB and a blocking thread each) computed
    /// at once; a login or sign-up that finds them all busy is answered 503
    /// with `Retry-After` at once. 0: twice the number of CPU cores.
    #[arg(long, env = "HASH_CONCURRENCY", default_value_t = 0)]
    pub hash_concurrency: usize,

    /// Minutes a session may go unused before it ends (beside its absolute
    /// lifetime, `SESSION_TTL_HOURS`). 12 hours: ASVS 3.3.2's bound at level 2.
    #[arg(long, env = "SESSION_IDLE_MINUTES", default_value_t = 12 * 60, value_parser = clap::value_parser!(i64).range(1..))]
    pub session_idle_minutes: i64,

    /// Most PostgreSQL connections in the pipeline's pool (relay, projector,
    /// notice hub, lag monitor), apart from the web's, so a burst of requests
    /// cannot hold up notices. 0 sizes it to what the pipeline can use at
    /// once (see `Settings::pipeline_pool_needs`); fewer is refused, as the
    /// relay's batches could then starve each other.
    #[arg(long, env = "PIPELINE_DATABASE_MAX_CONNECTIONS", default_value_t = 0)]
    pub pipeline_database_max_connections: u32,
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

    /// Write requests (every method but GET/HEAD/OPTIONS) this instance
    /// works on at once; 0 (the default): three quarters of
    /// `DATABASE_MAX_CONNECTIONS`, so reads and stream set-ups always find a
    /// connection. See `web::admission`.
    #[arg(long, env = "WRITE_CONCURRENCY", default_value_t = 0)]
    pub write_concurrency: u32,

    /// Write requests that may wait for a turn; past that a write is refused
    /// at once with 503 `busy` and `Retry-After`. 0 (the default): 64 per
    /// turn.
    #[arg(long, env = "WRITE_QUEUE", default_value_t = 0)]
    pub write_queue: u32,

    /// The longest a write waits for a turn before it is refused (503
    /// `busy`), in milliseconds. Under the pool's 3 s acquire timeout, so a
    /// write admitted is one the pool still serves.
    #[arg(long, env = "WRITE_QUEUE_WAIT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub write_queue_wait_ms: u64,

    /// The bus between the relay and the projectors: `inprocess` (one
    /// machine: the relay hands batches straight to the projector in the
    /// same process) or `nats` (NATS JetStream: relay and projectors run in
    /// any processes; see README "Scaling out").
    #[arg(long, env = "BUS", value_enum, default_value_t = BusKind::Inprocess)]
    pub bus: BusKind,

    /// With `BUS=nats`: the cluster's client URLs, comma-separated (every
    /// node, so the client can fail over).
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"
    )]
    pub nats_url: String,

    /// With `BUS=nats`: the JetStream stream the relay publishes to (created
    /// at start if missing); its subjects are `<name in lower case>.>`, one
    /// subject per order.
    #[arg(long, env = "NATS_STREAM", default_value = "ORDERS")]
    pub nats_stream: String,

    /// With `BUS=nats`: how long the stream keeps an event (a new consumer
    /// can replay that far back; `sightline rebuild` replays the outbox).
    #[arg(long, env = "NATS_MAX_AGE_HOURS", default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..))]
    pub nats_max_age_hours: u64,

    /// With `BUS=nats`: the projectors' shared durable consumer.
    #[arg(long, env = "NATS_CONSUMER", default_value = "orders-read")]
    pub nats_consumer: String,

    /// With `BUS=nats`: how long a delivered event may go unacknowledged
    /// before it is delivered again (to any projector). A projector working
    /// on a long batch extends it with progress acks.
    #[arg(long, env = "NATS_ACK_WAIT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub nats_ack_wait_secs: u64,

    /// With `BUS=nats`: on its this-many-th delivery without an
    /// acknowledgement (projectors crashed or hung on it) an event is parked
    /// in the dead letters and its owner gets `order-failed`. Passing
    /// failures (Elasticsearch down) do not count: the projector holds the
    /// batch and retries it.
    #[arg(long, env = "NATS_MAX_DELIVER", default_value_t = 5, value_parser = clap::value_parser!(i64).range(2..))]
    pub nats_max_deliver: i64,

    /// With `BUS=nats`: most events delivered to the projectors and not yet
    /// acknowledged, across all of them.
    #[arg(long, env = "NATS_MAX_ACK_PENDING", default_value_t = 2000, value_parser = clap::value_parser!(i64).range(1..))]
    pub nats_max_ack_pending: i64,
}

/// Which bus carries events from the relay to the projectors.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusKind {
    Inprocess,
    Nats,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Web,
    Relay,
    Projector,
}

/// Which store answers the query handlers (`READ_STORE`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStoreKind {
    /// Elasticsearch, fed through the outbox, relay and projector.
    Elasticsearch,
    /// The same PostgreSQL database, through the read side's own shape.
    Postgres,
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
    /// instance runs both or neither; with NATS each runs on its own.
    pub fn check_roles(&self) -> anyhow::Result<()> {
        if self.roles.is_empty() {
            anyhow::bail!("ROLES names nothing to run (choose from web, relay, projector)");
        }
        if self.bus == BusKind::Inprocess && self.runs(Role::Relay) != self.runs(Role::Projector) {
            anyhow::bail!(
                "the in-process bus runs the relay and the projector together: use --roles relay,projector"
            );
        }
        Ok(())
    }

    pub fn nats_ack_wait(&self) -> Duration {
        Duration::from_secs(self.nats_ack_wait_secs)
    }

    pub fn relay_poll(&self) -> Duration {
        Duration::from_millis(self.relay_poll_ms)
    }

    pub fn sse_heartbeat(&self) -> Duration {
        Duration::from_secs(self.sse_heartbeat_secs)
    }

    /// How long a resume is promised to be complete (`NOTICE_RETENTION_DAYS`).
    pub fn notice_retention(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.notice_retention_days))
    }

    pub fn lag_slo(&self) -> Duration {
        Duration::from_millis(self.lag_slo_ms)
    }

    /// How many password hashes may run at once.
    pub fn hash_permits(&self) -> usize {
        if self.hash_concurrency > 0 {
            return self.hash_concurrency;
        }
        2 * std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Whether the session cookie carries `Secure` (and so the `__Host-`
    /// prefix): asked for, or implied by `SameSite=None`.
    pub fn cookie_is_secure(&self) -> bool {
        self.cookie_secure || self.cookie_samesite == SameSite::None
    }

    /// The most connections the pipeline's pool is ever asked for at once:
    /// two per relay batch in flight (its claim transaction, held to the
    /// end, and the projector's statement of the moment) and the relay's
    /// LISTEN; the notice hub's LISTEN and catch-up read (on web instances);
    /// the lag monitor's query.
    pub fn pipeline_pool_needs(&self) -> u32 {
        let relay = if self.runs(Role::Relay) {
            2 * u32::from(self.relay_concurrency) + 1
        } else {
            0
        };
        let hub = if self.runs(Role::Web) { 2 } else { 0 };
        // With NATS the projector runs apart from the relay: the batch's
        // share of the rebuild lock, its statement of the moment and the
        // transaction that parks dead letters or marks it published.
        let projector = if self.bus == BusKind::Nats && self.runs(Role::Projector) {
            3
        } else {
            0
        };
        relay + hub + projector + 1
    }

    /// The pipeline pool's size: `PIPELINE_DATABASE_MAX_CONNECTIONS`, or
    /// what the pipeline needs when that is 0.
    pub fn pipeline_pool_size(&self) -> anyhow::Result<u32> {
        let needs = self.pipeline_pool_needs();
        match self.pipeline_database_max_connections {
            0 => Ok(needs),
            n if n < needs => anyhow::bail!(
                "PIPELINE_DATABASE_MAX_CONNECTIONS={n} is too few: with RELAY_CONCURRENCY={} and ROLES={} the pipeline uses up to {needs} connections at once (leave it at 0 to size it so)",
                self.relay_concurrency,
                self.roles
                    .iter()
                    .map(|r| format!("{r:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            n => Ok(n),
        }
    }

    /// `WRITE_CONCURRENCY`, or three quarters of the web pool (at least 1).
    pub fn write_concurrency(&self) -> usize {
        match self.write_concurrency {
            0 => (self.database_max_connections as usize * 3 / 4).max(1),
            n => n as usize,
        }
    }

    /// `WRITE_QUEUE`, or 64 waiting per turn: a bound on memory, not the
    /// working limit — that is the wait (`WRITE_QUEUE_WAIT_MS`), since how
    /// many may wait a second depends on how fast writes commit.
    pub fn write_queue(&self) -> usize {
        match self.write_queue {
            0 => self.write_concurrency() * 64,
            n => n as usize,
        }
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }

    /// `MAX_CONNECTIONS`, or, unset, the open-file limit less what the rest
    /// of the process needs: both database pools, Elasticsearch's connections,
    /// the listener, logs and files (a fixed 128) — never below 16.
    pub fn connection_limit(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let files = open_file_limit();
            let pipeline = self
                .pipeline_pool_size()
                .unwrap_or_else(|_| self.pipeline_pool_needs());
            let reserve = (self.database_max_connections + pipeline) as usize + 128;
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

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`: a URL
/// as it may appear in a log line or an error (a URL that does not parse is
/// hidden whole: it might still hold a password).
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

/// `text` (an error message, say) with the password of `url` masked, in
/// case the error quoted the URL it failed on.
pub fn redact_in(text: &str, url: &str) -> String {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    {
        Some(password) if !password.is_empty() => text.replace(&password, "***"),
        _ => text.to_owned(),
    }
}

/// Written out by hand so that the connection URLs' passwords never reach a
/// log line through `{:?}` (e.g. a `tracing::instrument` that records the
/// settings). Fields added later show up once listed here.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("bind_addr", &self.bind_addr)
            .field("database_url", &redact_url(&self.database_url))
            .field("elasticsearch_url", &redact_url(&self.elasticsearch_url))
            .field("index_prefix", &self.index_prefix)
            .field("read_store", &self.read_store)
            .field("relay_batch_size", &self.relay_batch_size)
            .field("relay_concurrency", &self.relay_concurrency)
            .field("relay_poll_ms", &self.relay_poll_ms)
            .field("relay_wake", &self.relay_wake)
            .field("refresh_mode", &self.refresh_mode)
            .field("index_refresh_interval", &self.index_refresh_interval)
            .field("sse_buffer", &self.sse_buffer)
            .field("sse_heartbeat_secs", &self.sse_heartbeat_secs)
            .field("lag_slo_ms", &self.lag_slo_ms)
            .field("session_ttl_hours", &self.session_ttl_hours)
            .field("session_idle_minutes", &self.session_idle_minutes)
            .field("cookie_secure", &self.cookie_secure)
            .field("cookie_samesite", &self.cookie_samesite)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("roles", &self.roles)
            .field("database_max_connections", &self.database_max_connections)
            .field(
                "pipeline_database_max_connections",
                &self.pipeline_database_max_connections,
            )
            .field("trusted_proxies", &self.trusted_proxies)
            .field("login_free_failures", &self.login_free_failures)
            .field("login_max_delay_secs", &self.login_max_delay_secs)
            .field("login_address_burst", &self.login_address_burst)
            .field("login_address_per_hour", &self.login_address_per_hour)
            .field("login_user_burst", &self.login_user_burst)
            .field("login_user_per_hour", &self.login_user_per_hour)
            .field("signup_address_burst", &self.signup_address_burst)
            .field("signup_address_per_hour", &self.signup_address_per_hour)
            .field("throttle_max_keys", &self.throttle_max_keys)
            .field("hash_concurrency", &self.hash_concurrency)
            .field("bus", &self.bus)
            .field("nats_url", &redact_url(&self.nats_url))
            .field("nats_stream", &self.nats_stream)
            .field("nats_consumer", &self.nats_consumer)
            .finish_non_exhaustive()
    }
}

/// The process's soft limit on open files (`/proc/self/limits`), or 1024
/// where that cannot be read.
pub fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(1024)
}

/// Parses one `TRUSTED_PROXIES` entry: an address or a CIDR range. An empty
/// entry (`TRUSTED_PROXIES=`) stands for nothing: it becomes `::/128`, the
/// unspecified address, which is never a connection's peer.
pub fn parse_trusted_proxy(raw: &str) -> Result<IpNet, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(IpNet::from(IpAddr::from(Ipv6Addr::UNSPECIFIED)));
    }
    raw.parse::<IpNet>()
        .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{raw:?} is not an address or a CIDR range like 10.0.0.0/8"))
}

#[cfg(test)]
mod tests {
    use super::{Role, Settings, parse_origin, redact_url};

    #[test]
    fn passwords_in_urls_never_reach_debug_output() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            redact_url("https://elastic:hunter2@es.example:9200"),
            "https://elastic:***@es.example:9200/"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9200"),
            "http://127.0.0.1:9200/"
        );
        assert_eq!(redact_url("::not a url s3cret"), "<unparsable URL>");

        let mut settings = super::Settings::from_env().unwrap();
        settings.database_url = "postgres://app:s3cret@db/x".to_owned();
        settings.elasticsearch_url = "http://elastic:hunter2@es:9200".to_owned();
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("hunter2"),
            "{debug}"
        );
        assert!(debug.contains("app:***@db"), "{debug}");
    }

    #[test]
    fn relay_and_projector_run_apart_only_with_a_distributed_bus() {
        let mut settings = Settings::from_env().unwrap();
        settings.bus = super::BusKind::Inprocess;
        for roles in [vec![Role::Relay], vec![Role::Web, Role::Projector]] {
            settings.roles = roles;
            let refused = settings.check_roles().unwrap_err().to_string();
            assert!(refused.contains("relay,projector"), "{refused}");
        }
        settings.bus = super::BusKind::Nats;
        for roles in [
            vec![Role::Relay],
            vec![Role::Projector],
            vec![Role::Web, Role::Relay],
        ] {
            settings.roles = roles;
            settings.check_roles().unwrap();
        }
        // A projector of its own: its batch's rebuild-lock share, its
        // statement, the park/mark transaction; + the monitor.
        settings.roles = vec![Role::Projector];
        settings.pipeline_database_max_connections = 0;
        assert_eq!(settings.pipeline_pool_size().unwrap(), 3 + 1);
    }

    #[test]
    fn the_pipeline_pool_grows_with_the_relay_and_refuses_too_few() {
        let mut settings = Settings::from_env().unwrap();
        settings.pipeline_database_max_connections = 0;
        settings.roles = vec![Role::Web, Role::Relay, Role::Projector];
        settings.relay_concurrency = 1;
        assert_eq!(settings.pipeline_pool_size().unwrap(), 2 + 1 + 2 + 1);
        settings.relay_concurrency = 16;
        assert_eq!(settings.pipeline_pool_size().unwrap(), 32 + 1 + 2 + 1);
        settings.roles = vec![Role::Web];
        assert_eq!(settings.pipeline_pool_size().unwrap(), 3);
        settings.roles = vec![Role::Relay, Role::Projector];
        assert_eq!(settings.pipeline_pool_size().unwrap(), 32 + 1 + 1);

        settings.pipeline_database_max_connections = 50;
        assert_eq!(settings.pipeline_pool_size().unwrap(), 50);
        settings.pipeline_database_max_connections = 20;
        let refused = settings.pipeline_pool_size().unwrap_err().to_string();
        assert!(refused.contains("RELAY_CONCURRENCY=16"), "{refused}");
        assert!(refused.contains("up to 34"), "{refused}");
    }

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

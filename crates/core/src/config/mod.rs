//! Configuration, read from the environment (and `.env`) or from flags.
//!
//! Every default points at what `scripts/services start` runs, so
//! `cargo run -- serve` works on a machine set up by the scripts.
//!
//! This file is the list of settings, [`Settings`], in its groups: one
//! cohesive thing, long because each setting carries its documentation
//! (which `serve --help` prints). Beside it: [`values`] (the kinds of value
//! and their parsers), [`derived`] (what the settings imply, the start-up
//! checks) and [`redact`] (passwords out of URLs).

use std::net::SocketAddr;

use clap::Args;

mod derived;
mod redact;
mod values;

pub use redact::{redact_in, redact_url};
pub use values::*;

// The groups of settings, in the order `serve --help` and
// docs/CONFIGURATION.md list them: each setting names its group with
// `help_heading`, and the document's sections carry the same names, each
// with its group's sentence (tests/api/operators.rs checks that every
// setting sits in the section its heading names).
/// HTTP: where it listens, what this instance runs, and what browsers and the proxies in front of it are trusted with.
pub const SERVER: &str = "Server";
/// Where the data lives: the write database and its two pools, and the read store.
pub const STORES: &str = "Database and read store";
/// How an order travels from the outbox to search and to its notice: the relay, the bus, the projector, the notice log.
pub const PIPELINE: &str = "Pipeline";
/// What one client, one address or one account can make an instance do (see docs/LIMITS.md and docs/SECURITY.md).
pub const LIMITS: &str = "Limits";
/// What operators watch and who may watch it: the lag SLO and the operations endpoints.
pub const OPERATIONS: &str = "Operations";

#[derive(Args, Clone)]
pub struct Settings {
    // ---- Server (SERVER) ----
    /// Address the HTTP server listens on (port 0 picks a free port).
    #[arg(long, help_heading = SERVER, env = "BIND_ADDR", default_value = "127.0.0.1:3000")]
    pub bind_addr: SocketAddr,

    /// What this instance runs: `web` (HTTP API, pages, SSE, polling),
    /// `relay` and `projector` (the pipeline; with the in-process bus they go
    /// together). Several web instances can share one pipeline.
    #[arg(
        long, help_heading = SERVER,
        env = "ROLES",
        value_enum,
        value_delimiter = ',',
        default_value = "web,relay,projector"
    )]
    pub roles: Vec<Role>,

    /// Mark the session cookie `Secure` and name it `__Host-…` (the
    /// default). Browsers keep such a cookie over HTTPS and on
    /// `http://localhost` / `http://127.0.0.1`; set `false` only to serve
    /// plain HTTP on another host (start-up then warns).
    #[arg(
        long, help_heading = SERVER,
        env = "COOKIE_SECURE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub cookie_secure: bool,

    /// `SameSite` of the session cookie: `lax` (default), `strict`, or `none`
    /// (for frontends on another site; `none` always adds `Secure`).
    #[arg(long, help_heading = SERVER, env = "COOKIE_SAMESITE", value_enum, default_value_t = SameSite::Lax)]
    pub cookie_samesite: SameSite,

    /// Origins of frontends allowed to call the API with credentials (CORS),
    /// comma-separated and exact (`https://shop.example.com`); empty: no CORS.
    #[arg(long, help_heading = SERVER, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_allowed_origins: Vec<String>,

    /// Proxies whose `X-Forwarded-For` / `Forwarded` headers are believed,
    /// comma-separated addresses or CIDR ranges (`10.0.0.0/8,127.0.0.1`).
    /// Empty (the default): the socket's peer is the client, whatever the
    /// headers say.
    #[arg(long, help_heading = SERVER, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_trusted_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// How long a login session lasts, in hours.
    #[arg(long, help_heading = SERVER, env = "SESSION_TTL_HOURS", default_value_t = 24 * 14)]
    pub session_ttl_hours: i64,

    /// Minutes a session may go unused before it ends (beside its absolute
    /// lifetime, `SESSION_TTL_HOURS`). 12 hours: ASVS 3.3.2's bound at level 2.
    #[arg(long, help_heading = SERVER, env = "SESSION_IDLE_MINUTES", default_value_t = 12 * 60, value_parser = clap::value_parser!(i64).range(1..))]
    pub session_idle_minutes: i64,

    /// Notices buffered per user for live SSE clients; a client that falls
    /// further behind is disconnected and resumes from the notice log.
    #[arg(long, help_heading = SERVER, env = "SSE_BUFFER", default_value_t = 256)]
    pub sse_buffer: usize,

    /// Seconds between SSE heartbeat comments.
    #[arg(long, help_heading = SERVER, env = "SSE_HEARTBEAT_SECS", default_value_t = 15)]
    pub sse_heartbeat_secs: u64,

    // ---- Database and read store (STORES) ----
    /// The write database: users, sessions, orders, outbox and notice log.
    #[arg(
        long, help_heading = STORES,
        env = "DATABASE_URL",
        default_value = "postgres://sightline@127.0.0.1:5433/sightline"
    )]
    pub database_url: String,

    /// Most PostgreSQL connections in the web's pool (HTTP handlers). The
    /// pipeline has a pool of its own: see `PIPELINE_DATABASE_MAX_CONNECTIONS`.
    #[arg(long, help_heading = STORES, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,

    /// The longest one statement of a request may run on the web's pool, in
    /// milliseconds (PostgreSQL's `statement_timeout`); past it the request
    /// answers 503 `busy` and its connection is free again. 0 turns it off.
    /// The pipeline's pool and migrations have none.
    #[arg(long, help_heading = STORES, env = "WEB_STATEMENT_TIMEOUT_MS", default_value_t = 5000)]
    pub web_statement_timeout_ms: u64,

    /// Most PostgreSQL connections in the pipeline's pool (relay, projector,
    /// notice hub, lag monitor), apart from the web's, so a burst of requests
    /// cannot hold up notices. 0 sizes it to what the pipeline can use at
    /// once (see `Settings::pipeline_pool_needs`); fewer is refused, as the
    /// relay's batches could then starve each other.
    #[arg(long, help_heading = STORES, env = "PIPELINE_DATABASE_MAX_CONNECTIONS", default_value_t = 0)]
    pub pipeline_database_max_connections: u32,

    /// Where query handlers read: `elasticsearch` (a separate read store fed
    /// by the relay and projector) or `postgres` (a read shape over the same
    /// database: an order is visible, and noticed, the moment it commits;
    /// no relay, no projector, no Elasticsearch needed).
    #[arg(long, help_heading = STORES, env = "READ_STORE", value_enum, default_value_t = ReadStoreKind::Elasticsearch)]
    pub read_store: ReadStoreKind,

    /// The read store.
    #[arg(
        long, help_heading = STORES,
        env = "ELASTICSEARCH_URL",
        default_value = "http://127.0.0.1:9200"
    )]
    pub elasticsearch_url: String,

    /// Prefix of every Elasticsearch index and alias this instance uses.
    #[arg(long, help_heading = STORES, env = "INDEX_PREFIX", default_value = "sightline-")]
    pub index_prefix: String,

    /// The index's scheduled refresh interval (Elasticsearch syntax, e.g. `1s`).
    #[arg(long, help_heading = STORES, env = "INDEX_REFRESH_INTERVAL", default_value = "1s")]
    pub index_refresh_interval: String,

    // ---- Pipeline (PIPELINE) ----
    /// Most outbox events the relay takes in one batch.
    #[arg(long, help_heading = PIPELINE, env = "RELAY_BATCH_SIZE", default_value_t = 500)]
    pub relay_batch_size: i64,

    /// Most relay batches in flight at once: a commit need not wait for the
    /// batch ahead of it to become searchable before its own batch starts.
    #[arg(long, help_heading = PIPELINE, env = "RELAY_CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub relay_concurrency: u16,

    /// How often the relay looks for work when no notification arrives
    /// (a safety net: commits wake it through LISTEN/NOTIFY).
    #[arg(long, help_heading = PIPELINE, env = "RELAY_POLL_MS", default_value_t = 2000)]
    pub relay_poll_ms: u64,

    /// What wakes the relay between polls: `notify` (a commit's NOTIFY wakes
    /// it at once) or `poll` (ignore NOTIFY; only the `RELAY_POLL_MS` timer —
    /// kept as a knob for comparison, see `scripts/bench`).
    #[arg(long, help_heading = PIPELINE, env = "RELAY_WAKE", value_enum, default_value_t = RelayWake::Notify)]
    pub relay_wake: RelayWake,

    /// How a batch is made searchable before its notices are recorded.
    #[arg(long, help_heading = PIPELINE, env = "REFRESH_MODE", value_enum, default_value_t = RefreshMode::Explicit)]
    pub refresh_mode: RefreshMode,

    /// Days a client may be away and still resume its event stream
    /// completely (`Last-Event-ID`); a cursor whose first missed notice is
    /// older gets `event: reset`. `sightline prune` deletes notices older
    /// than this.
    #[arg(long, help_heading = PIPELINE, env = "NOTICE_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub notice_retention_days: u32,

    /// Record every order's journey (the time of each pipeline stage, on
    /// the rows the pipeline writes anyway, and when each notice was first
    /// sent): `GET /api/orders/{id}/journey`, `sightline journey`, the
    /// slowest journeys on `/status`. `false` turns it off (the benchmark
    /// measures its cost that way); journeys then stop at `committed` and
    /// `noticed`.
    #[arg(long, help_heading = PIPELINE, env = "RECORD_JOURNEYS", default_value_t = true, action = clap::ArgAction::Set)]
    pub record_journeys: bool,

    /// The bus between the relay and the projectors: `inprocess` (one
    /// machine: the relay hands batches straight to the projector in the
    /// same process) or `nats` (NATS JetStream: relay and projectors run in
    /// any processes; see docs/OPERATIONS.md, *Scaling out*).
    #[arg(long, help_heading = PIPELINE, env = "BUS", value_enum, default_value_t = BusKind::Inprocess)]
    pub bus: BusKind,

    /// With `BUS=nats`: the cluster's client URLs, comma-separated (every
    /// node, so the client can fail over).
    #[arg(
        long, help_heading = PIPELINE,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"
    )]
    pub nats_url: String,

    /// With `BUS=nats`: the JetStream stream the relay publishes to (created
    /// at start if missing); its subjects are `<name in lower case>.>`, one
    /// subject per order.
    #[arg(long, help_heading = PIPELINE, env = "NATS_STREAM", default_value = "ORDERS")]
    pub nats_stream: String,

    /// With `BUS=nats`: how long the stream keeps an event (a new consumer
    /// can replay that far back; `sightline rebuild` replays the outbox).
    #[arg(long, help_heading = PIPELINE, env = "NATS_MAX_AGE_HOURS", default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..))]
    pub nats_max_age_hours: u64,

    /// With `BUS=nats`: the projectors' shared durable consumer.
    #[arg(long, help_heading = PIPELINE, env = "NATS_CONSUMER", default_value = "orders-read")]
    pub nats_consumer: String,

    /// With `BUS=nats`: how long a delivered event may go unacknowledged
    /// before it is delivered again (to any projector). A projector working
    /// on a long batch extends it with progress acks.
    #[arg(long, help_heading = PIPELINE, env = "NATS_ACK_WAIT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub nats_ack_wait_secs: u64,

    /// With `BUS=nats`: on its this-many-th delivery without an
    /// acknowledgement (projectors crashed or hung on it) an event is parked
    /// in the dead letters and its owner gets `order-failed`. Passing
    /// failures (Elasticsearch down) do not count: the projector holds the
    /// batch and retries it.
    #[arg(long, help_heading = PIPELINE, env = "NATS_MAX_DELIVER", default_value_t = 5, value_parser = clap::value_parser!(i64).range(2..))]
    pub nats_max_deliver: i64,

    /// With `BUS=nats`: most events delivered to the projectors and not yet
    /// acknowledged, across all of them.
    #[arg(long, help_heading = PIPELINE, env = "NATS_MAX_ACK_PENDING", default_value_t = 2000, value_parser = clap::value_parser!(i64).range(1..))]
    pub nats_max_ack_pending: i64,

    /// With `BUS=nats`: batches one projector process works on at once. More
    /// than one: an event arriving while a batch is being projected starts
    /// its own batch at once (sharing that batch's refresh when they meet)
    /// instead of waiting for it to end — smaller batches, more refreshes,
    /// worth it only where Elasticsearch has room to spare (docs/SCALING.md).
    #[arg(long, help_heading = PIPELINE, env = "PROJECTOR_CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub projector_concurrency: u16,

    // ---- Limits (LIMITS) ----
    /// Most open HTTP connections on this instance; past it a new connection
    /// gets a bare 503 and is closed, while open ones (streams too) go on.
    /// Unset: sized from the process's open-file limit, leaving room for the
    /// database pool and Elasticsearch (see [`Settings::connection_limit`]).
    #[arg(long, help_heading = LIMITS, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most open HTTP connections from one client address (the TCP peer;
    /// IPv6 by /64), so one address cannot hold every place of
    /// `MAX_CONNECTIONS` with idle connections; past it that address's new
    /// connection gets the same 503. Unset: a tenth of the connection limit,
    /// at least 64 (see [`Settings::connection_limit_per_address`]).
    #[arg(long, help_heading = LIMITS, env = "MAX_CONNECTIONS_PER_ADDRESS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_address: Option<u64>,

    /// Seconds a client gets to send a whole request body once its head has
    /// arrived; a slower one is answered 408 and disconnected.
    #[arg(long, help_heading = LIMITS, env = "BODY_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_secs: u64,

    /// Open `/api/events` streams one user may hold on this instance (the
    /// browser shares one stream among its tabs); past it → 429.
    #[arg(long, help_heading = LIMITS, env = "MAX_STREAMS_PER_USER", default_value_t = 32)]
    pub max_streams_per_user: usize,

    /// Open `/api/events` streams from one client address (the peer's: a
    /// forwarded-for header is not trusted); past it → 429.
    #[arg(long, help_heading = LIMITS, env = "MAX_STREAMS_PER_ADDRESS", default_value_t = 256)]
    pub max_streams_per_address: usize,

    /// Waiting long polls (`visibility?wait=N`, N > 0) one user may hold at once.
    #[arg(long, help_heading = LIMITS, env = "MAX_POLLS_PER_USER", default_value_t = 32)]
    pub max_polls_per_user: usize,

    /// Waiting long polls from one client address at once.
    #[arg(long, help_heading = LIMITS, env = "MAX_POLLS_PER_ADDRESS", default_value_t = 256)]
    pub max_polls_per_address: usize,

    /// Open `/status/stream` streams on this instance, everyone together.
    #[arg(long, help_heading = LIMITS, env = "MAX_STATUS_STREAMS", default_value_t = 32)]
    pub max_status_streams: usize,

    /// Writes (`POST /api/orders`, cancels) one user may make in a burst;
    /// the bucket refills at `WRITE_RATE_PER_MIN`. 0 turns the limit off.
    #[arg(long, help_heading = LIMITS, env = "WRITE_BURST", default_value_t = 60)]
    pub write_burst: u32,

    /// Writes per minute one user may sustain once the burst is spent.
    #[arg(long, help_heading = LIMITS, env = "WRITE_RATE_PER_MIN", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    pub write_rate_per_min: u32,

    /// Reads (order lists and searches, one order, the summary, visibility,
    /// the orders page) one user may make in a burst; the bucket refills at
    /// `READ_RATE_PER_MIN`. 0 turns the limit off.
    #[arg(long, help_heading = LIMITS, env = "READ_BURST", default_value_t = 120)]
    pub read_burst: u32,

    /// Reads per minute one user may sustain once the burst is spent.
    #[arg(long, help_heading = LIMITS, env = "READ_RATE_PER_MIN", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..))]
    pub read_rate_per_min: u32,

    /// Write requests (every method but GET/HEAD/OPTIONS) this instance
    /// works on at once; 0 (the default): three quarters of
    /// `DATABASE_MAX_CONNECTIONS`, so reads and stream set-ups always find a
    /// connection. See `web::admission`.
    #[arg(long, help_heading = LIMITS, env = "WRITE_CONCURRENCY", default_value_t = 0)]
    pub write_concurrency: u32,

    /// Write requests that may wait for a turn; past that a write is refused
    /// at once with 503 `busy` and `Retry-After`. 0 (the default): 64 per
    /// turn.
    #[arg(long, help_heading = LIMITS, env = "WRITE_QUEUE", default_value_t = 0)]
    pub write_queue: u32,

    /// The longest a write waits for a turn before it is refused (503
    /// `busy`), in milliseconds. Under the pool's 3 s acquire timeout, so a
    /// write admitted is one the pool still serves.
    #[arg(long, help_heading = LIMITS, env = "WRITE_QUEUE_WAIT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub write_queue_wait_ms: u64,

    /// Failed logins for one username from one client address that are
    /// answered at once; after them each attempt waits a delay that doubles
    /// from 1 s (the first attempts of a burst are counted before the
    /// password is checked, so parallel guesses get no more).
    #[arg(long, help_heading = LIMITS, env = "LOGIN_FREE_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_free_failures: u32,

    /// The longest delay between attempts for one username from one address.
    #[arg(long, help_heading = LIMITS, env = "LOGIN_MAX_DELAY_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    pub login_max_delay_secs: u64,

    /// Login attempts one client address may make at once, over all
    /// usernames (against password spraying); successful ones are given back.
    #[arg(long, help_heading = LIMITS, env = "LOGIN_ADDRESS_BURST", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_address_burst: u32,

    /// How fast an address's login attempts come back, per hour.
    #[arg(long, help_heading = LIMITS, env = "LOGIN_ADDRESS_PER_HOUR", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_address_per_hour: u32,

    /// Failed login attempts one username may take at once from addresses
    /// that have not logged into it before (guessing spread over many
    /// addresses); an address the user logged in from is not held by it.
    #[arg(long, help_heading = LIMITS, env = "LOGIN_USER_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_user_burst: u32,

    /// How fast a username's attempts from new addresses come back, per hour.
    #[arg(long, help_heading = LIMITS, env = "LOGIN_USER_PER_HOUR", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_user_per_hour: u32,

    /// Sign-ups one client address may make at once.
    #[arg(long, help_heading = LIMITS, env = "SIGNUP_ADDRESS_BURST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub signup_address_burst: u32,

    /// How fast an address's sign-ups come back, per hour.
    #[arg(long, help_heading = LIMITS, env = "SIGNUP_ADDRESS_PER_HOUR", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub signup_address_per_hour: u32,

    /// Most keys each throttle table holds (per username, per address, per
    /// both, per sign-up address); past it the least recently used go first.
    #[arg(long, help_heading = LIMITS, env = "THROTTLE_MAX_KEYS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub throttle_max_keys: u64,

    /// Password hashes (argon2, ~19 MiB and a blocking thread each) computed
    /// at once; a login or sign-up that finds them all busy is answered 503
    /// with `Retry-After` at once. 0: twice the number of CPU cores.
    #[arg(long, help_heading = LIMITS, env = "HASH_CONCURRENCY", default_value_t = 0)]
    pub hash_concurrency: usize,

    // ---- Operations (OPERATIONS) ----
    /// After how many milliseconds a still-pending order is shown as `delayed`.
    #[arg(long, help_heading = OPERATIONS, env = "LAG_SLO_MS", default_value_t = 5000)]
    pub lag_slo_ms: u64,

    /// When set, `/status`, `/status/stream` and `/metrics` require it, as
    /// `Authorization: Bearer <token>` or the cookie the sign-in form on
    /// `/status` sets — never in the URL. At least 16 visible ASCII
    /// characters (`openssl rand -hex 32`); an empty or short one is refused
    /// at start. `/healthz` and `/readyz` stay open for load balancers.
    #[arg(long, help_heading = OPERATIONS, env = "OPS_TOKEN", hide_env_values = true, value_parser = parse_ops_token)]
    pub ops_token: Option<String>,

    /// Without `OPS_TOKEN`, the operations endpoints answer only when the
    /// server listens on a loopback address; `true` opens them on any
    /// address, for a network where everyone who can reach the port may see
    /// them (logged at start).
    #[arg(
        long, help_heading = OPERATIONS,
        env = "OPS_OPEN",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub ops_open: bool,
}

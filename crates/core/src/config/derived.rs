//! What the settings imply: durations in their units, pool and queue sizes
//! worked out from other settings, who may see the operations endpoints,
//! the checks start-up makes before it runs anything, and a `Debug` that
//! never prints a password.

use std::time::Duration;

use super::*;

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
        // With NATS the projector runs apart from the relay: per batch in
        // hand, its transaction (the share of the rebuild lock, marking it
        // published, parking dead letters) and its statement of the moment;
        // and the parking of what the bus gave up on.
        let projector = if self.bus == BusKind::Nats && self.runs(Role::Projector) {
            2 * u32::from(self.projector_concurrency) + 1
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

    /// `MAX_CONNECTIONS_PER_ADDRESS`, or a tenth of [`Self::connection_limit`]
    /// but at least 64 (an office behind one NAT address, or a browser's six
    /// connections a tab, must not meet it in normal use); never above the
    /// limit itself.
    pub fn connection_limit_per_address(&self) -> usize {
        let limit = self.connection_limit();
        let share = self
            .max_connections_per_address
            .map_or_else(|| (limit / 10).max(64), |n| n as usize);
        share.min(limit)
    }

    /// Who may see `/metrics`, `/status` and `/status/stream`: a token when
    /// one is set; else everyone only on a loopback listen address (local
    /// use) or by `OPS_OPEN=true`; else no one.
    pub fn ops_access(&self) -> OpsAccess {
        if self.ops_token.is_some() {
            OpsAccess::Token
        } else if self.ops_open {
            OpsAccess::OpenByChoice
        } else if self.bind_addr.ip().to_canonical().is_loopback() {
            OpsAccess::OpenOnLoopback
        } else {
            OpsAccess::Closed
        }
    }

    /// Refuses an `OPS_TOKEN` that guards nothing; clap refuses it when it
    /// reads the environment, this catches settings built in code.
    pub fn check_ops_token(&self) -> anyhow::Result<()> {
        if let Some(token) = &self.ops_token {
            parse_ops_token(token).map_err(anyhow::Error::msg)?;
        }
        Ok(())
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
            .field("projector_concurrency", &self.projector_concurrency)
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
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_address",
                &self.max_connections_per_address,
            )
            .field("ops_token", &self.ops_token.as_ref().map(|_| "***"))
            .field("ops_open", &self.ops_open)
            .field("read_burst", &self.read_burst)
            .field("read_rate_per_min", &self.read_rate_per_min)
            .field("bus", &self.bus)
            .field("nats_url", &redact_url(&self.nats_url))
            .field("nats_stream", &self.nats_stream)
            .field("nats_consumer", &self.nats_consumer)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Role, Settings, parse_origin, redact_url};

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
    fn an_ops_token_that_guards_nothing_is_refused_when_read() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        for bad in ["", "   ", "short-token", "has a space in the middle"] {
            let refused = Cli::try_parse_from(["sightline", "--ops-token", bad])
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"))
                .to_string();
            assert!(refused.contains("OPS_TOKEN"), "{refused}");
        }
        let good = Cli::try_parse_from(["sightline", "--ops-token", "0123456789abcdef"])
            .unwrap()
            .settings;
        assert_eq!(good.ops_access(), super::OpsAccess::Token);
    }

    #[test]
    fn operations_are_open_on_loopback_or_by_choice_and_closed_beyond() {
        let mut settings = Settings::from_env().unwrap();
        settings.ops_token = None;
        settings.ops_open = false;
        for (bind, access) in [
            ("127.0.0.1:3000", super::OpsAccess::OpenOnLoopback),
            ("[::1]:3000", super::OpsAccess::OpenOnLoopback),
            ("0.0.0.0:3000", super::OpsAccess::Closed),
            ("[::]:3000", super::OpsAccess::Closed),
            ("10.1.2.3:3000", super::OpsAccess::Closed),
        ] {
            settings.bind_addr = bind.parse().unwrap();
            assert_eq!(settings.ops_access(), access, "{bind}");
        }
        settings.ops_open = true;
        assert_eq!(settings.ops_access(), super::OpsAccess::OpenByChoice);
    }

    #[test]
    fn an_address_shares_a_tenth_of_the_connections_but_at_least_64() {
        let mut settings = Settings::from_env().unwrap();
        settings.max_connections_per_address = None;
        settings.max_connections = Some(10_000);
        assert_eq!(settings.connection_limit_per_address(), 1000);
        settings.max_connections = Some(200);
        assert_eq!(settings.connection_limit_per_address(), 64);
        settings.max_connections = Some(8);
        assert_eq!(settings.connection_limit_per_address(), 8);
        settings.max_connections_per_address = Some(3);
        assert_eq!(settings.connection_limit_per_address(), 3);
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

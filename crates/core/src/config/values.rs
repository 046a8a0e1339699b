//! The kinds of value settings take (the bus, roles, the read store, …) and
//! the parsers for those clap cannot read alone (origins, proxies, the ops
//! token), with the open-file limit the connection cap is sized from.

use std::net::{IpAddr, Ipv6Addr};

use clap::ValueEnum;
use ipnet::IpNet;

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

/// Who may see the operations endpoints (see [`Settings::ops_access`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpsAccess {
    /// `OPS_TOKEN` is set: whoever presents it.
    Token,
    /// Listening on a loopback address: whoever can reach it is local.
    OpenOnLoopback,
    /// `OPS_OPEN=true`: everyone who reaches the port.
    OpenByChoice,
    /// Listening beyond loopback with neither: no one.
    Closed,
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

/// The shortest `OPS_TOKEN` accepted: 16 characters of a random token is
/// beyond guessing over HTTP, and anything shorter is likely a word.
pub const OPS_TOKEN_MIN: usize = 16;

/// Checks an `OPS_TOKEN`: not empty or blank (an `OPS_TOKEN=` left in a
/// file must not stand for "a token that an empty `Bearer` matches"), at
/// least [`OPS_TOKEN_MIN`] characters, and visible ASCII only (it travels
/// in an `Authorization` header).
pub fn parse_ops_token(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Err(format!(
            "OPS_TOKEN is empty: set a random token of at least {OPS_TOKEN_MIN} characters \
             (e.g. `openssl rand -hex 32`), or unset it"
        ));
    }
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "OPS_TOKEN holds spaces or characters outside visible ASCII: it is sent as an \
             `Authorization: Bearer` header; use e.g. `openssl rand -hex 32`"
                .to_owned(),
        );
    }
    if raw.len() < OPS_TOKEN_MIN {
        return Err(format!(
            "OPS_TOKEN is {} characters long: use at least {OPS_TOKEN_MIN} (e.g. `openssl rand -hex 32`)",
            raw.len()
        ));
    }
    Ok(raw.to_owned())
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

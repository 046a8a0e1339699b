//! Who is asking: the client address that per-address limits count by.
//!
//! It is the TCP peer (put into every request's extensions as axum's
//! `ConnectInfo` by `serve.rs`). Only when that peer is one of the proxies in
//! `TRUSTED_PROXIES` are `X-Forwarded-For` / `Forwarded` read, right to left,
//! skipping further trusted hops: the first untrusted address is the client.
//! Anyone can write those headers, so by default (no trusted proxies) they
//! are ignored and a client cannot pick the address it is counted under.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::state::AppState;

// Parsing `TRUSTED_PROXIES` is configuration's; re-exported for callers here.
pub use sightline_core::config::parse_trusted_proxy;

/// The client's address, as `client_addr` decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The proxies whose forwarding headers are believed (`TRUSTED_PROXIES`), as
/// the application state hands them to [`ClientAddr`].
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

/// Per-address limits count the client a trusted proxy names, not the proxy.
impl FromRef<AppState> for TrustedProxies {
    fn from_ref(state: &AppState) -> Self {
        Self(state.settings.trusted_proxies.clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr
where
    TrustedProxies: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let TrustedProxies(trusted) = TrustedProxies::from_ref(state);
        Ok(ClientAddr(client_addr(parts, &trusted)))
    }
}

/// The client address of a request: the socket's peer, or — when the peer is
/// a trusted proxy — the nearest untrusted address the proxies forwarded.
/// A request without connection info (only a router driven in-process) counts
/// as `0.0.0.0`.
pub fn client_addr(parts: &Parts, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip());
    resolve(peer, &parts.headers, trusted_proxies)
}

fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    // X-Forwarded-For wins when both are sent (it is what most proxies add).
    let hops = forwarded_for(headers);
    for hop in hops.iter().rev() {
        // A hop that is not an address (`unknown`, an obfuscated name, junk)
        // ends the walk: the proxy that reported it is the best we know.
        let Some(ip) = parse_hop(hop) else { break };
        client = canonical(ip);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// Every hop the proxies reported, left (the original client) to right.
fn forwarded_for(headers: &HeaderMap) -> Vec<String> {
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_owned())
            .collect::<Vec<_>>()
    };
    let xff = values("x-forwarded-for");
    if !xff.is_empty() {
        return xff;
    }
    // RFC 7239: `Forwarded: for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"`
    values("forwarded")
        .into_iter()
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| value.trim().trim_matches('"').to_owned())
            })
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')?.split(']').next()?.parse().ok()
}

/// IPv4-mapped IPv6 (`::ffff:192.0.2.1`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The key per-address limits count by: the address itself for IPv4, its
/// /64 network for IPv6 (one subscriber usually holds a whole /64, so
/// counting single IPv6 addresses would let one client be 2^64 clients).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| parse_trusted_proxy(s).unwrap())
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_headers_are_ignored_unless_the_peer_is_trusted() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(resolve(ip("198.51.100.7"), &h, &[]), ip("198.51.100.7"));
        assert_eq!(
            resolve(ip("198.51.100.7"), &h, &nets(&["10.0.0.0/8"])),
            ip("198.51.100.7")
        );
        assert_eq!(
            resolve(ip("10.1.2.3"), &h, &nets(&["10.0.0.0/8"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        // The client wrote a fake first hop; our two proxies appended theirs.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4, 203.0.113.9"),
            ("x-forwarded-for", "10.0.0.5"),
        ]);
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1"]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        // All hops trusted: the leftmost is the best we know.
        let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.5")]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &trusted), ip("10.0.0.9"));
        // Junk ends the walk at the proxy that reported it.
        let h = headers(&[("x-forwarded-for", "203.0.113.9, garbage, 10.0.0.5")]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &trusted), ip("10.0.0.5"));
    }

    #[test]
    fn rfc_7239_forwarded_is_read_too() {
        let h = headers(&[(
            "forwarded",
            r#"for=192.0.2.60;proto=http, for="[2001:db8::1]:4711""#,
        )]);
        let trusted = nets(&["127.0.0.0/8"]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &trusted), ip("2001:db8::1"));
        let h = headers(&[("forwarded", "for=192.0.2.60:8080")]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &trusted), ip("192.0.2.60"));
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn trusted_proxies_parse_as_addresses_or_ranges() {
        assert!(parse_trusted_proxy("10.0.0.0/8").is_ok());
        assert!(parse_trusted_proxy(" 127.0.0.1 ").is_ok());
        assert!(parse_trusted_proxy("::1").is_ok());
        assert!(parse_trusted_proxy("proxy.local").is_err());
        // Empty trusts no real peer.
        let nothing = parse_trusted_proxy("").unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        for peer in ["127.0.0.1", "0.0.0.0", "::1"] {
            assert_eq!(resolve(ip(peer), &h, &[nothing]), ip(peer));
        }
    }
}

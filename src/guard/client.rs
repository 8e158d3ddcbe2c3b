//! client: who the client is when sitegate sits behind a load balancer or ingress.
//!
//! The connecting peer is the client unless it is one of `[server] trusted_proxies`.
//! From a trusted peer, the forwarding chain (`Forwarded`, RFC 7239, when present, else
//! `X-Forwarded-For`) is read from the right, and the first address that is not itself
//! a trusted proxy is the client: the rule of NGINX's `real_ip_recursive` and Envoy's
//! `xff_num_trusted_hops`. What an untrusted hop wrote further left cannot be checked,
//! so it is not believed. Headers from an untrusted peer are never read.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// The client of one request, and the part of the forwarding chain sitegate vouches
/// for: from the client to the connecting peer, in that order.
#[derive(Debug, PartialEq, Eq)]
pub struct Client {
    pub ip: IpAddr,
    /// The addresses sent to the app as `X-Forwarded-For` (client first).
    pub chain: Vec<IpAddr>,
    /// Whether the peer is a trusted proxy (whose `Forwarded` header may be passed on).
    pub via_trusted: bool,
}

/// Finds the client of a request that came from `peer`.
pub fn find(trusted: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> Client {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut chain = vec![peer];
    if trusted.is_empty() || !is_trusted(&peer) {
        return Client {
            ip: peer,
            chain,
            via_trusted: false,
        };
    }
    let hops = if headers.contains_key(http::header::FORWARDED) {
        forwarded_for(headers)
    } else {
        forwarded_for_legacy(headers)
    };
    // Right to left: each trusted hop vouches for the one before it.
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) => {
                chain.push(*ip);
                if !is_trusted(ip) {
                    break;
                }
            }
            // `unknown`, an obfuscated `_name` or garbage: the trusted hop that wrote
            // it did not know the client; the last address known is the best there is.
            None => break,
        }
    }
    chain.reverse();
    Client {
        ip: chain[0],
        chain,
        via_trusted: true,
    }
}

/// `X-Forwarded-For`: comma-separated addresses over every header line, in order.
fn forwarded_for_legacy(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(crate::headers::FORWARDED_FOR)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|item| parse_node(std::str::from_utf8(item).ok()?.trim()))
        .collect()
}

/// `Forwarded`: the `for=` parameter of each element, over every header line.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut out = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        let Ok(text) = value.to_str() else {
            out.push(None);
            continue;
        };
        for element in split_outside_quotes(text, ',') {
            let node = split_outside_quotes(element, ';')
                .into_iter()
                .find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| value.trim())
                });
            // An element without `for=` names no client: as unknown.
            out.push(node.and_then(|n| parse_node(n.trim_matches('"'))));
        }
    }
    out
}

/// Splits at `sep`, except inside a quoted string (`for="[2001:db8::1]:4711"`).
fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// One node: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        return ip
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    let (ip, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn client(trusted: &[&str], peer: &str, h: &[(&str, &str)]) -> (String, Vec<String>) {
        let c = find(&nets(trusted), peer.parse().unwrap(), &headers(h));
        (
            c.ip.to_string(),
            c.chain.iter().map(|i| i.to_string()).collect(),
        )
    }

    const LB: &[&str] = &["10.0.0.0/8", "fd00::/8"];

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let spoof = [("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")];
        assert_eq!(client(LB, "203.0.113.9", &spoof).0, "203.0.113.9");
        assert_eq!(
            client(&[], "10.1.1.1", &spoof).0,
            "10.1.1.1",
            "nothing trusted by default"
        );
        assert_eq!(client(LB, "203.0.113.9", &spoof).1, ["203.0.113.9"]);
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let h = [("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.5")];
        let (ip, chain) = client(LB, "10.0.0.2", &h);
        assert_eq!(
            ip, "198.51.100.7",
            "6.6.6.6 was written by the client itself"
        );
        assert_eq!(chain, ["198.51.100.7", "10.0.0.5", "10.0.0.2"]);
        // Several header lines are one list, in order.
        let h = [
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-for", "10.0.0.5"),
        ];
        assert_eq!(client(LB, "10.0.0.2", &h).0, "198.51.100.7");
        // Ten clients behind one balancer are ten clients.
        let a = client(LB, "10.0.0.2", &[("x-forwarded-for", "198.51.100.1")]).0;
        let b = client(LB, "10.0.0.2", &[("x-forwarded-for", "198.51.100.2")]).0;
        assert_ne!(a, b);
    }

    #[test]
    fn a_chain_of_trusted_hops_only_ends_at_its_leftmost() {
        let h = [("x-forwarded-for", "10.0.0.9, 10.0.0.5")];
        assert_eq!(client(LB, "10.0.0.2", &h).0, "10.0.0.9");
        // No header at all: the balancer itself.
        assert_eq!(client(LB, "10.0.0.2", &[]).0, "10.0.0.2");
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_address_known() {
        let h = [("x-forwarded-for", "198.51.100.7, not-an-ip, 10.0.0.5")];
        assert_eq!(client(LB, "10.0.0.2", &h).0, "10.0.0.5");
    }

    #[test]
    fn ipv6_and_ports_in_either_header() {
        let h = [("x-forwarded-for", "2001:db8::7, fd00::1")];
        assert_eq!(client(LB, "fd00::2", &h).0, "2001:db8::7");
        let h = [("x-forwarded-for", "[2001:db8::7]:4711, 198.51.100.7:80")];
        assert_eq!(client(LB, "10.0.0.2", &h).0, "198.51.100.7");
        // An IPv4 peer seen through a dual-stack socket is still IPv4.
        assert_eq!(
            client(
                LB,
                "::ffff:10.0.0.2",
                &[("x-forwarded-for", "198.51.100.7")]
            )
            .0,
            "198.51.100.7"
        );
    }

    #[test]
    fn forwarded_elements_quoted_ports_and_parameters() {
        let h = [(
            "forwarded",
            r#"for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711", For="10.0.0.5:80""#,
        )];
        let (ip, chain) = client(LB, "10.0.0.2", &h);
        assert_eq!(ip, "2001:db8:cafe::17");
        assert_eq!(chain, ["2001:db8:cafe::17", "10.0.0.5", "10.0.0.2"]);
        // An obfuscated or unknown node: the hop that wrote it.
        let h = [("forwarded", "for=_hidden, for=10.0.0.5")];
        assert_eq!(client(LB, "10.0.0.2", &h).0, "10.0.0.5");
        let h = [("forwarded", "for=unknown")];
        assert_eq!(client(LB, "10.0.0.2", &h).0, "10.0.0.2");
        // A quoted comma does not split an element.
        let h = [("forwarded", r#"by="a,b";for=198.51.100.7"#)];
        assert_eq!(client(LB, "10.0.0.2", &h).0, "198.51.100.7");
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for() {
        let h = [
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=198.51.100.2"),
        ];
        assert_eq!(client(LB, "10.0.0.2", &h).0, "198.51.100.2");
    }
}

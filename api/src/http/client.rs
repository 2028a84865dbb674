//! Which address a request comes from, for the throttles.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client's address: the TCP peer, unless the peer is a trusted proxy, in which case the right-most address
/// in `X-Forwarded-For` that is not itself a trusted proxy.
///
/// Right-most, because each proxy appends the address it received the request from: the entries to the left of
/// the first untrusted one were written by the client and prove nothing. An entry that is not an address (so no
/// trusted proxy wrote it) leaves the last trusted hop as the client, as does a header with no untrusted entry.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |address: &IpAddr| trusted.iter().any(|net| net.contains(&address.to_canonical()));
    let mut client = peer;
    if !is_trusted(&client) {
        return client;
    }
    // Several headers are one list, in order (RFC 9110, 5.3).
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or_default().split(','))
        .collect();
    for hop in hops.iter().rev() {
        let Ok(address) = hop.trim().parse::<IpAddr>() else {
            return client;
        };
        client = address;
        if !is_trusted(&client) {
            return client;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn trusted() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().expect("a range"), "127.0.0.1/32".parse().expect("a range")]
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).expect("a header value"));
        }
        headers
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let headers = forwarded(&["198.51.100.7"]);
        assert_eq!(client_address(ip("203.0.113.9"), &headers, &trusted()), ip("203.0.113.9"));
        assert_eq!(client_address(ip("203.0.113.9"), &headers, &[]), ip("203.0.113.9"));
    }

    #[test]
    fn behind_a_trusted_proxy_the_client_is_the_right_most_untrusted_hop() {
        let headers = forwarded(&["1.1.1.1, 198.51.100.7, 10.0.0.2"]);
        assert_eq!(client_address(ip("127.0.0.1"), &headers, &trusted()), ip("198.51.100.7"));
    }

    #[test]
    fn a_spoofed_left_most_entry_is_ignored() {
        let headers = forwarded(&["10.9.9.9, 203.0.113.50"]);
        assert_eq!(client_address(ip("10.0.0.1"), &headers, &trusted()), ip("203.0.113.50"));
    }

    #[test]
    fn several_headers_are_read_as_one_list_in_order() {
        let headers = forwarded(&["198.51.100.1", "198.51.100.2, 10.0.0.3"]);
        assert_eq!(client_address(ip("127.0.0.1"), &headers, &trusted()), ip("198.51.100.2"));
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        assert_eq!(client_address(ip("127.0.0.1"), &HeaderMap::new(), &trusted()), ip("127.0.0.1"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let headers = forwarded(&["198.51.100.7, not-an-address, 10.0.0.2"]);
        assert_eq!(client_address(ip("127.0.0.1"), &headers, &trusted()), ip("10.0.0.2"));
    }

    #[test]
    fn only_trusted_hops_leave_the_left_most_one() {
        let headers = forwarded(&["10.0.0.5, 10.0.0.2"]);
        assert_eq!(client_address(ip("127.0.0.1"), &headers, &trusted()), ip("10.0.0.5"));
    }

    #[test]
    fn ipv6_peers_and_hops_work_too() {
        let trusted = vec!["fd00::/8".parse().expect("a range")];
        let headers = forwarded(&["2001:db8::1"]);
        assert_eq!(client_address(ip("fd00::1"), &headers, &trusted), ip("2001:db8::1"));
    }
}

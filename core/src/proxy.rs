//! Client addresses behind reverse proxies (`[server] trusted_proxies`).
//!
//! The per-client login cap counts client addresses. Behind a reverse proxy every request
//! comes from the proxy, so without this every person would share one cap. A proxy named in
//! `trusted_proxies` is believed about who it forwarded for (`X-Forwarded-For`); anyone else
//! is not, so a client cannot pick its own address by sending the header.

use std::net::IpAddr;
use std::str::FromStr;

/// An address or a network: `10.0.0.0/8`, `192.0.2.7`, `::1`, `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr = addr.parse::<IpAddr>().map(canonical).map_err(|_| {
            format!("{text:?} is not an IP address or network (like 10.0.0.0/8 or ::1)")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl IpNet {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `::ffff:192.0.2.7` is `192.0.2.7` (a dual-stack listener sees IPv4 clients so).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Who sent a request: the peer; or, when the peer is a trusted proxy, the rightmost address
/// of `X-Forwarded-For` that is not a trusted proxy (each proxy appends the address it got the
/// request from, so everything left of that was written by the client and is not believed).
/// An entry that is not an address ends the walk at the last hop known.
pub fn client_address(
    peer: Option<IpAddr>,
    headers: &http::HeaderMap,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let mut client = canonical(peer?);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(client) {
        return Some(client);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            break;
        };
        client = canonical(ip);
        if !is_trusted(client) {
            break;
        }
    }
    Some(client)
}

/// `192.0.2.7`, `2001:db8::1`, or either with a port (`192.0.2.7:4711`, `[2001:db8::1]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>().ok().or_else(|| {
        hop.parse::<std::net::SocketAddr>()
            .ok()
            .map(|addr| addr.ip())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|net| net.parse().unwrap()).collect()
    }

    fn forwarded(values: &[&str]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn networks_parse_and_match() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.200.3.4".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.1.2.3".parse().unwrap()),
            "IPv4-mapped"
        );
        let one: IpNet = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(
            !all.contains("2001:db8::1".parse().unwrap()),
            "families never mix"
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "::1/129",
            "10.0.0/8",
            "proxy.example",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?} refused");
        }
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        // An untrusted peer's header is ignored: it cannot choose its address.
        let headers = forwarded(&["198.51.100.7"]);
        assert_eq!(
            client_address(ip("203.0.113.5"), &headers, &trusted),
            ip("203.0.113.5")
        );
        // No trusted proxies: the header never counts.
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &[]),
            ip("127.0.0.1")
        );
        // A trusted proxy: the address it got the request from.
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        // The client wrote 6.6.6.6 itself; the edge proxy 10.0.0.2 appended the real one.
        let headers = forwarded(&["6.6.6.6, 198.51.100.7, 10.0.0.2"]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &trusted),
            ip("198.51.100.7")
        );
        // Several header lines are one list, in order.
        let headers = forwarded(&["6.6.6.6", "198.51.100.7:4711", "10.0.0.2"]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &trusted),
            ip("198.51.100.7")
        );
        // Garbage ends the walk at the last hop known, never at a value left of it.
        let headers = forwarded(&["198.51.100.7, unknown, 10.0.0.2"]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &trusted),
            ip("10.0.0.2")
        );
        // Only proxies: the leftmost of them.
        let headers = forwarded(&["10.0.0.3, 10.0.0.2"]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &trusted),
            ip("10.0.0.3")
        );
        // A trusted peer without the header: the peer.
        assert_eq!(
            client_address(ip("127.0.0.1"), &http::HeaderMap::new(), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_address(
                ip("::ffff:127.0.0.1"),
                &forwarded(&["[2001:db8::1]:443"]),
                &trusted
            ),
            ip("2001:db8::1")
        );
    }
}

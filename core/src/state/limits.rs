//! Bounds the server keeps in memory: logins started per client and network, back-channel
//! logout tokens already used, and one refresh per identity at a time.

use std::collections::HashMap;
use std::sync::Arc;

/// Counts logins started per client and per network, in windows of a login's lifetime
/// (SECURITY: one client's flood of `/login` is answered 429). A client is an IPv4 address or
/// an IPv6 /64; its networks are the IPv4 /24 and /16, or the IPv6 /48 and /32. A network may
/// start at most an eighth (/24, /48) or a quarter (/16, /32) of `max_pending_logins` per
/// window, so that a flood from many addresses of one network cannot fill the pending-login
/// table and push out everyone else's sign-ins. The counts are bounded too: when they hold
/// [`LoginLimiter::MAX_KEYS`] addresses and networks, a login from one not yet counted is
/// refused until the window ends.
#[derive(Default)]
pub struct LoginLimiter {
    window: std::sync::Mutex<LimiterWindow>,
}

#[derive(Default)]
struct LimiterWindow {
    started_at: i64,
    counts: HashMap<(std::net::IpAddr, u8), u64>,
}

/// What the limiter answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// The client's or its network's cap for this window is reached.
    TooMany,
}

impl LoginLimiter {
    /// At most this many clients and networks are counted at once.
    pub const MAX_KEYS: usize = 300_000;

    /// Counts one login from `client`. The total is bounded elsewhere: the pending-login table
    /// drops its oldest entry when full, and the network caps keep one network from filling it.
    pub fn admit(
        &self,
        client: Option<std::net::IpAddr>,
        now: i64,
        per_client: u64,
        max_pending: u64,
    ) -> Admission {
        let Some(client) = client else {
            return Admission::Allowed;
        };
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now - window.started_at >= crate::config::LOGIN_TTL.as_secs() as i64 {
            *window = LimiterWindow {
                started_at: now,
                ..LimiterWindow::default()
            };
        }
        let units = client_units(client);
        let caps = [
            per_client,
            per_client.max(max_pending / 8),
            per_client.max(max_pending / 4),
        ];
        let new_keys = units
            .iter()
            .filter(|unit| !window.counts.contains_key(unit))
            .count();
        if new_keys > 0 && window.counts.len() + new_keys > Self::MAX_KEYS {
            return Admission::TooMany;
        }
        if units
            .iter()
            .zip(caps)
            .any(|(unit, cap)| window.counts.get(unit).is_some_and(|count| *count >= cap))
        {
            return Admission::TooMany;
        }
        for unit in units {
            *window.counts.entry(unit).or_insert(0) += 1;
        }
        Admission::Allowed
    }

    /// How many clients and networks are counted now.
    pub fn counted(&self) -> usize {
        self.window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .counts
            .len()
    }
}

/// What the caps count for a client: itself (an IPv4 address, an IPv6 /64) and its two
/// networks (IPv4 /24 and /16, IPv6 /48 and /32), each with its prefix length. One IPv6 client
/// usually holds a whole /64 (SLAAC, privacy addresses), so counting single addresses would
/// let it start logins from 2^64 of them.
fn client_units(client: std::net::IpAddr) -> [(std::net::IpAddr, u8); 3] {
    let v4 = |ip: std::net::Ipv4Addr, prefix: u8| {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        (std::net::IpAddr::V4((u32::from(ip) & mask).into()), prefix)
    };
    let v6 = |ip: std::net::Ipv6Addr, prefix: u8| {
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        (std::net::IpAddr::V6((u128::from(ip) & mask).into()), prefix)
    };
    match client {
        std::net::IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(ip) => [v4(ip, 32), v4(ip, 24), v4(ip, 16)],
            None => [v6(ip, 64), v6(ip, 48), v6(ip, 32)],
        },
        std::net::IpAddr::V4(ip) => [v4(ip, 32), v4(ip, 24), v4(ip, 16)],
    }
}

/// The `jti`s of the back-channel logout tokens used, until their `iat` window closes: a
/// logout token works once (SECURITY I75). Bounded: when full of live entries, a new token is
/// refused rather than an old one forgotten.
#[derive(Default)]
pub struct UsedTokenIds {
    seen: std::sync::Mutex<HashMap<(String, String), i64>>,
}

impl UsedTokenIds {
    /// At most this many remembered at once.
    pub const CAPACITY: usize = 100_000;

    /// Records `(idp, jti)` as used until `until`; `false` when it was used already (or the
    /// table is full of live ones).
    pub fn first_use(&self, idp: &str, jti: &str, until: i64, now: i64) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (idp.to_string(), jti.to_string());
        if seen.get(&key).is_some_and(|expires| *expires >= now) {
            return false;
        }
        if seen.len() >= Self::CAPACITY {
            seen.retain(|_, expires| *expires >= now);
            if seen.len() >= Self::CAPACITY {
                tracing::warn!("too many back-channel logout tokens in ten minutes; refusing more");
                return false;
            }
        }
        seen.insert(key, until);
        true
    }
}

/// One lock per key, made on demand and forgotten when nobody holds or waits for it: one
/// refresh per identity at a time, so that IdPs that rotate refresh tokens and detect reuse
/// (Okta, Auth0, Keycloak, oidc-provider) never see one redeemed twice (SECURITY I77).
#[derive(Default)]
pub struct KeyedLocks {
    locks: std::sync::Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds a [`KeyedLocks`] key until dropped.
pub struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: Vec<u8>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits until no one else holds `key`.
    pub async fn lock(&self, key: Vec<u8>) -> KeyedGuard<'_> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        let guard = lock.lock_owned().await;
        KeyedGuard {
            locks: self,
            key,
            guard: Some(guard),
        }
    }

    /// How many keys are held or waited for (for tests).
    pub fn len(&self) -> usize {
        self.locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self
            .locks
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the map holds it: nobody waits.
        if locks
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<std::net::IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn the_cap_counts_an_ipv6_client_by_its_64() {
        let limiter = LoginLimiter::default();
        let allow = |text: &str| limiter.admit(ip(text), 0, 2, 100_000) == Admission::Allowed;
        // Rotating through one /64 is one client.
        assert!(allow("2001:db8:1:2::1"));
        assert!(allow("2001:db8:1:2:ffff::9"));
        assert!(!allow("2001:db8:1:2:abcd::1"), "same /64");
        assert!(allow("2001:db8:1:3::1"), "another /64");
        // IPv4 counts per address, also when it arrives IPv4-mapped.
        assert!(allow("192.0.2.1"));
        assert!(allow("::ffff:192.0.2.1"));
        assert!(!allow("192.0.2.1"), "one IPv4 client");
        assert!(allow("192.0.2.2"), "its neighbour is another");
    }

    #[test]
    fn a_network_cannot_take_more_than_its_share_of_the_pending_table() {
        // 64 pending logins in all: a /48 gets 8, a /32 16, whatever its /64s.
        let limiter = LoginLimiter::default();
        let allow = |text: &str| limiter.admit(ip(text), 0, 2, 64) == Admission::Allowed;
        let admitted = (0..100)
            .filter(|n| allow(&format!("2001:db8:1:{n:x}::1")))
            .count();
        assert_eq!(admitted, 8, "one /48");
        let admitted = (0..100)
            .filter(|n| allow(&format!("2001:db8:{:x}:{n:x}::1", n % 3 + 2)))
            .count();
        assert_eq!(admitted, 8, "the rest of the /32's quarter");
        assert!(allow("2001:db9::1"), "another /32");
        let admitted = (0..=255)
            .filter(|n| allow(&format!("198.51.100.{n}")))
            .count();
        assert_eq!(admitted, 8, "one /24");
        assert!(allow("203.0.113.1"), "another network");
    }

    #[test]
    fn the_counts_are_bounded() {
        let limiter = LoginLimiter::default();
        let mut refused = 0;
        for n in 0..(LoginLimiter::MAX_KEYS as u32 / 3 + 1000) {
            // Every client its own /32: three new keys each.
            let client = std::net::IpAddr::V6(std::net::Ipv6Addr::from(u128::from(n) << 96 | 1));
            if limiter.admit(Some(client), 0, 300, 100_000) == Admission::TooMany {
                refused += 1;
            }
        }
        assert!(limiter.counted() <= LoginLimiter::MAX_KEYS);
        assert!(refused >= 1000, "{refused}");
        // A client already counted goes on.
        let known = std::net::IpAddr::V6(std::net::Ipv6Addr::from(1u128));
        assert_eq!(
            limiter.admit(Some(known), 0, 300, 100_000),
            Admission::Allowed
        );
        // A new window starts afresh.
        let new = std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::MAX));
        assert_eq!(
            limiter.admit(Some(new), 601, 300, 100_000),
            Admission::Allowed
        );
    }
}

//! What a person's list of sessions says about each: the browser and system a session was
//! started with, read from its user agent, and roughly where from, as the network of the
//! address. Both are kept instead of the raw header and address: enough to tell "my laptop"
//! from "a phone I do not own", and nothing a geolocation service was asked about.

use std::net::IpAddr;

/// `Firefox on Linux`, `Safari on iOS`, `curl`: the browser (or client) and the system a user
/// agent names; `None` for an empty one.
pub fn label(user_agent: &str) -> Option<String> {
    let ua = user_agent.trim();
    if ua.is_empty() {
        return None;
    }
    let has = |needle: &str| ua.contains(needle);
    // Order matters: most browsers also claim to be the ones they derive from.
    let browser = if has("Edg/") || has("Edge/") || has("EdgA/") || has("EdgiOS/") {
        "Edge".to_string()
    } else if has("OPR/") || has("Opera") {
        "Opera".to_string()
    } else if has("SamsungBrowser/") {
        "Samsung Internet".to_string()
    } else if has("Firefox/") || has("FxiOS/") {
        "Firefox".to_string()
    } else if has("HeadlessChrome/") {
        "Headless Chrome".to_string()
    } else if has("Chromium/") {
        "Chromium".to_string()
    } else if has("Chrome/") || has("CriOS/") {
        "Chrome".to_string()
    } else if has("Safari/") && has("Version/") {
        "Safari".to_string()
    } else {
        // A script or tool: its first product token (`curl/8.5.0` is `curl`).
        let product: String = ua
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(32)
            .collect();
        if product.is_empty() {
            "Unknown client".to_string()
        } else {
            product
        }
    };
    let system = if has("Windows") {
        Some("Windows")
    } else if has("iPhone") || has("iPod") {
        Some("iOS")
    } else if has("iPad") {
        Some("iPadOS")
    } else if has("Android") {
        Some("Android")
    } else if has("CrOS") {
        Some("ChromeOS")
    } else if has("Macintosh") || has("Mac OS X") {
        Some("macOS")
    } else if has("Linux") || has("X11") {
        Some("Linux")
    } else {
        None
    };
    Some(match system {
        Some(system) => format!("{browser} on {system}"),
        None => browser,
    })
}

/// A stored [`label`] as its browser and its system (`None` where the user agent named none),
/// for pages to put in their own words.
pub fn parts(label: &str) -> (&str, Option<&str>) {
    match label.split_once(" on ") {
        Some((browser, system)) => (browser, Some(system)),
        None => (label, None),
    }
}

/// The network an address belongs to, as a person can recognise it: the /24 of an IPv4
/// address, the /48 of an IPv6 one (an IPv4-mapped address as IPv4).
pub fn network(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return network(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
            format!("{prefix}/48")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_browser_and_the_system() {
        let cases = [
            ("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", "Firefox on Linux"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0", "Edge on Windows"),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15", "Safari on macOS"),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", "Safari on iOS"),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36", "Chrome on Android"),
            ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36", "Headless Chrome on Linux"),
            ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36", "Chrome on ChromeOS"),
            ("curl/8.5.0", "curl"),
            ("python-requests/2.32.3", "python-requests"),
            ("<script>alert(1)</script>", "Unknown client"),
        ];
        for (ua, expected) in cases {
            assert_eq!(label(ua).as_deref(), Some(expected), "{ua}");
        }
        assert_eq!(label("  "), None);
        assert_eq!(
            parts("Headless Chrome on Linux"),
            ("Headless Chrome", Some("Linux"))
        );
        assert_eq!(parts("curl"), ("curl", None));
    }

    #[test]
    fn keeps_the_network_not_the_address() {
        let net = |text: &str| network(text.parse().unwrap());
        assert_eq!(net("203.0.113.77"), "203.0.113.0/24");
        assert_eq!(net("2001:db8:1234:5678::9"), "2001:db8:1234::/48");
        assert_eq!(net("::ffff:198.51.100.4"), "198.51.100.0/24");
        assert_eq!(net("127.0.0.1"), "127.0.0.0/24");
    }
}

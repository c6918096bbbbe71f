//! Checks that several kinds need for their settings. Each answers whether a value has the
//! shape; the kind words the error, since only it knows what the value is for. Plain string
//! checks: the SDK takes no URL dependency.

/// A base URL setting: `https://host[:port][/path]`, or `http://` for a loopback host (tests),
/// with no credentials, query or fragment. Returned without its trailing slash, so paths can
/// follow.
pub fn base_url(raw: &str) -> Result<String, &'static str> {
    const EXPECTED: &str = "expected an https:// URL such as https://idp.example.org";
    let (scheme, rest) = raw.split_once("://").ok_or(EXPECTED)?;
    if raw.contains(['?', '#', '\\']) || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("expected a URL without query, fragment or spaces");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() || authority.contains('@') {
        return Err("expected a URL with a host and no user name");
    }
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match scheme {
        "https" => Ok(raw.trim_end_matches('/').to_string()),
        "http" if loopback => Ok(raw.trim_end_matches('/').to_string()),
        "http" => Err("http:// is only allowed for loopback hosts; use https://"),
        _ => Err(EXPECTED),
    }
}

/// Whether `value` is a bare DNS host name (`organization.okta.com`, `example.org`): labels of
/// letters, digits and inner `-`, 1-63 characters each, 253 in all; no scheme, port, path or
/// wildcard. Such a name can be put into a URL without changing the URL's host.
pub fn is_host_name(value: &str) -> bool {
    let is_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    value.len() <= 253 && value.split('.').all(is_label)
}

/// Whether `value` is a GUID: `8-4-4-4-12` hexadecimal digits, either case (Microsoft's tenant
/// and object ids).
pub fn is_guid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_table() {
        for (raw, want) in [
            ("https://kc.example.org/", Ok("https://kc.example.org")),
            (
                "https://kc.example.org:8443/auth",
                Ok("https://kc.example.org:8443/auth"),
            ),
            ("http://127.0.0.1:9000", Ok("http://127.0.0.1:9000")),
            ("http://[::1]:9000/", Ok("http://[::1]:9000")),
            (
                "http://kc.example.org",
                Err("http:// is only allowed for loopback hosts; use https://"),
            ),
            (
                "https://user@kc.example.org",
                Err("expected a URL with a host and no user name"),
            ),
            (
                "https://kc.example.org/?a=b",
                Err("expected a URL without query, fragment or spaces"),
            ),
            (
                "kc.example.org",
                Err("expected an https:// URL such as https://idp.example.org"),
            ),
            (
                "ftp://kc.example.org",
                Err("expected an https:// URL such as https://idp.example.org"),
            ),
        ] {
            assert_eq!(base_url(raw).as_deref().map_err(|e| *e), want, "{raw}");
        }
    }

    #[test]
    fn host_names_table() {
        let long_label = "a".repeat(64);
        let long_name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        for (value, ok) in [
            ("organization.okta.com", true),
            ("Example.org", true),
            ("dev-1.okta.com", true),
            ("localhost", true),
            ("x", true),
            ("", false),
            ("example..org", false),
            (".example.org", false),
            ("example.org.", false),
            ("-a.example.org", false),
            ("a-.example.org", false),
            ("https://example.org", false),
            ("example.org/path", false),
            ("example.org:443", false),
            ("@example.org", false),
            ("*", false),
            ("*.example.org", false),
            ("exa mple.org", false),
            ("bücher.example", false),
            (long_label.as_str(), false),
            (long_name.as_str(), false),
            (&long_name[1..], true),
        ] {
            assert_eq!(is_host_name(value), ok, "{value:?}");
        }
    }

    #[test]
    fn guids_table() {
        for (value, ok) in [
            ("72f988bf-86f1-41af-91ab-2d7cd011db47", true),
            ("72F988BF-86F1-41AF-91AB-2D7CD011DB47", true),
            ("00000000-0000-0000-0000-000000000000", true),
            ("", false),
            ("72f988bf86f141af91ab2d7cd011db47", false),
            ("72f988bf-86f1-41af-91ab-2d7cd011db4", false),
            ("72f988bf-86f1-41af-91ab-2d7cd011db477", false),
            ("72f988bf-86f1-41af-91ab-2d7cd011db47-", false),
            ("{72f988bf-86f1-41af-91ab-2d7cd011db47}", false),
            ("72f988bg-86f1-41af-91ab-2d7cd011db47", false),
            ("72f988bf-86f1-41af-91ab-2d7cd011db47:x", false),
            ("contoso.onmicrosoft.com", false),
            ("common", false),
        ] {
            assert_eq!(is_guid(value), ok, "{value:?}");
        }
    }
}

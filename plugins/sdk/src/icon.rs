//! Button icons: a brand's mark as an SVG image a provider hands the core in
//! [`ProviderInfo::icon`](crate::ProviderInfo::icon).
//!
//! The pages show an icon in an `<img>`, never inline, so nothing inside it runs or reaches the
//! page, whoever wrote it (a dylib provider included); the core still checks the URL's scheme.

/// An SVG document as a `data:image/svg+xml` URL.
pub fn svg_icon(svg: &str) -> String {
    let mut url = String::with_capacity(svg.len() + 32);
    url.push_str("data:image/svg+xml,");
    for byte in svg.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => url.push(byte as char),
            b' ' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' | b'=' | b',' | b'(' | b')' => {
                url.push(byte as char)
            }
            _ => url.push_str(&format!("%{byte:02X}")),
        }
    }
    url
}

/// A one-colour mark: `paths` (SVG shapes without a fill) in `fill`, in a `view_box` square.
pub fn mark(view_box: &str, fill: &str, paths: &str) -> String {
    svg_icon(&format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='24' height='24' viewBox='{view_box}'><g fill='{fill}'>{paths}</g></svg>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_icon_is_a_data_url_that_needs_no_further_escaping() {
        let url = svg_icon("<svg fill=\"#fff\">a&b%</svg>");
        assert_eq!(
            url,
            "data:image/svg+xml,%3Csvg fill=%22%23fff%22%3Ea%26b%25%3C/svg%3E"
        );
        assert!(!url.contains(['<', '>', '"', '\'', '#', '&']));
    }

    #[test]
    fn a_mark_fills_its_shapes() {
        let url = mark("0 0 24 24", "#123456", "<path d='M0 0h1z'/>");
        assert!(url.starts_with("data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27"));
        assert!(url.contains("fill=%27%23123456%27"), "{url}");
    }
}

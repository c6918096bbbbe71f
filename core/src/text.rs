//! Text from outside made safe to write down.

/// Text from outside (an IdP's `error` parameter) made safe for a log line: control characters
/// escaped (no forged lines from a CR/LF), at most 200 characters.
pub fn loggable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(200).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn outside_text_cannot_forge_a_log_line() {
        assert_eq!(
            super::loggable("access_denied\r\n2026-12-02T00:00:00Z INFO admin logged in"),
            "access_denied\\r\\n2026-12-02T00:00:00Z INFO admin logged in"
        );
        assert_eq!(super::loggable(&"x".repeat(500)).chars().count(), 201);
    }
}

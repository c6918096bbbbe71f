//! The error a request ends with: an HTTP status, a stable machine code and a message that is
//! safe to show (never a token, a secret or an upstream body).

use std::fmt;

/// The status classes of the security checklist (`tests/SECURITY-COVERAGE.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 400: bad or mismatched callback input.
    BadRequest,
    /// 401: ID token or userinfo validation failed, or no session.
    Unauthorized,
    /// 403: CSRF or authorization failure.
    Forbidden,
    /// 404: unknown IdP.
    NotFound,
    /// 409: account-link conflict.
    Conflict,
    /// 422: a new configuration is invalid.
    Invalid,
    /// 500: our own failure (storage).
    Internal,
    /// 502: IdP transport or protocol failure.
    BadGateway,
    /// 503: the IdP is configured but not usable (credentials missing).
    Unavailable,
    /// 429: too many logins started (per client or in all).
    TooMany,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::Conflict => 409,
            Status::Invalid => 422,
            Status::Internal => 500,
            Status::BadGateway => 502,
            Status::Unavailable => 503,
            Status::TooMany => 429,
        }
    }
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowError {
    pub status: Status,
    /// Stable, machine-readable: `invalid_state`, `id_token_invalid`, ...
    pub code: &'static str,
    /// For people; safe to show.
    pub message: String,
}

impl FlowError {
    pub fn new(status: Status, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Status::BadRequest, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Status::Unauthorized, code, message)
    }

    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Status::BadGateway, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Status::Internal, "internal_error", message)
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.code(),
            self.message
        )
    }
}

impl std::error::Error for FlowError {}

impl From<crate::store::StoreError> for FlowError {
    fn from(err: crate::store::StoreError) -> Self {
        tracing::error!(error = %err, "storage failure");
        FlowError::internal("storage failure")
    }
}

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

//! The error a request ends with: an HTTP status, a stable machine code and a message that is
//! safe to show (never a token, a secret or an upstream body); the JSON body it is sent as; the
//! status of every typed error of the layers below; and the per-endpoint response enums.

use std::fmt;

use poem_openapi::Object;

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
        if let crate::store::StoreError::Unavailable(_) = err {
            tracing::warn!(error = %err, "store unavailable");
            return FlowError::new(
                Status::Unavailable,
                "store_unavailable",
                "the database is unavailable; try again in a moment",
            );
        }
        tracing::error!(error = %err, "storage failure");
        FlowError::internal("storage failure")
    }
}

/// An error: a stable machine-readable code and a message for people.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none, example)]
pub struct ErrorBody {
    /// E.g. `invalid_state`, `id_token_invalid`, `unknown_idp`.
    pub error: String,
    pub message: String,
}

impl From<FlowError> for ErrorBody {
    fn from(err: FlowError) -> Self {
        Self {
            message: crate::i18n::error_message(err.code).unwrap_or(err.message),
            error: err.code.to_string(),
        }
    }
}

/// Declares a per-endpoint error response enum and its conversion from [`FlowError`]; a status
/// the endpoint does not document becomes a 500.
macro_rules! error_responses {
    ($(#[$meta:meta])* $name:ident { $($(#[doc = $doc:literal])* $variant:ident = $status:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(ApiResponse)]
        pub enum $name {
            $(
                $(#[doc = $doc])*
                #[oai(status = $status)]
                $variant(Json<ErrorBody>),
            )+
            /// Storage failure.
            #[oai(status = 500)]
            Internal(Json<ErrorBody>),
            /// The store is unavailable (`store_unavailable`: the database went away or
            /// every connection stayed busy), or an IdP lacks its credentials (see `/healthz`).
            #[oai(status = 503)]
            Unavailable(Json<ErrorBody>),
        }

        impl From<crate::store::StoreError> for $name {
            fn from(err: crate::store::StoreError) -> Self {
                FlowError::from(err).into()
            }
        }

        impl From<crate::protocol::Error> for $name {
            fn from(err: crate::protocol::Error) -> Self {
                FlowError::from(err).into()
            }
        }

        impl From<crate::accounts::Error> for $name {
            fn from(err: crate::accounts::Error) -> Self {
                FlowError::from(err).into()
            }
        }

        impl From<FlowError> for $name {
            fn from(err: FlowError) -> Self {
                crate::http::error::remember(&err);
                match err.status.code() {
                    $($status => $name::$variant(Json(err.into())),)+
                    503 => $name::Unavailable(Json(err.into())),
                    _ => $name::Internal(Json(err.into())),
                }
            }
        }
    };
}

pub(crate) use error_responses;

impl poem_openapi::types::Example for ErrorBody {
    fn example() -> Self {
        Self {
            error: "invalid_state".into(),
            message: "this sign-in is unknown or was already used".into(),
        }
    }
}

/// The status class of a protocol failure: 401 when what the IdP gave (a code, a token, a
/// grant) failed, 400 for a bad logout token, 502 when the IdP or its plugin failed.
pub fn protocol_status(err: &crate::protocol::Error) -> Status {
    use crate::protocol::Error;
    match err {
        _ if err.is_refusal() => Status::Unauthorized,
        Error::InvalidLogoutToken(_) => Status::BadRequest,
        Error::Internal(_) => Status::Internal,
        _ => Status::BadGateway,
    }
}

impl From<crate::protocol::Error> for FlowError {
    fn from(err: crate::protocol::Error) -> Self {
        FlowError::new(protocol_status(&err), err.code(), err.to_string())
    }
}

impl From<crate::accounts::Error> for FlowError {
    fn from(err: crate::accounts::Error) -> Self {
        use crate::accounts::Error;
        let status = match &err {
            Error::Denied(_) => Status::Forbidden,
            Error::ClaimsUnusable(_) | Error::AccountGone => Status::Unauthorized,
            Error::ProviderFailed(_) => Status::BadGateway,
            Error::EmailInUse(_)
            | Error::IdentityInUse(_)
            | Error::AlreadyConnected(_)
            | Error::IssuerChanged(_) => Status::Conflict,
            Error::Store(_) | Error::Internal(_) => Status::Internal,
        };
        match err {
            Error::Store(err) => FlowError::from(err),
            err => FlowError::new(status, err.code(), err.to_string()),
        }
    }
}

tokio::task_local! {
    /// The error the request in progress ended with, so that a browser's HTML page is rendered
    /// from it rather than from the JSON answer.
    static ENDED_WITH: std::cell::RefCell<Option<FlowError>>;
}

/// Runs a request, returning with its outcome the error it ended with, if one was answered.
pub(crate) async fn recording_failure<F: std::future::Future>(
    request: F,
) -> (F::Output, Option<FlowError>) {
    ENDED_WITH
        .scope(std::cell::RefCell::new(None), async {
            let outcome = request.await;
            let failure = ENDED_WITH.with(|ended| ended.borrow_mut().take());
            (outcome, failure)
        })
        .await
}

/// Notes the error a request answers with (outside [`recording_failure`], nothing happens).
pub(crate) fn remember(err: &FlowError) {
    let _ = ENDED_WITH.try_with(|ended| *ended.borrow_mut() = Some(err.clone()));
}

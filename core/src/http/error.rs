//! The error answer: a stable machine code and a message for people, and the per-endpoint
//! response enums that give each [`FlowError`] the status its endpoint documents.

use poem_openapi::Object;

use crate::error::{FlowError, Status};

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
            error: err.code.to_string(),
            message: err.message,
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
                match err.status.code() {
                    $($status => $name::$variant(Json(err.into())),)+
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
            Error::EmailInUse(_) | Error::IdentityInUse(_) | Error::IssuerChanged(_) => {
                Status::Conflict
            }
            Error::Store(_) | Error::Internal(_) => Status::Internal,
        };
        match err {
            Error::Store(err) => FlowError::from(err),
            err => FlowError::new(status, err.code(), err.to_string()),
        }
    }
}

//! The errors of finishing a login and of the tokens kept for an identity. Messages are for
//! the person signing in; the HTTP layer gives each its status.

use crate::store::StoreError;

/// Why a login could not be finished, or stored tokens not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The provider denied this identity (e.g. not in the allowed domain).
    #[error("{0}")]
    Denied(String),
    /// The verified claims cannot make an identity (no valid subject, a claim of the wrong type).
    #[error("{0}")]
    ClaimsUnusable(String),
    /// The provider plugin failed while mapping the claims.
    #[error("{0}")]
    ProviderFailed(String),
    /// The verified email belongs to another account (SECURITY F56, F57).
    #[error("{0}")]
    EmailInUse(String),
    /// The identity is connected to another account (SECURITY F59).
    #[error("{0}")]
    IdentityInUse(String),
    /// The account already has an identity at this IdP, whose entry allows one per account
    /// (`several_accounts`).
    #[error("{0}")]
    AlreadyConnected(String),
    /// The identity was linked under another issuer (SECURITY I73).
    #[error("{0}")]
    IssuerChanged(String),
    /// The account the login was to join no longer exists.
    #[error("the account no longer exists")]
    AccountGone,
    /// Storing failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// Our own failure (sealing, encoding).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The stable error code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Denied(_) => "login_denied",
            Self::ClaimsUnusable(_) => "claims_unusable",
            Self::ProviderFailed(_) => "provider_failed",
            Self::EmailInUse(_) => "email_in_use",
            Self::IdentityInUse(_) => "identity_in_use",
            Self::AlreadyConnected(_) => "already_connected",
            Self::IssuerChanged(_) => "issuer_changed",
            Self::AccountGone => "unauthorized",
            Self::Store(_) | Self::Internal(_) => "internal_error",
        }
    }
}

//! The errors of the relying party. Each says what went wrong in words safe to show (never a
//! token, a secret or an upstream body); the HTTP layer gives each its status.

/// Why a protocol step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The IdP cannot be reached, or its discovery failed (and is backing off).
    #[error("{0}")]
    IdpUnavailable(String),
    /// The IdP's metadata or the entry lacks what the step needs (an endpoint, a key).
    #[error("{0}")]
    IdpMisconfigured(String),
    /// The IdP answered something unusable (malformed, oversized, unexpected).
    #[error("{0}")]
    IdpProtocol(String),
    /// The IdP answered with an OAuth error of its own.
    #[error("{0}")]
    IdpError(String),
    /// The provider plugin failed (it could not say its parameters, or map the claims).
    #[error("{0}")]
    ProviderFailed(String),
    /// Revoking a token at the IdP failed.
    #[error("{0}")]
    RevocationFailed(String),
    /// A back-channel logout token failed verification.
    #[error("{0}")]
    InvalidLogoutToken(String),
    /// The IdP refused the authorization code.
    #[error("{0}")]
    CodeRejected(String),
    /// The ID token failed verification.
    #[error("{0}")]
    IdTokenInvalid(String),
    /// The token response carried no ID token.
    #[error("{0}")]
    IdTokenMissing(String),
    /// Userinfo failed verification (its `sub` differs, or it is malformed).
    #[error("{0}")]
    UserinfoInvalid(String),
    /// A refreshed token failed verification.
    #[error("{0}")]
    RefreshInvalid(String),
    /// The IdP no longer accepts the identity's grant: the person must sign in again.
    #[error("{0}")]
    Reauthenticate(String),
    /// Our own failure (a URL that cannot be built, an encoding that failed).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Whether what the IdP gave (a code, a token, a grant) was refused, rather than the IdP
    /// or authnz failing.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::CodeRejected(_)
                | Self::IdTokenInvalid(_)
                | Self::IdTokenMissing(_)
                | Self::UserinfoInvalid(_)
                | Self::RefreshInvalid(_)
                | Self::Reauthenticate(_)
        )
    }

    /// The stable error code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::IdpUnavailable(_) => "idp_unavailable",
            Self::IdpMisconfigured(_) => "idp_misconfigured",
            Self::IdpProtocol(_) => "idp_protocol_error",
            Self::IdpError(_) => "idp_error",
            Self::ProviderFailed(_) => "provider_failed",
            Self::RevocationFailed(_) => "revocation_failed",
            Self::InvalidLogoutToken(_) => "invalid_logout_token",
            Self::CodeRejected(_) => "code_rejected",
            Self::IdTokenInvalid(_) => "id_token_invalid",
            Self::IdTokenMissing(_) => "id_token_missing",
            Self::UserinfoInvalid(_) => "userinfo_invalid",
            Self::RefreshInvalid(_) => "refresh_invalid",
            Self::Reauthenticate(_) => "reauthenticate",
            Self::Internal(_) => "internal_error",
        }
    }
}

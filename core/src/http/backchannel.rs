//! Back-channel logout: an IdP ends the sessions of one of its identities.

use std::sync::Arc;

use poem::web::Data;
use poem::Body;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::error::{FlowError, Status};
use crate::state::App;

use super::error::{error_responses, ErrorBody};
use super::tags::ApiTags;

error_responses!(BackchannelError {
    /// The logout token is missing or invalid (signature, issuer, audience, events, nonce...).
    BadRequest = 400,
    /// No IdP of that name is configured.
    NotFound = 404,
    /// The IdP's keys could not be fetched.
    BadGateway = 502,
});

/// What a back-channel logout did.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BackchannelResult {
    /// Sessions ended.
    pub sessions_ended: u64,
}

#[derive(ApiResponse)]
pub enum BackchannelResponse {
    /// The matching sessions are ended.
    #[oai(status = 200)]
    Ok(Json<BackchannelResult>),
}

/// The backchannel routes.
pub struct BackchannelApi;

#[OpenApi]
impl BackchannelApi {
    /// OpenID Connect Back-Channel Logout: the IdP posts a signed `logout_token`; the
    /// sessions it names (by `sub` or `sid`) end.
    #[oai(
        path = "/authnz/:idp/backchannel-logout",
        method = "post",
        tag = "ApiTags::Account"
    )]
    async fn backchannel_logout(
        &self,
        app: Data<&Arc<App>>,
        idp: Path<String>,
        body: Body,
    ) -> Result<BackchannelResponse, BackchannelError> {
        let app = *app;
        let runtime = app.idp(&idp.0).ok_or_else(|| {
            FlowError::new(Status::NotFound, "unknown_idp", "no such identity provider")
        })?;
        let form = super::request::form_of(body).await;
        let token = form.get("logout_token").ok_or_else(|| {
            FlowError::bad_request("invalid_logout_token", "logout_token is missing")
        })?;
        let now = app.clock.now();
        let claims = runtime.verify_logout_token(token, now).await?;
        if !app
            .used_logout_tokens
            .first_use(&idp.0, &claims.jti, claims.replayable_until, now)
        {
            tracing::info!(idp = %idp.0, "logout token replayed");
            return Err(FlowError::bad_request(
                "invalid_logout_token",
                "this logout token was already used",
            )
            .into());
        }
        // Sessions belong to the provider's mapping of `sub` (Entra: `tid:oid`): map it as a
        // login is mapped. A provider that cannot map a logout token's few claims is matched by
        // `sid` alone where there is one, else by the raw `sub`.
        let subject = claims.sub.as_ref().and_then(|sub| {
            let mapped = runtime
                .config
                .provider
                .map_identity(&authnz_plugin::VerifiedClaims {
                    issuer: runtime.config.issuer.clone(),
                    subject: sub.clone(),
                    claims: claims.claims.clone(),
                })
                .ok()
                .map(|mapped| mapped.subject)
                .filter(|mapped| crate::protocol::valid_subject(mapped));
            match (mapped, &claims.sid) {
                (Some(mapped), _) => Some(mapped),
                (None, Some(_)) => None,
                (None, None) => Some(sub.clone()),
            }
        });
        // A logout token of this issuer ends nothing of an identity linked under another.
        if let Some(subject) = &subject {
            if app
                .store
                .identity(&idp.0, subject)
                .await?
                .is_some_and(|identity| !runtime.owns(&identity))
            {
                return Ok(BackchannelResponse::Ok(Json(BackchannelResult {
                    sessions_ended: 0,
                })));
            }
        }
        let ended = app
            .store
            .end_identity_sessions(&idp.0, subject.as_deref(), claims.sid.as_deref())
            .await?;
        tracing::info!(idp = %idp.0, ended, "back-channel logout");
        Ok(BackchannelResponse::Ok(Json(BackchannelResult {
            sessions_ended: ended as u64,
        })))
    }
}

//! The token lifecycle after a login: refresh (single-flight, rotating refresh tokens),
//! revocation, and RP-initiated logout.

use super::exchange::tokens_of;
use super::jws::{claims_error_reason, IdTokenClaimsView};
use super::*;

impl Idp {
    /// Exchanges a refresh token. An ID token in the answer must name the same issuer,
    /// subject and audience as before (SECURITY E49); a new refresh token replaces the old one,
    /// an absent one keeps it. Any 4xx from the token endpoint (`invalid_grant`, or the empty
    /// 400 of a grant the person revoked at the IdP) is a refusal: 401 `reauthenticate`
    /// (SECURITY I77); only a transport failure or a 5xx is the IdP's failure (502).
    pub async fn refresh(
        &self,
        tokens: &IdpTokens,
        subject: &str,
        now: i64,
    ) -> Result<IdpTokens, Error> {
        let refresh_token = tokens.refresh_token.clone().ok_or_else(reauthenticate)?;
        let discovered = self.discovered().await?;
        if let Some(answer) = self
            .info
            .oauth2
            .as_ref()
            .and_then(|o| o.token_answer.clone())
        {
            let form = [
                ("grant_type", "refresh_token".to_string()),
                ("refresh_token", refresh_token.clone()),
            ];
            let mut fresh = self
                .nested_token_request(&answer, &form, now)
                .await
                .map_err(|err| {
                    if err.is_refusal() {
                        reauthenticate()
                    } else {
                        err
                    }
                })?;
            if fresh.refresh_token.is_none() {
                fresh.refresh_token = Some(refresh_token);
            }
            return Ok(fresh);
        }
        let (_, jwks) = discovered.jwks();
        let client = self.client(&discovered, (*jwks).clone())?;
        // The status of the answer: openidconnect's error does not keep it.
        let status = Arc::new(std::sync::atomic::AtomicU16::new(0));
        let recording = self.http.recording(Arc::clone(&status));
        let token = openidconnect::RefreshToken::new(refresh_token.clone());
        let mut request = client.exchange_refresh_token(&token).map_err(|_| {
            Error::IdpMisconfigured("the identity provider has no token endpoint".into())
        })?;
        for (name, value) in self.assertion_params(&self.token_endpoint(Some(&discovered)))? {
            request = request.add_extra_param(name, value);
        }
        let dpop = self.dpop_of(tokens)?;
        let bound = dpop
            .as_ref()
            .map(|dpop| self.http.as_oidc_dpop(dpop, Arc::clone(&status)));
        let response = match &bound {
            Some(bound) => request.request_async(bound).await,
            None => request.request_async(&recording).await,
        }
        .map_err(|err| {
                let failure = self.token_error(&err);
                let status = status.load(std::sync::atomic::Ordering::Relaxed);
                if (400..500).contains(&status) || matches!(failure, Error::CodeRejected(_)) {
                    tracing::info!(idp = %self.config.name, status, "the identity provider refused the refresh token");
                    reauthenticate()
                } else {
                    failure
                }
            })?;
        let id_token = match response.id_token() {
            Some(id_token) => {
                let verifier = self
                    .verifier(&discovered.algs, (*jwks).clone(), now - 3600, now)
                    .require_issuer_match(self.info.issuer_template.is_none());
                let claims = id_token
                    .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                    .map_err(|err| {
                        tracing::info!(idp = %self.config.name, reason = %claims_error_reason(&err), "refreshed ID token rejected");
                        Error::RefreshInvalid("the refreshed ID token failed verification; log in again".into())
                    })?;
                // Raw `sub` against the raw `sub` of the login: the identity's subject may be
                // the provider's mapping of it (Entra: `tid:oid`).
                let previous = IdTokenClaimsView::of(&tokens.id_token);
                let raw_subject = previous.as_ref().map_or(subject, |p| p.sub.as_str());
                if claims.subject().as_str() != raw_subject
                    || previous
                        .as_ref()
                        .is_some_and(|p| p.iss != claims.issuer().as_str())
                {
                    tracing::warn!(idp = %self.config.name, "refreshed ID token names another issuer or subject");
                    return Err(Error::RefreshInvalid(
                        "the refreshed ID token names another identity; log in again".into(),
                    ));
                }
                id_token.to_string()
            }
            None => tokens.id_token.clone(),
        };
        let mut fresh = tokens_of(&response, id_token, now);
        if fresh.refresh_token.is_none() {
            fresh.refresh_token = Some(refresh_token);
        }
        fresh.dpop_key = tokens.dpop_key.clone();
        Ok(fresh)
    }

    /// Revokes the refresh and access tokens at the IdP (RFC 7009). `Ok(false)`: the IdP
    /// has no revocation endpoint. Any refusal is an error, so nothing is forgotten locally
    /// while the IdP still honours the tokens.
    pub async fn revoke(&self, tokens: &IdpTokens) -> Result<bool, Error> {
        let discovered = self.discovered().await?;
        let Some(endpoint) = discovered
            .metadata
            .additional_metadata()
            .revocation_endpoint
            .clone()
        else {
            return Ok(false);
        };
        let dpop = self.dpop_of(tokens)?;
        let candidates = [
            (tokens.refresh_token.as_deref(), "refresh_token"),
            (Some(tokens.access_token.as_str()), "access_token"),
        ];
        for (token, hint) in candidates {
            let Some(token) = token.filter(|token| !token.is_empty()) else {
                continue;
            };
            let request = self.client_post(
                &endpoint,
                &[("token", token), ("token_type_hint", hint)],
                &self.token_endpoint(Some(&discovered)),
            )?;
            let response = match &dpop {
                Some(dpop) => self.http.execute_dpop(request, dpop).await,
                None => self.http.execute(request).await,
            }
            .map_err(|err| {
                tracing::warn!(idp = %self.config.name, error = %err, "revocation failed");
                Error::RevocationFailed(
                    "the identity provider could not be reached to revoke the tokens; try again"
                        .into(),
                )
            })?;
            if !response.status().is_success() {
                tracing::warn!(idp = %self.config.name, status = response.status().as_u16(), "revocation refused");
                return Err(Error::RevocationFailed(
                    "the identity provider refused to revoke the tokens; try again".into(),
                ));
            }
        }
        Ok(true)
    }

    /// The IdP's RP-initiated logout URL, when it has an end-session endpoint.
    pub async fn end_session_url(
        &self,
        id_token_hint: Option<&str>,
        post_logout_redirect_uri: &str,
        state: &str,
    ) -> Option<String> {
        let discovered = self.discovered().await.ok()?;
        let endpoint = discovered
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        let mut url = Url::parse(&endpoint).ok()?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(hint) = id_token_hint.filter(|hint| !hint.is_empty()) {
                query.append_pair("id_token_hint", hint);
            }
            query
                .append_pair("post_logout_redirect_uri", post_logout_redirect_uri)
                .append_pair("client_id", &self.config.client_id)
                .append_pair("state", state);
        }
        Some(url.to_string())
    }
}

/// The 401 of a refresh the IdP refused: the person must sign in again.
pub fn reauthenticate() -> Error {
    Error::Reauthenticate(
        "the identity provider no longer accepts this sign-in; log in again".into(),
    )
}

//! Redeeming the code: the token request (OpenID Connect, or a plain OAuth 2.0 provider's own
//! answer), userinfo, and turning what came back into a verified login.

use super::jws::{access_token_hash, claims_error_reason};
use super::*;

impl Idp {
    pub(super) fn client(
        &self,
        discovered: &Discovered,
        jwks: CoreJsonWebKeySet,
    ) -> Result<OidcClient, Error> {
        let metadata = &discovered.metadata;
        let redirect = RedirectUrl::new(self.redirect_uri.clone())
            .map_err(|_| Error::Internal("invalid redirect URI".into()))?;
        let mut client: OidcClient = openidconnect::Client::from_provider_metadata(
            metadata.clone().set_jwks(jwks),
            ClientId::new(self.config.client_id.clone()),
            self.client_secret_for_client(),
        )
        .set_redirect_uri(redirect);
        match self.config.client_auth {
            ClientAuth::Auto => {
                // Plain OAuth 2.0 providers (GitHub) document the secret in the body.
                if self.info.oauth2.is_some() {
                    client = client.set_auth_type(AuthType::RequestBody);
                }
                // Basic auth unless the IdP says it only takes the secret in the body.
                if let Some(methods) = metadata.token_endpoint_auth_methods_supported() {
                    if !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
                        && methods.contains(&CoreClientAuthMethod::ClientSecretPost)
                    {
                        client = client.set_auth_type(AuthType::RequestBody);
                    }
                }
            }
            ClientAuth::SecretBasic => {}
            // The client id in the body, beside the secret or the assertion.
            ClientAuth::SecretPost
            | ClientAuth::SecretJwt
            | ClientAuth::PrivateKeyJwt
            | ClientAuth::None => client = client.set_auth_type(AuthType::RequestBody),
        }
        Ok(client)
    }

    /// Exchanges the code and verifies everything that comes back.
    pub async fn complete(
        &self,
        pending: &PendingLogin,
        code: &str,
        now: i64,
    ) -> Result<VerifiedLogin, Error> {
        let discovered = self.discovered().await?;
        if let Some(answer) = self
            .info
            .oauth2
            .as_ref()
            .and_then(|o| o.token_answer.clone())
        {
            let mut form = vec![
                ("grant_type", "authorization_code".to_string()),
                ("code", code.to_string()),
                ("redirect_uri", self.redirect_uri.clone()),
            ];
            if !pending.pkce_verifier.is_empty() {
                form.push(("code_verifier", pending.pkce_verifier.clone()));
            }
            let tokens = self.nested_token_request(&answer, &form, now).await?;
            return self.complete_oauth2(tokens).await;
        }
        let (_, jwks) = discovered.jwks();
        let client = self.client(&discovered, (*jwks).clone())?;
        let oidc_http = self.http.as_oidc();
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|_| {
                Error::IdpMisconfigured("the identity provider has no token endpoint".into())
            })?;
        if !pending.pkce_verifier.is_empty() {
            exchange =
                exchange.set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()));
        }
        for (name, value) in self.assertion_params(&self.token_endpoint(Some(&discovered)))? {
            exchange = exchange.add_extra_param(name, value);
        }
        // With `dpop`, a key of this sign-in's own: the identity's tokens will be bound to it.
        let dpop = if self.config.dpop {
            Some(Arc::new(super::dpop::Dpop::generate()?))
        } else {
            None
        };
        let status = Arc::new(std::sync::atomic::AtomicU16::new(0));
        let response = match &dpop {
            Some(dpop) => {
                exchange
                    .request_async(&self.http.as_oidc_dpop(dpop, Arc::clone(&status)))
                    .await
            }
            None => exchange.request_async(&oidc_http).await,
        }
        .map_err(|err| self.token_error(&err))?;
        self.check_token_type(
            &token_type_name(&response).unwrap_or_default(),
            dpop.is_some(),
        )?;
        if self.info.oauth2.is_some() {
            return self
                .complete_oauth2(tokens_of(&response, String::new(), now))
                .await;
        }

        let id_token = response.id_token().ok_or_else(|| {
            Error::IdTokenMissing("the identity provider returned no ID token".into())
        })?;
        let claims = self
            .verify_id_token(&discovered, id_token, pending, now)
            .await?;
        check_step_up(pending, claims, now)?;

        // at_hash, when present, binds the access token to this ID token (OIDC Core §3.1.3.8).
        if let Some(expected) = claims.access_token_hash() {
            let actual = id_token
                .signing_alg()
                .ok()
                .and_then(|alg| access_token_hash(response.access_token().secret(), alg));
            if actual.as_deref() != Some(expected.as_str()) {
                return Err(Error::IdTokenInvalid(
                    "the ID token does not match the access token (at_hash)".into(),
                ));
            }
        }

        let subject = claims.subject().as_str().to_string();
        let mut all = match serde_json::to_value(claims) {
            Ok(JsonValue::Object(map)) => map,
            _ => JsonMap::new(),
        };

        if self.config.userinfo && discovered.metadata.userinfo_endpoint().is_some() {
            let request = client
                .user_info(
                    response.access_token().clone(),
                    Some(SubjectIdentifier::new(subject.clone())),
                )
                .map_err(|_| Error::IdpMisconfigured("userinfo endpoint missing".into()))?;
            let userinfo: UserInfoClaims<OtherClaims, CoreGenderClaim> = match &dpop {
                Some(dpop) => {
                    request
                        .request_async(&self.http.as_oidc_dpop(dpop, Arc::clone(&status)))
                        .await
                }
                None => request.request_async(&oidc_http).await,
            }
            .map_err(|err| self.userinfo_error(&err))?;
            if let Ok(JsonValue::Object(extra)) = serde_json::to_value(&userinfo) {
                for (name, value) in extra {
                    all.entry(name).or_insert(value);
                }
            }
        }

        let mut tokens = tokens_of(&response, id_token.to_string(), now);
        tokens.dpop_key = dpop.map(|dpop| dpop.sealed_form());
        Ok(VerifiedLogin {
            claims: VerifiedClaims {
                issuer: self.config.issuer.clone(),
                subject,
                claims: all,
            },
            tokens,
        })
    }

    /// The rest of a plain OAuth 2.0 login: the provider's API calls, with the access token in
    /// the Authorization header, their JSON answers becoming the claims.
    pub(super) async fn complete_oauth2(&self, tokens: IdpTokens) -> Result<VerifiedLogin, Error> {
        let mut claims = JsonMap::new();
        let calls = self
            .info
            .oauth2
            .as_ref()
            .map(|o| o.api_calls.clone())
            .unwrap_or_default();
        for call in calls {
            let (name, value) = match &call.token_header {
                Some(name) => (name.as_str(), tokens.access_token.clone()),
                None => ("authorization", format!("Bearer {}", tokens.access_token)),
            };
            let request = http::Request::builder()
                .method(http::Method::GET)
                .uri(&call.url)
                .header(http::header::ACCEPT, "application/json")
                .header(name, value)
                .body(Vec::new())
                .map_err(|_| Error::IdpMisconfigured("invalid API URL".into()))?;
            let answer = self.http.execute(request).await.map_err(|err| {
                tracing::warn!(idp = %self.config.name, call = %call.claim, error = %err, "API call failed");
                Error::IdpUnavailable("the identity provider's API failed".into())
            })?;
            if !answer.status().is_success() {
                tracing::warn!(idp = %self.config.name, call = %call.claim, status = answer.status().as_u16(), "API call refused");
                return Err(Error::IdpError(
                    "the identity provider's API refused the request".into(),
                ));
            }
            let value: JsonValue = serde_json::from_slice(answer.body()).map_err(|_| {
                Error::IdpProtocol(
                    "the identity provider's API answered something unreadable".into(),
                )
            })?;
            claims.insert(call.claim.clone(), value);
        }
        Ok(VerifiedLogin {
            claims: VerifiedClaims {
                issuer: self.config.issuer.clone(),
                subject: String::new(),
                claims,
            },
            tokens,
        })
    }

    /// A token request to a provider whose answer nests the tokens ([`TokenAnswer`]): the
    /// grant in `form`, the client authenticated with HTTP Basic (or its id in the form when it
    /// has no secret). A 4xx is a refusal (401), anything else unusable the IdP's failure (502).
    ///
    /// [`TokenAnswer`]: authnz_plugin::TokenAnswer
    pub(super) async fn nested_token_request(
        &self,
        answer: &authnz_plugin::TokenAnswer,
        form: &[(&str, String)],
        now: i64,
    ) -> Result<IdpTokens, Error> {
        let endpoint = self
            .info
            .oauth2
            .as_ref()
            .map(|o| o.token_endpoint.clone())
            .unwrap_or_default();
        let form: Vec<(&str, &str)> = form
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let request = self.client_post(&endpoint, &form, &endpoint)?;
        let response = self.http.execute(request).await.map_err(|err| {
            tracing::warn!(idp = %self.config.name, error = %err, "token request failed");
            Error::IdpUnavailable("the identity provider's token endpoint failed".into())
        })?;
        let status = response.status().as_u16();
        if (400..500).contains(&status) {
            tracing::info!(idp = %self.config.name, status, "token endpoint refused the grant");
            return Err(Error::CodeRejected(
                "the identity provider refused the authorization code".into(),
            ));
        }
        let unusable =
            || Error::IdpProtocol("the identity provider's token response was unusable".into());
        if status != 200 {
            tracing::warn!(idp = %self.config.name, status, "token endpoint failed");
            return Err(unusable());
        }
        // Never logged: the body holds the tokens (SECURITY B17).
        let value: JsonValue = serde_json::from_slice(response.body()).map_err(|_| unusable())?;
        let text = |pointer: &str| {
            value
                .pointer(pointer)
                .and_then(JsonValue::as_str)
                .filter(|token| !token.is_empty())
                .map(str::to_string)
        };
        let access_token = text(&answer.access_token).ok_or_else(unusable)?;
        let expires_in = answer
            .expires_in
            .as_deref()
            .and_then(|pointer| value.pointer(pointer))
            .and_then(JsonValue::as_i64)
            .filter(|seconds| *seconds > 0);
        Ok(IdpTokens {
            access_token,
            refresh_token: answer.refresh_token.as_deref().and_then(text),
            id_token: String::new(),
            expires_at: expires_in.map(|seconds| now.saturating_add(seconds)),
            scope: None,
            token_type: None,
            dpop_key: None,
        })
    }

    /// A form POST to one of the IdP's endpoints, the client authenticated as `client_auth`
    /// says (by default as RFC 6749 §2.3.1 does: HTTP Basic with its secret, or, without one,
    /// its `client_id` in the form); an assertion names `token_endpoint` as its audience.
    pub(super) fn client_post(
        &self,
        endpoint: &str,
        form: &[(&str, &str)],
        token_endpoint: &str,
    ) -> Result<http::Request<Vec<u8>>, Error> {
        let (credentials, fields) = self.form_auth(token_endpoint)?;
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        body.extend_pairs(form);
        // Once: a form that names the client itself keeps its own `client_id`.
        body.extend_pairs(
            fields
                .iter()
                .filter(|(name, _)| !form.iter().any(|(given, _)| given == name)),
        );
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(endpoint)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        if let Some(credentials) = credentials {
            request = request.header(http::header::AUTHORIZATION, credentials);
        }
        request
            .body(body.finish().into_bytes())
            .map_err(|_| Error::IdpMisconfigured("an invalid endpoint URL".into()))
    }

    /// `Basic base64(urlencode(client_id):urlencode(secret))` (RFC 6749 §2.3.1), when the
    /// client has a secret.
    pub(super) fn basic_auth(&self) -> Option<String> {
        use base64::Engine;
        let secret = self.config.client_secret.as_ref()?;
        let encode = |value: &str| {
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
        };
        let credentials = format!(
            "{}:{}",
            encode(&self.config.client_id),
            encode(secret.expose())
        );
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ))
    }

    pub(super) fn token_error<
        RE: std::error::Error + 'static,
        T: openidconnect::ErrorResponse + 'static,
    >(
        &self,
        err: &RequestTokenError<RE, T>,
    ) -> Error {
        // Never `{:?}` this error: `Parse` carries the raw body, tokens included (SECURITY B17).
        match err {
            RequestTokenError::ServerResponse(response) => {
                let code = serde_json::to_value(response)
                    .ok()
                    .and_then(|value| {
                        value
                            .get("error")
                            .and_then(JsonValue::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                if code == "invalid_grant" {
                    tracing::info!(idp = %self.config.name, error = %code, "token endpoint refused the code");
                    Error::CodeRejected(
                        "the identity provider refused the authorization code".into(),
                    )
                } else {
                    tracing::warn!(idp = %self.config.name, error = %code, "token endpoint failed");
                    Error::IdpError("the identity provider's token endpoint failed".into())
                }
            }
            RequestTokenError::Request(inner) => {
                tracing::warn!(idp = %self.config.name, error = %inner, "token request failed");
                Error::IdpUnavailable("the identity provider's token endpoint failed".into())
            }
            RequestTokenError::Parse(inner, body) => {
                // A well-formed token response whose ID token does not parse (no `iat`, no
                // `sub`, not a JWT) is an ID-token failure, not a transport one.
                #[derive(Deserialize)]
                struct Shape {
                    #[allow(dead_code)]
                    access_token: String,
                    #[allow(dead_code)]
                    token_type: String,
                    #[allow(dead_code)]
                    id_token: String,
                }
                if serde_json::from_slice::<Shape>(body).is_ok() {
                    tracing::info!(idp = %self.config.name, at = %inner.path(), "ID token unreadable");
                    return Error::IdTokenInvalid("the ID token failed verification".into());
                }
                // Only the JSON path: serde's message can quote the body's values.
                tracing::warn!(idp = %self.config.name, at = %inner.path(), "token response unreadable");
                Error::IdpProtocol("the identity provider's token response was unreadable".into())
            }
            RequestTokenError::Other(_) => {
                tracing::warn!(idp = %self.config.name, "token response rejected");
                Error::IdpProtocol("the identity provider's token response was unusable".into())
            }
        }
    }

    pub(super) fn userinfo_error<RE: std::error::Error + 'static>(
        &self,
        err: &UserInfoError<RE>,
    ) -> Error {
        match err {
            UserInfoError::ClaimsVerification(inner) => {
                tracing::info!(idp = %self.config.name, reason = %claims_error_reason(inner), "userinfo rejected");
                Error::UserinfoInvalid(
                    "the identity provider's userinfo failed verification".into(),
                )
            }
            UserInfoError::Request(inner) => {
                tracing::warn!(idp = %self.config.name, error = %inner, "userinfo request failed");
                Error::IdpUnavailable("the identity provider's userinfo endpoint failed".into())
            }
            _ => {
                tracing::warn!(idp = %self.config.name, "userinfo response unusable");
                Error::IdpProtocol("the identity provider's userinfo response was unusable".into())
            }
        }
    }
}

/// The tokens of a token response, as stored.
pub(super) fn tokens_of(
    response: &TokenResponseWithClaims,
    id_token: String,
    now: i64,
) -> IdpTokens {
    IdpTokens {
        access_token: response.access_token().secret().clone(),
        refresh_token: response.refresh_token().map(|token| token.secret().clone()),
        id_token,
        expires_at: response
            .expires_in()
            .map(|expires_in| now.saturating_add(expires_in.as_secs().min(i64::MAX as u64) as i64)),
        scope: response.scopes().map(|scopes| {
            scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        }),
        token_type: token_type_name(response)
            .filter(|name| name.eq_ignore_ascii_case("dpop"))
            .map(|_| "DPoP".to_string()),
        dpop_key: None,
    }
}

/// The answer's `token_type` as the IdP wrote it.
pub(super) fn token_type_name(response: &TokenResponseWithClaims) -> Option<String> {
    serde_json::to_value(response.token_type())
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
}

/// What a step-up asked of the sign-in, checked on its ID token (OIDC Core §3.1.2.1, §2): with
/// `max_age`, an `auth_time` at most that old (clock skew allowed); with `acr_values`, an `acr`
/// among them. An IdP that ignores either does not pass for one that honoured it.
fn check_step_up(pending: &PendingLogin, claims: &AllIdTokenClaims, now: i64) -> Result<(), Error> {
    if let Some(max_age) = pending.max_age {
        let auth_time = claims.auth_time().ok_or_else(|| {
            Error::IdTokenInvalid(
                "the identity provider did not say when the person signed in (auth_time), though a recent sign-in was asked for".into(),
            )
        })?;
        if now - auth_time.timestamp() > max_age + CLOCK_SKEW.as_secs() as i64 {
            return Err(Error::IdTokenInvalid(
                "the identity provider's sign-in is older than the application allows (auth_time)"
                    .into(),
            ));
        }
    }
    if !pending.acr_values.is_empty() {
        let acr = claims
            .auth_context_ref()
            .map(|acr| acr.as_str().to_string());
        if !acr.is_some_and(|acr| pending.acr_values.contains(&acr)) {
            return Err(Error::IdTokenInvalid(
                "the identity provider's sign-in is not of the kind the application asked for (acr)".into(),
            ));
        }
    }
    Ok(())
}

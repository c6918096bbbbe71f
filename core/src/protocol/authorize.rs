//! The authorize request: state, nonce and PKCE, and the parameters a login sends the IdP.

use super::*;

/// What an application's step-up asks of a sign-in (OIDC Core §3.1.2.1): a recent
/// authentication at the IdP, one of some authentication context classes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepUp {
    pub max_age: Option<i64>,
    pub acr_values: Vec<String>,
}

impl Idp {
    /// Builds the authorize URL and the pending login that `/callback` will need.
    pub async fn authorize(
        &self,
        next: String,
        browser_hash: String,
        now: i64,
        secrets: &crate::crypto::LoginSecrets,
        step_up: &StepUp,
    ) -> Result<AuthorizeRequest, Error> {
        if self.info.oauth2.is_some() && *step_up != StepUp::default() {
            return Err(Error::IdpMisconfigured(
                "this identity provider gives no ID token, so it cannot attest when or how the person signed in (max_age, acr_values)".into(),
            ));
        }
        let discovered = self.discovered().await?;
        let state = random_token(32);
        // Derived from the state with a key from the vault: as unpredictable as random values, and the
        // pending-login table keeps neither (see `LoginSecrets`).
        let nonce = secrets.derive("nonce", &state);
        let verifier = PkceCodeVerifier::new(secrets.derive("pkce", &state));
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
        // state, nonce and the challenge are base64url: nothing in them needs encoding.
        let mut url = String::with_capacity(discovered.authorize_base.len() + 256);
        url.push_str(&discovered.authorize_base);
        url.push_str("&state=");
        url.push_str(&state);
        if self.info.oauth2.is_none() {
            url.push_str("&nonce=");
            url.push_str(&nonce);
        }
        if self.config.form_post {
            url.push_str("&response_mode=form_post");
        }
        if let Some(max_age) = step_up.max_age {
            url.push_str(&format!("&max_age={max_age}"));
        }
        if !step_up.acr_values.is_empty() {
            let values: String =
                url::form_urlencoded::byte_serialize(step_up.acr_values.join(" ").as_bytes())
                    .collect();
            url.push_str("&acr_values=");
            url.push_str(&values);
        }
        if self.config.pkce {
            url.push_str("&code_challenge=");
            url.push_str(challenge.as_str());
            url.push_str("&code_challenge_method=S256");
        }
        let extra = self.extra_authorize_params()?;
        if !extra.is_empty() {
            url.push('&');
            url.push_str(&extra);
        }
        // RFC 9126: the parameters go to the IdP directly; the browser carries only a
        // reference to them.
        if let Some(endpoint) = self.par_endpoint(&discovered)? {
            url = self
                .push_authorization_request(&discovered, &endpoint, &url)
                .await?;
        }
        Ok(AuthorizeRequest {
            url,
            state,
            pending: PendingLogin {
                idp: self.config.name.clone(),
                issuer: self.config.issuer.clone(),
                client_id: self.config.client_id.clone(),
                redirect_uri: self.redirect_uri.clone(),
                nonce,
                pkce_verifier: if self.config.pkce {
                    verifier.into_secret()
                } else {
                    String::new()
                },
                next,
                browser_hash,
                created_at: now,
                link_user_id: None,
                idp_fingerprint: self.fingerprint.clone(),
                secret_key_id: secrets.key_id().to_string(),
                max_age: step_up.max_age,
                acr_values: step_up.acr_values.clone(),
            },
        })
    }

    /// `prompt`, the config's `authorize_params` and the provider's own, form-encoded, none
    /// that the core sets itself and each once.
    fn extra_authorize_params(&self) -> Result<String, Error> {
        let mut extra = url::form_urlencoded::Serializer::new(String::new());
        if let Some(prompt) = &self.config.prompt {
            extra.append_pair("prompt", prompt);
        }
        let ctx = LoginContext {
            idp: self.config.name.clone(),
        };
        // A provider that cannot say its parameters stops the login (fail closed).
        let provided = self
            .config
            .provider
            .try_authorize_params(&ctx)
            .map_err(|_| {
                Error::ProviderFailed(
                    "the identity provider's plugin failed; the sign-in cannot start".into(),
                )
            })?;
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in self.config.authorize_params.iter().cloned().chain(provided) {
            if RESERVED_AUTHORIZE_PARAMS.contains(&name.as_str())
                || (name == "prompt" && self.config.prompt.is_some())
                || seen.contains(&name)
            {
                continue;
            }
            extra.append_pair(&name, &value);
            seen.push(name);
        }
        Ok(extra.finish())
    }
}

//! Pushed authorization requests (RFC 9126): the authorize parameters are posted to the IdP
//! over the back channel, with the client's authentication, and the browser is sent to the
//! authorization endpoint with nothing but `client_id` and the `request_uri` the IdP answered.
//! Nothing of the request (scopes, state, nonce, PKCE challenge, hints) travels through the
//! browser, and the IdP knows the request came from this client.
//!
//! `par = "auto"` (the default) pushes when discovery has a
//! `pushed_authorization_request_endpoint`; `"always"` refuses to start a sign-in at an IdP
//! without one; `"never"` sends the parameters in the URL, unless the IdP's discovery says
//! `require_pushed_authorization_requests`, which is honoured by refusing.

use super::*;
use crate::config::Par;

impl Idp {
    /// Where to push this IdP's authorization requests; `None`: in the URL.
    pub(super) fn par_endpoint(&self, discovered: &Discovered) -> Result<Option<String>, Error> {
        let extra = discovered.metadata.additional_metadata();
        let endpoint = extra.pushed_authorization_request_endpoint.clone();
        let required = extra.require_pushed_authorization_requests == Some(true);
        match (self.config.par, endpoint) {
            (Par::Never, _) if required => Err(Error::IdpMisconfigured(
                "the identity provider takes only pushed authorization requests (require_pushed_authorization_requests), but this entry says par = \"never\"".into(),
            )),
            (Par::Never, _) => Ok(None),
            (Par::Always, None) => Err(Error::IdpMisconfigured(
                "par = \"always\", but the identity provider's discovery has no pushed_authorization_request_endpoint".into(),
            )),
            (Par::Auto, None) if required => Err(Error::IdpMisconfigured(
                "the identity provider requires pushed authorization requests but names no pushed_authorization_request_endpoint".into(),
            )),
            (Par::Auto, None) => Ok(None),
            (_, Some(endpoint)) => Ok(Some(endpoint)),
        }
    }

    /// What `check --online` says of `par` against discovery: why no sign-in could start.
    pub fn par_problems(&self, discovered: &Discovered) -> Vec<String> {
        match self.par_endpoint(discovered) {
            Ok(_) => Vec::new(),
            Err(err) => vec![err.to_string()],
        }
    }

    /// Pushes the parameters of `authorize_url` to `endpoint`; the URL the browser opens
    /// instead. A refusal (4xx) or an answer without a `request_uri` fails the sign-in (502).
    pub(super) async fn push_authorization_request(
        &self,
        discovered: &Discovered,
        endpoint: &str,
        authorize_url: &str,
    ) -> Result<String, Error> {
        let parsed = Url::parse(authorize_url)
            .map_err(|_| Error::Internal("an unparsable authorize URL".into()))?;
        // `client_id` stays in the body (RFC 9126 §2.1), whatever the client authentication.
        let params: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        let form: Vec<(&str, &str)> = params
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let request = self.client_post(endpoint, &form, &self.token_endpoint(Some(discovered)))?;
        let response = self.http.execute(request).await.map_err(|err| {
            tracing::warn!(idp = %self.config.name, error = %err, "pushed authorization request failed");
            Error::IdpUnavailable(
                "the identity provider's pushed authorization request endpoint failed".into(),
            )
        })?;
        let status = response.status().as_u16();
        let answer: JsonValue = serde_json::from_slice(response.body()).unwrap_or(JsonValue::Null);
        if status != 201 && status != 200 {
            let code = answer
                .get("error")
                .and_then(JsonValue::as_str)
                .map(crate::text::loggable)
                .unwrap_or_default();
            tracing::warn!(idp = %self.config.name, status, error = %code, "the identity provider refused the pushed authorization request");
            return Err(Error::IdpMisconfigured(format!(
                "the identity provider refused the pushed authorization request ({status}{})",
                if code.is_empty() {
                    String::new()
                } else {
                    format!(", {code}")
                }
            )));
        }
        let request_uri = answer
            .get("request_uri")
            .and_then(JsonValue::as_str)
            .filter(|uri| !uri.is_empty())
            .ok_or_else(|| {
                Error::IdpProtocol(
                    "the identity provider's pushed authorization answer has no request_uri".into(),
                )
            })?;
        let mut url = discovered.metadata.authorization_endpoint().url().clone();
        url.set_fragment(None);
        url.query_pairs_mut()
            .append_pair("client_id", &self.config.client_id)
            .append_pair("request_uri", request_uri);
        Ok(url.into())
    }
}

//! GitHub: plain OAuth 2.0 (no OpenID Connect, no ID token), github.com or GitHub Enterprise.
//!
//! The core runs the code flow against the endpoints described here, then calls `/user` and
//! `/user/emails` with the access token and hands their JSON answers over as the claims `user`
//! and `emails`. A person is keyed by the numeric user id, which never changes, not by `login`
//! (renamable, then reusable by someone else) nor by email. The email is the primary one, and
//! verified only when GitHub says so.
//!
//! What the core must do for this kind (noted for the core, not done here): never add `openid`
//! to the scopes of an `oauth2` provider (GitHub would show it as an unknown scope), ask the
//! token endpoint for JSON (`Accept: application/json`; GitHub answers form-encoded otherwise)
//! and send a `User-Agent` on API calls (GitHub's API refuses requests without one).

use authnz_plugin::schemars::{self, JsonSchema};
use authnz_plugin::serde::Deserialize;
use authnz_plugin::{
    ApiCall, ConfigError, IdentityProvider, JsonValue, Kind, MapError, MappedIdentity,
    OAuth2Endpoints, ProviderInfo, ProviderSettings, VerifiedClaims,
};

/// `kind = "github"`.
pub const KIND: Kind = Kind::new("github", factory)
    .described("GitHub (OAuth 2.0; GitHub Enterprise with `url`).")
    .with_settings::<GitHubSettings>()
    .badge("#24292f");

/// The settings of `github`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(crate = "authnz_plugin::serde", deny_unknown_fields)]
pub struct GitHubSettings {
    /// The web base URL. Default: `https://github.com`.
    pub url: Option<String>,
    /// The API base URL. Default: `https://api.github.com`, or `<url>/api/v3` with `url`.
    pub api_url: Option<String>,
}

/// The web base of github.com.
pub const GITHUB_URL: &str = "https://github.com";
/// The REST API of github.com.
pub const GITHUB_API_URL: &str = "https://api.github.com";

/// The `github` kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubProvider {
    /// Web base, without trailing slash: `https://github.com` or an Enterprise server.
    url: String,
    /// REST API base, without trailing slash.
    api_url: String,
}

/// Factory for `kind = "github"`: `url` (optional, default `https://github.com`) and `api_url`
/// (optional; default `https://api.github.com`, or `<url>/api/v3` when `url` is set, the
/// GitHub Enterprise Server layout, so that an Enterprise token is never sent to github.com).
pub fn factory(settings: &ProviderSettings) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
    let mut errors = settings.unknown_keys(&["url", "api_url"]);
    let url = settings.optional_base_url("url", &mut errors);
    let api_url = settings.optional_base_url("api_url", &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let api_url = match (&url, api_url) {
        (_, Some(api_url)) => api_url,
        (Some(url), None) => format!("{url}/api/v3"),
        (None, None) => GITHUB_API_URL.to_string(),
    };
    Ok(Box::new(GitHubProvider {
        url: url.unwrap_or_else(|| GITHUB_URL.to_string()),
        api_url,
    }))
}

impl IdentityProvider for GitHubProvider {
    fn describe(&self) -> ProviderInfo {
        let (url, api) = (&self.url, &self.api_url);
        ProviderInfo {
            kind: "github".into(),
            // Not a discovery base (there is none): names the IdP, e.g. for the core's state
            // binding.
            issuer: Some(url.clone()),
            // The core must not add `openid` for an oauth2 provider (see the module header).
            scopes: vec!["read:user".into(), "user:email".into()],
            label: "GitHub".into(),
            icon: Some(authnz_plugin::mark(
                "0 0 24 24",
                "#181717",
                icondata_si::SiGithub.data,
            )),
            oauth2: Some(OAuth2Endpoints {
                // Both bases are validated URLs without query or trailing slash.
                authorization_endpoint: format!("{url}/login/oauth/authorize"),
                token_endpoint: format!("{url}/login/oauth/access_token"),
                api_calls: vec![
                    ApiCall {
                        claim: "user".into(),
                        url: format!("{api}/user"),
                        ..Default::default()
                    },
                    ApiCall {
                        claim: "emails".into(),
                        url: format!("{api}/user/emails"),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn map_identity(&self, claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
        let user = claims.claims.get("user");
        let field = |name: &str| user.and_then(|user| user.get(name));
        let subject = field("id")
            .and_then(JsonValue::as_u64)
            .ok_or_else(|| MapError::Invalid("GitHub's /user answer has no numeric id".into()))?
            .to_string();
        let text = |name: &str| field(name).and_then(JsonValue::as_str).map(str::to_string);
        let (email, email_verified) = primary_email(claims.claims.get("emails"));
        Ok(MappedIdentity {
            subject,
            username: text("login"),
            email,
            email_verified,
            display_name: text("name"),
            ..Default::default()
        })
    }
}

/// From `/user/emails` (`[{"email", "primary", "verified"}, ...]`): the primary address and
/// whether GitHub verified it; without a primary one, the first verified address.
fn primary_email(emails: Option<&JsonValue>) -> (Option<String>, bool) {
    let entries = emails.and_then(JsonValue::as_array);
    let entries = entries.into_iter().flatten().filter_map(|entry| {
        let email = entry.get("email")?.as_str()?;
        let flag = |name: &str| entry.get(name).and_then(JsonValue::as_bool) == Some(true);
        Some((email, flag("primary"), flag("verified")))
    });
    let mut first_verified = None;
    for (email, primary, verified) in entries {
        if primary {
            return (Some(email.to_string()), verified);
        }
        if verified && first_verified.is_none() {
            first_verified = Some(email.to_string());
        }
    }
    let verified = first_verified.is_some();
    (first_verified, verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &str) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
        factory(&ProviderSettings {
            name: "github".into(),
            settings: text.parse().unwrap(),
        })
    }

    #[test]
    fn settings_table() {
        // (settings, Ok((web base, api base)) or Err(keys with errors))
        type Want = Result<(&'static str, &'static str), &'static [&'static str]>;
        let cases: [(&str, Want); 8] = [
            ("", Ok(("https://github.com", "https://api.github.com"))),
            (
                "url = \"https://ghe.example.org/\"",
                Ok(("https://ghe.example.org", "https://ghe.example.org/api/v3")),
            ),
            (
                "url = \"https://ghe.example.org\"\napi_url = \"https://api.ghe.example.org/\"",
                Ok(("https://ghe.example.org", "https://api.ghe.example.org")),
            ),
            (
                "url = \"http://127.0.0.1:9000\"\napi_url = \"http://127.0.0.1:9000/api\"",
                Ok(("http://127.0.0.1:9000", "http://127.0.0.1:9000/api")),
            ),
            ("url = \"http://github.example.org\"", Err(&["url"])),
            ("api_url = \"github.com\"", Err(&["api_url"])),
            (
                "url = \"https://a@github.com\"\napi_url = \"https://api.github.com/?x\"",
                Err(&["api_url", "url"]),
            ),
            (
                "allowed_organizations = [\"galaxyproject\"]",
                Err(&["allowed_organizations"]),
            ),
        ];
        for (text, want) in cases {
            match (build(text), want) {
                (Ok(provider), Ok((url, api))) => {
                    // The settings type states what the factory accepts.
                    let read = authnz_plugin::TomlValue::Table(text.parse().unwrap())
                        .try_into::<GitHubSettings>();
                    assert!(read.is_ok(), "{text}: {read:?}");
                    let info = provider.describe();
                    assert_eq!(info.issuer.as_deref(), Some(url), "{text}");
                    let endpoints = info.oauth2.unwrap();
                    assert_eq!(
                        endpoints.authorization_endpoint,
                        format!("{url}/login/oauth/authorize")
                    );
                    assert_eq!(
                        endpoints.token_endpoint,
                        format!("{url}/login/oauth/access_token")
                    );
                    let calls: Vec<(&str, &str)> = endpoints
                        .api_calls
                        .iter()
                        .map(|call| (call.claim.as_str(), call.url.as_str()))
                        .collect();
                    assert_eq!(
                        calls,
                        [
                            ("user", format!("{api}/user").as_str()),
                            ("emails", format!("{api}/user/emails").as_str()),
                        ],
                        "{text}"
                    );
                }
                (Err(errors), Err(keys)) => {
                    let mut found: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
                    found.sort();
                    assert_eq!(found, keys, "{text}: {errors:?}");
                }
                (Ok(provider), Err(_)) => panic!("{text}: accepted as {:?}", provider.describe()),
                (Err(errors), Ok(_)) => panic!("{text}: rejected with {errors:?}"),
            }
        }
    }

    #[test]
    fn describes_github() {
        let info = build("").unwrap().describe();
        assert_eq!(info.kind, "github");
        assert_eq!(info.label, "GitHub");
        assert_eq!(info.scopes, ["read:user", "user:email"]);
        assert_eq!(info.issuer_template, None);
    }

    #[test]
    fn maps_user_and_emails() {
        let provider = build("").unwrap();
        let user = serde_json::json!({"id": 583231, "login": "octocat", "name": "The Octocat", "email": "public@example.org"});
        // (emails answer, email, email_verified)
        let cases = [
            (
                serde_json::json!([
                    {"email": "other@example.org", "primary": false, "verified": true},
                    {"email": "octo@example.org", "primary": true, "verified": true},
                ]),
                Some("octo@example.org"),
                true,
            ),
            (
                serde_json::json!([
                    {"email": "other@example.org", "primary": false, "verified": true},
                    {"email": "octo@example.org", "primary": true, "verified": false},
                ]),
                Some("octo@example.org"),
                false,
            ),
            (
                serde_json::json!([
                    {"email": "a@example.org", "primary": false, "verified": false},
                    {"email": "b@example.org", "primary": false, "verified": true},
                    {"email": "c@example.org", "primary": false, "verified": true},
                ]),
                Some("b@example.org"),
                true,
            ),
            (
                serde_json::json!([{"email": "a@example.org", "primary": false, "verified": false}]),
                None,
                false,
            ),
            (
                serde_json::json!([{"email": "a@example.org", "primary": "true", "verified": "true"}]),
                None,
                false,
            ),
            (serde_json::json!([]), None, false),
            (serde_json::json!({"message": "Not Found"}), None, false),
            (serde_json::Value::Null, None, false),
        ];
        for (emails, email, verified) in cases {
            let mut claims = authnz_plugin::JsonMap::new();
            claims.insert("user".into(), user.clone());
            if !emails.is_null() {
                claims.insert("emails".into(), emails.clone());
            }
            let mapped = provider
                .map_identity(&VerifiedClaims {
                    issuer: GITHUB_URL.into(),
                    subject: String::new(),
                    claims,
                })
                .unwrap();
            assert_eq!(mapped.subject, "583231");
            assert_eq!(mapped.username.as_deref(), Some("octocat"));
            assert_eq!(mapped.display_name.as_deref(), Some("The Octocat"));
            assert_eq!(mapped.email.as_deref(), email, "{emails}");
            assert_eq!(mapped.email_verified, verified, "{emails}");
        }
    }

    #[test]
    fn user_without_numeric_id_is_invalid() {
        let provider = build("").unwrap();
        let users = [
            serde_json::json!({"login": "octocat"}),
            serde_json::json!({"id": "583231", "login": "octocat"}),
            serde_json::json!({"id": -1}),
            serde_json::json!({"id": 1.5}),
            serde_json::json!("octocat"),
        ];
        for user in users {
            let mut claims = authnz_plugin::JsonMap::new();
            claims.insert("user".into(), user.clone());
            let result = provider.map_identity(&VerifiedClaims {
                issuer: GITHUB_URL.into(),
                subject: String::new(),
                claims,
            });
            assert!(matches!(result, Err(MapError::Invalid(_))), "{user}");
        }
        let result = provider.map_identity(&VerifiedClaims {
            issuer: GITHUB_URL.into(),
            subject: "ignored".into(),
            claims: authnz_plugin::JsonMap::new(),
        });
        assert!(matches!(result, Err(MapError::Invalid(_))));
    }

    #[test]
    fn null_name_is_no_display_name() {
        let provider = build("").unwrap();
        let mut claims = authnz_plugin::JsonMap::new();
        claims.insert(
            "user".into(),
            serde_json::json!({"id": 1, "login": "a", "name": null}),
        );
        let mapped = provider
            .map_identity(&VerifiedClaims {
                issuer: GITHUB_URL.into(),
                subject: String::new(),
                claims,
            })
            .unwrap();
        assert_eq!(mapped.display_name, None);
        assert_eq!(mapped.email, None);
    }
}

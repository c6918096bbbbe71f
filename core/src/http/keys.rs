//! Credentials for applications: API keys, and the IdP access token of the caller's identity.

use std::collections::HashMap;
use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::error::{FlowError, Status};
use crate::crypto::{random_token, sha256_hex};
use crate::protocol::IdpTokens;
use crate::state::App;
use crate::store::{identity_key_public, ApiKey};

use super::caller::{caller, session_required, Auth, Caller, API_KEY_PREFIX};
use super::error::{error_responses, ErrorBody};
use super::request::check_same_origin;
use super::tags::ApiTags;

/// A JSON string and only a string: the framework's own `String` would also take `false` or
/// `42` and make text of it, which the published schema does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictString(pub String);

impl poem_openapi::types::Type for StrictString {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> std::borrow::Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        <String as poem_openapi::types::Type>::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl poem_openapi::types::ParseFromJSON for StrictString {
    fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
        match value {
            Some(serde_json::Value::String(text)) => Ok(Self(text)),
            other => Err(poem_openapi::types::ParseError::expected_type(
                other.unwrap_or_default(),
            )),
        }
    }
}

impl poem_openapi::types::ToJSON for StrictString {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.0.clone()))
    }
}

/// A new API key's name and lifetime.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct NewApiKey {
    /// What it is for, e.g. "laptop scripts".
    #[oai(validator(min_length = 1, max_length = 100))]
    pub name: StrictString,
    /// Days until it expires; absent: it does not expire.
    #[oai(validator(minimum(value = "1"), maximum(value = "3650")))]
    pub expires_in_days: poem_openapi::types::MaybeUndefined<i64>,
}

/// An API key (never the secret, except once, at creation).
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// The secret: only in the answer to its creation. Store it now; it cannot be shown again.
    pub key: Option<String>,
}

impl ApiKeyView {
    fn of(key: ApiKey, secret: Option<String>) -> Self {
        Self {
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            created_at: key.created_at,
            expires_at: key.expires_at,
            key: secret,
        }
    }
}

error_responses!(KeysError {
    /// The body is not a valid JSON key request.
    BadRequest = 400,
    /// Not logged in.
    Unauthorized = 401,
    /// Cross-site request or missing CSRF token.
    Forbidden = 403,
    /// No such key.
    NotFound = 404,
    /// The body is not JSON.
    UnsupportedMediaType = 415,
});

#[derive(ApiResponse)]
pub enum CreatedKey {
    /// The key, with its secret shown this once.
    #[oai(status = 201)]
    Created(Json<ApiKeyView>),
}

#[derive(ApiResponse)]
pub enum KeyList {
    /// The user's API keys, without secrets.
    #[oai(status = 200)]
    Ok(Json<Vec<ApiKeyView>>),
}

#[derive(ApiResponse)]
pub enum KeyDeleted {
    /// Deleted: the key no longer works.
    #[oai(status = 204)]
    Deleted,
}

/// An IdP access token for the application.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AccessTokenView {
    pub access_token: String,
    /// `Bearer`, or `DPoP` for an IdP entry with `dpop = true`: the token is bound to a key
    /// that stays in authnz, so only authnz can use it (an application that calls the IdP's
    /// APIs needs bearer tokens, i.e. an entry without `dpop`).
    pub token_type: String,
    /// Unix seconds, when known.
    pub expires_at: Option<i64>,
    pub scope: Option<String>,
}

error_responses!(TokenError {
    /// `subject` is needed: several identities at this IdP.
    BadRequest = 400,
    /// Not logged in, or the IdP refused to refresh (the session is then ended: log in again).
    Unauthorized = 401,
    /// A cross-site request, or a bearer credential that was not issued for this identity.
    Forbidden = 403,
    /// No identity at that IdP, or no tokens kept for it.
    NotFound = 404,
    /// The IdP could not be reached.
    BadGateway = 502,
});

#[derive(ApiResponse)]
pub enum TokenResponse {
    /// A currently valid access token (refreshed at the IdP when it had expired).
    #[oai(status = 200)]
    Ok(Json<AccessTokenView>),
}

/// Makes and stores a new API key of `user_id` (the name and lifetime already checked): the
/// key and its secret, which only its hash is stored under.
pub(crate) async fn new_key(
    app: &App,
    user_id: &str,
    name: String,
    expires_in_days: Option<i64>,
) -> Result<(ApiKey, String), FlowError> {
    let secret = format!("{API_KEY_PREFIX}{}", random_token(32));
    let now = app.clock.now();
    let key = ApiKey {
        id: random_token(9),
        user_id: user_id.to_string(),
        name,
        prefix: secret.chars().take(API_KEY_PREFIX.len() + 4).collect(),
        created_at: now,
        expires_at: expires_in_days.map(|days| now + days * 86_400),
    };
    app.store.put_api_key(&sha256_hex(&secret), &key).await?;
    Ok((key, secret))
}

/// The one identity of the caller at `idp` (or the one with `subject`).
pub(crate) async fn pick_identity(
    app: &App,
    caller: &Caller,
    idp: &str,
    subject: Option<&str>,
) -> Result<String, FlowError> {
    let mut subjects: Vec<String> = app
        .store
        .identities_of(&caller.user.id)
        .await?
        .into_iter()
        .filter(|identity| identity.idp == idp)
        .map(|identity| identity.subject)
        .collect();
    if let Some(subject) = subject {
        subjects.retain(|s| s == subject);
    }
    match subjects.len() {
        0 => Err(FlowError::new(
            Status::NotFound,
            "no_such_identity",
            "this account has no such identity",
        )),
        1 => Ok(subjects.remove(0)),
        _ => Err(FlowError::bad_request(
            "subject_required",
            "this account has several identities at this IdP: name one with ?subject=",
        )),
    }
}

/// The keys routes.
pub struct KeysApi;

#[OpenApi]
impl KeysApi {
    /// Creates a personal API key for scripts (`Authorization: Bearer <key>` on `/api/*`).
    /// The key is shown once; only its hash is stored.
    #[oai(path = "/api/keys", method = "post", tag = "ApiTags::Account")]
    async fn create_key(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        request: Json<NewApiKey>,
    ) -> Result<CreatedKey, KeysError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        caller.check_session_change(app, req, &HashMap::new())?;
        if request.0.expires_in_days.is_null() {
            return Err(FlowError::bad_request(
                "invalid_request",
                "expires_in_days is a number of days; leave it out for a key that does not expire",
            )
            .into());
        }
        let (key, secret) = new_key(
            app,
            &caller.user.id,
            request.0.name.0,
            request.0.expires_in_days.value().copied(),
        )
        .await?;
        Ok(CreatedKey::Created(Json(ApiKeyView::of(key, Some(secret)))))
    }

    /// The user's API keys (without their secrets).
    #[oai(path = "/api/keys", method = "get", tag = "ApiTags::Account")]
    async fn list_keys(&self, app: Data<&Arc<App>>, auth: Auth) -> Result<KeyList, KeysError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        let keys = app
            .store
            .api_keys_of(&caller.user.id)
            .await?
            .into_iter()
            .map(|key| ApiKeyView::of(key, None))
            .collect();
        Ok(KeyList::Ok(Json(keys)))
    }

    /// Deletes an API key.
    #[oai(path = "/api/keys/:id", method = "delete", tag = "ApiTags::Account")]
    async fn delete_key(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        id: Path<String>,
    ) -> Result<KeyDeleted, KeysError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        caller.check_session_change(app, req, &HashMap::new())?;
        if app.store.delete_api_key(&caller.user.id, &id.0).await? {
            Ok(KeyDeleted::Deleted)
        } else {
            Err(FlowError::new(Status::NotFound, "no_such_key", "no such API key").into())
        }
    }

    /// A valid IdP access token of the logged-in user, for the application to call the IdP's
    /// APIs; refreshed at the IdP when expired. A refused refresh ends the session.
    #[oai(
        path = "/api/users/me/tokens/:idp",
        method = "get",
        tag = "ApiTags::Account"
    )]
    async fn access_token(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        idp: Path<String>,
        /// The identity's subject, when the account has several at this IdP.
        subject: Query<Option<String>>,
    ) -> Result<TokenResponse, TokenError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        // A cross-site GET rides on the Lax cookie; a refused refresh would end the session.
        if caller.session.is_some() {
            check_same_origin(app, req)?;
        }
        // An IdP's access token reads its own identity's tokens, nothing else; an API key none
        // (SECURITY I71).
        let issued_for = match (&caller.session, &caller.idp_token) {
            (Some(_), _) => None,
            (None, Some((token_idp, token_subject))) if token_idp == &idp.0 => {
                Some(token_subject.clone())
            }
            _ => return Err(session_required().into()),
        };
        let subject = pick_identity(
            app,
            &caller,
            &idp.0,
            subject.0.as_deref().or(issued_for.as_deref()),
        )
        .await?;
        if issued_for.is_some_and(|issued_for| issued_for != subject) {
            return Err(session_required().into());
        }
        let runtime = app.idp(&idp.0).ok_or_else(|| {
            FlowError::new(
                Status::NotFound,
                "unknown_idp",
                "this identity provider is no longer configured",
            )
        })?;
        let no_tokens = || {
            FlowError::new(
                Status::NotFound,
                "no_tokens",
                "no tokens are kept for this identity; log in again",
            )
        };
        let expiring = |tokens: &IdpTokens, now: i64| {
            tokens.expires_at.is_some_and(|expires| expires <= now + 30)
        };
        let (mut sealed, mut tokens) = app
            .accounts()
            .open_tokens(&idp.0, &subject)
            .await?
            .ok_or_else(no_tokens)?;
        let mut now = app.clock.now();
        // One refresh per identity at a time; whoever waited takes what it left.
        let _refreshing = if expiring(&tokens, now) {
            let guard = app
                .refreshing
                .lock(identity_key_public(&idp.0, &subject))
                .await;
            (sealed, tokens) = app
                .accounts()
                .open_tokens(&idp.0, &subject)
                .await?
                .ok_or_else(crate::protocol::reauthenticate)?;
            now = app.clock.now();
            Some(guard)
        } else {
            None
        };
        let fresh = if expiring(&tokens, now) {
            match runtime.refresh(&tokens, &subject, now).await {
                Ok(fresh) => {
                    let plain = serde_json::to_vec(&fresh)
                        .map_err(|_| FlowError::internal("token encoding failed"))?;
                    let resealed = app
                        .vault
                        .seal(&identity_key_public(&idp.0, &subject), &plain)
                        .map_err(|_| FlowError::internal("token sealing failed"))?;
                    // Atomic: a concurrent refresh that won keeps its (rotated) tokens.
                    if !app
                        .store
                        .replace_tokens(&idp.0, &subject, &sealed, &resealed)
                        .await?
                    {
                        tracing::info!(idp = %idp.0, "tokens were refreshed concurrently");
                    }
                    fresh
                }
                Err(err) if super::error::protocol_status(&err) == Status::Unauthorized => {
                    // SECURITY E50: no retry loop; the session that relied on them ends. Tokens
                    // the IdP refused are dead: dropped (I77); tokens a bad refresh answer came
                    // for are kept as they were (E49).
                    if matches!(err, crate::protocol::Error::Reauthenticate(_)) {
                        app.store.delete_tokens(&idp.0, &subject).await?;
                    }
                    if let Some((hash, _)) = &caller.session {
                        app.store.delete_session(hash).await?;
                    }
                    app.store.sync().await?;
                    return Err(err.into());
                }
                Err(err) => return Err(err.into()),
            }
        } else {
            tokens
        };
        Ok(TokenResponse::Ok(Json(AccessTokenView {
            access_token: fresh.access_token,
            token_type: fresh.token_type.unwrap_or_else(|| "Bearer".to_string()),
            expires_at: fresh.expires_at,
            scope: fresh.scope,
        })))
    }
}

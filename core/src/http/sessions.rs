//! A person's sessions: the list (which one is this browser, when, with which IdP, from what
//! browser and network), ending one of them, and ending every other. Ending is a state change
//! of the account, so it needs the browser session and its CSRF token, as everything else that
//! changes the account does.

use std::collections::HashMap;
use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::caller::{caller, Auth, Caller};
use super::cookies::{set_cookie, SESSION_COOKIE};
use super::error::{error_responses, ErrorBody, FlowError, Status};
use super::request::form_of;
use super::tags::ApiTags;
use crate::accounts::sessions::Listed;
use crate::state::App;

/// One of the caller's sessions.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SessionView {
    /// Names the session in `DELETE /api/users/me/sessions/{id}`; not a credential.
    pub id: String,
    /// Whether this is the session the request came with.
    pub current: bool,
    /// The IdP the session was signed in with.
    pub idp: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    /// Browser and system, as the user agent named them (`Firefox on Linux`).
    pub device: Option<String>,
    /// The network the sign-in came from (`203.0.113.0/24`), never the address.
    pub network: Option<String>,
}

/// The caller's live sessions, newest first.
#[derive(Debug, Object)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// What ending sessions did.
#[derive(Debug, Object)]
pub struct Ended {
    /// How many sessions ended.
    pub ended: u32,
}

error_responses!(SessionsError {
    /// Not logged in.
    Unauthorized = 401,
    /// A cross-site request, a missing CSRF token, or a bearer credential (ending sessions
    /// needs the browser session).
    Forbidden = 403,
    /// No such session of this account.
    NotFound = 404,
});

#[derive(ApiResponse)]
pub enum ListResponse {
    /// The caller's live sessions.
    #[oai(status = 200)]
    Ok(Json<SessionList>),
}

#[derive(ApiResponse)]
pub enum EndResponse {
    /// Ended: that browser is signed out at its next request. When it was this browser's own
    /// session, its cookie is cleared (a logout).
    #[oai(status = 200)]
    Ended(Json<Ended>, #[oai(header = "Set-Cookie")] Option<String>),
}

#[derive(ApiResponse)]
pub enum EndPageResponse {
    /// Back to the account page.
    #[oai(status = 303)]
    Back(#[oai(header = "Location")] String),
    /// This browser's own session ended: to the start page, signed out.
    #[oai(status = 303)]
    SignedOut(
        #[oai(header = "Location")] String,
        #[oai(header = "Set-Cookie")] String,
    ),
}

/// The sessions routes.
pub struct SessionsApi;

#[OpenApi]
impl SessionsApi {
    /// The caller's active sessions, newest first; each says whether it is the caller's own
    /// (always `false` with an API key or access token).
    #[oai(
        path = "/api/users/me/sessions",
        method = "get",
        tag = "ApiTags::Account"
    )]
    async fn list(&self, app: Data<&Arc<App>>, auth: Auth) -> Result<ListResponse, SessionsError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        let sessions = listed(app, &caller)
            .await?
            .into_iter()
            .map(|listed| view(&caller, listed))
            .collect();
        Ok(ListResponse::Ok(Json(SessionList { sessions })))
    }

    /// Ends one of the caller's sessions (that browser is signed out at its next request).
    /// Ending the caller's own is a logout here (its cookie is cleared). Needs the browser
    /// session and its CSRF token (`X-CSRF-Token`).
    #[oai(
        path = "/api/users/me/sessions/:id",
        method = "delete",
        tag = "ApiTags::Account"
    )]
    async fn end_one(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        /// The session's `id` from the list.
        id: Path<String>,
    ) -> Result<EndResponse, SessionsError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        caller.check_session_change(app, req, &HashMap::new())?;
        let own = end_one(app, &caller, &id.0).await?;
        let clear = own.then(|| set_cookie(app, SESSION_COOKIE, "", "/", 0));
        Ok(EndResponse::Ended(Json(Ended { ended: 1 }), clear))
    }

    /// Ends every session of the caller but this one ("sign out everywhere else"). Needs the
    /// browser session and its CSRF token (`X-CSRF-Token`).
    #[oai(
        path = "/api/users/me/sessions",
        method = "delete",
        tag = "ApiTags::Account"
    )]
    async fn end_others(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
    ) -> Result<EndResponse, SessionsError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        caller.check_session_change(app, req, &HashMap::new())?;
        let ended = end_others(app, &caller).await?;
        Ok(EndResponse::Ended(Json(Ended { ended }), None))
    }

    /// The account page's form: `csrf`, and `session` (an id from the list, or `others`).
    #[oai(path = "/authnz/sessions/end", method = "post", hidden)]
    async fn end_from_page(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        body: poem::Body,
    ) -> Result<EndPageResponse, SessionsError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        let form = form_of(body).await;
        caller.check_session_change(app, req, &form)?;
        let which = form.get("session").map(String::as_str).unwrap_or_default();
        if which == "others" {
            end_others(app, &caller).await?;
        } else if end_one(app, &caller, which).await? {
            return Ok(EndPageResponse::SignedOut(
                "/".into(),
                set_cookie(app, SESSION_COOKIE, "", "/", 0),
            ));
        }
        Ok(EndPageResponse::Back("/#sessions".into()))
    }
}

async fn listed(app: &App, caller: &Caller) -> Result<Vec<Listed>, FlowError> {
    Ok(app
        .accounts()
        .sessions(&caller.user.id, app.clock.now())
        .await?)
}

fn view(caller: &Caller, listed: Listed) -> SessionView {
    SessionView {
        current: is_current(caller, &listed),
        id: listed.id,
        idp: listed.session.idp,
        created_at: listed.session.created_at,
        expires_at: listed.session.expires_at,
        device: listed.session.device,
        network: listed.session.network,
    }
}

fn is_current(caller: &Caller, listed: &Listed) -> bool {
    caller
        .session
        .as_ref()
        .is_some_and(|(hash, _)| *hash == listed.hash)
}

/// Ends the caller's session named `id`; returns whether it was the caller's own. 404 for
/// an id that names none of the caller's live sessions (another account's among them).
async fn end_one(app: &App, caller: &Caller, id: &str) -> Result<bool, FlowError> {
    let listed = listed(app, caller)
        .await?
        .into_iter()
        .find(|listed| crate::crypto::constant_time_eq(&listed.id, id))
        .ok_or_else(|| {
            FlowError::new(
                Status::NotFound,
                "no_such_session",
                "this account has no such session",
            )
        })?;
    let own = is_current(caller, &listed);
    app.accounts()
        .end_session(&listed.hash, &listed.session, app.clock.now())
        .await?;
    app.store.sync().await?;
    tracing::info!(user = %caller.user.id, own, "session ended by its owner");
    Ok(own)
}

/// Ends every live session of the caller but the one it came with; returns how many.
async fn end_others(app: &App, caller: &Caller) -> Result<u32, FlowError> {
    let mut ended = 0;
    for listed in listed(app, caller).await? {
        if is_current(caller, &listed) {
            continue;
        }
        if app
            .accounts()
            .end_session(&listed.hash, &listed.session, app.clock.now())
            .await?
        {
            ended += 1;
        }
    }
    app.store.sync().await?;
    tracing::info!(user = %caller.user.id, ended, "other sessions ended by their owner");
    Ok(ended)
}

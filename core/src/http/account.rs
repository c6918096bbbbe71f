//! The account: who is logged in (`/api/users/me`), connecting and disconnecting identities
//! (with revocation at the IdP), confirming a new account, and deleting it.
//!
//! State-changing requests made with the cookie must be same-origin and carry the session's
//! CSRF token (`X-CSRF-Token` header, or a `csrf` form field).

use std::collections::HashMap;
use std::sync::Arc;

use poem::web::Data;
use poem::{Body, Request};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Html, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::error::{FlowError, Status};
use crate::accounts::{self, PendingSignup};
use crate::crypto::{constant_time_eq, random_token, sha256_hex};
use crate::html::{escape, page};
use crate::i18n::{t, t_args};
use crate::state::App;
use crate::store::RemoveOutcome;

use super::caller::{caller, Auth};
use super::cookies::{cookie, set_cookie, LOGIN_COOKIE, SESSION_COOKIE};
use super::error::{error_responses, ErrorBody};
use super::keys::pick_identity;
use super::login::{start_login, LoginRedirect};
use super::request::{check_same_origin, prefers_html};
use super::tags::ApiTags;

error_responses!(MeError {
    /// No valid session.
    Unauthorized = 401,
});

/// A linked IdP identity.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct IdentityView {
    pub idp: String,
    /// The subject (`sub`) at that IdP.
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// Unix seconds.
    pub linked_at: i64,
    /// Unix seconds.
    pub last_login_at: i64,
}

/// The logged-in user.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none, example)]
pub struct Me {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub identities: Vec<IdentityView>,
    /// With a cookie session: the token its state-changing requests carry in `X-CSRF-Token`.
    pub csrf_token: Option<String>,
}

#[derive(ApiResponse)]
pub enum MeResponse {
    /// The user and their linked identities.
    #[oai(status = 200)]
    Ok(Json<Me>),
}

impl poem_openapi::types::Example for Me {
    fn example() -> Self {
        Self {
            id: "8Jo8tX6lw8xZChKyDfOGWw".into(),
            username: "ann".into(),
            email: Some("ann@example.org".into()),
            display_name: Some("Ann Example".into()),
            created_at: 1_796_012_777,
            identities: vec![IdentityView {
                idp: "okta".into(),
                subject: "00u1abcd2EFGH3ijk4l5".into(),
                email: Some("ann@example.org".into()),
                email_verified: true,
                linked_at: 1_796_012_777,
                last_login_at: 1_796_012_777,
            }],
            csrf_token: Some("V-V7Me_x9YkJx4CnRHShWM440xo34B2GXQtNbojr3tY".into()),
        }
    }
}

error_responses!(ConnectError {
    /// Not logged in.
    Unauthorized = 401,
    /// Cross-site request or missing CSRF token.
    Forbidden = 403,
    /// No IdP of that name is configured.
    NotFound = 404,
    /// The account already has an identity at this IdP, whose entry allows one
    /// (`already_connected`).
    Conflict = 409,
    /// The IdP could not be reached.
    BadGateway = 502,
    /// Too many logins started.
    TooMany = 429,
});

#[derive(ApiResponse)]
pub enum ConnectResponse {
    /// The IdP URL to open in this browser; the identity signed in there is added to the
    /// logged-in account (409 at the callback if it belongs to another account).
    #[oai(status = 200)]
    Ok(Json<LoginRedirect>, #[oai(header = "Set-Cookie")] String),
    /// A browser form post is sent straight to the IdP.
    #[oai(status = 303)]
    Redirect(
        #[oai(header = "Location")] String,
        #[oai(header = "Set-Cookie")] String,
    ),
}

error_responses!(SignupError {
    /// The sign-up was started in another browser.
    BadRequest = 400,
    /// Unknown, used or expired sign-up.
    NotFound = 404,
    /// Cross-site request or wrong CSRF token.
    Forbidden = 403,
    /// The identity or email was taken meanwhile.
    Conflict = 409,
});

#[derive(ApiResponse)]
pub enum SignupPage {
    /// The confirmation page: who is about to get an account, and the button that creates it.
    #[oai(status = 200)]
    Page(Html<String>),
}

#[derive(ApiResponse)]
pub enum SignupDone {
    /// Account created and logged in: a session cookie and a redirect to `next`.
    #[oai(status = 303)]
    Created(
        #[oai(header = "Location")] String,
        #[oai(header = "Set-Cookie")] String,
    ),
}

error_responses!(DisconnectError {
    /// `subject` is needed: the account has several identities at this IdP.
    BadRequest = 400,
    /// Not logged in.
    Unauthorized = 401,
    /// Cross-site request or missing CSRF token.
    Forbidden = 403,
    /// The account has no such identity.
    NotFound = 404,
    /// It is the account's last way to log in.
    Conflict = 409,
    /// The IdP did not confirm the revocation; nothing was removed.
    BadGateway = 502,
});

#[derive(ApiResponse)]
pub enum DisconnectPage {
    /// The confirmation page, with one button per identity at this IdP.
    #[oai(status = 200)]
    Page(Html<String>),
}

/// A removed identity.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Disconnected {
    pub idp: String,
    pub subject: String,
    /// Whether the IdP revoked the tokens (false: it offers no revocation endpoint).
    pub revoked_at_idp: bool,
}

#[derive(ApiResponse)]
pub enum DisconnectResponse {
    /// The identity and its tokens are gone; the account stays.
    #[oai(status = 200)]
    Ok(Json<Disconnected>),
    /// A browser form post goes back to the account page.
    #[oai(status = 303)]
    Redirect(#[oai(header = "Location")] String),
}

error_responses!(DeleteError {
    /// `confirm` is missing.
    BadRequest = 400,
    /// `confirm` is not the account's username.
    Invalid = 422,
    /// Not logged in.
    Unauthorized = 401,
    /// Cross-site request or missing CSRF token.
    Forbidden = 403,
});

/// What deleting the account did.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Deleted {
    pub deleted: bool,
    /// Identities whose tokens the IdP revoked.
    pub revoked: Vec<String>,
    /// Identities whose tokens could not be revoked (the IdP has no revocation endpoint or
    /// did not answer); they are deleted here all the same.
    pub not_revoked: Vec<String>,
}

#[derive(ApiResponse)]
pub enum DeleteResponse {
    /// The account and everything of it are gone; the session cookie is cleared.
    #[oai(status = 200)]
    Ok(Json<Deleted>, #[oai(header = "Set-Cookie")] String),
}

/// The account API.
pub struct AccountApi;

#[OpenApi]
impl AccountApi {
    /// Connects another IdP identity to the logged-in account: answers the IdP URL to open in
    /// this browser (a browser form post is redirected). The link intent is kept server-side.
    #[oai(
        path = "/authnz/:idp/connect",
        method = "post",
        tag = "ApiTags::Account"
    )]
    async fn connect(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        /// The IdP name from the config.
        idp: Path<String>,
        /// Where to go afterwards (a path on this server, or a URL on a configured app).
        next: Query<Option<String>>,
        body: Body,
    ) -> Result<ConnectResponse, ConnectError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        caller.check_session_change(app, req, &super::request::form_of(body).await)?;
        if let Some(runtime) = app.idp(&idp.0) {
            app.accounts()
                .check_may_connect(&runtime, &caller.user.id, None)
                .await?;
        }
        let (url, cookie) = start_login(
            app,
            req,
            &idp.0,
            next.0.as_deref(),
            Some(caller.user.id.clone()),
            &crate::protocol::StepUp::default(),
        )
        .await?;
        Ok(if prefers_html(req) {
            ConnectResponse::Redirect(url, cookie)
        } else {
            ConnectResponse::Ok(Json(LoginRedirect { redirect_uri: url }), cookie)
        })
    }

    /// The page that asks the person to confirm a new account (`require_create_confirmation`).
    #[oai(
        path = "/authnz/:idp/create_user",
        method = "get",
        tag = "ApiTags::Account"
    )]
    async fn create_user_page(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        idp: Path<String>,
        /// The opaque sign-up id from the callback's redirect.
        signup: Query<String>,
    ) -> Result<SignupPage, SignupError> {
        let app = *app;
        let record = pending_signup(app, req, &signup.0, false).await?;
        let label = app
            .idp(&idp.0)
            .map(|idp| idp.config.label.clone())
            .unwrap_or_default();
        let body = format!(
            "<p>{}</p>\
<table><tr><th>{}</th><td>{}</td></tr><tr><th>{}</th><td>{}</td></tr></table>\
<form method=\"post\"><input type=\"hidden\" name=\"signup\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<button type=\"submit\" id=\"create\">{}</button></form>\
<p><a class=\"button secondary\" href=\"/\">{}</a></p>",
            t_args(
                "signup-first",
                &[("label", &format!("<strong>{}</strong>", escape(&label)))]
            ),
            escape(&t("col-username")),
            escape(&record.login.username),
            escape(&t("col-email")),
            escape(record.login.email.as_deref().unwrap_or("")),
            escape(&signup.0),
            escape(&record.csrf),
            escape(&t("signup-create")),
            escape(&t("cancel")),
        );
        Ok(SignupPage::Page(Html(page(&t("signup-title"), &body))))
    }

    /// Confirms and creates the account of a parked first login (form fields `signup` and
    /// `csrf`), then logs in.
    #[oai(
        path = "/authnz/:idp/create_user",
        method = "post",
        tag = "ApiTags::Account"
    )]
    async fn create_user(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        idp: Path<String>,
        body: Body,
    ) -> Result<SignupDone, SignupError> {
        let app = *app;
        check_same_origin(app, req)?;
        let form = super::request::form_of(body).await;
        let id = form.get("signup").cloned().unwrap_or_default();
        let record = pending_signup(app, req, &id, false).await?;
        if !constant_time_eq(
            form.get("csrf").map(String::as_str).unwrap_or(""),
            &record.csrf,
        ) {
            return Err(FlowError::new(
                Status::Forbidden,
                "csrf_token_invalid",
                "the confirmation lacks its CSRF token",
            )
            .into());
        }
        // Single use from here on.
        let record = pending_signup(app, req, &id, true).await?;
        let idp = app
            .idp(&idp.0)
            .filter(|idp| idp.config.name == record.login.idp)
            .ok_or_else(|| {
                FlowError::bad_request(
                    "invalid_signup",
                    "this sign-up belongs to another identity provider",
                )
            })?;
        let mut login = record.login;
        let session_cookie = random_token(32);
        login.session_hash = sha256_hex(&session_cookie);
        let now = app.clock.now();
        login.now = now;
        login.session_expires_at = now + app.server.session_ttl.as_secs() as i64;
        let outcome = app
            .store
            .complete_login_durable(login)
            .await
            .map_err(|err| accounts::login_error(err, &idp))?;
        // A session planted in this browser before ends here, as at every login (SECURITY G62).
        if let Some(planted) = cookie(req, SESSION_COOKIE) {
            app.store.delete_session(&sha256_hex(&planted)).await?;
            app.store.sync().await?;
        }
        tracing::info!(idp = %idp.config.name, user = %outcome.user.id, "account created after confirmation");
        Ok(SignupDone::Created(
            super::login::next_url(app, &record.next),
            set_cookie(
                app,
                SESSION_COOKIE,
                &session_cookie,
                "/",
                app.server.session_ttl.as_secs() as i64,
            ),
        ))
    }

    /// The page that confirms disconnecting this IdP from the account.
    #[oai(
        path = "/authnz/:idp/disconnect",
        method = "get",
        tag = "ApiTags::Account"
    )]
    async fn disconnect_page(
        &self,
        app: Data<&Arc<App>>,
        auth: Auth,
        idp: Path<String>,
    ) -> Result<DisconnectPage, DisconnectError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        let identities: Vec<_> = app
            .store
            .identities_of(&caller.user.id)
            .await?
            .into_iter()
            .filter(|identity| identity.idp == idp.0)
            .collect();
        if identities.is_empty() {
            return Err(FlowError::new(
                Status::NotFound,
                "no_such_identity",
                "this account has no identity at this provider",
            )
            .into());
        }
        let csrf = caller
            .session
            .as_ref()
            .map(|(_, s)| s.csrf.clone())
            .unwrap_or_default();
        let forms: String = identities
            .iter()
            .map(|identity| {
                format!(
                    "<form method=\"post\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"subject\" value=\"{}\">\
<button type=\"submit\" class=\"disconnect\">{}</button></form>",
                    escape(&csrf),
                    escape(&identity.subject),
                    escape(&t_args(
                        "disconnect-identity",
                        &[
                            ("idp", &idp.0),
                            ("who", identity.email.as_deref().unwrap_or(&identity.subject)),
                        ]
                    )),
                )
            })
            .collect();
        let body = format!(
            "<p>{}</p>{forms}<p><a class=\"button secondary\" href=\"/\">{}</a></p>",
            escape(&t("disconnect-what")),
            escape(&t("cancel")),
        );
        Ok(DisconnectPage::Page(Html(page(
            &t("disconnect-title"),
            &body,
        ))))
    }

    /// Disconnects an identity: revokes its tokens at the IdP (RFC 7009) where it can, then
    /// removes the tokens and the link. The account stays; its last way to log in cannot be
    /// removed (409).
    #[oai(
        path = "/authnz/:idp/disconnect",
        method = "post",
        tag = "ApiTags::Account"
    )]
    async fn disconnect(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        idp: Path<String>,
        /// The identity's subject, when the account has several at this IdP.
        subject: Query<Option<String>>,
        body: Body,
    ) -> Result<DisconnectResponse, DisconnectError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        let form = super::request::form_of(body).await;
        caller.check_session_change(app, req, &form)?;
        let wanted = subject.0.or_else(|| form.get("subject").cloned());
        let subject = pick_identity(app, &caller, &idp.0, wanted.as_deref()).await?;
        if app.store.identities_of(&caller.user.id).await?.len() <= 1 {
            return Err(FlowError::new(
                Status::Conflict,
                "last_identity",
                "this is the account's only way to log in; connect another provider first",
            )
            .into());
        }
        let mut revoked = false;
        if let (Some(runtime), Some((_, tokens))) = (
            app.idp(&idp.0),
            app.accounts().open_tokens(&idp.0, &subject).await?,
        ) {
            revoked = runtime.revoke(&tokens).await?;
        }
        match app
            .store
            .remove_identity(
                &caller.user.id,
                &idp.0,
                &subject,
                caller.session.as_ref().map(|(hash, _)| hash.as_str()),
            )
            .await?
        {
            RemoveOutcome::Removed(_) => {
                // The caller's session carries on under one of the remaining identities.
                if let Some((hash, session)) = &caller.session {
                    if session.idp == idp.0 && session.subject == subject {
                        if let Some(other) = app
                            .store
                            .identities_of(&caller.user.id)
                            .await?
                            .into_iter()
                            .next()
                        {
                            app.store
                                .repoint_session(hash, &other.idp, &other.subject)
                                .await?;
                        }
                    }
                }
            }
            RemoveOutcome::NotFound => {
                return Err(FlowError::new(
                    Status::NotFound,
                    "no_such_identity",
                    "this account has no such identity",
                )
                .into())
            }
            RemoveOutcome::LastIdentity => {
                return Err(FlowError::new(
                    Status::Conflict,
                    "last_identity",
                    "this is the account's only way to log in",
                )
                .into())
            }
        }
        tracing::info!(idp = %idp.0, user = %caller.user.id, revoked, "identity disconnected");
        Ok(if prefers_html(req) {
            DisconnectResponse::Redirect("/".to_string())
        } else {
            DisconnectResponse::Ok(Json(Disconnected {
                idp: idp.0,
                subject,
                revoked_at_idp: revoked,
            }))
        })
    }

    /// The logged-in user and their linked identities.
    #[oai(path = "/api/users/me", method = "get", tag = "ApiTags::Account")]
    async fn me(&self, auth: Auth, app: Data<&Arc<App>>) -> Result<MeResponse, MeError> {
        me(*app, &auth).await
    }

    /// Deletes the account: revokes every token at its IdP where possible, then removes the
    /// user, identities, tokens, sessions and API keys in one transaction. `confirm` must be
    /// the account's username.
    #[oai(path = "/api/users/me", method = "delete", tag = "ApiTags::Account")]
    async fn delete_me(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        /// The account's username, to confirm.
        confirm: Query<String>,
    ) -> Result<DeleteResponse, DeleteError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        caller.check_session_change(app, req, &HashMap::new())?;
        if confirm.0 != caller.user.username {
            return Err(FlowError::new(
                Status::Invalid,
                "confirmation_mismatch",
                "confirm with the account's username",
            )
            .into());
        }
        let (mut revoked, mut not_revoked) = (Vec::new(), Vec::new());
        for identity in app.store.identities_of(&caller.user.id).await? {
            let label = format!("{}:{}", identity.idp, identity.subject);
            let outcome = match (
                app.idp(&identity.idp),
                app.accounts()
                    .open_tokens(&identity.idp, &identity.subject)
                    .await,
            ) {
                (Some(runtime), Ok(Some((_, tokens)))) => {
                    runtime.revoke(&tokens).await.unwrap_or(false)
                }
                _ => false,
            };
            if outcome {
                revoked.push(label);
            } else {
                not_revoked.push(label);
            }
        }
        let deleted = app.store.delete_user(&caller.user.id).await?;
        app.store.sync().await?;
        tracing::info!(user = %caller.user.id, "account deleted");
        Ok(DeleteResponse::Ok(
            Json(Deleted {
                deleted,
                revoked,
                not_revoked,
            }),
            set_cookie(app, SESSION_COOKIE, "", "/", 0),
        ))
    }
}

/// Reads (or with `take`, consumes) a pending sign-up, checking expiry and the browser.
pub(crate) async fn pending_signup(
    app: &App,
    req: &Request,
    id: &str,
    take: bool,
) -> Result<PendingSignup, FlowError> {
    let invalid = || {
        FlowError::new(
            Status::NotFound,
            "invalid_signup",
            "this sign-up is unknown, used or expired; sign in again",
        )
    };
    let bytes = if take {
        app.store.take_signup(id).await?
    } else {
        app.store.signup(id).await?
    };
    let record: PendingSignup =
        serde_json::from_slice(&bytes.ok_or_else(invalid)?).map_err(|_| invalid())?;
    if record.expires_at <= app.clock.now() {
        return Err(invalid());
    }
    let bound = cookie(req, LOGIN_COOKIE)
        .is_some_and(|binding| constant_time_eq(&sha256_hex(&binding), &record.browser_hash));
    if !bound {
        return Err(FlowError::bad_request(
            "browser_mismatch",
            "this sign-up was started in another browser",
        ));
    }
    Ok(record)
}

/// The signed-in caller and their identities (also for the hot path, see `super::hot`).
pub(crate) async fn me(app: &App, auth: &Auth) -> Result<MeResponse, MeError> {
    let caller = caller(app, auth).await?;
    let csrf_token = caller
        .session
        .as_ref()
        .map(|(_, session)| session.csrf.clone());
    let user = caller.user;
    let identities = app
        .store
        .identities_of(&user.id)
        .await
        .map_err(FlowError::from)?
        .into_iter()
        .map(|identity| IdentityView {
            idp: identity.idp,
            subject: identity.subject,
            email: identity.email,
            email_verified: identity.email_verified,
            linked_at: identity.linked_at,
            last_login_at: identity.last_login_at,
        })
        .collect();
    Ok(MeResponse::Ok(Json(Me {
        id: user.id,
        username: user.username,
        email: user.email,
        display_name: user.display_name,
        created_at: user.created_at,
        identities,
        csrf_token,
    })))
}

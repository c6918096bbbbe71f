//! After a first sign-in refused because its email address belongs to an account: the page
//! that says what to do and offers the way (sign in to that account the way it was used
//! before), and the page that account then lands on, which offers to connect the IdP with the
//! ordinary connect form. Both read the intent the callback kept for this browser
//! (`accounts::ConnectIntent`); neither changes anything.

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Html, Json};
use poem_openapi::{ApiResponse, OpenApi};

use super::caller::session_of;
use super::cookies::{cookie, LOGIN_COOKIE, SESSION_COOKIE};
use super::error::{error_responses, ErrorBody, FlowError};
use super::pages::idp_button;
use crate::accounts::{ConnectIntent, IntentRefused};
use crate::crypto::sha256_hex;
use crate::html::{escape, page};
use crate::i18n::{t, t_args};
use crate::state::App;

error_responses!(IntentPageError {
    /// The intent is unknown, expired, or was kept for another browser.
    BadRequest = 400,
});

#[derive(ApiResponse)]
pub enum IntentPage {
    #[oai(status = 200)]
    Page(Html<String>),
    /// Not signed in (yet): back to the ways in.
    #[oai(status = 303)]
    SignInFirst(#[oai(header = "Location")] String),
}

/// The intent `id` for this browser, or the error page's reason.
async fn intent_of(app: &App, req: &Request, id: &str) -> Result<ConnectIntent, FlowError> {
    let binding = cookie(req, LOGIN_COOKIE).map(|value| sha256_hex(&value));
    match app
        .accounts()
        .intent(id, binding.as_deref(), app.clock.now())
        .await
        .map_err(FlowError::from)?
    {
        Ok(intent) => Ok(intent),
        Err(IntentRefused::Unknown) => Err(unknown_intent()),
        Err(IntentRefused::OtherBrowser) => Err(FlowError::bad_request(
            "browser_mismatch",
            "this sign-in was started in another browser (or cookies are blocked)",
        )),
    }
}

fn unknown_intent() -> FlowError {
    FlowError::bad_request(
        "invalid_intent",
        "this offer to connect a provider is unknown or expired; sign in again",
    )
}

/// `?intent=<id>`, form-encoded.
fn intent_query(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// The pages after an email conflict (hidden from the spec: pages for people).
pub struct ConflictPagesApi;

#[OpenApi]
impl ConflictPagesApi {
    /// What to do: sign in to the address's account the way it was used before. Only an
    /// address the IdP verified names that account's IdPs; otherwise every other IdP is
    /// offered, so that the page tells nobody how someone else signs in.
    #[oai(path = "/authnz/:idp/email_in_use", method = "get", hidden)]
    async fn email_in_use(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        idp: Path<String>,
        intent: Query<String>,
    ) -> Result<IntentPage, IntentPageError> {
        let app = *app;
        let found = intent_of(app, req, &intent.0).await?;
        let generation = app.current();
        let label = generation
            .idp(&found.idp)
            .filter(|_| found.idp == idp.0)
            .map(|idp| idp.config.label.clone())
            .ok_or_else(unknown_intent)?;
        let used: Vec<String> = if found.email_verified {
            app.store
                .identities_of(&found.owner)
                .await
                .map_err(FlowError::from)?
                .into_iter()
                .map(|identity| identity.idp)
                .collect()
        } else {
            Vec::new()
        };
        let next: String = url::form_urlencoded::byte_serialize(
            format!(
                "/authnz/{}/connect_after?intent={}",
                found.idp,
                intent_query(&intent.0)
            )
            .as_bytes(),
        )
        .collect();
        let carried = format!("?next={next}");
        let buttons: String = generation
            .idps
            .iter()
            .filter(|other| other.config.name != found.idp)
            .filter(|other| !found.email_verified || used.contains(&other.config.name))
            .map(|other| idp_button(other, &carried))
            .collect();
        let how = if found.email_verified {
            "conflict-how-known"
        } else {
            "conflict-how-unknown"
        };
        let body = format!(
            "<p class=\"warning\">{}</p><p>{}</p>{}<p><a class=\"button secondary\" href=\"/\">{}</a></p>",
            t_args(
                "conflict-explain",
                &[
                    ("email", &format!("<strong>{}</strong>", escape(&found.email))),
                    ("label", &escape(&label)),
                ]
            ),
            escape(&t_args(how, &[("label", &label)])),
            if buttons.is_empty() {
                format!("<p>{}</p>", escape(&t("conflict-no-way")))
            } else {
                format!(
                    "<nav aria-label=\"{}\">{buttons}</nav>",
                    escape(&t("conflict-nav"))
                )
            },
            escape(&t("cancel")),
        );
        Ok(IntentPage::Page(Html(page(&t("conflict-title"), &body))))
    }

    /// Signed in after an email conflict: the offer to connect the IdP, made only to the
    /// account that holds the address; the form is the account page's connect form.
    #[oai(path = "/authnz/:idp/connect_after", method = "get", hidden)]
    async fn connect_after(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        idp: Path<String>,
        intent: Query<String>,
    ) -> Result<IntentPage, IntentPageError> {
        let app = *app;
        let found = intent_of(app, req, &intent.0).await?;
        let back = format!(
            "/authnz/{}/email_in_use?intent={}",
            found.idp,
            intent_query(&intent.0)
        );
        let session = match cookie(req, SESSION_COOKIE) {
            Some(value) => session_of(app, &value).await?,
            None => None,
        };
        let Some(session) = session else {
            return Ok(IntentPage::SignInFirst(back));
        };
        let target = app
            .idp(&found.idp)
            .filter(|_| found.idp == idp.0)
            .ok_or_else(unknown_intent)?;
        let label = &target.config.label;
        let user = app
            .store
            .user(&session.user_id)
            .await
            .map_err(FlowError::from)?
            .ok_or_else(|| FlowError::unauthorized("unauthorized", "log in first"))?;
        let account = format!("<strong>{}</strong>", escape(&user.username));
        let back_to_account = format!(
            "<p><a class=\"button secondary\" href=\"/\">{}</a></p>",
            escape(&t("back-to-account"))
        );
        let body = if session.user_id != found.owner {
            // Another account: the offer is not for it, and is gone.
            app.accounts()
                .drop_intent(&intent.0)
                .await
                .map_err(FlowError::from)?;
            format!(
                "<p class=\"warning\">{}</p>{back_to_account}",
                t_args(
                    "connect-after-other",
                    &[("username", &account), ("label", &escape(label))]
                )
            )
        } else if app
            .accounts()
            .check_may_connect(&target, &user.id, None)
            .await
            .is_err()
        {
            app.accounts()
                .drop_intent(&intent.0)
                .await
                .map_err(FlowError::from)?;
            format!(
                "<p class=\"notice\">{}</p>{back_to_account}",
                escape(&t_args("connect-after-done", &[("label", label)]))
            )
        } else {
            format!(
                "<p>{}</p>\
<form method=\"post\" action=\"/authnz/{}/connect\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<button type=\"submit\" id=\"connect\">{}</button></form>\
<p><a class=\"button secondary\" href=\"/\">{}</a></p>",
                t_args(
                    "connect-after-explain",
                    &[("username", &account), ("label", &escape(label))]
                ),
                escape(&target.config.name),
                escape(&session.csrf),
                escape(&t_args("connect-provider", &[("label", label)])),
                escape(&t("not-now")),
            )
        };
        Ok(IntentPage::Page(Html(page(
            &t_args("connect-after-title", &[("label", label)]),
            &body,
        ))))
    }
}

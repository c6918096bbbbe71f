//! API keys on the account page: creating one (its secret shown on the answer page, once,
//! with a copy button) and deleting one, by form posts with the session's CSRF token; the same
//! store operations as `POST /api/keys` and `DELETE /api/keys/{id}`.

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::payload::{Html, Json};
use poem_openapi::{ApiResponse, OpenApi};

use super::caller::{caller, Auth};
use super::error::{error_responses, ErrorBody, FlowError, Status};
use super::keys::new_key;
use super::request::form_of;
use crate::html::{escape, page};
use crate::i18n::{t, t_args};
use crate::state::App;

error_responses!(KeyPageError {
    /// The name or the lifetime is not acceptable.
    BadRequest = 400,
    /// Not logged in.
    Unauthorized = 401,
    /// Cross-site request, missing CSRF token, or a bearer credential.
    Forbidden = 403,
    /// No such key of this account.
    NotFound = 404,
});

#[derive(ApiResponse)]
pub enum NewKeyPage {
    /// The new key, shown this once.
    #[oai(status = 200)]
    Page(Html<String>),
}

#[derive(ApiResponse)]
pub enum KeyDeletedPage {
    /// Back to the account page.
    #[oai(status = 303)]
    Back(#[oai(header = "Location")] String),
}

/// The key pages' routes (hidden from the spec: the API has its own).
pub struct KeyPagesApi;

#[OpenApi]
impl KeyPagesApi {
    /// The account page's form: `csrf`, `name`, and `expires_in_days` (empty: never).
    #[oai(path = "/authnz/keys/new", method = "post", hidden)]
    async fn create(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        body: poem::Body,
    ) -> Result<NewKeyPage, KeyPageError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        let form = form_of(body).await;
        caller.check_session_change(app, req, &form)?;
        let name = form.get("name").map(|name| name.trim()).unwrap_or_default();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(FlowError::bad_request(
                "invalid_request",
                "give the key a name of 1 to 100 characters",
            )
            .into());
        }
        let expires_in_days = match form.get("expires_in_days").map(|days| days.trim()) {
            None | Some("") => None,
            Some(days) => Some(
                days.parse::<i64>()
                    .ok()
                    .filter(|days| (1..=3650).contains(days))
                    .ok_or_else(|| {
                        FlowError::bad_request(
                            "invalid_request",
                            "a key lives 1 to 3650 days, or does not expire",
                        )
                    })?,
            ),
        };
        let (key, secret) =
            new_key(app, &caller.user.id, name.to_string(), expires_in_days).await?;
        tracing::info!(user = %caller.user.id, key = %key.id, "API key created on the account page");
        let expiry = key
            .expires_at
            .map(|at| t_args("new-key-expires-on", &[("date", &super::pages::date(at))]))
            .unwrap_or_else(|| t("new-key-no-expiry"));
        let body = format!(
            "<p class=\"notice\">{} {}</p>\
<label for=\"new-key\">{}</label><input id=\"new-key\" readonly value=\"{}\" autocomplete=\"off\" spellcheck=\"false\">\
<button type=\"button\" id=\"copy-key\" data-copy=\"new-key\">{}</button><p id=\"copied\" role=\"status\" aria-live=\"polite\" data-done=\"{}\"></p>\
<p>{}</p>\
<p><a class=\"button secondary\" href=\"/#api-keys\">{}</a></p>\
<script src=\"/authnz/assets/copy.js\"></script>",
            escape(&t("new-key-copy-now")),
            escape(&expiry),
            escape(&t_args("new-key-label", &[("name", &key.name)])),
            escape(&secret),
            escape(&t("copy-key")),
            escape(&t("copied")),
            t_args(
                "new-key-use",
                &[
                    ("header", "<code>Authorization: Bearer &lt;key&gt;</code>"),
                    ("paths", "<code>/api/*</code>"),
                ]
            ),
            escape(&t("back-to-account")),
        );
        Ok(NewKeyPage::Page(Html(page(&t("new-key-title"), &body))))
    }

    /// The account page's form: `csrf` and the key's `id`.
    #[oai(path = "/authnz/keys/delete", method = "post", hidden)]
    async fn delete(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        body: poem::Body,
    ) -> Result<KeyDeletedPage, KeyPageError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        let form = form_of(body).await;
        caller.check_session_change(app, req, &form)?;
        let id = form.get("id").map(String::as_str).unwrap_or_default();
        if !app.store.delete_api_key(&caller.user.id, id).await? {
            return Err(FlowError::new(Status::NotFound, "no_such_key", "no such API key").into());
        }
        tracing::info!(user = %caller.user.id, key = %id, "API key deleted on the account page");
        Ok(KeyDeletedPage::Back("/#api-keys".into()))
    }
}

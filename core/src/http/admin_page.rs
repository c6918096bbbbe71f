//! The admins' page (`[server] admins`): every IdP with its state, last error, discovery time,
//! key fetches and logins by outcome; the configuration generation and the last reload with
//! every problem; a reload button. The same facts as `GET /api/admin/status`, for a browser.

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::payload::{Html, Json};
use poem_openapi::{ApiResponse, OpenApi};

use super::admin::{health, logins};
use super::caller::{admin, Auth};
use super::error::{error_responses, ErrorBody, FlowError};
use super::pages::date;
use super::request::form_of;
use crate::html::{escape, page};
use crate::i18n::{t, t_args};
use crate::state::App;

error_responses!(AdminPageError {
    /// Not logged in.
    Unauthorized = 401,
    /// Not an admin, a cross-site request, or a missing CSRF token.
    Forbidden = 403,
});

#[derive(ApiResponse)]
pub enum AdminPage {
    #[oai(status = 200)]
    Page(Html<String>),
}

#[derive(ApiResponse)]
pub enum ReloadedPage {
    /// Back to the page, which shows the outcome.
    #[oai(status = 303)]
    Back(#[oai(header = "Location")] String),
}

/// The admin page's routes (hidden from the spec: the admin API has its own).
pub struct AdminPageApi;

#[OpenApi]
impl AdminPageApi {
    /// The admins' page.
    #[oai(path = "/authnz/admin", method = "get", hidden)]
    async fn show(&self, app: Data<&Arc<App>>, auth: Auth) -> Result<AdminPage, AdminPageError> {
        let app = *app;
        let caller = admin(app, &auth).await?;
        let csrf = caller
            .session
            .as_ref()
            .map(|(_, session)| session.csrf.clone())
            .unwrap_or_default();
        Ok(AdminPage::Page(Html(render(app, &csrf).await)))
    }

    /// The page's reload button: `csrf`.
    #[oai(path = "/authnz/admin/reload", method = "post", hidden)]
    async fn reload(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        body: poem::Body,
    ) -> Result<ReloadedPage, AdminPageError> {
        let app = *app;
        let caller = admin(app, &auth).await?;
        caller.check_session_change(app, req, &form_of(body).await)?;
        // Either way the page shows what happened (the reload status keeps every problem).
        let outcome = app.reload().await;
        tracing::info!(user = %caller.user.id, ok = outcome.is_ok(), "reload from the admin page");
        Ok(ReloadedPage::Back("/authnz/admin".into()))
    }
}

/// An IdP's state (`ready`, `failing`, `pending`, `unavailable`) in the page's language.
fn state_name(state: &str) -> String {
    match state {
        "ready" => t("state-ready"),
        "failing" => t("state-failing"),
        "pending" => t("state-pending"),
        "unavailable" => t("state-unavailable"),
        other => other.to_string(),
    }
}

async fn render(app: &App, csrf: &str) -> String {
    let report = health(app, true).await;
    let reload = app.reload_status();
    let counted = logins(app);
    let rows: String = report
        .idps
        .iter()
        .map(|idp| {
            let counts = counted.iter().find(|logins| logins.idp == idp.name);
            let failures = counts
                .map(|logins| {
                    logins
                        .failed
                        .iter()
                        .map(|failure| {
                            format!("<code>{}</code> {}", escape(&failure.reason), failure.count)
                        })
                        .collect::<Vec<_>>()
                        .join("<br>")
                })
                .unwrap_or_default();
            format!(
                "<tr class=\"{state}\"><td>{name}<br><small>{kind}</small></td><td>{shown}{reason}</td><td>{discovered}</td><td>{jwks}</td><td>{started}</td><td>{completed}</td><td>{failures}</td></tr>",
                name = escape(&idp.name),
                kind = escape(&idp.kind),
                state = escape(&idp.state),
                shown = escape(&state_name(&idp.state)),
                reason = idp
                    .reason
                    .as_deref()
                    .map(|reason| format!("<br><small class=\"reason\">{}</small>", escape(reason)))
                    .unwrap_or_default(),
                discovered = idp.discovered_at.map(date).unwrap_or_else(|| "—".into()),
                jwks = idp.jwks_fetches,
                started = counts.map_or(0, |c| c.started),
                completed = counts.map_or(0, |c| c.completed),
            )
        })
        .collect();
    let last_reload = match (&reload.last_error, reload.last_attempt_at) {
        (Some(problems), at) => format!(
            "<div class=\"error\" id=\"reload-result\"><p>{}</p><pre>{}</pre></div>",
            escape(&t_args(
                "admin-reload-refused",
                &[(
                    "when",
                    &at.map(|at| format!(" ({})", date(at))).unwrap_or_default()
                )]
            )),
            escape(problems)
        ),
        (None, Some(at)) => format!(
            "<p class=\"notice\" id=\"reload-result\">{}</p>",
            escape(&t_args("admin-reload-ok", &[("when", &date(at))]))
        ),
        (None, None) => String::new(),
    };
    let body = format!(
        "<h2>{}</h2><table id=\"config\"><tbody>\
<tr><th>{}</th><td id=\"generation\">{generation}</td></tr>\
<tr><th>{}</th><td>{loaded}</td></tr>\
<tr><th>{}</th><td><code>{digest}</code></td></tr>\
<tr><th>{}</th><td>{reloads}</td></tr>\
<tr><th>{}</th><td>{backend}: {store}{store_error}</td></tr></tbody></table>\
{last_reload}\
<form method=\"post\" action=\"/authnz/admin/reload\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" id=\"reload\">{}</button></form>\
<h2 id=\"idps-heading\">{}</h2><div class=\"wide\" tabindex=\"0\" role=\"region\" aria-labelledby=\"idps-heading\"><table id=\"idp-status\"><thead><tr>{}</tr></thead><tbody>{rows}</tbody></table></div>\
<p><a href=\"/metrics\">{}</a> · <a href=\"/\">{}</a></p>",
        escape(&t("admin-configuration")),
        escape(&t("admin-generation")),
        escape(&t("admin-loaded")),
        escape(&t("admin-digest")),
        escape(&t("admin-reloads-title")),
        escape(&t("admin-store")),
        escape(&t("admin-reload-button")),
        escape(&t("admin-idps")),
        ["col-idp", "col-state", "col-discovered", "col-key-fetches", "col-logins", "col-done", "col-failed"]
            .iter()
            .map(|key| format!("<th>{}</th>", escape(&t(key))))
            .collect::<String>(),
        escape(&t("admin-all-metrics")),
        escape(&t("admin-your-account")),
        generation = report.generation,
        loaded = date(report.loaded_at),
        digest = escape(&report.config_digest),
        reloads = escape(&t_args(
            "admin-reloads",
            &[
                ("done", &reload.reloads.to_string()),
                ("refused", &reload.failures.to_string())
            ]
        )),
        backend = escape(&report.store_backend),
        store = escape(&report.store),
        store_error = report
            .store_error
            .as_deref()
            .map(|error| format!(" ({})", escape(error)))
            .unwrap_or_default(),
        csrf = escape(csrf),
    );
    page(&t("admin-title"), &body)
}

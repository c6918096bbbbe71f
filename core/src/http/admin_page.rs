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
use crate::html::{escape, page_en};
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
                "<tr class=\"{state}\"><td>{name}<br><small>{kind}</small></td><td>{state}{reason}</td><td>{discovered}</td><td>{jwks}</td><td>{started}</td><td>{completed}</td><td>{failures}</td></tr>",
                name = escape(&idp.name),
                kind = escape(&idp.kind),
                state = escape(&idp.state),
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
            "<div class=\"error\" id=\"reload-result\"><p>The last reload{} was refused; the configuration before it stays in force:</p><pre>{}</pre></div>",
            at.map(|at| format!(" ({})", date(at))).unwrap_or_default(),
            escape(problems)
        ),
        (None, Some(at)) => format!(
            "<p class=\"notice\" id=\"reload-result\">The last reload ({}) succeeded.</p>",
            date(at)
        ),
        (None, None) => String::new(),
    };
    let body = format!(
        "<h2>Configuration</h2><table id=\"config\"><tbody>\
<tr><th>Generation</th><td id=\"generation\">{generation}</td></tr>\
<tr><th>Loaded</th><td>{loaded}</td></tr>\
<tr><th>Digest</th><td><code>{digest}</code></td></tr>\
<tr><th>Reloads</th><td>{reloads} done, {failures} refused</td></tr>\
<tr><th>Store</th><td>{backend}: {store}{store_error}</td></tr></tbody></table>\
{last_reload}\
<form method=\"post\" action=\"/authnz/admin/reload\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" id=\"reload\">Reload idps.toml</button></form>\
<h2>Identity providers</h2><div class=\"wide\"><table id=\"idp-status\"><thead><tr><th>IdP</th><th>State</th><th>Discovered</th><th>Key fetches</th><th>Logins</th><th>Done</th><th>Failed (reason)</th></tr></thead><tbody>{rows}</tbody></table></div>\
<p><a href=\"/metrics\">All metrics</a> · <a href=\"/\">Your account</a></p>",
        generation = report.generation,
        loaded = date(report.loaded_at),
        digest = escape(&report.config_digest),
        reloads = reload.reloads,
        failures = reload.failures,
        backend = escape(&report.store_backend),
        store = escape(&report.store),
        store_error = report
            .store_error
            .as_deref()
            .map(|error| format!(" ({})", escape(error)))
            .unwrap_or_default(),
        csrf = escape(csrf),
    );
    page_en("Administration", &body)
}

//! The pages a person sees: the login page with one button per IdP, and, once logged in,
//! the account page (linked identities, connect another IdP, disconnect, log out). Plain HTML,
//! no script, embedded in the binary; forms carry the session's CSRF token.

use std::sync::Arc;

use poem::Request;

use crate::api::{cookie, session_of, SESSION_COOKIE};
use crate::app::App;
use crate::pages::{escape, page};

/// `GET /`: the login page, or the account summary when logged in.
pub fn index(req: &Request, app: &Arc<App>) -> String {
    let session =
        cookie(req, SESSION_COOKIE).and_then(|value| session_of(app, &value).ok().flatten());
    if let Some(session) = session {
        if let Some(user) = app.store.user(&session.user_id).ok().flatten() {
            return account_page(app, &user, &session.csrf);
        }
    }
    let buttons: String = app
        .idps
        .iter()
        .map(|idp| {
            format!(
                "<a class=\"button\" href=\"/authnz/{}/login\">{}</a>",
                escape(&idp.config.name),
                escape(&idp.config.label)
            )
        })
        .collect();
    let body = if buttons.is_empty() {
        "<p class=\"warning\">No identity provider is configured. An administrator must add one to idps.toml.</p>".to_string()
    } else {
        format!(
            "<p>Choose how to sign in:</p><nav aria-label=\"Identity providers\">{buttons}</nav>"
        )
    };
    page("Sign in", &body)
}

fn account_page(app: &App, user: &crate::store::User, csrf: &str) -> String {
    let identities = app.store.identities_of(&user.id).unwrap_or_default();
    let rows: String = identities
        .iter()
        .map(|identity| {
            let disconnect = if identities.len() > 1 {
                format!(
                    "<a href=\"/authnz/{}/disconnect\">Disconnect</a>",
                    escape(&identity.idp)
                )
            } else {
                "<span title=\"Your only way to sign in\">—</span>".to_string()
            };
            format!(
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                escape(&identity.idp),
                escape(&identity.subject),
                escape(identity.email.as_deref().unwrap_or("")),
                disconnect
            )
        })
        .collect();
    let connect: String = app
        .idps
        .iter()
        .map(|idp| {
            format!(
                "<form method=\"post\" action=\"/authnz/{name}/connect\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" class=\"secondary\">Connect {label}</button></form>",
                name = escape(&idp.config.name),
                label = escape(&idp.config.label),
                csrf = escape(csrf),
            )
        })
        .collect();
    let body = format!(
        "<p>Signed in as <strong id=\"username\">{}</strong>{}.</p>\
<h2>Linked identities</h2><table><thead><tr><th>Provider</th><th>Subject</th><th>Email</th><th></th></tr></thead><tbody>{rows}</tbody></table>\
<h2>Connect another provider</h2>{connect}\
<form method=\"post\" action=\"/authnz/logout\"><button type=\"submit\" id=\"logout\">Log out</button></form>",
        escape(&user.username),
        user.email
            .as_deref()
            .map(|email| format!(" ({})", escape(email)))
            .unwrap_or_default(),
    );
    page("Your account", &body)
}

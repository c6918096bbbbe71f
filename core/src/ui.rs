//! The pages a person sees: the login page with one button per IdP, and, once logged in,
//! who they are. Plain HTML, no script, embedded in the binary.

use std::sync::Arc;

use poem::Request;

use crate::api::{cookie, session_of, SESSION_COOKIE};
use crate::app::App;
use crate::pages::{escape, page};

/// `GET /`: the login page, or the account summary when logged in.
pub fn index(req: &Request, app: &Arc<App>) -> String {
    let session =
        cookie(req, SESSION_COOKIE).and_then(|value| session_of(app, &value).ok().flatten());
    let user = session.and_then(|session| app.store.user(&session.user_id).ok().flatten());
    if let Some(user) = user {
        let identities = app.store.identities_of(&user.id).unwrap_or_default();
        let rows: String = identities
            .iter()
            .map(|identity| {
                format!(
                    "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                    escape(&identity.idp),
                    escape(&identity.subject),
                    escape(identity.email.as_deref().unwrap_or(""))
                )
            })
            .collect();
        let body = format!(
            "<p>Signed in as <strong id=\"username\">{}</strong>{}.</p>\
<h2>Linked identities</h2><table><thead><tr><th>Provider</th><th>Subject</th><th>Email</th></tr></thead><tbody>{rows}</tbody></table>\
<form method=\"post\" action=\"/authnz/logout\"><button type=\"submit\" id=\"logout\">Log out</button></form>",
            escape(&user.username),
            user.email
                .as_deref()
                .map(|email| format!(" ({})", escape(email)))
                .unwrap_or_default(),
        );
        return page("Your account", &body);
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

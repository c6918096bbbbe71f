//! The pages a person sees: the login page with one button per IdP, and, once logged in,
//! the account page (linked identities, connect another IdP, disconnect, log out). Plain HTML,
//! no script, embedded in the binary; forms carry the session's CSRF token.

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::payload::Html;
use poem_openapi::{ApiResponse, OpenApi};

use crate::crypto::sha256_hex;
use crate::html::{escape, page};
use crate::state::App;

use super::caller::session_of;
use super::cookies::{cookie, set_cookie, LOGOUT_NEXT_COOKIE, SESSION_COOKIE};
use super::login::{next_url, safe_next};

/// The pages (hidden from the spec).
pub struct PagesApi;

#[derive(ApiResponse)]
pub enum IndexResponse {
    #[oai(status = 200)]
    Page(Html<String>),
    #[oai(status = 200)]
    PageClearing(Html<String>, #[oai(header = "Set-Cookie")] String),
    /// After a logout through the IdP: on to the app.
    #[oai(status = 303)]
    Onward(
        #[oai(header = "Location")] String,
        #[oai(header = "Set-Cookie")] String,
    ),
}

#[derive(ApiResponse)]
pub enum AssetResponse {
    #[oai(status = 200)]
    Found(
        poem_openapi::payload::Binary<Vec<u8>>,
        #[oai(header = "Content-Type")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    #[oai(status = 404)]
    NotFound,
}

#[OpenApi]
impl PagesApi {
    /// The login page (HTML), or the account summary when logged in; just after a logout
    /// through the IdP's end-session page, on to where the app's logout link asked to go.
    #[oai(path = "/", method = "get", hidden)]
    async fn index(&self, req: &Request, app: Data<&Arc<App>>) -> IndexResponse {
        if let Some(onward) = cookie(req, LOGOUT_NEXT_COOKIE) {
            let clear = set_cookie(&app, LOGOUT_NEXT_COOKIE, "", "/", 0);
            let decoded = url::form_urlencoded::parse(format!("x={onward}").as_bytes())
                .next()
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default();
            let signed_in = match cookie(req, SESSION_COOKIE) {
                Some(value) => session_of(&app, &value).await.ok().flatten().is_some(),
                None => false,
            };
            let next = safe_next(&app, Some(&decoded));
            if !signed_in && next != "/" {
                return IndexResponse::Onward(next_url(&app, &next), clear);
            }
            return IndexResponse::PageClearing(Html(index(req, &app).await), clear);
        }
        IndexResponse::Page(Html(index(req, &app).await))
    }

    /// The configured logo (`[server.branding] logo`), under a path that changes with its
    /// content: cached for good.
    #[oai(path = "/assets/:file", method = "get", hidden)]
    async fn asset(
        &self,
        app: Data<&Arc<App>>,
        file: poem_openapi::param::Path<String>,
    ) -> AssetResponse {
        let logo = app
            .server
            .branding
            .as_ref()
            .and_then(|branding| branding.logo.as_ref())
            .filter(|logo| logo.path == format!("/assets/{}", file.0));
        match logo {
            Some(logo) => AssetResponse::Found(
                poem_openapi::payload::Binary(logo.bytes.to_vec()),
                logo.content_type.to_string(),
                "public, max-age=31536000, immutable".to_string(),
            ),
            None => AssetResponse::NotFound,
        }
    }

    /// The logout page an app links to (`/authnz/logout?next=<app URL>`): a button that posts
    /// the logout with the session's CSRF token, then goes on to `next`. Never a logout by GET.
    #[oai(path = "/authnz/logout", method = "get", hidden)]
    async fn logout_page(&self, req: &Request, app: Data<&Arc<App>>) -> Html<String> {
        Html(logout_page(req, &app).await)
    }
}

/// `GET /authnz/logout`: sign out, then on to `next`.
pub async fn logout_page(req: &Request, app: &Arc<App>) -> String {
    let next = safe_next(app, query_param(req, "next").as_deref());
    let session = match cookie(req, SESSION_COOKIE) {
        Some(value) => session_of(app, &value).await.ok().flatten(),
        None => None,
    };
    let Some(session) = session else {
        return page(
            "Signed out",
            &format!(
                "<p>You are not signed in.</p><p><a id=\"continue\" href=\"{}\">Continue</a></p>",
                escape(&next)
            ),
        );
    };
    page(
        "Sign out",
        &format!(
            "<p>Sign out of every application that uses this sign-in?</p>\
<form method=\"post\" action=\"/authnz/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"hidden\" name=\"next\" value=\"{}\"><button type=\"submit\" id=\"logout\">Sign out</button></form>\
<p><a href=\"{}\">Stay signed in</a></p>",
            escape(&session.csrf),
            escape(&next),
            escape(&next)
        ),
    )
}

/// `GET /`: the login page, or the account summary when logged in. `?next=` (a path here or
/// a URL on a configured app, as a forward-auth login URL carries it) goes into every IdP
/// button, so that the login lands there; signed in, the page links to it.
pub async fn index(req: &Request, app: &Arc<App>) -> String {
    let next = query_param(req, "next");
    let next = Some(safe_next(app, next.as_deref())).filter(|next| next != "/");
    let cookie_value = cookie(req, SESSION_COOKIE);
    let session = match &cookie_value {
        Some(value) => session_of(app, value).await.ok().flatten(),
        None => None,
    };
    if let (Some(session), Some(value)) = (session, &cookie_value) {
        if let Some(user) = app.store.user(&session.user_id).await.ok().flatten() {
            // A link, never a redirect: an app that keeps sending the person here (its
            // cookie does not reach it) must not loop.
            let onward = next
                .map(|next| {
                    format!(
                        "<p class=\"notice\">You are signed in. <a id=\"continue\" href=\"{}\">Continue to {}</a></p>",
                        escape(&next),
                        escape(&next)
                    )
                })
                .unwrap_or_default();
            return account_page(app, &user, &session.csrf, &sha256_hex(value), &onward).await;
        }
    }
    let carried = next
        .map(|next| {
            let encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
            format!("?next={encoded}")
        })
        .unwrap_or_default();
    let buttons: String = app
        .current()
        .idps
        .iter()
        .map(|idp| {
            format!(
                "<a class=\"button idp\" href=\"/authnz/{}/login{}\">{}<span>{}</span></a>",
                escape(&idp.config.name),
                escape(&carried),
                icon(
                    &idp.config.kind,
                    idp.config.icon.as_deref(),
                    &idp.config.label
                ),
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

/// A query parameter of the request, decoded (the first, when repeated).
fn query_param(req: &Request, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The account page of the session `current` (its hash); `notice` is HTML shown above it.
pub(crate) async fn account_page(
    app: &App,
    user: &crate::store::User,
    csrf: &str,
    current: &str,
    notice: &str,
) -> String {
    let identities = app.store.identities_of(&user.id).await.unwrap_or_default();
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
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&identity.idp),
                escape(&identity.subject),
                escape(identity.email.as_deref().unwrap_or("")),
                date(identity.linked_at),
                date(identity.last_login_at),
                disconnect
            )
        })
        .collect();
    // Only where another identity can be connected: an IdP the account has none at, or one
    // whose entry allows several accounts.
    let connect: String = app
        .current()
        .idps
        .iter()
        .filter(|idp| {
            idp.config.several_accounts
                || !identities
                    .iter()
                    .any(|identity| identity.idp == idp.config.name)
        })
        .map(|idp| {
            format!(
                "<form method=\"post\" action=\"/authnz/{name}/connect\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" class=\"secondary idp\">{icon}<span>Connect {label}</span></button></form>",
                name = escape(&idp.config.name),
                label = escape(&idp.config.label),
                icon = icon(&idp.config.kind, idp.config.icon.as_deref(), &idp.config.label),
                csrf = escape(csrf),
            )
        })
        .collect();
    let connect = if connect.is_empty() {
        String::new()
    } else {
        format!("<h2>Connect another provider</h2>{connect}")
    };
    let keys = keys_section(app, &user.id, csrf).await;
    let sessions = sessions_section(app, &user.id, csrf, current).await;
    let administration = if super::caller::is_admin(app, &user.id)
        .await
        .unwrap_or(false)
    {
        "<p><a id=\"administration\" href=\"/authnz/admin\">Administration</a>: identity providers, logins, reload.</p>"
    } else {
        ""
    };
    let body = format!(
        "{notice}<p>Signed in as <strong id=\"username\">{}</strong>{}.</p>\
<h2>Linked identities</h2><table id=\"identities\"><thead><tr><th>Provider</th><th>Subject</th><th>Email</th><th>Linked</th><th>Last sign-in</th><th><span class=\"visually-hidden\">Action</span></th></tr></thead><tbody>{rows}</tbody></table>\
{connect}\
{sessions}{administration}\
{keys}\
<form method=\"post\" action=\"/authnz/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\" id=\"logout\">Log out</button></form>",
        escape(&user.username),
        user.email
            .as_deref()
            .map(|email| format!(" ({})", escape(email)))
            .unwrap_or_default(),
        csrf = escape(csrf),
    );
    page("Your account", &body)
}

/// The account's API keys, each with a button that deletes it, and a form that makes one (its
/// secret is shown once, on the page that answers).
async fn keys_section(app: &App, user_id: &str, csrf: &str) -> String {
    let keys = app.store.api_keys_of(user_id).await.unwrap_or_default();
    let rows: String = keys
        .iter()
        .map(|key| {
            format!(
                "<tr><td>{name}</td><td><code>{prefix}</code></td><td>{}</td><td>{}</td><td><form method=\"post\" action=\"/authnz/keys/delete\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"id\" value=\"{id}\">\
<button type=\"submit\" class=\"secondary delete-key\" aria-label=\"Delete the API key {name}\">Delete</button></form></td></tr>",
                date(key.created_at),
                key.expires_at.map(date).unwrap_or_else(|| "never".to_string()),
                name = escape(&key.name),
                prefix = escape(&key.prefix),
                id = escape(&key.id),
                csrf = escape(csrf),
            )
        })
        .collect();
    let list = if keys.is_empty() {
        "<p>None yet. Scripts present one as <code>Authorization: Bearer &lt;key&gt;</code> on <code>/api/*</code>.</p>".to_string()
    } else {
        format!(
            "<table id=\"key-list\"><thead><tr><th>Name</th><th>Starts with</th><th>Created</th><th>Expires</th><th><span class=\"visually-hidden\">Action</span></th></tr></thead><tbody>{rows}</tbody></table>"
        )
    };
    format!(
        "<h2 id=\"api-keys\">API keys</h2>{list}\
<form method=\"post\" action=\"/authnz/keys/new\" id=\"new-key-form\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<label for=\"key-name\">Name of a new key</label><input id=\"key-name\" name=\"name\" required maxlength=\"100\" placeholder=\"laptop scripts\">\
<label for=\"key-expiry\">Expires</label><select id=\"key-expiry\" name=\"expires_in_days\">\
<option value=\"30\">in 30 days</option><option value=\"90\" selected>in 90 days</option><option value=\"365\">in a year</option><option value=\"\">never</option></select>\
<button type=\"submit\" id=\"create-key\" class=\"secondary\">Create an API key</button></form>\
<p>Also in <a href=\"/docs\">the API docs</a>.</p>",
        escape(csrf)
    )
}

/// Where the person is signed in: each live session (this browser marked), with a button that
/// ends it, and one that ends every other.
async fn sessions_section(app: &App, user_id: &str, csrf: &str, current: &str) -> String {
    let listed = app
        .accounts()
        .sessions(user_id, app.clock.now())
        .await
        .unwrap_or_default();
    let form = |session: &str, label: &str, class: &str, aria: &str| {
        format!(
            "<form method=\"post\" action=\"/authnz/sessions/end\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"hidden\" name=\"session\" value=\"{}\"><button type=\"submit\" class=\"{class}\" aria-label=\"{}\">{}</button></form>",
            escape(csrf),
            escape(session),
            escape(aria),
            escape(label),
        )
    };
    let others = listed
        .iter()
        .filter(|listed| listed.hash != current)
        .count();
    let rows: String = listed
        .iter()
        .map(|listed| {
            let this = listed.hash == current;
            let device = listed.session.device.as_deref().unwrap_or("Unknown device");
            let when = date(listed.session.created_at);
            let marker = if this {
                " <strong>(this browser)</strong>"
            } else {
                ""
            };
            let action = if this { "Sign out" } else { "End" };
            format!(
                "<tr{}><td>{}{marker}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if this { " class=\"current\"" } else { "" },
                escape(device),
                escape(&listed.session.idp),
                escape(listed.session.network.as_deref().unwrap_or("")),
                when,
                form(
                    &listed.id,
                    action,
                    "secondary end-session",
                    &format!("{action}: {device}, signed in {when}"),
                ),
            )
        })
        .collect();
    let everywhere = if others > 0 {
        form(
            "others",
            "Sign out everywhere else",
            "secondary",
            "Sign out everywhere else (every session but this one)",
        )
        .replace("<button ", "<button id=\"end-others\" ")
    } else {
        String::new()
    };
    format!(
        "<h2 id=\"sessions\">Where you are signed in</h2>\
<table id=\"session-list\"><thead><tr><th>Device</th><th>Provider</th><th>Network</th><th>Signed in</th><th><span class=\"visually-hidden\">Action</span></th></tr></thead><tbody>{rows}</tbody></table>{everywhere}"
    )
}

/// The button icon: the configured image, or a built-in badge for the kind (plain shapes and
/// the label's initial: no third-party logos, nothing fetched).
pub(crate) fn icon(kind: &str, configured: Option<&str>, label: &str) -> String {
    let allowed = |url: &str| {
        url.starts_with("https://") || url.starts_with('/') || url.starts_with("data:image/")
    };
    if let Some(url) = configured.filter(|url| allowed(url)) {
        return format!(
            "<img class=\"icon\" src=\"{}\" alt=\"\" width=\"24\" height=\"24\">",
            escape(url)
        );
    }
    let color = crate::registry::badge_colour(kind);
    let initial: String = label
        .chars()
        .find(|c| c.is_alphanumeric())
        .unwrap_or('?')
        .to_uppercase()
        .collect();
    format!(
        "<svg class=\"icon\" width=\"24\" height=\"24\" viewBox=\"0 0 24 24\" aria-hidden=\"true\"><rect width=\"24\" height=\"24\" rx=\"6\" fill=\"{color}\"/><text x=\"12\" y=\"17\" font-size=\"14\" font-family=\"sans-serif\" text-anchor=\"middle\" fill=\"#fff\">{}</text></svg>",
        escape(&initial)
    )
}

/// A Unix time as a UTC date and time.
pub(crate) fn date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|time| time.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

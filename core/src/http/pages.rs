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
use crate::i18n::{t, t_args};
use crate::state::App;

use super::caller::session_of;
use super::cookies::{cookie, set_cookie, LOGOUT_NEXT_COOKIE, SESSION_COOKIE};
use super::login::{next_url, safe_next};

/// The pages (hidden from the spec).
pub struct PagesApi;

const COPY_JS: &str = include_str!("../../assets/copy.js");
const CONTINUE_JS: &str = include_str!("../../assets/continue.js");

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

    /// The pages' scripts (no inline script: their CSP allows only this origin's): the copy
    /// buttons, and the hop of a posted sign-in answer.
    #[oai(path = "/authnz/assets/:script", method = "get", hidden)]
    async fn script(&self, script: poem_openapi::param::Path<String>) -> AssetResponse {
        let source = match script.0.as_str() {
            "copy.js" => COPY_JS,
            "continue.js" => CONTINUE_JS,
            _ => return AssetResponse::NotFound,
        };
        AssetResponse::Found(
            poem_openapi::payload::Binary(source.as_bytes().to_vec()),
            "text/javascript; charset=utf-8".to_string(),
            "no-cache".to_string(),
        )
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
            &t("signed-out-title"),
            &format!(
                "<p>{}</p><p><a id=\"continue\" href=\"{}\">{}</a></p>",
                escape(&t("not-signed-in")),
                escape(&next),
                escape(&t("continue")),
            ),
        );
    };
    page(
        &t("sign-out-title"),
        &format!(
            "<p>{}</p>\
<form method=\"post\" action=\"/authnz/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"hidden\" name=\"next\" value=\"{}\"><button type=\"submit\" id=\"logout\">{}</button></form>\
<p><a href=\"{}\">{}</a></p>",
            escape(&t("sign-out-question")),
            escape(&session.csrf),
            escape(&next),
            escape(&t("sign-out")),
            escape(&next),
            escape(&t("stay-signed-in")),
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
                    let link = format!(
                        "<a id=\"continue\" href=\"{}\">{}</a>",
                        escape(&next),
                        escape(&t_args("continue-to", &[("target", &next)]))
                    );
                    format!(
                        "<p class=\"notice\">{}</p>",
                        t_args("signed-in-continue", &[("target", &link)])
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
        .map(|idp| idp_button(idp, &carried))
        .collect();
    let body = if buttons.is_empty() {
        format!("<p class=\"warning\">{}</p>", escape(&t("no-providers")))
    } else {
        format!(
            "<p>{}</p><nav aria-label=\"{}\">{buttons}</nav>",
            escape(&t("choose-provider")),
            escape(&t("providers-nav")),
        )
    };
    page(&t("sign-in-title"), &body)
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
                    "<a href=\"/authnz/{}/disconnect\">{}</a>",
                    escape(&identity.idp),
                    escape(&t("disconnect"))
                )
            } else {
                format!("<span title=\"{}\">—</span>", escape(&t("only-way-in")))
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
<button type=\"submit\" class=\"secondary idp\">{icon}<span>{label}</span></button></form>",
                name = escape(&idp.config.name),
                label = escape(&t_args("connect-provider", &[("label", &idp.config.label)])),
                icon = icon(&idp.config.kind, idp.config.icon.as_deref(), &idp.config.label),
                csrf = escape(csrf),
            )
        })
        .collect();
    let connect = if connect.is_empty() {
        String::new()
    } else {
        format!("<h2>{}</h2>{connect}", escape(&t("connect-another")))
    };
    let keys = keys_section(app, &user.id, csrf).await;
    let sessions = sessions_section(app, &user.id, csrf, current).await;
    let administration = if super::caller::is_admin(app, &user.id)
        .await
        .unwrap_or(false)
    {
        format!(
            "<p><a id=\"administration\" href=\"/authnz/admin\">{}</a>: {}</p>",
            escape(&t("administration")),
            escape(&t("administration-what"))
        )
    } else {
        String::new()
    };
    let header = |key: &str| format!("<th>{}</th>", escape(&t(key)));
    let action = format!(
        "<th><span class=\"visually-hidden\">{}</span></th>",
        escape(&t("col-action"))
    );
    let signed_in_as = t_args(
        "signed-in-as",
        &[
            (
                "username",
                &format!(
                    "<strong id=\"username\">{}</strong>",
                    escape(&user.username)
                ),
            ),
            (
                "email",
                &user
                    .email
                    .as_deref()
                    .map(|email| format!(" ({})", escape(email)))
                    .unwrap_or_default(),
            ),
        ],
    );
    let body = format!(
        "{notice}<p>{signed_in_as}</p>\
<h2>{linked}</h2><table id=\"identities\"><thead><tr>{}{}{}{}{}{action}</tr></thead><tbody>{rows}</tbody></table>\
{connect}\
{sessions}{administration}\
{keys}\
<form method=\"post\" action=\"/authnz/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\" id=\"logout\">{log_out}</button></form>",
        header("col-provider"),
        header("col-subject"),
        header("col-email"),
        header("col-linked"),
        header("col-last-sign-in"),
        linked = escape(&t("linked-identities")),
        log_out = escape(&t("log-out")),
        csrf = escape(csrf),
    );
    page(&t("account-title"), &body)
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
<button type=\"submit\" class=\"secondary delete-key\" aria-label=\"{label}\">{delete}</button></form></td></tr>",
                date(key.created_at),
                key.expires_at
                    .map(date)
                    .unwrap_or_else(|| escape(&t("expires-never"))),
                name = escape(&key.name),
                prefix = escape(&key.prefix),
                id = escape(&key.id),
                csrf = escape(csrf),
                label = escape(&t_args("delete-key-label", &[("name", &key.name)])),
                delete = escape(&t("delete")),
            )
        })
        .collect();
    let header = |key: &str| format!("<th>{}</th>", escape(&t(key)));
    let list = if keys.is_empty() {
        format!(
            "<p>{}</p>",
            t_args(
                "api-keys-none",
                &[
                    ("header", "<code>Authorization: Bearer &lt;key&gt;</code>"),
                    ("paths", "<code>/api/*</code>"),
                ]
            )
        )
    } else {
        format!(
            "<table id=\"key-list\"><thead><tr>{}{}{}{}<th><span class=\"visually-hidden\">{}</span></th></tr></thead><tbody>{rows}</tbody></table>",
            header("col-name"),
            header("col-starts-with"),
            header("col-created"),
            header("col-expires"),
            escape(&t("col-action")),
        )
    };
    let option = |days: &str, key: &str, selected: bool| {
        format!(
            "<option value=\"{days}\"{}>{}</option>",
            if selected { " selected" } else { "" },
            escape(&t(key))
        )
    };
    format!(
        "<h2 id=\"api-keys\">{title}</h2>{list}\
<form method=\"post\" action=\"/authnz/keys/new\" id=\"new-key-form\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label for=\"key-name\">{name}</label><input id=\"key-name\" name=\"name\" required maxlength=\"100\" placeholder=\"{placeholder}\">\
<label for=\"key-expiry\">{expires}</label><select id=\"key-expiry\" name=\"expires_in_days\">{}{}{}{}</select>\
<button type=\"submit\" id=\"create-key\" class=\"secondary\">{create}</button></form>\
<p>{docs}</p>",
        option("30", "expires-30", false),
        option("90", "expires-90", true),
        option("365", "expires-365", false),
        option("", "expires-never", false),
        title = escape(&t("api-keys")),
        csrf = escape(csrf),
        name = escape(&t("new-key-name")),
        placeholder = escape(&t("new-key-placeholder")),
        expires = escape(&t("new-key-expires")),
        create = escape(&t("create-key")),
        docs = t_args(
            "also-in-docs",
            &[("docs", &format!("<a href=\"/docs\">{}</a>", escape(&t("api-docs"))))]
        ),
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
    let unknown = t("unknown-device");
    let rows: String = listed
        .iter()
        .map(|listed| {
            let this = listed.hash == current;
            let device = match listed.session.device.as_deref() {
                Some(label) => match crate::accounts::device::parts(label) {
                    (browser, Some(system)) => {
                        t_args("device-on", &[("browser", browser), ("system", system)])
                    }
                    (browser, None) => browser.to_string(),
                },
                None => unknown.clone(),
            };
            let device = device.as_str();
            let when = date(listed.session.created_at);
            let marker = if this {
                format!(" <strong>{}</strong>", escape(&t("this-browser")))
            } else {
                String::new()
            };
            let action = t(if this { "sign-out" } else { "end-session" });
            format!(
                "<tr{}><td>{}{marker}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if this { " class=\"current\"" } else { "" },
                escape(device),
                escape(&listed.session.idp),
                escape(listed.session.network.as_deref().unwrap_or("")),
                when,
                form(
                    &listed.id,
                    &action,
                    "secondary end-session",
                    &t_args(
                        "end-session-label",
                        &[("action", &action), ("device", device), ("when", &when)]
                    ),
                ),
            )
        })
        .collect();
    let everywhere = if others > 0 {
        form(
            "others",
            &t("sign-out-elsewhere"),
            "secondary",
            &t("sign-out-elsewhere-label"),
        )
        .replace("<button ", "<button id=\"end-others\" ")
    } else {
        String::new()
    };
    let header = |key: &str| format!("<th>{}</th>", escape(&t(key)));
    format!(
        "<h2 id=\"sessions\">{}</h2>\
<table id=\"session-list\"><thead><tr>{}{}{}{}<th><span class=\"visually-hidden\">{}</span></th></tr></thead><tbody>{rows}</tbody></table>{everywhere}",
        escape(&t("sessions")),
        header("col-device"),
        header("col-provider"),
        header("col-network"),
        header("col-signed-in"),
        escape(&t("col-action")),
    )
}

/// The button that starts a login at `idp`; `query` (`?next=...` or empty) goes with it.
pub(crate) fn idp_button(idp: &crate::protocol::Idp, query: &str) -> String {
    format!(
        "<a class=\"button idp\" href=\"/authnz/{}/login{}\">{}<span>{}</span></a>",
        escape(&idp.config.name),
        escape(query),
        icon(
            &idp.config.kind,
            idp.config.icon.as_deref(),
            &idp.config.label
        ),
        escape(&idp.config.label)
    )
}

/// The button icon: the configured image, else the kind's own mark (the brand's, from its
/// crate or dylib), else a badge in the kind's colour with the label's initial. An image, never
/// inline markup, so a dylib's SVG cannot reach the page; decorative (`alt=""`): the label
/// beside it names the button.
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

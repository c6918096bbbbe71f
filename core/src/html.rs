//! Server-rendered HTML: the page frame, escaping, and the small pages authnz shows itself.
//!
//! Everything is embedded in the binary (no CDN): authnz must work offline. Every string that
//! came from outside (an IdP's error description, a user name) goes through [`escape`].

use std::sync::Arc;

use crate::config::Branding;
use crate::i18n::t;

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1b1f24;line-height:1.5}\
h1{font-size:1.5rem}label{display:block;margin-top:1rem;font-weight:600}\
input,select{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}\
button,.button{display:block;box-sizing:border-box;width:100%;margin-top:1rem;padding:.7rem;font-size:1rem;border:1px solid #0b57d0;border-radius:.4rem;background:#0b57d0;color:#fff;text-align:center;text-decoration:none;cursor:pointer}\
button:focus,.button:focus,input:focus,select:focus,.wide:focus{outline:3px solid #f9ab00;outline-offset:2px}\
.secondary{background:#fff;color:#0b57d0}.warning{background:#fff4e5;border-left:4px solid #f9ab00;padding:.5rem 1rem}\
.error{background:#fdecea;border-left:4px solid #d93025;padding:.5rem 1rem}.notice{background:#e8f0fe;border-left:4px solid #0b57d0;padding:.5rem 1rem}code{word-break:break-all}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem;border-bottom:1px solid #ddd}\
.idp{display:flex;align-items:center;justify-content:center;gap:.6rem}.icon{flex:none;border-radius:6px}\
.button.idp,button.idp{background:#fff;color:#1f1f1f;border-color:#747775;font-weight:500}.button.idp:hover,button.idp:hover{background:#f2f2f2}\
.brand{display:flex;align-items:center;gap:.7rem;font-weight:600;font-size:1.1rem}.brand img{max-height:40px;width:auto}\
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}.wide{overflow-x:auto}.wide table{font-size:.85rem}pre{white-space:pre-wrap;word-break:break-word}\
footer{margin-top:3rem;font-size:.9rem;text-align:center}footer p{margin:.3rem 0}\
td form button{margin:0;padding:.3rem .6rem;width:auto;font-size:.9rem;white-space:nowrap}tr.current td{background:#f1f6fe}\
@media (max-width:30rem){body{margin:1rem auto}table{font-size:.85rem}}\
@media (prefers-color-scheme:dark){body{background:#121417;color:#e3e6ea}a{color:#8ab4f8}\
button,.button{background:#8ab4f8;border-color:#8ab4f8;color:#0b1a33}.secondary{background:#1c1f24;color:#8ab4f8}\
.warning{background:#3a2e12}.error{background:#3b1c1a}.notice{background:#172a45;border-left-color:#8ab4f8}\
td,th{border-bottom-color:#3a3f46}tr.current td{background:#1b2a3f}\
.button.idp,button.idp{background:#131314;color:#e3e3e3;border-color:#8e918f}.button.idp:hover,button.idp:hover{background:#24262a}\
img.icon{background:#fff;padding:2px;box-sizing:content-box;width:20px;height:20px}}";

tokio::task_local! {
    /// The organisation's look for the pages of the request in progress (`[server.branding]`).
    static BRANDING: Option<Arc<Branding>>;
}

/// Runs `request` with `branding` as the look of every page it renders.
pub async fn branded<F: std::future::Future>(
    branding: Option<Arc<Branding>>,
    request: F,
) -> F::Output {
    BRANDING.scope(branding, request).await
}

/// A complete page, in the organisation's look when one is configured. `title` is escaped
/// here; `body` must already be safe HTML.
pub fn page(title: &str, body: &str) -> String {
    let branding = BRANDING.try_with(Clone::clone).ok().flatten();
    let branding = branding.as_deref();
    let name = branding.and_then(|b| b.name.as_deref());
    let full_title = match name {
        Some(name) => format!("{} · {}", escape(title), escape(name)),
        None => escape(title),
    };
    let mut style = STYLE.to_string();
    if let Some(color) = branding.and_then(|b| b.primary_color.as_deref()) {
        // Checked as #rrggbb with the config: safe inside the style element.
        style.push_str(&format!(
            "@media (prefers-color-scheme:light){{button,.button{{background:{color};border-color:{color};color:{text}}}\
.secondary{{background:#fff;color:{color}}}a{{color:{color}}}.notice{{border-left-color:{color}}}}}",
            text = crate::config::text_on(color),
        ));
    }
    if let Some(css) = branding.and_then(|b| b.css.as_deref()) {
        style.push_str(css);
    }
    let header = match (name, branding.and_then(|b| b.logo.as_ref())) {
        (None, None) => String::new(),
        (name, logo) => format!(
            "<header class=\"brand\">{}{}</header>",
            logo.map(|logo| format!(
                "<img src=\"{}\" alt=\"{}\" height=\"40\">",
                escape(&logo.path),
                if name.is_some() {
                    String::new()
                } else {
                    "Logo".to_string()
                }
            ))
            .unwrap_or_default(),
            name.map(|name| format!("<span>{}</span>", escape(name)))
                .unwrap_or_default(),
        ),
    };
    let links: Vec<String> = [
        (branding.and_then(|b| b.privacy_url.as_ref()), "privacy"),
        (branding.and_then(|b| b.help_url.as_ref()), "help"),
    ]
    .into_iter()
    .filter_map(|(url, key)| {
        url.map(|url| {
            format!(
                "<a href=\"{}\">{}</a>",
                escape(url.as_str()),
                escape(&t(key))
            )
        })
    })
    .collect();
    let lang = crate::i18n::lang();
    let languages: Vec<String> = crate::i18n::LANGUAGES
        .iter()
        .map(|other| {
            let name = escape(&crate::i18n::in_catalogue(other, "language-name"));
            if *other == lang {
                format!(
                    "<a href=\"/?lang={other}\" lang=\"{other}\" aria-current=\"true\">{name}</a>"
                )
            } else {
                format!(
                    "<a href=\"/?lang={other}\" lang=\"{other}\" hreflang=\"{other}\">{name}</a>"
                )
            }
        })
        .collect();
    let footer = format!(
        "<footer>{}<nav aria-label=\"{}\" class=\"languages\">{}</nav></footer>",
        if links.is_empty() {
            String::new()
        } else {
            format!("<p>{}</p>", links.join(" · "))
        },
        escape(&t("languages")),
        languages.join(" · ")
    );
    format!(
        "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"color-scheme\" content=\"light dark\">\
<title>{full_title}</title><style>{style}</style></head>\
<body>{header}<main><h1>{title}</h1>\n{body}\n</main>{footer}</body></html>\n",
        title = escape(title),
    )
}

/// [`page`] for a page written in English only (not yet in the catalogues): it says so.
pub fn page_en(title: &str, body: &str) -> String {
    crate::i18n::in_english(|| page(title, body))
}

/// The page for a failed request, from its JSON error.
pub fn error_page(status: u16, code: &str, message: &str) -> String {
    let advice = match status {
        400 | 401 | 403 | 404 | 409 | 502 => t(&format!("advice-{status}")),
        _ => t("advice-other"),
    };
    page(
        &t("problem-title"),
        &format!(
            "<p class=\"error\">{}</p><p>{}</p><p><small>{} <code>{}</code></small></p><p><a class=\"button secondary\" href=\"/\">{}</a></p>",
            escape(message),
            escape(&advice),
            escape(&t("error-code")),
            escape(code),
            escape(&t("back-to-start")),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
        let html = error_page(400, "idp_error", "<img src=x onerror=alert(1)>");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img"));
    }
}

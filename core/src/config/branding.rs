//! `[server.branding]`: the organisation's name, logo, colour, extra styles and footer links on
//! every page. Files are read (and checked) with the config, so a page never fails on them.

use std::ops::Range;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use url::Url;

use super::fields::{Context, Fields};
use super::is_loopback_host;

/// The largest logo and stylesheet taken (they are held in memory and sent with the pages).
pub const MAX_LOGO_BYTES: usize = 512 * 1024;
pub const MAX_CSS_BYTES: usize = 256 * 1024;

/// `[server.branding]`, checked.
#[derive(Clone, Default)]
pub struct Branding {
    /// Shown in every title and above every heading.
    pub name: Option<String>,
    pub logo: Option<Logo>,
    /// `#rrggbb`: buttons and links (in the light scheme; the dark one keeps its own).
    pub primary_color: Option<String>,
    /// Appended after the built-in styles.
    pub css: Option<String>,
    pub privacy_url: Option<Url>,
    pub help_url: Option<Url>,
    /// `[server.branding.messages.<lang>]`: the admin's words for some messages.
    pub messages: Option<Arc<crate::i18n::Overrides>>,
}

/// A logo, served at [`Logo::path`], a path that changes with its content (so browsers may
/// cache it for good).
#[derive(Clone)]
pub struct Logo {
    pub path: String,
    pub content_type: &'static str,
    pub bytes: Arc<[u8]>,
}

impl std::fmt::Debug for Branding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Branding")
            .field("name", &self.name)
            .field("logo", &self.logo.as_ref().map(|logo| &logo.path))
            .field("primary_color", &self.primary_color)
            .field("css", &self.css.as_ref().map(String::len))
            .field("privacy_url", &self.privacy_url.as_ref().map(Url::as_str))
            .field("help_url", &self.help_url.as_ref().map(Url::as_str))
            .field("messages", &self.messages)
            .finish()
    }
}

/// Reads `[server.branding]`; every problem is reported where it stands.
pub(super) fn branding(cx: &mut Context, mut fields: Fields) -> Branding {
    let name = fields.take_str(cx, "name").and_then(|(name, span)| {
        let name = name.trim().to_string();
        if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
            cx.issue(
                span,
                "server.branding.name",
                "must be 1 to 80 printable characters",
            );
            return None;
        }
        Some(name)
    });
    let logo = fields
        .take_str(cx, "logo")
        .and_then(|(raw, span)| logo(cx, &raw, span));
    let primary_color = fields
        .take_str(cx, "primary_color")
        .and_then(|(value, span)| match hex_color(&value) {
            Some(color) => Some(color),
            None => {
                cx.issue(
                    span,
                    "server.branding.primary_color",
                    format!("{value:?}: expected a colour as #rgb or #rrggbb, e.g. \"#7b1fa2\""),
                );
                None
            }
        });
    let css = fields
        .take_str(cx, "css")
        .and_then(|(raw, span)| css(cx, &raw, span));
    let privacy_url = fields
        .take_str(cx, "privacy_url")
        .and_then(|(value, span)| link(cx, &value, span, "server.branding.privacy_url"));
    let help_url = fields
        .take_str(cx, "help_url")
        .and_then(|(value, span)| link(cx, &value, span, "server.branding.help_url"));
    let messages = fields
        .take_table(cx, "messages")
        .map(|table| messages(cx, table))
        .filter(|messages| !messages.is_empty())
        .map(|messages| Arc::new(crate::i18n::Overrides::new(&messages)));
    fields.finish(cx);
    Branding {
        name,
        logo,
        primary_color,
        css,
        privacy_url,
        help_url,
        messages,
    }
}

/// `[server.branding.messages.<lang>]`: `key = "text"` per language, each key one of the
/// built-in messages, each text a one-line Fluent message.
fn messages(cx: &mut Context, mut table: Fields) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    for (lang, value) in std::mem::take(&mut table.entries) {
        let path = table.key(lang.get_ref());
        let Some(lang_id) =
            crate::i18n::supported(lang.get_ref()).filter(|id| *id == lang.get_ref().as_ref())
        else {
            cx.issue(
                lang.span(),
                &path,
                format!(
                    "no catalogue for this language (there are {})",
                    crate::i18n::LANGUAGES.join(", ")
                ),
            );
            continue;
        };
        let span = value.span();
        let toml::de::DeValue::Table(entries) = value.into_inner() else {
            cx.issue(span, &path, "expected a table of `message-key = \"text\"`");
            continue;
        };
        for (key, text) in entries {
            let key_path = format!("{path}.{}", key.get_ref());
            let text_span = text.span();
            let toml::de::DeValue::String(text) = text.into_inner() else {
                cx.issue(text_span, &key_path, "expected a string");
                continue;
            };
            match crate::i18n::check_override(key.get_ref(), &text) {
                Some(reason) => cx.issue(key.span(), &key_path, reason),
                None => out.push((lang_id, key.get_ref().to_string(), text.to_string())),
            }
        }
    }
    out
}

fn logo(cx: &mut Context, raw: &str, span: Range<usize>) -> Option<Logo> {
    let path = cx.resolve(raw);
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let content_type = match extension.as_str() {
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        _ => {
            cx.issue(
                span,
                "server.branding.logo",
                format!(
                    "{}: expected an .svg, .png, .jpg, .webp or .gif file",
                    path.display()
                ),
            );
            return None;
        }
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) => {
            cx.issue(
                span,
                "server.branding.logo",
                format!("cannot read {}: {err}", path.display()),
            );
            return None;
        }
    };
    if bytes.is_empty() || bytes.len() > MAX_LOGO_BYTES {
        cx.issue(
            span,
            "server.branding.logo",
            format!(
                "{}: {} bytes; a logo has 1 to {MAX_LOGO_BYTES}",
                path.display(),
                bytes.len()
            ),
        );
        return None;
    }
    let digest = crate::crypto::hex(&Sha256::digest(&bytes));
    Some(Logo {
        path: format!("/assets/logo-{}.{extension}", &digest[..16]),
        content_type,
        bytes: bytes.into(),
    })
}

fn css(cx: &mut Context, raw: &str, span: Range<usize>) -> Option<String> {
    let path = cx.resolve(raw);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) => {
            cx.issue(
                span,
                "server.branding.css",
                format!("cannot read {}: {err}", path.display()),
            );
            return None;
        }
    };
    if text.len() > MAX_CSS_BYTES {
        cx.issue(
            span,
            "server.branding.css",
            format!("{}: larger than {MAX_CSS_BYTES} bytes", path.display()),
        );
        return None;
    }
    // It goes inside the pages' <style> element: it may not end it.
    if text.contains('<') {
        cx.issue(
            span,
            "server.branding.css",
            format!("{}: a stylesheet here may not contain `<`", path.display()),
        );
        return None;
    }
    Some(text)
}

fn link(cx: &mut Context, value: &str, span: Range<usize>, key: &str) -> Option<Url> {
    match Url::parse(value) {
        Ok(url)
            if url.scheme() == "https" || (url.scheme() == "http" && is_loopback_host(&url)) =>
        {
            Some(url)
        }
        _ => {
            cx.issue(span, key, format!("{value:?}: expected an https:// URL"));
            None
        }
    }
}

/// `#rgb` or `#rrggbb`, as lowercase `#rrggbb`.
pub fn hex_color(value: &str) -> Option<String> {
    let digits = value.strip_prefix('#')?;
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let full: String = match digits.len() {
        3 => digits.chars().flat_map(|c| [c, c]).collect(),
        6 => digits.to_string(),
        _ => return None,
    };
    Some(format!("#{}", full.to_ascii_lowercase()))
}

/// The text colour that reads best on `background` (`#rrggbb`): white or near-black, whichever
/// has the higher contrast (WCAG relative luminance).
pub fn text_on(background: &str) -> &'static str {
    let channel = |i: usize| {
        let value = u8::from_str_radix(background.get(i..i + 2).unwrap_or("00"), 16).unwrap_or(0);
        let c = f64::from(value) / 255.0;
        if c <= 0.039_28 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let luminance = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
    let on_white = 1.05 / (luminance + 0.05);
    let on_dark = (luminance + 0.05) / (0.0089 + 0.05);
    if on_white >= on_dark {
        "#ffffff"
    } else {
        "#111111"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_read_and_text_on_them_stays_readable() {
        assert_eq!(hex_color("#7B1FA2").as_deref(), Some("#7b1fa2"));
        assert_eq!(hex_color("#abc").as_deref(), Some("#aabbcc"));
        for bad in ["7b1fa2", "#12345", "#ggg", "red", "#1234567"] {
            assert_eq!(hex_color(bad), None, "{bad}");
        }
        assert_eq!(text_on("#0b57d0"), "#ffffff");
        assert_eq!(text_on("#7b1fa2"), "#ffffff");
        assert_eq!(text_on("#ffd54f"), "#111111");
        assert_eq!(text_on("#ffffff"), "#111111");
    }
}

//! The keys every kind takes (`label`, `client_id`, `issuer`, `scopes`, ...), each read and
//! checked on its own; what they mean together is the entry's business.

use std::ops::Range;

use toml::Spanned;

use super::fields::{Context, Fields, Place};
use super::{ClientAuth, LinkPolicy, Par, RESERVED_AUTHORIZE_PARAMS, SUPPORTED_ALGS};

/// The keys every kind takes, as read: each checked on its own, with its default.
pub(super) struct CommonKeys {
    pub(super) label: Option<String>,
    pub(super) icon: Option<String>,
    pub(super) client_id: Option<(String, Range<usize>)>,
    pub(super) client_secret: Option<(String, Range<usize>)>,
    pub(super) client_secret_file: Option<(String, Range<usize>)>,
    pub(super) client_auth: Option<(ClientAuth, Range<usize>)>,
    pub(super) client_key_file: Option<(String, Range<usize>)>,
    pub(super) client_key_alg: Option<(String, Range<usize>)>,
    pub(super) client_certificate_file: Option<(String, Range<usize>)>,
    pub(super) par: Par,
    pub(super) form_post: bool,
    pub(super) dpop: bool,
    pub(super) assertion_audience_issuer: bool,
    pub(super) issuer: Option<(String, Range<usize>)>,
    pub(super) scopes: Option<Vec<String>>,
    pub(super) extra_scopes: Vec<String>,
    pub(super) prompt: Option<String>,
    pub(super) id_token_algs: Option<Vec<String>>,
    pub(super) userinfo: bool,
    pub(super) pkce: bool,
    pub(super) username_claim: Option<String>,
    pub(super) groups_claim: Option<String>,
    pub(super) link_existing: LinkPolicy,
    pub(super) trusted_email_domains: Vec<String>,
    pub(super) require_create_confirmation: bool,
    pub(super) several_accounts: bool,
    pub(super) accepted_audiences: Vec<(String, Range<usize>)>,
    pub(super) previous_issuers: Vec<String>,
    pub(super) authorize_params: Vec<(String, String)>,
}

/// Takes the keys every kind takes out of `fields`, leaving the kind's own.
pub(super) fn common_keys(cx: &mut Context, fields: &mut Fields, at: &Place) -> CommonKeys {
    let label = fields.take_str(cx, "label").map(|(v, _)| v);
    let icon = fields.take_str(cx, "icon").map(|(v, _)| v);
    let client_id = fields.take_str(cx, "client_id");
    let client_secret = fields.take_str(cx, "client_secret");
    let client_secret_file = fields.take_str(cx, "client_secret_file");
    let client_auth = client_auth(cx, fields, at);
    let client_key_file = fields.take_str(cx, "client_key_file");
    let client_key_alg = fields.take_str(cx, "client_key_alg");
    if let Some((alg, span)) = &client_key_alg {
        if !crate::client_key::CLIENT_KEY_ALGS.contains(&alg.as_str()) {
            cx.issue(
                span.clone(),
                &at.key("client_key_alg"),
                format!(
                    "expected one of {}",
                    crate::client_key::CLIENT_KEY_ALGS.join(", ")
                ),
            );
        }
    }
    let client_certificate_file = fields.take_str(cx, "client_certificate_file");
    let form_post = match fields.take_str(cx, "response_mode") {
        None => false,
        Some((value, span)) => match value.as_str() {
            "query" => false,
            "form_post" => true,
            _ => {
                cx.issue(
                    span,
                    &at.key("response_mode"),
                    "expected \"query\" or \"form_post\"",
                );
                false
            }
        },
    };
    let dpop = fields.take_bool(cx, "dpop").unwrap_or(false);
    let assertion_audience_issuer = match fields.take_str(cx, "client_assertion_audience") {
        None => false,
        Some((value, span)) => match value.as_str() {
            "token_endpoint" => false,
            "issuer" => true,
            _ => {
                cx.issue(
                    span,
                    &at.key("client_assertion_audience"),
                    "expected \"token_endpoint\" or \"issuer\"",
                );
                false
            }
        },
    };
    let par = match fields.take_str(cx, "par") {
        None => Par::Auto,
        Some((value, span)) => match value.as_str() {
            "auto" => Par::Auto,
            "always" => Par::Always,
            "never" => Par::Never,
            _ => {
                cx.issue(
                    span,
                    &at.key("par"),
                    "expected \"auto\", \"always\" or \"never\"",
                );
                Par::Auto
            }
        },
    };
    let issuer = fields.take_str(cx, "issuer");
    let scopes = fields.take_str_list(cx, "scopes");
    let extra_scopes = fields.take_str_list(cx, "extra_scopes").unwrap_or_default();
    let prompt = fields.take_str(cx, "prompt").map(|(v, _)| v);
    let id_token_algs = id_token_algs(cx, fields, at);
    let userinfo = fields.take_bool(cx, "userinfo").unwrap_or(true);
    let pkce = fields.take_bool(cx, "pkce").unwrap_or(true);
    let username_claim = fields.take_str(cx, "username_claim").map(|(v, _)| v);
    let groups_claim = match fields.take_str(cx, "groups_claim") {
        Some((claim, span)) if claim.is_empty() => {
            cx.issue(
                span,
                &at.key("groups_claim"),
                "must name a claim, e.g. \"groups\"",
            );
            None
        }
        other => other.map(|(v, _)| v),
    };
    let link_existing = link_policy(cx, fields, at);
    let trusted_email_domains = fields
        .take_str_list(cx, "trusted_email_domains")
        .unwrap_or_default();
    if link_existing == LinkPolicy::VerifiedEmail && trusted_email_domains.is_empty() {
        cx.issue(
            at.span.clone(),
            &at.key("trusted_email_domains"),
            "link_existing = \"verified_email\" needs the domains this IdP is authoritative for, e.g. [\"example.org\"]",
        );
    }
    let require_create_confirmation = fields
        .take_bool(cx, "require_create_confirmation")
        .unwrap_or(false);
    let several_accounts = fields.take_bool(cx, "several_accounts").unwrap_or(false);
    let accepted_audiences = fields
        .take_str_items(cx, "accepted_audiences")
        .unwrap_or_default();
    let previous_issuers = fields
        .take_str_list(cx, "previous_issuers")
        .unwrap_or_default();
    let authorize_params = authorize_params(cx, fields);
    CommonKeys {
        label,
        icon,
        client_id,
        client_secret,
        client_secret_file,
        client_auth,
        client_key_file,
        client_key_alg,
        client_certificate_file,
        par,
        form_post,
        dpop,
        assertion_audience_issuer,
        issuer,
        scopes,
        extra_scopes,
        prompt,
        id_token_algs,
        userinfo,
        pkce,
        username_claim,
        groups_claim,
        link_existing,
        trusted_email_domains,
        require_create_confirmation,
        several_accounts,
        accepted_audiences,
        previous_issuers,
        authorize_params,
    }
}

/// `id_token_algs`: supported algorithms only (never `none`), at least one.
fn id_token_algs(cx: &mut Context, fields: &mut Fields, at: &Place) -> Option<Vec<String>> {
    let value = fields.take("id_token_algs")?;
    let span = value.span();
    let mut list = Fields {
        prefix: at.prefix.clone(),
        span: span.clone(),
        entries: Vec::new(),
        known: Vec::new(),
    };
    list.entries
        .push((Spanned::new(span.clone(), "id_token_algs".into()), value));
    let algs = list.take_str_list(cx, "id_token_algs").unwrap_or_default();
    for alg in &algs {
        if !SUPPORTED_ALGS.contains(&alg.as_str()) {
            cx.issue(
                span.clone(),
                &at.key("id_token_algs"),
                format!(
                    "unsupported algorithm {alg:?} (\"none\" is never accepted); supported: {}",
                    SUPPORTED_ALGS.join(", ")
                ),
            );
        }
    }
    if algs.is_empty() {
        cx.issue(
            span,
            &at.key("id_token_algs"),
            "must list at least one algorithm",
        );
    }
    Some(algs)
}

/// `client_auth`: how authnz authenticates itself at the IdP's token endpoint.
fn client_auth(
    cx: &mut Context,
    fields: &mut Fields,
    at: &Place,
) -> Option<(ClientAuth, Range<usize>)> {
    let (value, span) = fields.take_str(cx, "client_auth")?;
    let auth = match value.as_str() {
        "client_secret_basic" => ClientAuth::SecretBasic,
        "client_secret_post" => ClientAuth::SecretPost,
        "client_secret_jwt" => ClientAuth::SecretJwt,
        "private_key_jwt" => ClientAuth::PrivateKeyJwt,
        "none" => ClientAuth::None,
        _ => {
            cx.issue(
                span,
                &at.key("client_auth"),
                "expected \"client_secret_basic\", \"client_secret_post\", \"client_secret_jwt\", \"private_key_jwt\" or \"none\"",
            );
            return None;
        }
    };
    Some((auth, span))
}

/// `link_existing`, `confirm` by default.
fn link_policy(cx: &mut Context, fields: &mut Fields, at: &Place) -> LinkPolicy {
    match fields.take_str(cx, "link_existing") {
        None => LinkPolicy::Confirm,
        Some((value, span)) => match value.as_str() {
            "never" => LinkPolicy::Never,
            "confirm" => LinkPolicy::Confirm,
            "verified_email" => LinkPolicy::VerifiedEmail,
            _ => {
                cx.issue(
                    span,
                    &at.key("link_existing"),
                    "expected \"never\", \"confirm\" or \"verified_email\"",
                );
                LinkPolicy::Confirm
            }
        },
    }
}

/// `[idps.<name>.authorize_params]`: strings, none of those the core sets itself.
fn authorize_params(cx: &mut Context, fields: &mut Fields) -> Vec<(String, String)> {
    let Some(mut table) = fields.take_table(cx, "authorize_params") else {
        return Vec::new();
    };
    let mut params = Vec::new();
    let names: Vec<String> = table
        .entries
        .iter()
        .map(|(k, _)| k.get_ref().to_string())
        .collect();
    for param in names {
        let span = table
            .entries
            .iter()
            .find(|(k, _)| k.get_ref() == param.as_str())
            .map(|(k, _)| k.span())
            .unwrap_or(0..0);
        if let Some((value, _)) = table.take_str(cx, &param) {
            if RESERVED_AUTHORIZE_PARAMS.contains(&param.as_str()) {
                cx.issue(
                    span,
                    &format!("{}.{param}", table.prefix),
                    "this parameter is set by authnz itself and cannot be overridden",
                );
            } else {
                params.push((param, value));
            }
        }
    }
    table.finish(cx);
    params
}

//! Accounts: turning a verified login into a local user, identity, sealed tokens and session.
//!
//! An identity is keyed by (IdP, subject) and nothing else: an email address never finds or
//! links an account here, so a changed or unverified email cannot take one over.

use authnz_plugin::MapError;

use crate::app::App;
use crate::crypto::{random_token, sha256_hex};
use crate::error::{FlowError, Status};
use crate::protocol::{Idp, VerifiedLogin};
use crate::store::{identity_key_public, CompletedLogin, LoginOutcome};

/// Local names nobody gets from an IdP claim as they are.
const RESERVED_USERNAMES: &[&str] = &[
    "admin",
    "administrator",
    "root",
    "system",
    "authnz",
    "api",
    "me",
];

/// A safe local username from an IdP's suggestion: lowercase ASCII letters, digits, `.`, `_`
/// and `-`, at most 40 characters, never empty and never a reserved name. The store makes it
/// unique by appending a number.
pub fn local_username(wanted: Option<&str>) -> String {
    let mut out = String::new();
    for c in wanted
        .unwrap_or_default()
        .chars()
        .flat_map(char::to_lowercase)
    {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else {
            '-'
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
        if out.len() >= 40 {
            break;
        }
    }
    let trimmed = out.trim_matches(|c| matches!(c, '-' | '.' | '_'));
    let name = if trimmed.is_empty() { "user" } else { trimmed };
    if RESERVED_USERNAMES.contains(&name) {
        format!("{name}-user")
    } else {
        name.to_string()
    }
}

/// Maps, stores and starts the session of a verified login, in one transaction. Returns the
/// outcome and the new session cookie value. `old_session` (a planted or previous session) is
/// ended: the session id always changes at login (SECURITY G62).
pub fn finish_login(
    app: &App,
    idp: &Idp,
    verified: VerifiedLogin,
    old_session: Option<&str>,
    now: i64,
) -> Result<(LoginOutcome, String), FlowError> {
    let mapped = idp
        .config
        .provider
        .map_identity(&verified.claims)
        .map_err(|err| match err {
            MapError::Denied(reason) => FlowError::new(Status::Forbidden, "login_denied", reason),
            MapError::Invalid(reason) => FlowError::unauthorized("claims_unusable", reason),
            MapError::Failed(reason) => FlowError::bad_gateway("provider_failed", reason),
            _ => FlowError::unauthorized("claims_unusable", "the identity could not be mapped"),
        })?;
    let mut mapped = mapped;
    if let Some(claim) = &idp.config.username_claim {
        // `username_claim = "email"` takes the local part, as a username should not be an address.
        if let Some(value) = verified.claims.str(claim) {
            mapped.username = Some(value.split('@').next().unwrap_or(value).to_string());
        }
    }
    if !crate::protocol::valid_subject(&mapped.subject) {
        return Err(FlowError::unauthorized(
            "claims_unusable",
            "the identity has no valid subject",
        ));
    }
    let tokens = serde_json::to_vec(&verified.tokens)
        .map_err(|_| FlowError::internal("token encoding failed"))?;
    let sealed_tokens = app
        .vault
        .seal(
            &identity_key_public(&idp.config.name, &mapped.subject),
            &tokens,
        )
        .map_err(|_| FlowError::internal("token sealing failed"))?;
    let session_cookie = random_token(32);
    let login = CompletedLogin {
        idp: idp.config.name.clone(),
        subject: mapped.subject.clone(),
        email: mapped.email.clone(),
        email_verified: mapped.email_verified,
        display_name: mapped.display_name.clone(),
        username: local_username(mapped.username.as_deref()),
        sealed_tokens,
        session_hash: sha256_hex(&session_cookie),
        new_user_id: random_token(16),
        now,
        session_expires_at: now + app.config.server.session_ttl.as_secs() as i64,
    };
    let outcome = app.store.complete_login(&login)?;
    if let Some(old) = old_session {
        app.store.delete_session(old)?;
    }
    Ok((outcome, session_cookie))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_made_safe() {
        let cases = [
            (Some("Alice"), "alice"),
            (Some("bob smith"), "bob-smith"),
            (Some("../../etc"), "etc"),
            (Some("<script>"), "script"),
            (Some("admin"), "admin-user"),
            (Some("ROOT"), "root-user"),
            (Some(""), "user"),
            (None, "user"),
            (Some("éva"), "va"),
            (Some("a\u{0}b"), "a-b"),
        ];
        for (wanted, expected) in cases {
            assert_eq!(local_username(wanted), expected, "{wanted:?}");
        }
        assert_eq!(local_username(Some(&"x".repeat(100))).len(), 40);
    }
}

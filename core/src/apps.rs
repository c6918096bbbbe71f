//! What an application behind a reverse proxy is told about the person signed in: who they
//! are (a verified, owned address only), their groups, whether the app's policy lets them in,
//! and the signed assertion it may verify. No HTTP here: `http::forward` asks, this answers.

use serde_json::{json, Value};

use crate::config::{AppConfig, HeaderPreset};
use crate::crypto::random_token;
use crate::signing::{SigningKey, SigningKeyError};
use crate::store::{normalize_email, Identity, Store, StoreResult, User};

/// Who is signed in, as an app may be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub user: User,
    /// The IdP the session (or the IdP access token) was started with; `None` for an API key.
    pub idp: Option<String>,
    /// `<idp>:<group>`, sorted; `None`: unknown (the IdP signalled an overage).
    pub groups: Option<Vec<String>>,
    /// An address an IdP verified and that this account owns in the email index (lowercase),
    /// never an unverified claim (SECURITY J80).
    pub email: Option<String>,
    /// When the session's login completed (Unix seconds); `None` for a bearer credential.
    pub auth_time: Option<i64>,
    /// IdP names of every identity of the account.
    pub linked_idps: Vec<String>,
}

/// The person behind `user`, signed in through `via` (an identity's IdP and subject) or an API
/// key (`None`): the groups are that identity's (an API key's: every identity's). The email is
/// the account's, the same whichever identity signed in (an app that keys accounts by address
/// sees one person as one account): the user's address when the account owns it, else the
/// earliest linked identity's verified address that it owns.
pub async fn person(
    store: &dyn Store,
    user: User,
    via: Option<(&str, &str)>,
    auth_time: Option<i64>,
) -> StoreResult<Person> {
    let mut identities = store.identities_of(&user.id).await?;
    identities.sort_by_key(|identity| identity.linked_at);
    let candidates = user.email.iter().map(String::as_str).chain(
        identities
            .iter()
            .filter(|identity| identity.email_verified)
            .filter_map(|identity| identity.email.as_deref()),
    );
    let mut email = None;
    let mut asked = Vec::new();
    for address in candidates {
        let address = normalize_email(address);
        if asked.contains(&address) {
            continue;
        }
        // The verified-email index names the account that owns an address: only an address
        // an IdP verified is in it (SECURITY J80).
        if store
            .email_owner(&address)
            .await?
            .is_some_and(|owner| owner.user_id == user.id)
        {
            email = Some(address);
            break;
        }
        asked.push(address);
    }
    let prefixed = |identity: &Identity| {
        identity.groups.as_ref().map(|groups| {
            groups
                .iter()
                .map(|group| format!("{}:{group}", identity.idp))
                .collect::<Vec<_>>()
        })
    };
    let groups = match via {
        Some((idp, subject)) => identities
            .iter()
            .find(|identity| identity.idp == idp && identity.subject == subject)
            .and_then(prefixed),
        None => {
            let known: Vec<Vec<String>> = identities.iter().filter_map(prefixed).collect();
            (!known.is_empty() || identities.is_empty()).then(|| known.concat())
        }
    }
    .map(|mut groups| {
        groups.sort();
        groups.dedup();
        groups
    });
    let mut linked_idps: Vec<String> = identities.iter().map(|i| i.idp.clone()).collect();
    linked_idps.sort();
    linked_idps.dedup();
    Ok(Person {
        user,
        idp: via.map(|(idp, _)| idp.to_string()),
        groups,
        email,
        auth_time,
        linked_idps,
    })
}

/// Why an app's policy turned a signed-in person away (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// `require_verified_email`, and the account owns no verified address.
    EmailNotVerified,
    /// `allowed_idps`, and the session was started with another IdP.
    IdpNotAllowed,
    /// `allowed_groups`, and the person is in none of them.
    NotInGroup,
    /// `allowed_groups`, and the IdP did not say (an overage): never a pass.
    GroupsUnknown,
}

impl Denial {
    /// The stable `error` code.
    pub fn code(self) -> &'static str {
        match self {
            Denial::EmailNotVerified => "email_not_verified",
            Denial::IdpNotAllowed => "idp_not_allowed",
            Denial::NotInGroup => "not_in_group",
            Denial::GroupsUnknown => "groups_unknown",
        }
    }

    /// For the person.
    pub fn message(self) -> &'static str {
        match self {
            Denial::EmailNotVerified => "this application needs an email address your identity provider has verified",
            Denial::IdpNotAllowed => "this application does not accept the identity provider you signed in with",
            Denial::NotInGroup => "you are not in a group this application admits",
            Denial::GroupsUnknown => "your identity provider did not say which groups you are in (too many to list): this application cannot admit you",
        }
    }
}

/// The app's policy, checked in order: verified email, IdP, groups. An API key (no IdP of
/// its own) passes `allowed_idps` when the account has an identity at one of them.
pub fn admit(app: &AppConfig, person: &Person) -> Result<(), Denial> {
    if app.require_verified_email && person.email.is_none() {
        return Err(Denial::EmailNotVerified);
    }
    if !app.allowed_idps.is_empty() {
        let allowed = |idp: &String| app.allowed_idps.contains(idp);
        let passes = match &person.idp {
            Some(idp) => allowed(idp),
            None => person.linked_idps.iter().any(allowed),
        };
        if !passes {
            return Err(Denial::IdpNotAllowed);
        }
    }
    if !app.allowed_groups.is_empty() {
        let Some(groups) = &person.groups else {
            return Err(Denial::GroupsUnknown);
        };
        if !groups
            .iter()
            .any(|group| app.allowed_groups.contains(group))
        {
            return Err(Denial::NotInGroup);
        }
    }
    Ok(())
}

/// The claims of an app's assertion (see [`assertion`]).
pub fn assertion_claims(issuer: &str, app: &AppConfig, person: &Person, now: i64) -> Value {
    let mut claims = json!({
        "iss": issuer,
        "aud": app.audience,
        "sub": person.user.id,
        "iat": now,
        "nbf": now,
        "exp": now + app.assertion_ttl as i64,
        "jti": random_token(16),
        "preferred_username": person.user.username,
        "groups": person.groups.clone().unwrap_or_default(),
    });
    if let Some(map) = claims.as_object_mut() {
        if let Some(auth_time) = person.auth_time {
            map.insert("auth_time".into(), json!(auth_time));
        }
        if let Some(name) = &person.user.display_name {
            map.insert("name".into(), json!(name));
        }
        if let Some(idp) = &person.idp {
            map.insert("idp".into(), json!(idp));
        }
        if let Some(email) = &person.email {
            map.insert("email".into(), json!(email));
            map.insert("email_verified".into(), json!(true));
        }
    }
    claims
}

/// The signed assertion for `app`: an ES256 JWT whose audience is the app, so that another
/// app refuses it (SECURITY J82), living `assertion_ttl_seconds`.
pub fn assertion(
    key: &SigningKey,
    issuer: &str,
    app: &AppConfig,
    person: &Person,
    now: i64,
) -> Result<String, SigningKeyError> {
    key.sign_jwt(&assertion_claims(issuer, app, person, now))
}

/// The identity headers of a preset, each with its value (empty when there is none, so that
/// a proxy copying them overwrites a client's own copy: SECURITY J79). `person`: `None` for an
/// anonymous pass (`anonymous_if`), every header then empty.
pub fn identity_headers(
    preset: HeaderPreset,
    person: Option<&Person>,
    assertion: Option<&str>,
) -> Vec<(&'static str, String)> {
    let value = |pick: fn(&Person) -> Option<String>| person.and_then(pick).unwrap_or_default();
    let user = value(|p| Some(p.user.username.clone()));
    let id = value(|p| Some(p.user.id.clone()));
    let name = value(|p| p.user.display_name.clone());
    let email = value(|p| p.email.clone());
    let idp = value(|p| p.idp.clone());
    let groups = value(|p| {
        p.groups.as_ref().map(|groups| {
            groups
                .iter()
                .map(|group| header_item(group))
                .collect::<Vec<_>>()
                .join(",")
        })
    });
    let mut headers = match preset {
        HeaderPreset::Authnz => vec![
            ("X-Authnz-User", user),
            ("X-Authnz-User-Id", id),
            ("X-Authnz-Name", name),
            ("X-Authnz-Email", email),
            ("X-Authnz-Idp", idp),
            ("X-Authnz-Groups", groups),
        ],
        HeaderPreset::Oauth2Proxy => vec![
            ("X-Auth-Request-User", id),
            ("X-Auth-Request-Email", email),
            ("X-Auth-Request-Preferred-Username", user),
            ("X-Auth-Request-Groups", groups),
        ],
        HeaderPreset::Authelia => vec![
            ("Remote-User", user),
            ("Remote-Email", email),
            ("Remote-Name", name),
            ("Remote-Groups", groups),
        ],
    };
    headers.push((
        "X-Authnz-Assertion",
        assertion.unwrap_or_default().to_string(),
    ));
    headers
}

/// A group in a comma-separated header: `%` and `,` percent-encoded, so that a group name
/// with a comma (an LDAP DN) stays one item.
fn header_item(group: &str) -> String {
    group.replace('%', "%25").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppConfig {
        AppConfig::at("galaxy", "https://galaxy.example.org")
    }

    fn person() -> Person {
        Person {
            user: User {
                id: "u1".into(),
                username: "ada".into(),
                email: Some("unverified@example.org".into()),
                display_name: Some("Ada L".into()),
                created_at: 0,
            },
            idp: Some("okta".into()),
            groups: Some(vec!["okta:staff".into()]),
            email: Some("ada@example.org".into()),
            auth_time: Some(100),
            linked_idps: vec!["google".into(), "okta".into()],
        }
    }

    #[test]
    fn the_policy_row_by_row() {
        type Edit = fn(&mut AppConfig, &mut Person);
        let rows: [(&str, Edit, Result<(), Denial>); 11] = [
            ("no policy", |_, _| {}, Ok(())),
            (
                "verified email present",
                |a, _| a.require_verified_email = true,
                Ok(()),
            ),
            (
                "J80: no owned verified email",
                |a, p| {
                    a.require_verified_email = true;
                    p.email = None
                },
                Err(Denial::EmailNotVerified),
            ),
            (
                "allowed IdP",
                |a, _| a.allowed_idps = vec!["okta".into()],
                Ok(()),
            ),
            (
                "other IdP",
                |a, _| a.allowed_idps = vec!["google".into()],
                Err(Denial::IdpNotAllowed),
            ),
            (
                "API key, account linked there",
                |a, p| {
                    a.allowed_idps = vec!["google".into()];
                    p.idp = None
                },
                Ok(()),
            ),
            (
                "API key, account not linked there",
                |a, p| {
                    a.allowed_idps = vec!["github".into()];
                    p.idp = None
                },
                Err(Denial::IdpNotAllowed),
            ),
            (
                "in the group",
                |a, _| a.allowed_groups = vec!["okta:staff".into()],
                Ok(()),
            ),
            (
                "not in the group",
                |a, _| a.allowed_groups = vec!["okta:admins".into()],
                Err(Denial::NotInGroup),
            ),
            (
                "another IdP's group of the same name",
                |a, _| a.allowed_groups = vec!["google:staff".into()],
                Err(Denial::NotInGroup),
            ),
            (
                "groups unknown",
                |a, p| {
                    a.allowed_groups = vec!["okta:staff".into()];
                    p.groups = None
                },
                Err(Denial::GroupsUnknown),
            ),
        ];
        for (why, edit, want) in rows {
            let (mut app, mut person) = (app(), person());
            edit(&mut app, &mut person);
            assert_eq!(admit(&app, &person), want, "{why}");
        }
    }

    #[test]
    fn headers_are_all_sent_empty_when_there_is_no_value() {
        let anonymous = identity_headers(HeaderPreset::Authnz, None, None);
        assert_eq!(anonymous.len(), 7);
        assert!(anonymous.iter().all(|(_, value)| value.is_empty()));
        let mut person = person();
        person.groups = Some(vec!["okta:cn=a,ou=b".into(), "okta:x".into()]);
        let authnz = identity_headers(HeaderPreset::Authnz, Some(&person), Some("jwt"));
        let get = |headers: &[(&str, String)], name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get(&authnz, "X-Authnz-User"), "ada");
        assert_eq!(get(&authnz, "X-Authnz-User-Id"), "u1");
        assert_eq!(
            get(&authnz, "X-Authnz-Email"),
            "ada@example.org",
            "J80: the owned address, not the user's unverified one"
        );
        assert_eq!(get(&authnz, "X-Authnz-Groups"), "okta:cn=a%2Cou=b,okta:x");
        assert_eq!(get(&authnz, "X-Authnz-Assertion"), "jwt");
        let authelia = identity_headers(HeaderPreset::Authelia, Some(&person), None);
        assert_eq!(get(&authelia, "Remote-User"), "ada");
        assert_eq!(get(&authelia, "Remote-Email"), "ada@example.org");
        assert_eq!(get(&authelia, "X-Authnz-Assertion"), "");
        let oauth2 = identity_headers(HeaderPreset::Oauth2Proxy, Some(&person), None);
        assert_eq!(get(&oauth2, "X-Auth-Request-User"), "u1");
        assert_eq!(get(&oauth2, "X-Auth-Request-Preferred-Username"), "ada");
        person.email = None;
        let none = identity_headers(HeaderPreset::Authnz, Some(&person), None);
        assert_eq!(get(&none, "X-Authnz-Email"), "");
    }

    #[test]
    fn assertion_claims_name_the_app_and_only_an_owned_address() {
        let claims = assertion_claims("https://login.example.org", &app(), &person(), 1000);
        assert_eq!(claims["aud"], "https://galaxy.example.org");
        assert_eq!(claims["iss"], "https://login.example.org");
        assert_eq!(claims["sub"], "u1");
        assert_eq!(claims["exp"], 1060);
        assert_eq!(claims["email"], "ada@example.org");
        assert_eq!(claims["email_verified"], true);
        assert_eq!(claims["auth_time"], 100);
        assert_eq!(claims["groups"], json!(["okta:staff"]));
        let mut unverified = person();
        unverified.email = None;
        let claims = assertion_claims("https://login.example.org", &app(), &unverified, 1000);
        assert!(claims.get("email").is_none() && claims.get("email_verified").is_none());
        let other = assertion_claims("i", &app(), &person(), 1000);
        assert_ne!(other["jti"], claims["jti"], "a fresh jti each time");
    }
}

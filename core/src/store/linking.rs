//! The account-linking rule: which user a login belongs to, whether it may join an existing
//! account, and which username and email-index entry a new account gets.
//!
//! One pure function over what a backend read inside its transaction, so that every backend
//! applies the same rule and none can get it subtly wrong: a backend persists, it decides
//! nothing. The rule, item by item:
//! - a stored identity signs in to its own user, and only under the issuer it was linked with
//!   (or one the entry lists as a previous issuer) (SECURITY I73);
//! - a connect flow adds the identity to the logged-in user; an identity already linked to
//!   another user is refused (SECURITY F59);
//! - a new identity whose address the email index knows joins that account only when the
//!   entry allows it (`link_existing = "verified_email"`) and both the login and the indexed
//!   address are verified by an IdP authoritative for the domain; otherwise it is refused
//!   (SECURITY F56, F57);
//! - only verified addresses are indexed: an unverified one claims nothing (SECURITY F58);
//! - a new user takes the wanted username or the first free variant of it (SECURITY F60).

use super::{
    identity_belongs_to, normalize_email, username_candidates, CompletedLogin, EmailMatch,
    EmailOwner, Identity, StoreError,
};

/// What a backend read for one login, inside the transaction that will store it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Found<'a> {
    /// The stored identity of the login's (IdP, subject), if there is one.
    pub identity: Option<&'a Identity>,
    /// The owner of the login's address in the email index, if any (see [`email_key`]).
    pub email_owner: Option<&'a EmailOwner>,
}

/// Where a login goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Link {
    /// A known identity signs in to its user again.
    Returning { user_id: String },
    /// A new identity joins an existing user: a connect flow, or an address that both sides
    /// are authoritative for.
    Join { user_id: String },
    /// A new identity with a new user.
    NewUser,
}

/// The linking rule (see the module documentation). The errors are the refusals the person
/// sees: [`StoreError::IssuerChanged`], [`StoreError::LinkedElsewhere`],
/// [`StoreError::EmailConflict`], and [`StoreError::NeedsConfirmation`] for a first login that
/// must be confirmed before an account is made.
pub fn decide(login: &CompletedLogin, found: Found<'_>) -> Result<Link, StoreError> {
    if let Some(identity) = found.identity {
        if !identity_belongs_to(identity, &login.issuer, &login.previous_issuers) {
            return Err(StoreError::IssuerChanged);
        }
        if login
            .link_to
            .as_ref()
            .is_some_and(|to| *to != identity.user_id)
        {
            return Err(StoreError::LinkedElsewhere);
        }
        return Ok(Link::Returning {
            user_id: identity.user_id.clone(),
        });
    }
    match (&login.link_to, found.email_owner) {
        (Some(to), _) => Ok(Link::Join {
            user_id: to.clone(),
        }),
        (None, Some(owner)) => {
            let may_link = login.on_email_match == EmailMatch::LinkIfAuthoritative
                && login.email_verified
                && login.email_authoritative
                && owner.authoritative;
            if may_link {
                Ok(Link::Join {
                    user_id: owner.user_id.clone(),
                })
            } else {
                Err(StoreError::EmailConflict)
            }
        }
        (None, None) if login.require_existing => Err(StoreError::NeedsConfirmation),
        (None, None) => Ok(Link::NewUser),
    }
}

/// The email-index key to look the login's address up under. Any address is looked up, an
/// unverified one too: one that matches an account is a conflict, never a way in.
pub fn email_key(login: &CompletedLogin) -> Option<String> {
    login.email.as_deref().map(normalize_email)
}

/// The email-index entry a new user makes: only a verified address is indexed.
pub fn email_entry(login: &CompletedLogin, user_id: &str) -> Option<(String, EmailOwner)> {
    let key = email_key(login).filter(|_| login.email_verified)?;
    Some((
        key,
        EmailOwner {
            user_id: user_id.to_string(),
            authoritative: login.email_authoritative,
        },
    ))
}

/// The first username not `taken`: the wanted one, then numbered and random variants; `None`
/// when every variant is taken ([`StoreError::UsernameExhausted`]).
pub fn allocate_username<E>(
    wanted: &str,
    mut taken: impl FnMut(&str) -> Result<bool, E>,
) -> Result<Option<String>, E> {
    for candidate in username_candidates(wanted) {
        if !taken(&candidate)? {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> CompletedLogin {
        CompletedLogin {
            idp: "okta".into(),
            subject: "00u1".into(),
            issuer: "https://okta.example".into(),
            previous_issuers: Vec::new(),
            email: Some("Ann@Example.org".into()),
            email_verified: true,
            display_name: None,
            username: "ann".into(),
            sealed_tokens: Vec::new(),
            session_hash: "h".into(),
            new_user_id: "new".into(),
            now: 0,
            session_expires_at: 1,
            sid: None,
            groups: None,
            csrf: String::new(),
            sealed_id_token: None,
            device: None,
            network: None,
            email_authoritative: true,
            on_email_match: EmailMatch::LinkIfAuthoritative,
            require_existing: false,
            link_to: None,
        }
    }

    fn identity(user_id: &str, issuer: Option<&str>) -> Identity {
        Identity {
            idp: "okta".into(),
            subject: "00u1".into(),
            issuer: issuer.map(str::to_string),
            user_id: user_id.into(),
            email: None,
            email_verified: false,
            linked_at: 0,
            last_login_at: 0,
            groups: None,
        }
    }

    fn owner(user_id: &str, authoritative: bool) -> EmailOwner {
        EmailOwner {
            user_id: user_id.into(),
            authoritative,
        }
    }

    fn join(user_id: &str) -> Result<Link, StoreError> {
        Ok(Link::Join {
            user_id: user_id.into(),
        })
    }

    #[test]
    fn the_linking_rule_row_by_row() {
        let same_issuer = identity("u1", Some("https://okta.example"));
        let other_issuer = identity("u1", Some("https://evil.example"));
        let legacy = identity("u1", None);
        let authoritative = owner("u2", true);
        let not_authoritative = owner("u2", false);
        type Edit = fn(&mut CompletedLogin);
        let plain: Edit = |_| {};
        let connect: Edit = |l| l.link_to = Some("u3".into());
        let connect_same: Edit = |l| l.link_to = Some("u1".into());
        let refuse_policy: Edit = |l| l.on_email_match = EmailMatch::Refuse;
        let unverified: Edit = |l| l.email_verified = false;
        let login_not_authoritative: Edit = |l| l.email_authoritative = false;
        let must_confirm: Edit = |l| l.require_existing = true;
        let moved: Edit = |l| {
            l.issuer = "https://new.example".into();
            l.previous_issuers = vec!["https://evil.example".into()];
        };
        let returning = |user_id: &str| {
            Ok(Link::Returning {
                user_id: user_id.into(),
            })
        };
        let cases: Vec<(&str, Edit, Found, Result<Link, StoreError>)> = vec![
            (
                "a known identity signs in to its user",
                plain,
                Found {
                    identity: Some(&same_issuer),
                    email_owner: Some(&authoritative),
                },
                returning("u1"),
            ),
            (
                "I73: the same subject from another issuer is refused",
                plain,
                Found {
                    identity: Some(&other_issuer),
                    ..Found::default()
                },
                Err(StoreError::IssuerChanged),
            ),
            (
                "I73: a previous issuer the entry lists still signs in",
                moved,
                Found {
                    identity: Some(&other_issuer),
                    ..Found::default()
                },
                returning("u1"),
            ),
            (
                "I73: an identity whose issuer was never recorded is refused",
                plain,
                Found {
                    identity: Some(&legacy),
                    ..Found::default()
                },
                Err(StoreError::IssuerChanged),
            ),
            (
                "F59: connecting an identity linked to another user is refused",
                connect,
                Found {
                    identity: Some(&same_issuer),
                    ..Found::default()
                },
                Err(StoreError::LinkedElsewhere),
            ),
            (
                "connecting an identity already on this user signs in",
                connect_same,
                Found {
                    identity: Some(&same_issuer),
                    ..Found::default()
                },
                returning("u1"),
            ),
            (
                "a connect flow adds a new identity to the logged-in user",
                connect,
                Found {
                    email_owner: Some(&authoritative),
                    ..Found::default()
                },
                join("u3"),
            ),
            (
                "F57: verified and authoritative on both sides links",
                plain,
                Found {
                    email_owner: Some(&authoritative),
                    ..Found::default()
                },
                join("u2"),
            ),
            (
                "F56: the entry's policy refuses linking by email",
                refuse_policy,
                Found {
                    email_owner: Some(&authoritative),
                    ..Found::default()
                },
                Err(StoreError::EmailConflict),
            ),
            (
                "F56: an unverified address matching an account is a conflict",
                unverified,
                Found {
                    email_owner: Some(&authoritative),
                    ..Found::default()
                },
                Err(StoreError::EmailConflict),
            ),
            (
                "F57: a login not authoritative for the domain is refused",
                login_not_authoritative,
                Found {
                    email_owner: Some(&authoritative),
                    ..Found::default()
                },
                Err(StoreError::EmailConflict),
            ),
            (
                "F57: an indexed address not verified authoritatively is refused",
                plain,
                Found {
                    email_owner: Some(&not_authoritative),
                    ..Found::default()
                },
                Err(StoreError::EmailConflict),
            ),
            (
                "a first login makes a new user",
                plain,
                Found::default(),
                Ok(Link::NewUser),
            ),
            (
                "a first login that must be confirmed waits",
                must_confirm,
                Found::default(),
                Err(StoreError::NeedsConfirmation),
            ),
            (
                "confirmation is not asked of a known identity",
                must_confirm,
                Found {
                    identity: Some(&same_issuer),
                    ..Found::default()
                },
                returning("u1"),
            ),
        ];
        for (row, edit, found, expected) in cases {
            let mut login = login();
            edit(&mut login);
            let got = decide(&login, found);
            assert_eq!(format!("{got:?}"), format!("{expected:?}"), "{row}");
        }
    }

    #[test]
    fn only_verified_addresses_are_indexed() {
        let mut login = login();
        assert_eq!(email_key(&login).as_deref(), Some("ann@example.org"));
        let (key, entry) = email_entry(&login, "u9").unwrap();
        assert_eq!(
            (key.as_str(), entry.user_id.as_str()),
            ("ann@example.org", "u9")
        );
        assert!(entry.authoritative);
        login.email_verified = false;
        assert!(email_entry(&login, "u9").is_none(), "F58");
        assert_eq!(email_key(&login).as_deref(), Some("ann@example.org"));
        login.email = None;
        assert!(email_key(&login).is_none());
    }

    #[test]
    fn usernames_take_the_first_free_variant() {
        let taken = ["ann", "ann2"];
        let got = allocate_username::<()>("ann", |name| Ok(taken.contains(&name)));
        assert_eq!(got, Ok(Some("ann3".to_string())));
        let got = allocate_username::<()>("bob", |_| Ok(false));
        assert_eq!(got, Ok(Some("bob".to_string())));
        assert_eq!(allocate_username::<()>("ann", |_| Ok(true)), Ok(None));
        assert_eq!(allocate_username("ann", |_| Err("io")), Err("io"));
    }
}

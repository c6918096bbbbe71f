//! The conformance suite of [`Store`]: every backend must pass it.
//!
//! A backend's test calls [`run_all`] with a function that opens a fresh, empty store (and a
//! guard that keeps its directory alive).

use std::any::Any;
use std::error::Error;
use std::sync::Arc;

use super::{ApiKey, CompletedLogin, EmailMatch, PendingLogin, RemoveOutcome, Store, StoreError};

type TestResult = Result<(), Box<dyn Error>>;
type StoreTest = fn(&dyn Store) -> TestResult;
/// Opens a fresh store; the guard is dropped after the test.
pub type OpenFresh<'a> = dyn Fn() -> Result<(Box<dyn Store>, Box<dyn Any>), Box<dyn Error>> + 'a;

fn check(condition: bool, what: &str) -> TestResult {
    if condition {
        Ok(())
    } else {
        Err(format!("store conformance: {what}").into())
    }
}

/// A completed login with plausible values.
pub fn sample_login(idp: &str, subject: &str, new_user_id: &str, session: &str) -> CompletedLogin {
    CompletedLogin {
        idp: idp.into(),
        subject: subject.into(),
        issuer: format!("https://{idp}.example"),
        previous_issuers: Vec::new(),
        email: Some(format!("{subject}.{idp}@example.test")),
        email_verified: true,
        display_name: None,
        username: "alice".into(),
        sealed_tokens: vec![1, 2, 3],
        session_hash: session.into(),
        new_user_id: new_user_id.into(),
        now: 1_000,
        session_expires_at: 2_000,
        sid: None,
        csrf: format!("csrf-{session}"),
        sealed_id_token: Some(format!("id-token-of-{session}")),
        email_authoritative: false,
        on_email_match: EmailMatch::Refuse,
        link_to: None,
        require_existing: false,
    }
}

/// A pending login with plausible values.
pub fn sample_pending(created_at: i64) -> PendingLogin {
    PendingLogin {
        idp: "corp".into(),
        issuer: "https://idp.example".into(),
        client_id: "c".into(),
        redirect_uri: "http://127.0.0.1/authnz/corp/callback".into(),
        nonce: "n".into(),
        pkce_verifier: "v".into(),
        next: "/".into(),
        browser_hash: "b".into(),
        created_at,
        link_user_id: None,
        idp_fingerprint: String::new(),
        secret_key_id: String::new(),
    }
}

/// Runs every conformance test, each on a fresh store.
pub fn run_all(open: &OpenFresh) -> TestResult {
    let tests: [(&str, StoreTest); 16] = [
        ("pending logins are single use", pending_single_use),
        ("sweep removes only expired pending logins", sweep),
        ("a second login maps to the same user", same_user_again),
        (
            "identities are keyed by (idp, subject)",
            keyed_by_idp_and_subject,
        ),
        ("usernames are unique", unique_usernames),
        ("sessions end", sessions),
        (
            "a verified email of another user is a conflict",
            email_conflict,
        ),
        ("authoritative emails link", email_link),
        ("connecting links to the logged-in user", connect),
        ("identities are removed, never the last", remove_identity),
        ("deleting a user removes everything", delete_user),
        ("tokens are replaced by compare-and-swap", replace_tokens),
        ("api keys", api_keys),
        ("sign-ups are single use and expire", signups),
        ("identities belong to their issuer", issuers),
        ("the key canary is kept", key_canary),
    ];
    for (name, test) in tests {
        let (store, _guard) = open()?;
        test(store.as_ref()).map_err(|err| format!("{name}: {err}"))?;
    }
    let (store, _guard) = open()?;
    concurrent_first_logins(Arc::from(store))
        .map_err(|err| format!("concurrent first logins: {err}"))?;
    let (store, _guard) = open()?;
    deletion_and_linking_exclude_each_other(Arc::from(store))
        .map_err(|err| format!("deletion and linking: {err}"))?;
    Ok(())
}

fn key_canary(store: &dyn Store) -> TestResult {
    check(store.key_canary()?.is_none(), "a new store has no canary")?;
    store.put_key_canary(b"sealed-1")?;
    check(
        store.key_canary()?.as_deref() == Some(&b"sealed-1"[..]),
        "kept",
    )?;
    store.put_key_canary(b"sealed-2")?;
    check(
        store.key_canary()?.as_deref() == Some(&b"sealed-2"[..]),
        "replaced",
    )
}

/// Connecting identities to an account while it is deleted never leaves an identity, a
/// session or a key without its user.
fn deletion_and_linking_exclude_each_other(store: Arc<dyn Store>) -> TestResult {
    for round in 0..40 {
        let owner = format!("owner{round}");
        store.complete_login(&sample_login("corp", &owner, &owner, &format!("s-{owner}")))?;
        let linker = {
            let store = Arc::clone(&store);
            let owner = owner.clone();
            std::thread::spawn(move || {
                for n in 0..30 {
                    let mut login = sample_login(
                        "lab",
                        &format!("{owner}-{n}"),
                        "unused",
                        &format!("{owner}-s{n}"),
                    );
                    login.link_to = Some(owner.clone());
                    match store.complete_login(&login) {
                        Ok(_) | Err(StoreError::NoSuchUser) => {}
                        Err(err) => return Err(err.to_string()),
                    }
                }
                Ok(())
            })
        };
        std::thread::sleep(std::time::Duration::from_micros(200 * (round % 5)));
        store.delete_user(&owner)?;
        linker.join().map_err(|_| "thread panicked")??;
        // Whatever linked after the deletion found the user gone; clean up as an admin would.
        store.delete_user(&owner)?;
        let dump = store.dump()?;
        let users = dump.get("users").cloned().unwrap_or_default();
        for (_, record) in dump.get("identities").into_iter().flatten() {
            let identity: crate::store::Identity = crate::store::decode(record)?;
            check(
                users.contains_key(identity.user_id.as_bytes()),
                "an identity outlived its user",
            )?;
        }
        check(
            dump.get("sessions")
                .is_none_or(|sessions| sessions.is_empty()),
            "a session outlived its user",
        )?;
    }
    Ok(())
}

fn pending_single_use(store: &dyn Store) -> TestResult {
    store.put_pending_login("state-1", &sample_pending(10))?;
    check(
        store.take_pending_login("state-1")? == Some(sample_pending(10)),
        "first take returns it",
    )?;
    check(
        store.take_pending_login("state-1")?.is_none(),
        "second take returns nothing",
    )?;
    check(
        store.take_pending_login("unknown")?.is_none(),
        "unknown state",
    )
}

fn issuers(store: &dyn Store) -> TestResult {
    let first = store.complete_login(&sample_login("corp", "42", "u1", "s1"))?;
    let mut other = sample_login("corp", "42", "u2", "s2");
    other.issuer = "https://elsewhere.example".into();
    let before = store.dump()?;
    check(
        matches!(store.complete_login(&other), Err(StoreError::IssuerChanged)),
        "another issuer's subject 42 is not this one's",
    )?;
    check(store.dump()? == before, "a refused login writes nothing")?;
    other.previous_issuers = vec!["https://corp.example".into()];
    let moved = store.complete_login(&other)?;
    check(
        moved.user.id == first.user.id,
        "a real move keeps the account",
    )?;
    check(
        store
            .identity("corp", "42")?
            .and_then(|identity| identity.issuer)
            .as_deref()
            == Some("https://elsewhere.example"),
        "the identity takes the new issuer",
    )?;
    check(
        matches!(
            store.complete_login(&sample_login("corp", "42", "u3", "s3")),
            Err(StoreError::IssuerChanged)
        ),
        "and the old issuer is the stranger now",
    )
}

fn signups(store: &dyn Store) -> TestResult {
    store.put_signup("old", 1_500, b"{\"old\":1}")?;
    store.put_signup("new", 3_000, b"{\"new\":1}")?;
    check(
        store.signup("old")?.as_deref() == Some(&b"{\"old\":1}"[..]),
        "read back as written",
    )?;
    check(store.sweep_signups(2_000)? == 1, "the expired one swept")?;
    check(store.signup("old")?.is_none(), "old gone")?;
    check(
        store.take_signup("new")?.as_deref() == Some(&b"{\"new\":1}"[..]),
        "new taken",
    )?;
    check(store.take_signup("new")?.is_none(), "taken once")
}

fn sweep(store: &dyn Store) -> TestResult {
    store.put_pending_login("old", &sample_pending(10))?;
    store.put_pending_login("new", &sample_pending(100))?;
    check(store.sweep_pending_logins(50)? == 1, "one swept")?;
    check(store.take_pending_login("old")?.is_none(), "old gone")?;
    check(store.take_pending_login("new")?.is_some(), "new kept")
}

fn same_user_again(store: &dyn Store) -> TestResult {
    let first = store.complete_login(&sample_login("corp", "s1", "u1", "sess1"))?;
    check(
        first.created && first.user.id == "u1",
        "first login creates the user",
    )?;
    let mut again = sample_login("corp", "s1", "u2", "sess2");
    again.email = Some("changed@example.test".into());
    let second = store.complete_login(&again)?;
    check(
        !second.created && second.user.id == "u1",
        "second login finds the user",
    )?;
    check(store.user("u2")?.is_none(), "no second user")?;
    let identity = store.identity("corp", "s1")?.ok_or("identity missing")?;
    check(
        identity.email.as_deref() == Some("changed@example.test"),
        "identity email updated",
    )?;
    check(identity.linked_at == 1_000, "linked_at kept")?;
    check(
        store.sealed_tokens("corp", "s1")? == Some(vec![1, 2, 3]),
        "tokens stored",
    )?;
    check(store.identities_of("u1")?.len() == 1, "one identity")
}

fn keyed_by_idp_and_subject(store: &dyn Store) -> TestResult {
    let a = store.complete_login(&sample_login("a", "same", "ua", "sa"))?;
    let b = store.complete_login(&sample_login("b", "same", "ub", "sb"))?;
    check(a.user.id != b.user.id, "same sub at two IdPs is two users")?;
    // A subject that could be confused with the separator.
    let c = store.complete_login(&sample_login("a", "same\u{1}x", "uc", "sc"))?;
    check(c.user.id == "uc", "distinct subject")
}

fn email_conflict(store: &dyn Store) -> TestResult {
    // The first user's verified email claims the address.
    store.complete_login(&sample_login("a", "s1", "u1", "x1"))?;
    let mut same_email = sample_login("b", "s2", "u2", "x2");
    same_email.email = Some("S1.A@Example.TEST".into());
    let before = store.dump()?;
    let refused = store.complete_login(&same_email);
    check(
        matches!(refused, Err(StoreError::EmailConflict)),
        "verified email conflict refused",
    )?;
    check(store.dump()? == before, "a refused login writes nothing")?;
    // The same address unverified is refused too: no account, no link (SECURITY F56).
    same_email.email_verified = false;
    let refused = store.complete_login(&same_email);
    check(
        matches!(refused, Err(StoreError::EmailConflict)),
        "unverified email conflict refused",
    )?;
    check(store.dump()? == before, "still nothing written")?;
    // An unverified address claims nothing: its later verified owner is not blocked (F58).
    let mut squatter = sample_login("c", "s3", "u3", "x3");
    squatter.email = Some("victim@example.test".into());
    squatter.email_verified = false;
    store.complete_login(&squatter)?;
    let mut owner = sample_login("d", "s4", "u4", "x4");
    owner.email = Some("victim@example.test".into());
    let outcome = store.complete_login(&owner)?;
    check(
        outcome.created && outcome.user.id == "u4",
        "the verified owner gets their own account",
    )
}

fn email_link(store: &dyn Store) -> TestResult {
    let mut first = sample_login("a", "s1", "u1", "x1");
    first.email_authoritative = true;
    store.complete_login(&first)?;
    let mut second = sample_login("b", "s2", "u2", "x2");
    second.email = first.email.clone();
    second.on_email_match = EmailMatch::LinkIfAuthoritative;
    check(
        matches!(
            store.complete_login(&second),
            Err(StoreError::EmailConflict)
        ),
        "non-authoritative side refused",
    )?;
    second.email_authoritative = true;
    let outcome = store.complete_login(&second)?;
    check(
        outcome.linked && !outcome.created && outcome.user.id == "u1",
        "linked to the holder",
    )?;
    check(store.identities_of("u1")?.len() == 2, "two identities")
}

fn connect(store: &dyn Store) -> TestResult {
    store.complete_login(&sample_login("a", "s1", "u1", "x1"))?;
    store.complete_login(&sample_login("b", "other", "u9", "x9"))?;
    let mut connect = sample_login("b", "s2", "unused", "x2");
    connect.link_to = Some("u1".into());
    let outcome = store.complete_login(&connect)?;
    check(outcome.linked && outcome.user.id == "u1", "connected")?;
    let mut stolen = sample_login("b", "other", "unused", "x3");
    stolen.link_to = Some("u1".into());
    check(
        matches!(
            store.complete_login(&stolen),
            Err(StoreError::LinkedElsewhere)
        ),
        "someone else's identity",
    )?;
    let mut fresh = sample_login("z", "new", "u7", "x4");
    fresh.require_existing = true;
    check(
        matches!(
            store.complete_login(&fresh),
            Err(StoreError::NeedsConfirmation)
        ),
        "confirmation",
    )?;
    check(store.identity("z", "new")?.is_none(), "nothing created")
}

fn remove_identity(store: &dyn Store) -> TestResult {
    store.complete_login(&sample_login("a", "s1", "u1", "x1"))?;
    check(
        store.remove_identity("u1", "a", "s1", None)? == RemoveOutcome::LastIdentity,
        "last refused",
    )?;
    let mut second = sample_login("b", "s2", "", "x2");
    second.link_to = Some("u1".into());
    store.complete_login(&second)?;
    check(
        store.remove_identity("u9", "b", "s2", None)? == RemoveOutcome::NotFound,
        "another user's",
    )?;
    check(
        store.remove_identity("u1", "b", "s2", None)?
            == RemoveOutcome::Removed(Some(vec![1, 2, 3])),
        "removed with its tokens",
    )?;
    check(
        store.identity("b", "s2")?.is_none() && store.sealed_tokens("b", "s2")?.is_none(),
        "gone",
    )?;
    check(store.session("x2")?.is_none(), "its sessions ended")?;
    check(store.repoint_session("x1", "z", "s9")?, "repointed")?;
    let session = store.session("x1")?.ok_or("session gone")?;
    check(
        session.idp == "z" && session.subject == "s9",
        "now counts as z/s9",
    )?;
    check(
        store.end_identity_sessions("z", Some("s9"), None)? == 1,
        "found under its new identity",
    )?;
    check(
        !store.repoint_session("x1", "a", "s1")?,
        "no such session any more",
    )?;
    Ok(())
}

fn delete_user(store: &dyn Store) -> TestResult {
    store.complete_login(&sample_login("a", "s1", "u1", "x1"))?;
    let mut second = sample_login("b", "s2", "", "x2");
    second.link_to = Some("u1".into());
    store.complete_login(&second)?;
    store.put_api_key("hash", &sample_key("u1"))?;
    store.complete_login(&sample_login("c", "keep", "u2", "x3"))?;
    check(store.delete_user("u1")?, "deleted")?;
    check(!store.delete_user("u1")?, "second delete")?;
    let dump = store.dump()?;
    for (collection, records) in &dump {
        let mentions = records.iter().any(|(k, v)| {
            [k, v].iter().any(|bytes| {
                bytes.windows(2).any(|w| w == b"u1") || bytes.windows(2).any(|w| w == b"s1")
            })
        });
        check(
            !mentions,
            &format!("{collection} still mentions the deleted user"),
        )?;
    }
    check(
        store.user("u2")?.is_some() && store.session("x3")?.is_some(),
        "others untouched",
    )?;
    // Its email is free again.
    let mut again = sample_login("d", "s9", "u3", "x4");
    again.email = Some("s1.a@example.test".into());
    check(store.complete_login(&again).is_ok(), "email free")
}

fn replace_tokens(store: &dyn Store) -> TestResult {
    store.complete_login(&sample_login("a", "s1", "u1", "x1"))?;
    check(
        !store.replace_tokens("a", "s1", &[9], &[4])?,
        "stale expectation refused",
    )?;
    check(
        store.replace_tokens("a", "s1", &[1, 2, 3], &[4])?,
        "swapped",
    )?;
    check(
        store.sealed_tokens("a", "s1")? == Some(vec![4]),
        "new tokens",
    )?;
    store.delete_tokens("a", "s1")?;
    check(store.sealed_tokens("a", "s1")?.is_none(), "deleted")?;
    let mut with_sid = sample_login("a", "s1", "u1", "x2");
    with_sid.sid = Some("idp-session".into());
    store.complete_login(&with_sid)?;
    check(
        store.identity_has_other_sessions("a", "s1", "x2", 1_500)?,
        "x1 is another",
    )?;
    check(
        store.end_identity_sessions("a", Some("s1"), Some("idp-session"))? == 1,
        "by sid",
    )?;
    check(
        store.session("x1")?.is_some() && store.session("x2")?.is_none(),
        "only that sid",
    )?;
    check(
        store.end_identity_sessions("a", None, None)? == 1,
        "all of the IdP",
    )
}

fn sample_key(user_id: &str) -> ApiKey {
    ApiKey {
        id: "key1".into(),
        user_id: user_id.into(),
        name: "laptop".into(),
        prefix: "authnz_ab".into(),
        created_at: 1,
        expires_at: None,
    }
}

fn api_keys(store: &dyn Store) -> TestResult {
    check(
        matches!(
            store.put_api_key("hash1", &sample_key("u1")),
            Err(StoreError::NoSuchUser)
        ),
        "no key for a user that does not exist",
    )?;
    store.complete_login(&sample_login("corp", "s1", "u1", "sess1"))?;
    store.put_api_key("hash1", &sample_key("u1"))?;
    check(
        store.api_key("hash1")? == Some(sample_key("u1")),
        "found by hash",
    )?;
    check(
        store.api_keys_of("u1")?.len() == 1 && store.api_keys_of("u2")?.is_empty(),
        "listed",
    )?;
    check(!store.delete_api_key("u2", "key1")?, "not another user's")?;
    check(store.delete_api_key("u1", "key1")?, "deleted")?;
    check(store.api_key("hash1")?.is_none(), "gone")
}

fn unique_usernames(store: &dyn Store) -> TestResult {
    let mut names = Vec::new();
    for i in 0..3 {
        let outcome = store.complete_login(&sample_login(
            "corp",
            &format!("s{i}"),
            &format!("u{i}"),
            &format!("x{i}"),
        ))?;
        names.push(outcome.user.username);
    }
    check(names == ["alice", "alice2", "alice3"], "suffixes in order")?;
    // 999 look-alikes hold alice..alice999: the next one still gets an account.
    for i in 3..999 {
        store.complete_login(&sample_login(
            "corp",
            &format!("s{i}"),
            &format!("u{i}"),
            &format!("x{i}"),
        ))?;
    }
    let last = store.complete_login(&sample_login("corp", "real", "u-real", "x-real"))?;
    let name = last.user.username;
    check(
        name.starts_with("alice-")
            && name.len() == "alice-".len() + 8
            && name[6..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "a random suffix after alice999",
    )
}

fn sessions(store: &dyn Store) -> TestResult {
    store.complete_login(&sample_login("corp", "s1", "u1", "sess"))?;
    let session = store.session("sess")?.ok_or("session missing")?;
    check(
        session.user_id == "u1" && session.expires_at == 2_000,
        "session fields",
    )?;
    check(store.delete_session("sess")?, "delete reports it existed")?;
    check(store.session("sess")?.is_none(), "session gone")?;
    check(!store.delete_session("sess")?, "second delete")?;
    store.complete_login(&sample_login("corp", "s1", "u1", "alive"))?;
    let mut old = sample_login("corp", "s1", "u1", "old");
    old.session_expires_at = 1_500;
    store.complete_login(&old)?;
    check(
        store.sweep_expired(1_600)? == 1,
        "one expired session swept",
    )?;
    check(
        store.session("old")?.is_none() && store.session("alive")?.is_some(),
        "only the expired one",
    )?;
    check(
        store.end_identity_sessions("corp", Some("s1"), None)? == 1,
        "its index entry went with it",
    )
}

fn concurrent_first_logins(store: Arc<dyn Store>) -> TestResult {
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                store
                    .complete_login(&sample_login(
                        "corp",
                        "race",
                        &format!("u{i}"),
                        &format!("s{i}"),
                    ))
                    .map(|outcome| outcome.user.id)
                    .map_err(|err| err.to_string())
            })
        })
        .collect();
    let mut ids = Vec::new();
    for handle in handles {
        ids.push(handle.join().map_err(|_| "thread panicked")??);
    }
    ids.dedup();
    check(ids.len() == 1, "every racer got the same user")?;
    let dump = store.dump()?;
    check(
        dump.get("users").map(|users| users.len()) == Some(1),
        "exactly one user row",
    )
}

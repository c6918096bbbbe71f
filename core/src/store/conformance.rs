//! The conformance suite of [`Store`]: every backend must pass it.
//!
//! A backend's test calls [`run_all`] with a function that opens a fresh, empty store (and a
//! guard that keeps its directory alive).

use std::any::Any;
use std::error::Error;
use std::sync::Arc;

use super::{CompletedLogin, PendingLogin, Store};

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
        email: Some(format!("{subject}@example.test")),
        email_verified: true,
        display_name: None,
        username: "alice".into(),
        sealed_tokens: vec![1, 2, 3],
        session_hash: session.into(),
        new_user_id: new_user_id.into(),
        now: 1_000,
        session_expires_at: 2_000,
    }
}

fn pending(created_at: i64) -> PendingLogin {
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
    }
}

/// Runs every conformance test, each on a fresh store.
pub fn run_all(open: &OpenFresh) -> TestResult {
    let tests: [(&str, StoreTest); 6] = [
        ("pending logins are single use", pending_single_use),
        ("sweep removes only expired pending logins", sweep),
        ("a second login maps to the same user", same_user_again),
        (
            "identities are keyed by (idp, subject)",
            keyed_by_idp_and_subject,
        ),
        ("usernames are unique", unique_usernames),
        ("sessions end", sessions),
    ];
    for (name, test) in tests {
        let (store, _guard) = open()?;
        test(store.as_ref()).map_err(|err| format!("{name}: {err}"))?;
    }
    let (store, _guard) = open()?;
    concurrent_first_logins(Arc::from(store))
        .map_err(|err| format!("concurrent first logins: {err}"))?;
    Ok(())
}

fn pending_single_use(store: &dyn Store) -> TestResult {
    store.put_pending_login("state-1", &pending(10))?;
    check(
        store.take_pending_login("state-1")? == Some(pending(10)),
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

fn sweep(store: &dyn Store) -> TestResult {
    store.put_pending_login("old", &pending(10))?;
    store.put_pending_login("new", &pending(100))?;
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
    check(names == ["alice", "alice2", "alice3"], "suffixes in order")
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
    check(!store.delete_session("sess")?, "second delete")
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

//! The conformance suite of [`Store`]: every backend must pass it.
//!
//! A backend's test calls [`run_all`] with a [`Backend`] that makes fresh, empty databases.
//! Each test gets two store objects on its database, as two replicas have: a shared backend
//! gives two connections (pools) to one database, an embedded one (sled, owned by one process)
//! the same object twice. Single use, one user per identity, the linking rule and
//! compare-and-swap must hold across them.

use std::error::Error;
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    normalize_email, ApiKey, CompletedLogin, EmailMatch, PendingLogin, RemoveOutcome, Store,
    StoreError,
};

pub type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

/// A fresh database: two store objects on it, and what keeps it alive until dropped.
pub struct Fresh {
    pub store: Arc<dyn Store>,
    /// Another store object on the same database (the same object for an embedded backend).
    pub other: Arc<dyn Store>,
    pub guard: Box<dyn std::any::Any + Send>,
}

/// A storage backend under test.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A fresh, empty database.
    async fn fresh(&self) -> Result<Fresh, Box<dyn Error + Send + Sync>>;
}

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
        groups: Some(vec!["staff".into()]),
        csrf: format!("csrf-{session}"),
        sealed_id_token: Some(format!("id-token-of-{session}")),
        device: Some("Firefox on Linux".into()),
        network: Some("203.0.113.0/24".into()),
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
        max_age: None,
        acr_values: Vec::new(),
    }
}

/// Runs every conformance test, each on a fresh database.
pub async fn run_all(backend: &dyn Backend) -> TestResult {
    macro_rules! on_one_store {
        ($($name:literal => $test:ident),* $(,)?) => {$(
            let fresh = backend.fresh().await?;
            $test(&*fresh.store).await.map_err(|err| format!("{}: {err}", $name))?;
        )*};
    }
    macro_rules! on_two_stores {
        ($($name:literal => $test:ident),* $(,)?) => {$(
            let fresh = backend.fresh().await?;
            $test(Arc::clone(&fresh.store), Arc::clone(&fresh.other))
                .await
                .map_err(|err| format!("{}: {err}", $name))?;
        )*};
    }
    on_one_store! {
        "pending logins are single use" => pending_single_use,
        "sweep removes only expired pending logins" => sweep,
        "a second login maps to the same user" => same_user_again,
        "identities are keyed by (idp, subject)" => keyed_by_idp_and_subject,
        "usernames are unique" => unique_usernames,
        "sessions end" => sessions,
        "a user's sessions are listed" => sessions_listed,
        "a verified email of another user is a conflict" => email_conflict,
        "authoritative emails link" => email_link,
        "connecting links to the logged-in user" => connect,
        "identities are removed, never the last" => remove_identity,
        "deleting a user removes everything" => delete_user,
        "tokens are replaced by compare-and-swap" => replace_tokens,
        "api keys" => api_keys,
        "sign-ups are single use and expire" => signups,
        "identities belong to their issuer" => issuers,
        "the key canary is kept" => key_canary,
        "groups are recorded at every login" => groups_recorded,
        "the email index names the owner" => email_owner,
    }
    on_two_stores! {
        "a pending login is taken once across stores" => pending_taken_once_across_stores,
        "concurrent first logins make one user" => concurrent_first_logins,
        "one verified email gets one owner" => one_owner_per_email,
        "two new users wanting one username" => one_username_two_users,
        "racing token replacements" => racing_token_replacements,
        "deletion and linking exclude each other" => deletion_and_linking_exclude_each_other,
    }
    Ok(())
}

/// Runs `n` tasks, alternating between the two stores, all started before any is awaited.
async fn race<T, F, Fut>(
    one: &Arc<dyn Store>,
    two: &Arc<dyn Store>,
    n: usize,
    task: F,
) -> Result<Vec<T>, Box<dyn Error + Send + Sync>>
where
    T: Send + 'static,
    F: Fn(Arc<dyn Store>, usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let start = Arc::new(tokio::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { one } else { two });
            let start = Arc::clone(&start);
            let work = task(store, i);
            tokio::spawn(async move {
                start.wait().await;
                work.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for handle in handles {
        results.push(handle.await.map_err(|err| err.to_string())??);
    }
    Ok(results)
}

/// Each login records the groups it brought, also "unknown" after known ones (an overage).
async fn groups_recorded(store: &dyn Store) -> TestResult {
    async fn groups(store: &dyn Store) -> Result<Option<Vec<String>>, StoreError> {
        Ok(store.identity("corp", "g1").await?.and_then(|i| i.groups))
    }
    let mut login = sample_login("corp", "g1", "u-g1", "s-g1");
    store.complete_login(&login).await?;
    check(
        groups(store).await? == Some(vec!["staff".to_string()]),
        "first login",
    )?;
    login.session_hash = "s-g2".into();
    login.groups = Some(vec!["admins".into(), "staff".into()]);
    store.complete_login(&login).await?;
    check(
        groups(store).await? == Some(vec!["admins".to_string(), "staff".to_string()]),
        "replaced at the next login",
    )?;
    login.session_hash = "s-g3".into();
    login.groups = None;
    store.complete_login(&login).await?;
    check(groups(store).await?.is_none(), "unknown after an overage")?;
    let listed = store.identities_of("u-g1").await?;
    check(
        listed.len() == 1 && listed[0].groups.is_none(),
        "identities_of reads them too",
    )
}

async fn email_owner(store: &dyn Store) -> TestResult {
    let mut login = sample_login("corp", "e1", "u-e1", "s-e1");
    login.email = Some("Ann@Example.TEST".into());
    store.complete_login(&login).await?;
    let owner = store
        .email_owner(&normalize_email("Ann@Example.TEST"))
        .await?;
    check(
        owner.is_some_and(|owner| owner.user_id == "u-e1"),
        "the first login's verified address is owned",
    )?;
    let mut unverified = sample_login("corp", "e2", "u-e2", "s-e2");
    unverified.email = Some("bob@example.test".into());
    unverified.email_verified = false;
    store.complete_login(&unverified).await?;
    check(
        store.email_owner("bob@example.test").await?.is_none(),
        "an unverified address is owned by nobody",
    )
}

async fn key_canary(store: &dyn Store) -> TestResult {
    check(
        store.key_canary().await?.is_none(),
        "a new store has no canary",
    )?;
    store.put_key_canary(b"sealed-1").await?;
    check(
        store.key_canary().await?.as_deref() == Some(&b"sealed-1"[..]),
        "kept",
    )?;
    store.put_key_canary(b"sealed-2").await?;
    check(
        store.key_canary().await?.as_deref() == Some(&b"sealed-2"[..]),
        "replaced",
    )
}

/// Connecting identities to an account (through one store) while it is deleted (through the
/// other) never leaves an identity, a session or a key without its user.
async fn deletion_and_linking_exclude_each_other(
    store: Arc<dyn Store>,
    other: Arc<dyn Store>,
) -> TestResult {
    for round in 0..40 {
        let owner = format!("owner{round}");
        store
            .complete_login(&sample_login("corp", &owner, &owner, &format!("s-{owner}")))
            .await?;
        let linker = {
            let store = Arc::clone(&store);
            let owner = owner.clone();
            tokio::spawn(async move {
                for n in 0..30 {
                    let mut login = sample_login(
                        "lab",
                        &format!("{owner}-{n}"),
                        "unused",
                        &format!("{owner}-s{n}"),
                    );
                    login.link_to = Some(owner.clone());
                    match store.complete_login(&login).await {
                        Ok(_) | Err(StoreError::NoSuchUser) => {}
                        Err(err) => return Err(err.to_string()),
                    }
                }
                Ok(())
            })
        };
        for _ in 0..round % 5 {
            tokio::task::yield_now().await;
        }
        other.delete_user(&owner).await?;
        linker.await.map_err(|err| err.to_string())??;
        // Whatever linked after the deletion found the user gone; clean up as an admin would.
        other.delete_user(&owner).await?;
        let dump = store.dump().await?;
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

/// Put through one store, taken through the other; 64 racing takes of one state, half through
/// each store: exactly one wins.
async fn pending_taken_once_across_stores(
    store: Arc<dyn Store>,
    other: Arc<dyn Store>,
) -> TestResult {
    store
        .put_pending_login("handed-over", &sample_pending(10))
        .await?;
    check(
        other.take_pending_login("handed-over").await? == Some(sample_pending(10)),
        "the other store takes it",
    )?;
    check(
        store.take_pending_login("handed-over").await?.is_none(),
        "and it is gone for the first",
    )?;
    for round in 0..4 {
        let state = format!("raced-{round}");
        store.put_pending_login(&state, &sample_pending(10)).await?;
        let taken = race(&store, &other, 64, |store, _| {
            let state = state.clone();
            async move {
                store
                    .take_pending_login(&state)
                    .await
                    .map(|login| login.is_some())
                    .map_err(|err| err.to_string())
            }
        })
        .await?;
        check(
            taken.iter().filter(|won| **won).count() == 1,
            "exactly one of 64 takes wins",
        )?;
    }
    Ok(())
}

/// 16 + 16 first logins of one new identity at once: one user, one identity, 32 sessions, no
/// error.
async fn concurrent_first_logins(store: Arc<dyn Store>, other: Arc<dyn Store>) -> TestResult {
    let ids = race(&store, &other, 32, |store, i| async move {
        // Each racer wants its own name: only the identity they share decides.
        let mut login = sample_login("corp", "race", &format!("u{i}"), &format!("s{i}"));
        login.username = format!("racer{i}");
        store
            .complete_login(&login)
            .await
            .map(|outcome| outcome.user.id)
            .map_err(|err| err.to_string())
    })
    .await?;
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    check(distinct.len() == 1, "every racer got the same user")?;
    let dump = store.dump().await?;
    let count = |name: &str| dump.get(name).map_or(0, |records| records.len());
    check(count("users") == 1, "exactly one user")?;
    check(count("identities") == 1, "exactly one identity")?;
    check(
        count("sessions") == 32,
        &format!("32 sessions, found {}", count("sessions")),
    )?;
    let user = &distinct[0];
    for i in 0..32 {
        let session = other.session(&format!("s{i}")).await?;
        check(
            session.is_some_and(|session| &session.user_id == user),
            "each racer's session is the one user's",
        )?;
    }
    Ok(())
}

/// Two new identities with one verified email, at once, through two stores: one owns it, the
/// other is refused as a conflict (the linking rule holds).
async fn one_owner_per_email(store: Arc<dyn Store>, other: Arc<dyn Store>) -> TestResult {
    for round in 0..8 {
        let outcomes = race(&store, &other, 2, |store, i| async move {
            let mut login = sample_login(
                &format!("idp{i}"),
                &format!("r{round}"),
                &format!("u{round}-{i}"),
                &format!("s{round}-{i}"),
            );
            login.email = Some(format!("shared{round}@example.test"));
            login.username = format!("shared{round}-{i}");
            match store.complete_login(&login).await {
                Ok(_) => Ok(true),
                Err(StoreError::EmailConflict) => Ok(false),
                Err(err) => Err(err.to_string()),
            }
        })
        .await?;
        check(
            outcomes.iter().filter(|created| **created).count() == 1,
            "one of two new identities with one email gets an account",
        )?;
    }
    let dump = store.dump().await?;
    check(
        dump.get("users").map_or(0, |users| users.len()) == 8,
        "one user per email",
    )
}

/// Two new people wanting one username at once: two accounts, two names, no error.
async fn one_username_two_users(store: Arc<dyn Store>, other: Arc<dyn Store>) -> TestResult {
    for round in 0..8 {
        let names = race(&store, &other, 2, |store, i| async move {
            let mut login = sample_login(
                "corp",
                &format!("n{round}-{i}"),
                &format!("u{round}-{i}"),
                &format!("s{round}-{i}"),
            );
            login.username = format!("wanted{round}");
            store
                .complete_login(&login)
                .await
                .map(|outcome| outcome.user.username)
                .map_err(|err| err.to_string())
        })
        .await?;
        check(names[0] != names[1], "two names")?;
        check(
            names.contains(&format!("wanted{round}")),
            "one of them gets the name",
        )?;
    }
    Ok(())
}

/// Racing compare-and-swaps of one identity's tokens: exactly one wins.
async fn racing_token_replacements(store: Arc<dyn Store>, other: Arc<dyn Store>) -> TestResult {
    store
        .complete_login(&sample_login("corp", "cas", "u1", "s1"))
        .await?;
    let won = race(&store, &other, 16, |store, i| async move {
        store
            .replace_tokens("corp", "cas", &[1, 2, 3], &[9, i as u8])
            .await
            .map_err(|err| err.to_string())
    })
    .await?;
    check(
        won.iter().filter(|won| **won).count() == 1,
        "exactly one replacement wins",
    )?;
    let winner = won.iter().position(|won| *won).unwrap_or(usize::MAX);
    check(
        other.sealed_tokens("corp", "cas").await? == Some(vec![9, winner as u8]),
        "the winner's tokens are stored",
    )
}

async fn pending_single_use(store: &dyn Store) -> TestResult {
    store
        .put_pending_login("state-1", &sample_pending(10))
        .await?;
    check(
        store.take_pending_login("state-1").await? == Some(sample_pending(10)),
        "first take returns it",
    )?;
    check(
        store.take_pending_login("state-1").await?.is_none(),
        "second take returns nothing",
    )?;
    check(
        store.take_pending_login("unknown").await?.is_none(),
        "unknown state",
    )
}

async fn issuers(store: &dyn Store) -> TestResult {
    let first = store
        .complete_login(&sample_login("corp", "42", "u1", "s1"))
        .await?;
    let mut other = sample_login("corp", "42", "u2", "s2");
    other.issuer = "https://elsewhere.example".into();
    let before = store.dump().await?;
    check(
        matches!(
            store.complete_login(&other).await,
            Err(StoreError::IssuerChanged)
        ),
        "another issuer's subject 42 is not this one's",
    )?;
    check(
        store.dump().await? == before,
        "a refused login writes nothing",
    )?;
    other.previous_issuers = vec!["https://corp.example".into()];
    let moved = store.complete_login(&other).await?;
    check(
        moved.user.id == first.user.id,
        "a real move keeps the account",
    )?;
    check(
        store
            .identity("corp", "42")
            .await?
            .and_then(|identity| identity.issuer)
            .as_deref()
            == Some("https://elsewhere.example"),
        "the identity takes the new issuer",
    )?;
    check(
        matches!(
            store
                .complete_login(&sample_login("corp", "42", "u3", "s3"))
                .await,
            Err(StoreError::IssuerChanged)
        ),
        "and the old issuer is the stranger now",
    )
}

async fn signups(store: &dyn Store) -> TestResult {
    store.put_signup("old", 1_500, b"{\"old\":1}").await?;
    store.put_signup("new", 3_000, b"{\"new\":1}").await?;
    check(
        store.signup("old").await?.as_deref() == Some(&b"{\"old\":1}"[..]),
        "read back as written",
    )?;
    check(
        store.sweep_signups(2_000).await? == 1,
        "the expired one swept",
    )?;
    check(store.signup("old").await?.is_none(), "old gone")?;
    check(
        store.take_signup("new").await?.as_deref() == Some(&b"{\"new\":1}"[..]),
        "new taken",
    )?;
    check(store.take_signup("new").await?.is_none(), "taken once")
}

async fn sweep(store: &dyn Store) -> TestResult {
    store.put_pending_login("old", &sample_pending(10)).await?;
    store.put_pending_login("new", &sample_pending(100)).await?;
    check(store.sweep_pending_logins(50).await? == 1, "one swept")?;
    check(store.take_pending_login("old").await?.is_none(), "old gone")?;
    check(store.take_pending_login("new").await?.is_some(), "new kept")
}

async fn same_user_again(store: &dyn Store) -> TestResult {
    let first = store
        .complete_login(&sample_login("corp", "s1", "u1", "sess1"))
        .await?;
    check(
        first.created && first.user.id == "u1",
        "first login creates the user",
    )?;
    let mut again = sample_login("corp", "s1", "u2", "sess2");
    again.email = Some("changed@example.test".into());
    let second = store.complete_login(&again).await?;
    check(
        !second.created && second.user.id == "u1",
        "second login finds the user",
    )?;
    check(store.user("u2").await?.is_none(), "no second user")?;
    let identity = store
        .identity("corp", "s1")
        .await?
        .ok_or("identity missing")?;
    check(
        identity.email.as_deref() == Some("changed@example.test"),
        "identity email updated",
    )?;
    check(identity.linked_at == 1_000, "linked_at kept")?;
    check(
        store.sealed_tokens("corp", "s1").await? == Some(vec![1, 2, 3]),
        "tokens stored",
    )?;
    check(store.identities_of("u1").await?.len() == 1, "one identity")
}

async fn keyed_by_idp_and_subject(store: &dyn Store) -> TestResult {
    let a = store
        .complete_login(&sample_login("a", "same", "ua", "sa"))
        .await?;
    let b = store
        .complete_login(&sample_login("b", "same", "ub", "sb"))
        .await?;
    check(a.user.id != b.user.id, "same sub at two IdPs is two users")?;
    // A subject that could be confused with the separator.
    let c = store
        .complete_login(&sample_login("a", "same\u{1}x", "uc", "sc"))
        .await?;
    check(c.user.id == "uc", "distinct subject")
}

async fn email_conflict(store: &dyn Store) -> TestResult {
    // The first user's verified email claims the address.
    store
        .complete_login(&sample_login("a", "s1", "u1", "x1"))
        .await?;
    // Each login wants its own name: only the address decides.
    let mut same_email = sample_login("b", "s2", "u2", "x2");
    same_email.email = Some("S1.A@Example.TEST".into());
    same_email.username = "bob".into();
    let before = store.dump().await?;
    let refused = store.complete_login(&same_email).await;
    check(
        matches!(refused, Err(StoreError::EmailConflict)),
        "verified email conflict refused",
    )?;
    check(
        store.dump().await? == before,
        "a refused login writes nothing",
    )?;
    // The same address unverified is refused too: no account, no link (SECURITY F56).
    same_email.email_verified = false;
    let refused = store.complete_login(&same_email).await;
    check(
        matches!(refused, Err(StoreError::EmailConflict)),
        "unverified email conflict refused",
    )?;
    check(store.dump().await? == before, "still nothing written")?;
    // An unverified address claims nothing: its later verified owner is not blocked (F58).
    let mut squatter = sample_login("c", "s3", "u3", "x3");
    squatter.email = Some("victim@example.test".into());
    squatter.email_verified = false;
    squatter.username = "carol".into();
    store.complete_login(&squatter).await?;
    let mut owner = sample_login("d", "s4", "u4", "x4");
    owner.email = Some("victim@example.test".into());
    owner.username = "dave".into();
    let outcome = store.complete_login(&owner).await?;
    check(
        outcome.created && outcome.user.id == "u4",
        "the verified owner gets their own account",
    )
}

async fn email_link(store: &dyn Store) -> TestResult {
    let mut first = sample_login("a", "s1", "u1", "x1");
    first.email_authoritative = true;
    store.complete_login(&first).await?;
    let mut second = sample_login("b", "s2", "u2", "x2");
    second.email = first.email.clone();
    second.on_email_match = EmailMatch::LinkIfAuthoritative;
    check(
        matches!(
            store.complete_login(&second).await,
            Err(StoreError::EmailConflict)
        ),
        "non-authoritative side refused",
    )?;
    second.email_authoritative = true;
    let outcome = store.complete_login(&second).await?;
    check(
        outcome.linked && !outcome.created && outcome.user.id == "u1",
        "linked to the holder",
    )?;
    check(
        store.identities_of("u1").await?.len() == 2,
        "two identities",
    )
}

async fn connect(store: &dyn Store) -> TestResult {
    store
        .complete_login(&sample_login("a", "s1", "u1", "x1"))
        .await?;
    store
        .complete_login(&sample_login("b", "other", "u9", "x9"))
        .await?;
    let mut connect = sample_login("b", "s2", "unused", "x2");
    connect.link_to = Some("u1".into());
    let outcome = store.complete_login(&connect).await?;
    check(outcome.linked && outcome.user.id == "u1", "connected")?;
    let mut stolen = sample_login("b", "other", "unused", "x3");
    stolen.link_to = Some("u1".into());
    check(
        matches!(
            store.complete_login(&stolen).await,
            Err(StoreError::LinkedElsewhere)
        ),
        "someone else's identity",
    )?;
    let mut fresh = sample_login("z", "new", "u7", "x4");
    fresh.require_existing = true;
    check(
        matches!(
            store.complete_login(&fresh).await,
            Err(StoreError::NeedsConfirmation)
        ),
        "confirmation",
    )?;
    check(
        store.identity("z", "new").await?.is_none(),
        "nothing created",
    )
}

async fn remove_identity(store: &dyn Store) -> TestResult {
    store
        .complete_login(&sample_login("a", "s1", "u1", "x1"))
        .await?;
    check(
        store.remove_identity("u1", "a", "s1", None).await? == RemoveOutcome::LastIdentity,
        "last refused",
    )?;
    let mut second = sample_login("b", "s2", "", "x2");
    second.link_to = Some("u1".into());
    store.complete_login(&second).await?;
    check(
        store.remove_identity("u9", "b", "s2", None).await? == RemoveOutcome::NotFound,
        "another user's",
    )?;
    check(
        store.remove_identity("u1", "b", "s2", None).await?
            == RemoveOutcome::Removed(Some(vec![1, 2, 3])),
        "removed with its tokens",
    )?;
    check(
        store.identity("b", "s2").await?.is_none()
            && store.sealed_tokens("b", "s2").await?.is_none(),
        "gone",
    )?;
    check(store.session("x2").await?.is_none(), "its sessions ended")?;
    check(store.repoint_session("x1", "z", "s9").await?, "repointed")?;
    let session = store.session("x1").await?.ok_or("session gone")?;
    check(
        session.idp == "z" && session.subject == "s9",
        "now counts as z/s9",
    )?;
    check(
        store.end_identity_sessions("z", Some("s9"), None).await? == 1,
        "found under its new identity",
    )?;
    check(
        !store.repoint_session("x1", "a", "s1").await?,
        "no such session any more",
    )?;
    Ok(())
}

async fn delete_user(store: &dyn Store) -> TestResult {
    store
        .complete_login(&sample_login("a", "s1", "u1", "x1"))
        .await?;
    let mut second = sample_login("b", "s2", "", "x2");
    second.link_to = Some("u1".into());
    store.complete_login(&second).await?;
    store.put_api_key("hash", &sample_key("u1")).await?;
    store
        .complete_login(&sample_login("c", "keep", "u2", "x3"))
        .await?;
    check(store.delete_user("u1").await?, "deleted")?;
    check(!store.delete_user("u1").await?, "second delete")?;
    let dump = store.dump().await?;
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
        store.user("u2").await?.is_some() && store.session("x3").await?.is_some(),
        "others untouched",
    )?;
    // Its email is free again.
    let mut again = sample_login("d", "s9", "u3", "x4");
    again.email = Some("s1.a@example.test".into());
    check(store.complete_login(&again).await.is_ok(), "email free")
}

async fn replace_tokens(store: &dyn Store) -> TestResult {
    store
        .complete_login(&sample_login("a", "s1", "u1", "x1"))
        .await?;
    check(
        !store.replace_tokens("a", "s1", &[9], &[4]).await?,
        "stale expectation refused",
    )?;
    check(
        store.replace_tokens("a", "s1", &[1, 2, 3], &[4]).await?,
        "swapped",
    )?;
    check(
        store.sealed_tokens("a", "s1").await? == Some(vec![4]),
        "new tokens",
    )?;
    store.delete_tokens("a", "s1").await?;
    check(store.sealed_tokens("a", "s1").await?.is_none(), "deleted")?;
    let mut with_sid = sample_login("a", "s1", "u1", "x2");
    with_sid.sid = Some("idp-session".into());
    store.complete_login(&with_sid).await?;
    check(
        store
            .identity_has_other_sessions("a", "s1", "x2", 1_500)
            .await?,
        "x1 is another",
    )?;
    check(
        store
            .end_identity_sessions("a", Some("s1"), Some("idp-session"))
            .await?
            == 1,
        "by sid",
    )?;
    check(
        store.session("x1").await?.is_some() && store.session("x2").await?.is_none(),
        "only that sid",
    )?;
    check(
        store.end_identity_sessions("a", None, None).await? == 1,
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

async fn api_keys(store: &dyn Store) -> TestResult {
    check(
        matches!(
            store.put_api_key("hash1", &sample_key("u1")).await,
            Err(StoreError::NoSuchUser)
        ),
        "no key for a user that does not exist",
    )?;
    store
        .complete_login(&sample_login("corp", "s1", "u1", "sess1"))
        .await?;
    store.put_api_key("hash1", &sample_key("u1")).await?;
    check(
        store.api_key("hash1").await? == Some(sample_key("u1")),
        "found by hash",
    )?;
    check(
        store.api_keys_of("u1").await?.len() == 1 && store.api_keys_of("u2").await?.is_empty(),
        "listed",
    )?;
    check(
        !store.delete_api_key("u2", "key1").await?,
        "not another user's",
    )?;
    check(store.delete_api_key("u1", "key1").await?, "deleted")?;
    check(store.api_key("hash1").await?.is_none(), "gone")
}

async fn unique_usernames(store: &dyn Store) -> TestResult {
    let mut names = Vec::new();
    for i in 0..3 {
        let outcome = store
            .complete_login(&sample_login(
                "corp",
                &format!("s{i}"),
                &format!("u{i}"),
                &format!("x{i}"),
            ))
            .await?;
        names.push(outcome.user.username);
    }
    check(names == ["alice", "alice2", "alice3"], "suffixes in order")?;
    // 999 look-alikes hold alice..alice999: the next one still gets an account.
    for i in 3..999 {
        store
            .complete_login(&sample_login(
                "corp",
                &format!("s{i}"),
                &format!("u{i}"),
                &format!("x{i}"),
            ))
            .await?;
    }
    let last = store
        .complete_login(&sample_login("corp", "real", "u-real", "x-real"))
        .await?;
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

async fn sessions(store: &dyn Store) -> TestResult {
    store
        .complete_login(&sample_login("corp", "s1", "u1", "sess"))
        .await?;
    let session = store.session("sess").await?.ok_or("session missing")?;
    check(
        session.user_id == "u1" && session.expires_at == 2_000,
        "session fields",
    )?;
    check(
        store.delete_session("sess").await?,
        "delete reports it existed",
    )?;
    check(store.session("sess").await?.is_none(), "session gone")?;
    check(!store.delete_session("sess").await?, "second delete")?;
    store
        .complete_login(&sample_login("corp", "s1", "u1", "alive"))
        .await?;
    let mut old = sample_login("corp", "s1", "u1", "old");
    old.session_expires_at = 1_500;
    store.complete_login(&old).await?;
    check(
        store.sweep_expired(1_600).await? == 1,
        "one expired session swept",
    )?;
    check(
        store.session("old").await?.is_none() && store.session("alive").await?.is_some(),
        "only the expired one",
    )?;
    check(
        store
            .end_identity_sessions("corp", Some("s1"), None)
            .await?
            == 1,
        "its index entry went with it",
    )
}

/// A user's sessions, with what they were started with and from, and none of another user's.
async fn sessions_listed(store: &dyn Store) -> TestResult {
    for session in ["a1", "a2"] {
        store
            .complete_login(&sample_login("corp", "ann", "u1", session))
            .await?;
    }
    let mut bob = sample_login("corp", "bob", "u2", "b1");
    bob.username = "bob".into();
    bob.device = None;
    bob.network = None;
    store.complete_login(&bob).await?;
    let mut listed = store.sessions_of("u1").await?;
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let hashes: Vec<&str> = listed.iter().map(|(hash, _)| hash.as_str()).collect();
    check(
        hashes == ["a1", "a2"],
        &format!("ann's two sessions, found {hashes:?}"),
    )?;
    check(
        listed.iter().all(|(_, session)| {
            session.user_id == "u1"
                && session.device.as_deref() == Some("Firefox on Linux")
                && session.network.as_deref() == Some("203.0.113.0/24")
        }),
        "each with its device and network",
    )?;
    let bobs = store.sessions_of("u2").await?;
    check(
        bobs.len() == 1 && bobs[0].1.device.is_none() && bobs[0].1.network.is_none(),
        "bob's one session, without a device",
    )?;
    store.delete_session("a1").await?;
    let left = store.sessions_of("u1").await?;
    check(
        left.len() == 1 && left[0].0 == "a2",
        "an ended session is no longer listed",
    )?;
    check(
        store.sessions_of("nobody").await?.is_empty(),
        "nobody has none",
    )
}

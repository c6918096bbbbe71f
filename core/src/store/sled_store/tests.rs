//! The sled backend against the conformance suite, and what only sled does (group commit,
//! reopening, dumps).

use super::*;

/// Fresh sled databases in temporary directories. sled is one process's store: both store
/// objects of a test are the same one.
struct Sled;

#[async_trait::async_trait]
impl super::super::conformance::Backend for Sled {
    async fn fresh(
        &self,
    ) -> Result<super::super::conformance::Fresh, Box<dyn std::error::Error + Send + Sync>> {
        let dir = tempfile::tempdir()?;
        let store: std::sync::Arc<dyn crate::store::Store> =
            std::sync::Arc::new(SledStore::open(dir.path(), 8 << 20)?);
        Ok(super::super::conformance::Fresh {
            other: std::sync::Arc::clone(&store),
            store,
            guard: Box::new(dir),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_passes_the_conformance_suite() -> Result<(), Box<dyn std::error::Error + Send + Sync>>
{
    super::super::conformance::run_all(&Sled).await
}

#[test]
fn data_survives_reopen() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let login = super::super::conformance::sample_login("idp", "sub-1", "u1", "s1");
    {
        let store = SledStore::open(dir.path(), 8 << 20)?;
        store.complete_login(&login)?;
        store.flush()?;
    }
    let store = SledStore::reopen(dir.path(), 8 << 20)?;
    let identity = store.identity("idp", "sub-1")?;
    assert_eq!(identity.map(|i| i.user_id), Some("u1".to_string()));
    assert!(store.session("s1")?.is_some());
    Ok(())
}

/// A batch: a new user; a second IdP claiming the first one's verified email (refused); the
/// first identity again (returning); a new user wanting the same username.
fn batch() -> Vec<CompletedLogin> {
    use super::super::conformance::sample_login;
    let first = sample_login("a", "s1", "u1", "x1");
    let mut conflict = sample_login("b", "s2", "u2", "x2");
    conflict.email = first.email.clone();
    let again = sample_login("a", "s1", "u-unused", "x3");
    let other = sample_login("c", "s4", "u4", "x4");
    vec![first, conflict, again, other]
}

#[test]
fn a_batch_of_logins_equals_the_same_logins_one_by_one() -> Result<(), Box<dyn std::error::Error>> {
    let (one_dir, batch_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let one_by_one = SledStore::open(one_dir.path(), 8 << 20)?;
    let batched = SledStore::open(batch_dir.path(), 8 << 20)?;
    let expected: Vec<_> = batch()
        .iter()
        .map(|login| one_by_one.complete_login(login))
        .collect();
    let results = batched.logins.write(&batch());
    assert_eq!(results.len(), 4);
    for (got, want) in results.iter().zip(&expected) {
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(want)) => assert_eq!(got.to_string(), want.to_string()),
            _ => panic!("batched {got:?} but one by one {want:?}"),
        }
    }
    assert!(matches!(results[1], Err(StoreError::EmailConflict)));
    let returning = results[2].as_ref().map_err(|err| err.to_string())?;
    assert!(!returning.created && returning.user.id == "u1");
    let other = results[3].as_ref().map_err(|err| err.to_string())?;
    assert!(other.created && other.user.username != "alice");
    assert_eq!(batched.dump()?, one_by_one.dump()?);
    // Alone in its batch, a refused login keeps its own error too.
    let alone = batched.logins.write(&batch()[1..2]);
    assert!(matches!(alone[..], [Err(StoreError::EmailConflict)]));
    Ok(())
}

#[test]
fn concurrent_durable_logins_each_get_their_own_outcome() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let store = std::sync::Arc::new(SledStore::open(dir.path(), 8 << 20)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let outcomes = runtime.block_on(async {
        let mut tasks = Vec::new();
        // 40 new people, and 20 logins racing for one new identity.
        for i in 0..60 {
            let store = store.clone();
            let mut login = super::super::conformance::sample_login(
                "idp",
                &format!("sub-{}", if i < 40 { i } else { 99 }),
                &format!("user-{i}"),
                &format!("session-{i}"),
            );
            login.username = format!("person{i}");
            tasks.push(tokio::spawn(async move {
                store.complete_login_durable(login).await
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await);
        }
        outcomes
    });
    let mut racing_users = std::collections::BTreeSet::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let outcome = outcome?.map_err(|err| err.to_string())?;
        if i < 40 {
            assert!(outcome.created && outcome.user.id == format!("user-{i}"));
        } else {
            racing_users.insert(outcome.user.id);
        }
        assert!(store.session(&format!("session-{i}"))?.is_some());
    }
    assert_eq!(racing_users.len(), 1, "one user for one identity");
    assert_eq!(store.dump()?["users"].len(), 41);
    Ok(())
}

fn login_expiring(subject: &str, session: &str, expires_at: i64) -> CompletedLogin {
    let mut login = super::super::conformance::sample_login("idp", subject, subject, session);
    login.username = subject.into();
    login.session_expires_at = expires_at;
    login
}

#[test]
fn identities_from_before_issuers_take_their_entrys_issuer(
) -> Result<(), Box<dyn std::error::Error>> {
    // Records as the version before issuers wrote them.
    let dir = tempfile::tempdir()?;
    {
        let db = sled::open(dir.path())?;
        let identities = db.open_tree("identities")?;
        for (idp, subject) in [("corp", "42"), ("gone", "7")] {
            let old = serde_json::json!({"idp": idp, "subject": subject, "user_id": "u1",
                "email": null, "email_verified": false, "linked_at": 1, "last_login_at": 1});
            identities.insert(identity_key(idp, subject), serde_json::to_vec(&old)?)?;
        }
        db.flush()?;
    }
    let store = SledStore::reopen(dir.path(), 8 << 20)?;
    let issuers = |names: &[&str]| -> BTreeMap<String, String> {
        names
            .iter()
            .map(|name| (name.to_string(), format!("https://{name}.example")))
            .collect()
    };
    assert_eq!(store.migrate_issuers(&issuers(&["corp"]))?, 1);
    let issuer = |idp: &str, subject: &str| {
        store
            .identity(idp, subject)
            .ok()
            .flatten()
            .and_then(|identity| identity.issuer)
    };
    assert_eq!(
        issuer("corp", "42").as_deref(),
        Some("https://corp.example")
    );
    assert_eq!(issuer("gone", "7"), None, "its entry is not configured");
    // Later starts look only at those waiting; an entry that comes back gives them its own.
    assert_eq!(store.migrate_issuers(&issuers(&["corp"]))?, 0);
    assert_eq!(store.migrate_issuers(&issuers(&["corp", "gone"]))?, 1);
    assert_eq!(issuer("gone", "7").as_deref(), Some("https://gone.example"));
    assert_eq!(store.legacy_identities.len(), 0);
    Ok(())
}

#[test]
fn the_sweep_reads_the_expiry_index() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), 8 << 20)?;
    store.complete_login(&login_expiring("a", "s-early", 2_000))?;
    store.complete_login(&login_expiring("b", "s-late", 5_000))?;
    store.complete_login(&login_expiring("c", "s-gone", 1_500))?;
    assert!(store.delete_session("s-gone")?);
    assert_eq!(
        store.dump()?["session_expiry"].len(),
        2,
        "deleting drops its entry"
    );
    // An entry whose session vanished another way is cleaned up, not counted.
    store
        .accounts
        .sessions
        .insert(expiry_key(1_000, "s-orphan"), &[][..])?;
    assert_eq!(store.sweep_expired(3_000)?, 1);
    assert!(store.session("s-early")?.is_none());
    assert!(store.session("s-late")?.is_some());
    let dump = store.dump()?;
    assert_eq!(dump["session_expiry"].len(), 1);
    assert_eq!(dump["sessions"].len(), 1);
    assert!(store.delete_user("b")?);
    assert!(
        store.dump()?["session_expiry"].is_empty(),
        "deleting the user drops it"
    );
    Ok(())
}

#[test]
fn an_old_database_gets_its_expiry_index() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let store = SledStore::open(dir.path(), 8 << 20)?;
        store.complete_login(&login_expiring("a", "s-early", 2_000))?;
        for entry in store.accounts.sessions.scan_prefix([EXPIRY]) {
            store.accounts.sessions.remove(entry?.0)?;
        }
        assert!(store.dump()?["session_expiry"].is_empty());
        store.flush()?;
    }
    let store = SledStore::reopen(dir.path(), 8 << 20)?;
    assert_eq!(store.dump()?["session_expiry"].len(), 1);
    assert_eq!(store.sweep_expired(3_000)?, 1);
    Ok(())
}

/// Every key in every tree of the database (the default tree's own markers aside).
fn stored_keys(store: &SledStore) -> usize {
    store.trees().iter().map(|(_, tree)| tree.len()).sum()
}

#[test]
fn a_person_costs_seven_keys() -> Result<(), Box<dyn std::error::Error>> {
    use super::super::conformance::sample_login;
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), 8 << 20)?;
    store.complete_login(&sample_login("a", "s1", "u1", "x1"))?;
    // user (with its identity list), username, email, identity (with its tokens), session,
    // its expiry entry, its entry under the identity.
    assert_eq!(stored_keys(&store), 7);
    // Signing in again adds the session's three.
    store.complete_login(&sample_login("a", "s1", "unused", "x2"))?;
    assert_eq!(stored_keys(&store), 10);
    assert_eq!(store.sealed_tokens("a", "s1")?, Some(vec![1, 2, 3]));
    assert_eq!(store.identities_of("u1")?.len(), 1);
    assert_eq!(store.sessions_of("u1")?.len(), 2);
    Ok(())
}

#[test]
fn an_old_database_folds_its_token_and_index_trees_into_the_records(
) -> Result<(), Box<dyn std::error::Error>> {
    // Two people as the version before wrote them: records, and one key per token, per
    // identity of a user and per session of a user.
    let dir = tempfile::tempdir()?;
    {
        let db = sled::open(dir.path())?;
        let tree = |name: &str| db.open_tree(name);
        let (users, identities, tokens) = (tree("users")?, tree("identities")?, tree("tokens")?);
        let (user_identities, user_sessions) = (tree("user_identities")?, tree("user_sessions")?);
        let (sessions, identity_sessions) = (tree("sessions")?, tree("identity_sessions")?);
        tree("usernames")?.insert("alice", "u1")?;
        tree("usernames")?.insert("bob", "u2")?;
        for (user, name) in [("u1", "alice"), ("u2", "bob")] {
            let record = serde_json::json!({"id": user, "username": name, "email": null,
                "display_name": null, "created_at": 1});
            users.insert(user, serde_json::to_vec(&record)?)?;
        }
        for (idp, subject, user, sealed) in [
            ("a", "1", "u1", b"t-a1"),
            ("b", "1", "u1", b"t-b1"),
            ("a", "2", "u2", b"t-a2"),
        ] {
            let record = serde_json::json!({"idp": idp, "subject": subject, "user_id": user,
                "issuer": format!("https://{idp}.example"), "email": null,
                "email_verified": false, "linked_at": 1, "last_login_at": 1});
            identities.insert(identity_key(idp, subject), serde_json::to_vec(&record)?)?;
            tokens.insert(identity_key(idp, subject), &sealed[..])?;
            user_identities.insert(key_of(&[user, idp, subject]), &[][..])?;
        }
        let session = serde_json::json!({"user_id": "u1", "idp": "b", "subject": "1",
            "created_at": 1, "expires_at": 4_000_000_000_i64, "csrf": "c"});
        sessions.insert("h1", serde_json::to_vec(&session)?)?;
        sessions.insert(expiry_key(4_000_000_000, "h1"), &[][..])?;
        user_sessions.insert(key_of(&["u1", "h1"]), &[][..])?;
        identity_sessions.insert(key_of(&["b", "1", "h1"]), &[][..])?;
        db.flush()?;
    }
    let store = SledStore::reopen(dir.path(), 8 << 20)?;
    let names = store.db.tree_names();
    for old in ["tokens", "user_identities", "user_sessions"] {
        assert!(
            !names.iter().any(|n| n.as_ref() == old.as_bytes()),
            "{old} is dropped"
        );
    }
    assert_eq!(
        store.sealed_tokens("a", "1")?.as_deref(),
        Some(&b"t-a1"[..])
    );
    assert_eq!(
        store.sealed_tokens("b", "1")?.as_deref(),
        Some(&b"t-b1"[..])
    );
    assert_eq!(
        store.sealed_tokens("a", "2")?.as_deref(),
        Some(&b"t-a2"[..])
    );
    let idps = |user: &str| -> Result<Vec<String>, StoreError> {
        Ok(store
            .identities_of(user)?
            .into_iter()
            .map(|i| i.idp)
            .collect())
    };
    assert_eq!(idps("u1")?, ["a", "b"]);
    assert_eq!(idps("u2")?, ["a"]);
    assert_eq!(store.sessions_of("u1")?.len(), 1);
    // Tokens are read and replaced where they now live.
    assert!(store.replace_tokens("a", "1", b"t-a1", b"t-a1-new")?);
    assert!(!store.replace_tokens("a", "1", b"t-a1", b"again")?);
    assert_eq!(
        store.sealed_tokens("a", "1")?.as_deref(),
        Some(&b"t-a1-new"[..])
    );
    // A person folded so is deleted whole.
    assert!(store.delete_user("u1")?);
    assert!(store.session("h1")?.is_none());
    let dump = store.dump()?;
    assert_eq!(dump["identities"].len(), 1);
    assert_eq!(dump["tokens"].len(), 1);
    assert!(dump["identity_sessions"].is_empty() && dump["session_expiry"].is_empty());
    drop(store);
    // Opening again finds nothing more to fold.
    let store = SledStore::reopen(dir.path(), 8 << 20)?;
    assert_eq!(
        store.sealed_tokens("a", "2")?.as_deref(),
        Some(&b"t-a2"[..])
    );
    Ok(())
}

#[test]
fn disconnecting_the_sessions_identity_moves_the_session_in_the_same_write(
) -> Result<(), Box<dyn std::error::Error>> {
    use super::super::conformance::sample_login;
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), 8 << 20)?;
    store.complete_login(&sample_login("a", "s1", "u1", "x1"))?;
    let mut second = sample_login("b", "s2", "unused", "x2");
    second.link_to = Some("u1".into());
    store.complete_login(&second)?;
    store.complete_login(&sample_login("a", "s1", "unused", "x3"))?;
    let outcome = store.remove_identity("u1", "a", "s1", Some("x1"))?;
    assert!(matches!(outcome, RemoveOutcome::Removed(Some(_))));
    // The kept session is under the remaining identity; the other one ended.
    let kept = store.session("x1")?.ok_or("the kept session")?;
    assert_eq!((kept.idp.as_str(), kept.subject.as_str()), ("b", "s2"));
    assert!(store.session("x3")?.is_none());
    assert_eq!(store.sessions_of("u1")?.len(), 2);
    // So deleting the user still finds it.
    assert!(store.delete_user("u1")?);
    assert!(store.session("x1")?.is_none());
    assert_eq!(stored_keys(&store), 0);
    Ok(())
}

//! Crash safety: the real `authnz` process is killed with SIGKILL while logins are in flight,
//! then the database is checked record by record and the server restarted on it. Every login
//! that was answered with a session is there; no identity lacks its user, no index points at
//! nothing, and the restarted server maps a returning person to the same account.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authnz::store::SledStore;
use authnz_tests::Browser;

async fn spawn_server(config: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_authnz_for_tests"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn wait_ready(url: &str) {
    for _ in 0..100 {
        if reqwest::get(format!("{url}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not start");
}

/// A dev-IdP login as `username` up to the callback, not sent: the browser and the callback
/// URL, or `None` when the server failed on the way (it may be dying).
async fn half_login(url: &str, username: &str) -> Option<(Browser, String)> {
    let browser = Browser::new();
    let response = browser
        .client
        .get(format!("{url}/authnz/dev/login"))
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    let parsed = url::Url::parse(body["redirect_uri"].as_str()?).ok()?;
    let mut form: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    form.push(("username".into(), username.into()));
    let response = browser
        .client
        .post(format!("{url}/dev-idp/authorize"))
        .form(&form)
        .send()
        .await
        .ok()?;
    let callback = response
        .headers()
        .get("location")?
        .to_str()
        .ok()?
        .to_string();
    Some((browser, callback))
}

/// One whole dev-IdP login as `username`; true when it ended with a session.
async fn login(url: &str, username: &str) -> bool {
    let Some((browser, callback)) = half_login(url, username).await else {
        return false;
    };
    browser
        .client
        .get(callback)
        .send()
        .await
        .is_ok_and(|r| r.status() == 303 && r.headers().get("set-cookie").is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_no_answered_login_and_leaves_no_half_records() {
    let dir = tempfile::tempdir().unwrap();
    let port = authnz_tests::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("idps.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{url}\"\ndatabase = \"db\"\nmax_logins_per_client = 1000000\n\n[idps.dev]\nkind = \"dev\"\n"),
    )
    .unwrap();
    let mut server = spawn_server(&config).await;
    wait_ready(&url).await;

    // Eight workers log new people in, one after another, until the server dies under them.
    let answered = Arc::new(Mutex::new(BTreeSet::new()));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (url, answered) = (url.clone(), Arc::clone(&answered));
        workers.push(tokio::spawn(async move {
            for n in 0..10_000 {
                let username = format!("w{worker}-{n}");
                if login(&url, &username).await {
                    answered.lock().unwrap().insert(username);
                } else {
                    break;
                }
            }
        }));
    }
    // A sign-in in progress when the server dies: pending logins live in memory only.
    let (in_progress, callback) = half_login(&url, "mid-login").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.start_kill().unwrap(); // SIGKILL
    let _ = server.wait().await;
    for worker in workers {
        let _ = worker.await;
    }
    let answered = answered.lock().unwrap().clone();
    eprintln!("answered logins before the kill: {}", answered.len());
    assert!(
        answered.len() >= 8,
        "too few logins before the kill to mean anything: {}",
        answered.len()
    );

    // The database, as the killed process left it.
    {
        let store = SledStore::open(&dir.path().join("db"), 8 << 20).unwrap();
        let dump = store.dump().unwrap();
        let users = &dump["users"];
        for username in &answered {
            let identity = store.identity("dev", username).unwrap();
            let identity =
                identity.unwrap_or_else(|| panic!("answered login {username} is missing"));
            assert!(
                store.user(&identity.user_id).unwrap().is_some(),
                "{username}: identity without its user"
            );
        }
        for value in dump["identities"].values() {
            let identity: authnz::store::Identity = serde_json::from_slice(value).unwrap();
            assert!(
                users.contains_key(identity.user_id.as_bytes()),
                "an identity without its user"
            );
        }
        for key in dump["user_identities"].keys() {
            let user_id = key.split(|b| *b == 0).next().unwrap();
            assert!(
                users.contains_key(user_id),
                "an index entry without its user"
            );
            assert!(
                dump["identities"].contains_key(&key[user_id.len() + 1..]),
                "an index entry without its identity"
            );
        }
        for value in dump["usernames"].values() {
            assert!(
                users.contains_key(value.as_slice()),
                "a username without its user"
            );
        }
        for (user_id, _) in users.iter() {
            let user_id = String::from_utf8_lossy(user_id);
            assert_eq!(
                store.identities_of(&user_id).unwrap().len(),
                1,
                "user {user_id} has no identity"
            );
        }
        for value in dump["sessions"].values() {
            let session: authnz::store::Session = serde_json::from_slice(value).unwrap();
            assert!(
                users.contains_key(session.user_id.as_bytes()),
                "a session without its user"
            );
        }
        assert_eq!(
            dump["session_expiry"].len(),
            dump["sessions"].len(),
            "every session is in the expiry index, and nothing else is"
        );
        for key in dump["session_expiry"].keys() {
            assert!(
                dump["sessions"].contains_key(&key[9..]),
                "an expiry entry without its session"
            );
        }
    }

    // The server comes back on the same database, and a returning person is the same account.
    let mut server = spawn_server(&config).await;
    wait_ready(&url).await;
    let refused = in_progress.client.get(&callback).send().await.unwrap();
    assert_eq!(
        refused.status(),
        400,
        "a restart drops sign-ins in progress"
    );
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_state");
    let someone = answered.iter().next().unwrap().clone();
    assert!(login(&url, &someone).await, "{someone} logs in again");
    server.start_kill().unwrap();
    let _ = server.wait().await;
    let store = SledStore::open(&dir.path().join("db"), 8 << 20).unwrap();
    let dump = store.dump().unwrap();
    let owners: BTreeSet<_> = dump["identities"]
        .values()
        .map(|value| serde_json::from_slice::<authnz::store::Identity>(value).unwrap())
        .filter(|identity| identity.subject == someone)
        .map(|identity| identity.user_id)
        .collect();
    assert_eq!(owners.len(), 1, "the returning person kept one account");
}

//! SECURITY I73: an identity belongs to (issuer, subject). An entry repointed at another
//! issuer (or a removed entry's name reused) never logs the new issuer's `sub` into the old
//! issuer's account, by login or by bearer token, unless the admin says the provider moved
//! (`previous_issuers`). A database written before issuers were recorded is migrated on start.

use authnz_tests::hostile::{chrono_now, HostileIdp};
use authnz_tests::jwt::key_a;
use authnz_tests::{assert_only_pending_consumed, Browser, Reserved, TestServer};
use serde_json::{json, Value};

use crate::login_flow::dev_login;

/// A login as `alice-sub` at `idp`, configured as `corp`: the callback's status and body.
async fn login(server: &TestServer, idp: &HostileIdp) -> (u16, Value, Browser) {
    let browser = Browser::new();
    let response = idp
        .sign_in(
            &browser,
            &server.url,
            "corp",
            "issuer-access-token",
            |claims| key_a().sign(json!({}), &claims),
            json!({}),
        )
        .await;
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        browser,
    )
}

/// Points `[idps.corp]` at `idp` (with `extra` lines) and reloads.
async fn repoint(server: &TestServer, idp: &HostileIdp, extra: &str) {
    let path = server.dir.path().join("idps.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let server_part = &text[..text.find("[idps.corp]").unwrap()];
    std::fs::write(
        &path,
        format!(
            "{server_part}{}accepted_audiences = [\"api\"]\n{extra}",
            idp.idp_toml("corp")
        ),
    )
    .unwrap();
    server.app.reload().await.expect("the new config loads");
}

#[tokio::test]
async fn a_repointed_entry_never_logs_the_new_issuer_into_the_old_account() {
    let (old, new) = (HostileIdp::start().await, HostileIdp::start().await);
    for idp in [&old, &new] {
        idp.answer_userinfo(json!({"sub": "alice-sub"}));
    }
    let server = Reserved::new()
        .start(&format!(
            "{}accepted_audiences = [\"api\"]\n",
            old.idp_toml("corp")
        ))
        .await;
    let (status, _, first) = login(&server, &old).await;
    assert_eq!(status, 303);
    let (_, account) = first.me(&server.url).await;

    // The entry now names another issuer: its subject `alice-sub` is someone else.
    repoint(&server, &new, "").await;
    let before = server.dump().await;
    let (status, body, intruder) = login(&server, &new).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "issuer_changed");
    assert_eq!(intruder.me(&server.url).await.0, 401);
    assert_only_pending_consumed(&before, &server.dump().await);
    // Nor does its access token act for the old account.
    let now = chrono_now();
    let bearer = key_a().sign(
        json!({"typ": "at+jwt"}),
        &json!({"iss": new.issuer, "aud": "api", "sub": "alice-sub", "iat": now, "exp": now + 300}),
    );
    let me = |token: String| {
        let request = reqwest::Client::new()
            .get(format!("{}/api/users/me", server.url))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(me(bearer.clone()).await, 401);

    // The provider really moved: the admin says so, and the account carries on.
    repoint(
        &server,
        &new,
        &format!("previous_issuers = [\"{}\"]\n", old.issuer),
    )
    .await;
    let (status, body, moved) = login(&server, &new).await;
    assert_eq!(status, 303, "{body}");
    let (_, me_now) = moved.me(&server.url).await;
    assert_eq!(me_now["id"], account["id"]);
    let identity = server
        .app
        .store
        .identity("corp", "alice-sub")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(identity.issuer.as_deref(), Some(new.issuer.as_str()));
    assert_eq!(me(bearer).await, 200);
    // From now on the old issuer is the stranger.
    repoint(&server, &old, "").await;
    let (status, _, _) = login(&server, &old).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn a_database_from_before_issuers_is_migrated_on_start() {
    // Written by the version before issuers were recorded: two dev-IdP accounts, ada and bob.
    let dir = tempfile::tempdir().unwrap();
    let fixture = authnz_tests::repo_root().join("tests/fixtures/db-before-issuers.tar.gz");
    let untar = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(untar.success());
    let server = Reserved::new()
        .start_on(&dir.path().join("db"), "[idps.dev]\nkind = \"dev\"\n")
        .await;
    let issuer = server.app.idp("dev").unwrap().config.issuer.clone();
    for subject in ["ada", "bob"] {
        let identity = server
            .app
            .store
            .identity("dev", subject)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            identity.issuer.as_deref(),
            Some(issuer.as_str()),
            "{subject}"
        );
    }
    let browser = Browser::new();
    assert_eq!(
        dev_login(&browser, &server.url, "dev", "ada", None)
            .await
            .status(),
        303
    );
    let (_, me) = browser.me(&server.url).await;
    assert_eq!(me["id"], "01a2380f5aedwqfN7A7yP_t409cD", "the same account");
    assert_eq!(server.count("users").await, 2);
}

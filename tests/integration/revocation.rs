//! The request right after a session ends is refused, although the requests before it were
//! answered from memory: on sled, the session, user and identities a signed-in request reads
//! are cached, and every write forgets what it changed before it answers. Logout, disconnect,
//! account deletion and expiry, each asked of `/api/users/me` and of the forward-auth check
//! (back-channel logout: `tokens::a_mapped_subject_serves_refresh_back_channel_logout_and_bearer_tokens`;
//! several replicas on PostgreSQL: `postgres::logins_cross_replicas_on_one_database`).

use authnz_tests::{Browser, OidcProvider, Reserved, TestServer};

use crate::accounts::corp_and_lab;
use serde_json::json;

struct Rig {
    server: TestServer,
    _provider: OidcProvider,
}

/// The real provider as `corp` and `lab`, and an app for the check.
async fn rig() -> Rig {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(
        &[reserved.callback("corp"), reserved.callback("lab")],
        json!({}),
    );
    let config = format!(
        "{}\n[apps.wiki]\nurl = \"http://127.0.0.1:9200\"\n",
        corp_and_lab(&provider.issuer)
    );
    let server = reserved.start(&config).await;
    Rig {
        server,
        _provider: provider,
    }
}

async fn signed_in(url: &str, idp: &str, login: &str) -> Browser {
    let browser = Browser::new();
    assert_eq!(
        browser.login_with_provider(url, idp, login).await.status(),
        303
    );
    browser
}

/// `/api/users/me` and the check, twice each (the second from memory), with the browser's
/// session cookie as it was (a logout clears it in the browser; a copy would still be sent):
/// the statuses.
async fn asked(browser: &Browser, url: &str) -> Vec<u16> {
    let session = browser
        .cookie(url, "authnz_session")
        .expect("a session cookie");
    asked_with(&session, url).await
}

async fn asked_with(session: &str, url: &str) -> Vec<u16> {
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        for path in ["/api/users/me", "/authnz/auth?app=wiki"] {
            let response = client
                .get(format!("{url}{path}"))
                .header("Cookie", format!("authnz_session={session}"))
                .send()
                .await
                .unwrap();
            statuses.push(response.status().as_u16());
        }
    }
    statuses
}

#[tokio::test]
async fn the_request_after_a_session_ends_is_refused_though_the_one_before_came_from_memory() {
    let rig = rig().await;
    let url = rig.server.url.clone();

    // Logout.
    let browser = signed_in(&url, "corp", "alice").await;
    let session = browser.cookie(&url, "authnz_session").unwrap();
    assert_eq!(asked(&browser, &url).await, [200; 4]);
    let csrf = browser.csrf(&url).await;
    let response = browser
        .client
        .post(format!("{url}/authnz/logout"))
        .header("Origin", &url)
        .header("X-CSRF-Token", csrf)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success() || response.status().is_redirection());
    assert_eq!(asked_with(&session, &url).await, [401; 4], "after a logout");

    // Disconnect: the sessions started with the identity end, in every browser.
    let first = signed_in(&url, "corp", "bob").await;
    let response = first.post(&url, "/authnz/lab/connect").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let callback = first
        .sign_in_at_provider(
            body["redirect_uri"].as_str().unwrap(),
            "bob",
            &format!("{url}/authnz/lab/callback"),
        )
        .await;
    assert_eq!(first.get(&callback).await.status(), 303);
    let by_lab = signed_in(&url, "lab", "bob").await;
    assert_eq!(by_lab.me(&url).await.1["id"], first.me(&url).await.1["id"]);
    assert_eq!(asked(&by_lab, &url).await, [200; 4]);
    assert_eq!(
        first.post(&url, "/authnz/lab/disconnect").await.status(),
        200
    );
    assert_eq!(
        asked(&by_lab, &url).await,
        [401; 4],
        "after its identity was disconnected elsewhere"
    );
    let (status, me) = first.me(&url).await;
    assert_eq!(status, 200);
    assert_eq!(me["identities"].as_array().unwrap().len(), 1, "{me}");

    // Account deletion, asked in another browser of the same person.
    let deleting = signed_in(&url, "corp", "carol").await;
    let other = signed_in(&url, "corp", "carol").await;
    assert_eq!(asked(&other, &url).await, [200; 4]);
    let username = deleting.me(&url).await.1["username"]
        .as_str()
        .unwrap()
        .to_string();
    let response = deleting
        .client
        .delete(format!("{url}/api/users/me?confirm={username}"))
        .header("Origin", &url)
        .header("X-CSRF-Token", deleting.csrf(&url).await)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        asked(&other, &url).await,
        [401; 4],
        "after the account was deleted"
    );

    // Expiry, with no write at all: the cached session's `expires_at` is checked.
    let expiring = signed_in(&url, "corp", "dave").await;
    assert_eq!(asked(&expiring, &url).await, [200; 4]);
    let ttl = rig.server.app.server.session_ttl.as_secs() as i64;
    rig.server.app.clock.advance(ttl + 1);
    assert_eq!(asked(&expiring, &url).await, [401; 4], "after it expired");
    rig.server.app.clock.advance(-(ttl + 1));
}

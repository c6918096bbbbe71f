//! A person's sessions, through the real provider: the list (this browser, the others, what
//! each was started with and from), ending another one (the next request of that browser is
//! refused), ending every other, and what may not end one: another account, a request without
//! the CSRF token, a bearer credential (SECURITY G64, I71).

use authnz_tests::{Browser, OidcProvider, Reserved, TestServer};
use serde_json::{json, Value};

const LAPTOP: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const PHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

struct Rig {
    server: TestServer,
    _provider: OidcProvider,
}

async fn rig() -> Rig {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(&[reserved.callback("corp")], json!({}));
    let server = reserved
        .start(&authnz_tests::oidc_idp_toml("corp", &provider.issuer))
        .await;
    Rig {
        server,
        _provider: provider,
    }
}

async fn signed_in(url: &str, login: &str, user_agent: &str) -> Browser {
    let browser = Browser::with_user_agent(user_agent);
    assert_eq!(
        browser
            .login_with_provider(url, "corp", login)
            .await
            .status(),
        303
    );
    browser
}

async fn sessions(browser: &Browser, url: &str) -> (u16, Value) {
    let response = browser.get(&format!("{url}/api/users/me/sessions")).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `DELETE path` as the browser, with its CSRF token when `csrf`.
async fn delete(browser: &Browser, url: &str, path: &str, csrf: bool) -> reqwest::Response {
    let mut request = browser
        .client
        .delete(format!("{url}{path}"))
        .header("Origin", url);
    if csrf {
        request = request.header("X-CSRF-Token", browser.csrf(url).await);
    }
    request.send().await.unwrap()
}

fn list(body: &Value) -> Vec<Value> {
    body["sessions"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_person_sees_their_sessions_and_ends_another_one() {
    let rig = rig().await;
    let url = rig.server.url.clone();
    let laptop = signed_in(&url, "alice", LAPTOP).await;
    rig.server.app.clock.advance(60);
    let phone = signed_in(&url, "alice", PHONE).await;
    let bob = signed_in(&url, "bob", LAPTOP).await;
    let alice_id = laptop.me(&url).await.1["id"].as_str().unwrap().to_string();
    assert_eq!(
        phone.me(&url).await.1["id"],
        alice_id.as_str(),
        "one person"
    );

    // The list: both of alice's, this browser marked, newest first, with device and network.
    let (status, body) = sessions(&laptop, &url).await;
    assert_eq!(status, 200, "{body}");
    let listed = list(&body);
    assert_eq!(listed.len(), 2, "{body}");
    assert_eq!(listed[0]["device"], "Safari on iOS", "{body}");
    assert_eq!(listed[0]["current"], false);
    assert_eq!(listed[1]["device"], "Firefox on Linux");
    assert_eq!(listed[1]["current"], true);
    for session in &listed {
        assert_eq!(session["idp"], "corp");
        assert_eq!(
            session["network"], "127.0.0.0/24",
            "the network, not the address"
        );
        assert!(session["expires_at"].as_i64() > session["created_at"].as_i64());
    }
    // Neither the cookie nor the hash the store keys it by is shown.
    let phone_cookie = phone.cookie(&url, "authnz_session").unwrap();
    let text = body.to_string();
    assert!(!text.contains(&phone_cookie), "{text}");
    assert!(
        !text.contains(&authnz::crypto::sha256_hex(&phone_cookie)[..16]),
        "{text}"
    );
    let phone_id = listed[0]["id"].as_str().unwrap().to_string();
    let laptop_id = listed[1]["id"].as_str().unwrap().to_string();

    // Bob sees only his own, and cannot end alice's.
    let (_, bobs) = sessions(&bob, &url).await;
    assert_eq!(list(&bobs).len(), 1, "{bobs}");
    assert!(!bobs.to_string().contains(&phone_id));
    let response = delete(
        &bob,
        &url,
        &format!("/api/users/me/sessions/{phone_id}"),
        true,
    )
    .await;
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "no_such_session");
    assert_eq!(phone.me(&url).await.0, 200, "still signed in");

    // Without the CSRF token, nothing ends.
    let response = delete(
        &laptop,
        &url,
        &format!("/api/users/me/sessions/{phone_id}"),
        false,
    )
    .await;
    assert_eq!(response.status(), 403);
    assert_eq!(phone.me(&url).await.0, 200, "still signed in");

    // A bearer credential reads the list (nothing is its own) but ends nothing.
    let key: Value = laptop
        .client
        .post(format!("{url}/api/keys"))
        .header("Origin", &url)
        .header("X-CSRF-Token", laptop.csrf(&url).await)
        .json(&json!({"name": "scripts"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    let by_key: Value = client
        .get(format!("{url}/api/users/me/sessions"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list(&by_key).len(), 2, "{by_key}");
    assert!(
        list(&by_key).iter().all(|s| s["current"] == false),
        "{by_key}"
    );
    for path in [
        format!("/api/users/me/sessions/{phone_id}"),
        "/api/users/me/sessions".into(),
    ] {
        let response = client
            .delete(format!("{url}{path}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "session_required");
    }
    assert_eq!(phone.me(&url).await.0, 200, "still signed in");

    // Ending the phone's: its very next request is refused, the laptop carries on, and the
    // identity's tokens stay (the laptop's session still uses them).
    assert_eq!(phone.me(&url).await.0, 200);
    let response = delete(
        &laptop,
        &url,
        &format!("/api/users/me/sessions/{phone_id}"),
        true,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("set-cookie").is_none(),
        "the laptop stays signed in"
    );
    let ended: Value = response.json().await.unwrap();
    assert_eq!(ended["ended"], 1);
    assert_eq!(phone.me(&url).await.0, 401, "the phone is signed out");
    let check = reqwest::Client::new()
        .get(format!("{url}/api/users/me"))
        .header("Cookie", format!("authnz_session={phone_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), 401, "a copy of its cookie too");
    assert_eq!(laptop.me(&url).await.0, 200);
    let stored = rig.server.app.store.sessions_of(&alice_id).await.unwrap();
    assert_eq!(stored.len(), 1, "one session left in the store");
    assert!(
        rig.server.count("tokens").await >= 2,
        "alice's and bob's tokens stay"
    );
    let (_, body) = sessions(&laptop, &url).await;
    assert_eq!(list(&body).len(), 1);
    assert_eq!(
        delete(
            &laptop,
            &url,
            &format!("/api/users/me/sessions/{phone_id}"),
            true
        )
        .await
        .status(),
        404,
        "an ended session is gone"
    );

    // Ending its own session is a logout: the cookie is cleared, and the identity's tokens go
    // with the last session that used them.
    let tokens_before = rig.server.count("tokens").await;
    let response = delete(
        &laptop,
        &url,
        &format!("/api/users/me/sessions/{laptop_id}"),
        true,
    )
    .await;
    assert_eq!(response.status(), 200);
    let cleared = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cleared.starts_with("authnz_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(laptop.me(&url).await.0, 401);
    assert_eq!(
        rig.server.count("tokens").await,
        tokens_before - 1,
        "alice's tokens went"
    );
    assert_eq!(bob.me(&url).await.0, 200, "bob is untouched");
}

#[tokio::test]
async fn signing_out_everywhere_else_keeps_this_browser_and_the_page_offers_it() {
    let rig = rig().await;
    let url = rig.server.url.clone();
    let here = signed_in(&url, "carol", LAPTOP).await;
    let others = [
        signed_in(&url, "carol", PHONE).await,
        signed_in(&url, "carol", "curl/8.5.0").await,
    ];
    let dave = signed_in(&url, "dave", PHONE).await;

    // The account page lists them, this browser marked, each with its button.
    let (_, page) = here.page(&format!("{url}/"), None).await;
    assert!(page.contains("Where you are signed in"), "{page}");
    assert!(
        page.contains("Firefox on Linux <strong>(this browser)</strong>"),
        "{page}"
    );
    assert!(
        page.contains("Safari on iOS") && page.contains(">curl<"),
        "{page}"
    );
    // In the page's language; the API keeps the stored label.
    let (_, german) = here.page(&format!("{url}/"), Some("de")).await;
    assert!(
        german.contains("Firefox unter Linux <strong>(dieser Browser)</strong>")
            && german.contains("Safari unter iOS"),
        "{german}"
    );
    assert_eq!(
        page.matches("class=\"secondary end-session\"").count(),
        3,
        "{page}"
    );
    assert!(page.contains("id=\"end-others\""), "{page}");

    // The page's form without the CSRF token ends nothing.
    let form = |csrf: &str| {
        [
            ("csrf", csrf.to_string()),
            ("session", "others".to_string()),
        ]
    };
    let response = here
        .client
        .post(format!("{url}/authnz/sessions/end"))
        .header("Origin", &url)
        .form(&form("not-the-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    for other in &others {
        assert_eq!(other.me(&url).await.0, 200);
    }

    // With it: every other session of carol's ends, this one and dave's stay.
    let csrf = here.csrf(&url).await;
    let response = here
        .client
        .post(format!("{url}/authnz/sessions/end"))
        .header("Origin", &url)
        .form(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/#sessions");
    for other in &others {
        assert_eq!(other.me(&url).await.0, 401, "signed out elsewhere");
    }
    assert_eq!(here.me(&url).await.0, 200, "this browser stays");
    assert_eq!(dave.me(&url).await.0, 200, "another person is untouched");
    let (_, body) = sessions(&here, &url).await;
    let listed = list(&body);
    assert_eq!(listed.len(), 1, "{body}");
    assert_eq!(listed[0]["current"], true);

    // Through the API, with nothing left to end.
    let response = delete(&here, &url, "/api/users/me/sessions", true).await;
    assert_eq!(response.status(), 200);
    let ended: Value = response.json().await.unwrap();
    assert_eq!(ended["ended"], 0);
    let (_, page) = here.page(&format!("{url}/"), None).await;
    assert!(
        !page.contains("id=\"end-others\""),
        "nothing else to end: {page}"
    );
}

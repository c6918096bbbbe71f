//! Accounts and the token lifecycle against the real `oidc-provider`: connecting a second
//! identity, disconnect that revokes at the IdP, the last identity, logout with the IdP's
//! end-session URL, back-channel logout, email-based linking policies (SECURITY F56–F59,
//! G64–G65), sign-up confirmation, API keys and account deletion.

use authnz_tests::{
    assert_only_pending_consumed, oidc_idp_toml, Browser, OidcProvider, Reserved,
    OIDC_CLIENT_SECRET,
};
use serde_json::json;

use crate::login_flow::{dev_login, dev_server};

/// Uses a refresh token at the provider directly: the provider's own verdict.
async fn provider_refresh_status(provider: &OidcProvider, refresh_token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/token", provider.issuer))
        .basic_auth("authnz", Some(OIDC_CLIENT_SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// One provider as two IdPs, `corp` and `lab` (labelled "Lab"): a person with two identities.
pub fn corp_and_lab(issuer: &str) -> String {
    format!(
        "{}{}label = \"Lab\"\n",
        oidc_idp_toml("corp", issuer),
        oidc_idp_toml("lab", issuer).replace("label = \"Corp\"\n", "")
    )
}

#[tokio::test]
async fn connect_then_disconnect_revokes_at_the_idp_and_logout_ends_everything() {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(
        &[reserved.callback("corp"), reserved.callback("lab")],
        json!({}),
    );
    let server = reserved.start(&corp_and_lab(&provider.issuer)).await;
    let url = server.url.clone();
    let browser = Browser::new();
    assert_eq!(
        browser
            .login_with_provider(&url, "corp", "alice")
            .await
            .status(),
        303
    );
    let (_, me) = browser.me(&url).await;
    let user_id = me["id"].clone();

    // Connecting is a state change: same origin and the session's CSRF token (G65).
    let no_token = browser
        .client
        .post(format!("{url}/authnz/lab/connect"))
        .header("Origin", &url)
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 403);
    let cross_site = browser
        .client
        .post(format!("{url}/authnz/lab/connect"))
        .header("Origin", "https://evil.example")
        .header("X-CSRF-Token", browser.csrf(&url).await)
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);

    let response = browser.post(&url, "/authnz/lab/connect").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let callback = browser
        .sign_in_at_provider(
            body["redirect_uri"].as_str().unwrap(),
            "alice",
            &format!("{url}/authnz/lab/callback"),
        )
        .await;
    assert_eq!(browser.get(&callback).await.status(), 303);
    let (_, me) = browser.me(&url).await;
    assert_eq!(me["id"], user_id, "connected to the same account");
    let idps: Vec<_> = me["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["idp"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(idps, ["corp", "lab"]);

    // Disconnect lab: its refresh token is revoked at the provider first.
    let refresh = server
        .tokens("lab", "alice")
        .await
        .refresh_token
        .expect("a refresh token");
    assert_eq!(
        provider_refresh_status(&provider, &refresh).await,
        200,
        "the token works before"
    );
    let response = browser.post(&url, "/authnz/lab/disconnect").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["revoked_at_idp"], true, "{body}");
    assert_eq!(
        provider_refresh_status(&provider, &refresh).await,
        400,
        "the provider recorded the revocation"
    );
    assert!(server
        .app
        .store
        .sealed_tokens("lab", "alice")
        .await
        .unwrap()
        .is_none());
    let (status, me) = browser.me(&url).await;
    assert_eq!(status, 200, "the account and session stay");
    assert_eq!(me["identities"].as_array().unwrap().len(), 1);

    // G65: the last way to log in stays (409); an identity the account lacks is 404;
    // without a session it is 401; from another site 403.
    assert_eq!(
        browser.post(&url, "/authnz/corp/disconnect").await.status(),
        409
    );
    assert_eq!(
        browser.post(&url, "/authnz/lab/disconnect").await.status(),
        404
    );
    let stranger = Browser::new();
    let response = stranger
        .client
        .post(format!("{url}/authnz/corp/disconnect"))
        .header("Origin", &url)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let cross = browser
        .client
        .post(format!("{url}/authnz/corp/disconnect"))
        .header("Origin", "https://evil.example")
        .header("X-CSRF-Token", browser.csrf(&url).await)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    // The confirmation page exists for browsers.
    let page = browser
        .get(&format!("{url}/authnz/corp/disconnect"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Disconnect corp"), "{page}");

    // Logout: the session ends, the unused tokens go, and the IdP's end-session URL comes back.
    let response = browser.post(&url, "/authnz/logout").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let end = body["end_session_url"].as_str().unwrap();
    assert!(
        end.starts_with(&format!("{}/session/end?", provider.issuer)),
        "{end}"
    );
    // The session began as lab's login and carries on under corp since lab was disconnected:
    // it has no ID token of its own to hint with (another browser's is never used), so the
    // IdP asks the person to confirm.
    assert_eq!(authnz_tests::query_param(end, "id_token_hint"), None);
    for param in ["client_id", "post_logout_redirect_uri", "state"] {
        assert!(
            authnz_tests::query_param(end, param).is_some(),
            "{param} missing in {end}"
        );
    }
    assert_eq!(browser.me(&url).await.0, 401);
    assert_eq!(server.count("tokens").await, 0);
    assert_eq!(server.count("sessions").await, 0);
}

#[tokio::test]
async fn back_channel_logout_from_the_idp_ends_exactly_that_session() {
    let reserved = Reserved::new();
    let provider = OidcProvider::start_with(
        &[reserved.callback("corp")],
        json!({}),
        json!({
            "backchannel_logout_uri": format!("{}/authnz/corp/backchannel-logout", reserved.url),
            "backchannel_logout_session_required": true,
        }),
    );
    let server = reserved
        .start(&oidc_idp_toml("corp", &provider.issuer))
        .await;
    let (first, second) = (Browser::new(), Browser::new());
    assert_eq!(
        first
            .login_with_provider(&server.url, "corp", "alice")
            .await
            .status(),
        303
    );
    assert_eq!(
        second
            .login_with_provider(&server.url, "corp", "alice")
            .await
            .status(),
        303
    );

    // alice signs out at the provider in the first browser.
    let page = first
        .get(&format!("{}/session/end", provider.issuer))
        .await
        .text()
        .await
        .unwrap();
    let xsrf = page
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no xsrf in {page}"))
        .to_string();
    let response = first
        .client
        .post(format!("{}/session/end/confirm", provider.issuer))
        .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_redirection() || response.status().is_success(),
        "{}",
        response.status()
    );
    // The provider posted a logout token for that session's sid.
    let mut ended = false;
    for _ in 0..50 {
        if first.me(&server.url).await.0 == 401 {
            ended = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        ended,
        "the first browser's session survived the back-channel logout: {}",
        authnz_tests::logs::all()
            .lines()
            .filter(|l| l.contains("logout") || l.contains("backchannel"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        second.me(&server.url).await.0,
        200,
        "the other session (another sid) stays"
    );
}

#[tokio::test]
async fn email_matches_link_only_when_the_policy_and_both_idps_allow_it() {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(
        &[
            reserved.callback("corp"),
            reserved.callback("lab"),
            reserved.callback("other"),
        ],
        json!({"mallory": {"email": "alice@example.test", "email_verified": false}}),
    );
    // `prompt = "login"`: the provider asks who signs in even with a provider session.
    let trusted = "link_existing = \"verified_email\"\ntrusted_email_domains = [\"example.test\"]\nprompt = \"login\"\n";
    let config = format!(
        "{}{trusted}\n{}{trusted}\n{}link_existing = \"verified_email\"\ntrusted_email_domains = [\"elsewhere.test\"]\n",
        oidc_idp_toml("corp", &provider.issuer),
        oidc_idp_toml("lab", &provider.issuer),
        oidc_idp_toml("other", &provider.issuer),
    );
    let server = reserved.start(&config).await;
    let url = server.url.clone();
    let alice = Browser::new();
    alice.login_with_provider(&url, "corp", "alice").await;
    let (_, me) = alice.me(&url).await;

    // F57: both IdPs are authoritative for example.test and verified it: linked.
    let again = Browser::new();
    assert_eq!(
        again
            .login_with_provider(&url, "lab", "alice")
            .await
            .status(),
        303
    );
    let (_, linked) = again.me(&url).await;
    assert_eq!(linked["id"], me["id"]);
    assert_eq!(linked["identities"].as_array().unwrap().len(), 2);

    // An IdP not authoritative for the domain never links: 409 and nothing stored.
    let other = Browser::new();
    let authorize = other.start_login(&url, "other").await;
    let callback = other
        .sign_in_at_provider(&authorize, "alice", &format!("{url}/authnz/other/callback"))
        .await;
    let before = server.dump().await;
    let response = other.get(&callback).await;
    assert_eq!(
        response.status(),
        409,
        "{:?}",
        response.headers().get("location")
    );
    assert_only_pending_consumed(&before, &server.dump().await);

    // F56: alice's address, unverified, under another subject: 409, no account, no session.
    let mallory = Browser::new();
    let authorize = mallory.start_login(&url, "corp").await;
    let callback = mallory
        .sign_in_at_provider(
            &authorize,
            "mallory",
            &format!("{url}/authnz/corp/callback"),
        )
        .await;
    let before = server.dump().await;
    let response = mallory.get(&callback).await;
    assert_eq!(response.status(), 409);
    assert_only_pending_consumed(&before, &server.dump().await);
    assert_eq!(mallory.me(&url).await.0, 401);

    // F59: bob connects, but signs in at the IdP as alice, whose identity is alice's: 409.
    let bob = Browser::new();
    bob.login_with_provider(&url, "other", "bob").await;
    let response = bob.post(&url, "/authnz/lab/connect").await;
    let body: serde_json::Value = response.json().await.unwrap();
    let callback = bob
        .sign_in_at_provider(
            body["redirect_uri"].as_str().unwrap(),
            "alice",
            &format!("{url}/authnz/lab/callback"),
        )
        .await;
    let response = bob.get(&callback).await;
    assert_eq!(response.status(), 409);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "identity_in_use");
    let (_, bob_me) = bob.me(&url).await;
    assert_eq!(
        bob_me["identities"].as_array().unwrap().len(),
        1,
        "bob's account is unchanged"
    );
}

#[tokio::test]
async fn a_first_login_can_require_confirmation() {
    let server = Reserved::new()
        .start("[idps.dev]\nkind = \"dev\"\nrequire_create_confirmation = true\n")
        .await;
    let url = server.url.clone();
    let browser = Browser::new();
    let response = dev_login(&browser, &url, "dev", "nora", Some("/docs")).await;
    assert_eq!(response.status(), 303);
    assert!(
        response.headers().get("set-cookie").is_none(),
        "no session before confirming"
    );
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{url}/authnz/dev/create_user?signup=")),
        "{location}"
    );
    assert_eq!(server.count("users").await, 0);
    assert_eq!(browser.me(&url).await.0, 401);

    let page = browser.get(&location).await.text().await.unwrap();
    assert!(
        page.contains("Create my account") && page.contains("nora"),
        "{page}"
    );
    assert!(
        !page.contains("access_token") && !page.contains("eyJ"),
        "no token on the page"
    );
    let field = |name: &str| {
        page.split(&format!("name=\"{name}\" value=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_string()
    };
    let (signup, csrf) = (field("signup"), field("csrf"));
    let post = |browser: &Browser, csrf: &str| {
        browser
            .client
            .post(format!("{url}/authnz/dev/create_user"))
            .header("Origin", &url)
            .form(&[("signup", signup.clone()), ("csrf", csrf.to_string())])
            .send()
    };
    assert_eq!(
        post(&Browser::new(), &csrf).await.unwrap().status(),
        400,
        "another browser"
    );
    assert_eq!(
        post(&browser, "wrong").await.unwrap().status(),
        403,
        "wrong CSRF token"
    );
    let response = post(&browser, &csrf).await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], format!("{url}/docs"));
    assert_eq!(browser.me(&url).await.0, 200);
    assert_eq!(
        post(&browser, &csrf).await.unwrap().status(),
        404,
        "single use"
    );
    assert_eq!(server.count("users").await, 1);
    // The next login of that identity needs no confirmation.
    assert_eq!(
        dev_login(&Browser::new(), &url, "dev", "nora", None)
            .await
            .headers()["location"],
        format!("{url}/")
    );
}

#[tokio::test]
async fn api_keys_and_deleting_the_account() {
    let server = dev_server().await;
    let url = server.url.clone();
    let browser = Browser::new();
    dev_login(&browser, &url, "dev", "kai", None).await;
    let (_, me) = browser.me(&url).await;

    let created = browser
        .client
        .post(format!("{url}/api/keys"))
        .header("Origin", &url)
        .header("X-CSRF-Token", browser.csrf(&url).await)
        .json(&json!({"name": "laptop", "expires_in_days": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("authnz_") && key.len() > 40);
    let dump = server.dump().await;
    assert!(
        !format!("{dump:?}").contains(&key[7..]),
        "the key is stored hashed"
    );

    let script = reqwest::Client::new();
    let with_key = |path: &str| script.get(format!("{url}{path}")).bearer_auth(&key).send();
    let response = with_key("/api/users/me").await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["id"], me["id"]);
    assert_eq!(body["csrf_token"], serde_json::Value::Null);
    let list: serde_json::Value = with_key("/api/keys").await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["name"], "laptop");
    assert_eq!(list[0]["key"], serde_json::Value::Null, "never shown again");
    let wrong = script
        .get(format!("{url}/api/users/me"))
        .bearer_auth("authnz_not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // The session makes and deletes keys (a key itself cannot: `credentials` tests that).
    let second = browser
        .client
        .post(format!("{url}/api/keys"))
        .header("Origin", &url)
        .header("X-CSRF-Token", browser.csrf(&url).await)
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 201);
    let second: serde_json::Value = second.json().await.unwrap();
    let response = browser
        .client
        .delete(format!("{url}/api/keys/{}", second["id"].as_str().unwrap()))
        .header("Origin", &url)
        .header("X-CSRF-Token", browser.csrf(&url).await)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let dead = script
        .get(format!("{url}/api/users/me"))
        .bearer_auth(second["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(dead.status(), 401);

    // Deleting the account needs its username; then nothing of it is left.
    let delete = |confirm: &str| {
        browser
            .client
            .delete(format!("{url}/api/users/me?confirm={confirm}"))
            .header("Origin", &url)
    };
    let csrf = browser.csrf(&url).await;
    let response = delete("someone")
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let response = delete("kai")
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["deleted"], true);
    for (collection, records) in server.dump().await {
        if collection != "pending_logins" {
            assert!(records.is_empty(), "{collection} still holds records");
        }
    }
    assert_eq!(browser.me(&url).await.0, 401);
    assert_eq!(with_key("/api/users/me").await.unwrap().status(), 401);

    // An expired key stops working.
    dev_login(&browser, &url, "dev", "kai", None).await;
    let created: serde_json::Value = browser
        .client
        .post(format!("{url}/api/keys"))
        .header("Origin", &url)
        .header("X-CSRF-Token", browser.csrf(&url).await)
        .json(&json!({"name": "short", "expires_in_days": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    server.app.clock.advance(2 * 86_400);
    let response = script
        .get(format!("{url}/api/users/me"))
        .bearer_auth(created["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// authnz on the real provider as `corp` and `lab` ([`corp_and_lab`]), its config passed
/// through `config` first.
async fn corp_and_lab_server(
    config: impl FnOnce(String) -> String,
) -> (authnz_tests::TestServer, OidcProvider) {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(
        &[reserved.callback("corp"), reserved.callback("lab")],
        json!({}),
    );
    let server = reserved
        .start(&config(corp_and_lab(&provider.issuer)))
        .await;
    (server, provider)
}

/// Starts a connect to `idp` in `browser` and signs in at the provider as `login` in a fresh
/// browser (no provider session of an earlier sign-in): the callback URL, not yet visited.
async fn connect_as(browser: &Browser, url: &str, idp: &str, login: &str) -> String {
    let response = browser.post(url, &format!("/authnz/{idp}/connect")).await;
    assert_eq!(response.status(), 200, "connect {idp}");
    let body: serde_json::Value = response.json().await.unwrap();
    Browser::new()
        .sign_in_at_provider(
            body["redirect_uri"].as_str().unwrap(),
            login,
            &format!("{url}/authnz/{idp}/callback"),
        )
        .await
}

async fn subjects_at(browser: &Browser, url: &str, idp: &str) -> Vec<String> {
    let (_, me) = browser.me(url).await;
    me["identities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|identity| identity["idp"] == idp)
        .map(|identity| identity["subject"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn an_account_connects_one_identity_per_idp_unless_the_entry_allows_several() {
    let (server, _provider) = corp_and_lab_server(|config| {
        config.replace(
            "label = \"Lab\"\n",
            "label = \"Lab\"\nseveral_accounts = true\n",
        )
    })
    .await;
    let url = server.url.clone();
    let browser = Browser::new();
    assert_eq!(
        browser
            .login_with_provider(&url, "corp", "alice")
            .await
            .status(),
        303
    );
    let start = format!("{url}/");

    // Corp is linked and allows one: the page does not offer it, and connecting is refused
    // before anything starts.
    let html = browser.page(&start, None).await.1;
    assert!(!html.contains("Connect Corp"), "{html}");
    assert!(html.contains("Connect Lab"), "{html}");
    assert!(html.contains("<th>Last sign-in</th>"), "{html}");
    let before = server.dump().await;
    let refused = browser.post(&url, "/authnz/corp/connect").await;
    assert_eq!(refused.status(), 409);
    let error: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(error["error"], "already_connected", "{error}");
    assert_eq!(
        server.dump().await,
        before,
        "nothing started, nothing stored"
    );

    // Lab allows several: two lab accounts join, and the page still offers it.
    for login in ["alice-lab", "alice-home"] {
        let callback = connect_as(&browser, &url, "lab", login).await;
        assert_eq!(browser.get(&callback).await.status(), 303);
    }
    assert_eq!(subjects_at(&browser, &url, "lab").await.len(), 2);
    assert!(browser.page(&start, None).await.1.contains("Connect Lab"));
    assert_eq!(subjects_at(&browser, &url, "corp").await, ["alice"]);
}

#[tokio::test]
async fn a_second_identity_at_an_idp_that_allows_one_is_refused_when_its_connect_finishes() {
    let (server, _provider) = corp_and_lab_server(|config| config).await;
    let url = server.url.clone();
    // One person in two browsers; each starts connecting lab while the account has none.
    let here = Browser::new();
    let there = Browser::new();
    for browser in [&here, &there] {
        assert_eq!(
            browser
                .login_with_provider(&url, "corp", "bob")
                .await
                .status(),
            303
        );
    }
    let late = connect_as(&here, &url, "lab", "bob-lab").await;
    let first = connect_as(&there, &url, "lab", "bob-other").await;
    assert_eq!(there.get(&first).await.status(), 303);
    assert_eq!(subjects_at(&there, &url, "lab").await, ["bob-other"]);
    // The later one finishes with the account holding one lab identity already: refused,
    // and nothing of it is stored.
    let before = server.dump().await;
    let refused = here.get(&late).await;
    assert_eq!(refused.status(), 409);
    let error: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(error["error"], "already_connected", "{error}");
    assert_only_pending_consumed(&before, &server.dump().await);
    assert_eq!(subjects_at(&here, &url, "lab").await, ["bob-other"]);
    // From now on, connecting lab is refused before it starts.
    assert_eq!(here.post(&url, "/authnz/lab/connect").await.status(), 409);
}

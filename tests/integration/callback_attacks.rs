//! SECURITY A1–A13: what `/authnz/{idp}/callback` (and `/login`) refuse. Each rejection is
//! checked for its status, that no session started, and that the store changed only by the
//! consumed pending login.

use authnz_tests::hostile::HostileIdp;
use authnz_tests::{
    assert_only_pending_consumed, logs, query_param, Browser, Reserved, TestServer,
};

use crate::login_flow::{dev_server, dev_sign_in};

/// Calls `url` in `browser` and checks a rejection with `status` and `code`; returns the body.
async fn expect_rejected(
    server: &TestServer,
    browser: &Browser,
    url: &str,
    status: u16,
    code: &str,
) -> serde_json::Value {
    let before = server.dump().await;
    let response = browser.get(url).await;
    assert_eq!(response.status().as_u16(), status, "{url}");
    assert!(
        response
            .headers()
            .get("set-cookie")
            .is_none_or(|c| !c.to_str().unwrap().starts_with("authnz_session=")),
        "a session cookie was set by a rejected callback"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    let after = server.dump().await;
    assert_only_pending_consumed(&before, &after);
    assert_eq!(browser.me(&server.url).await.0, 401, "a session started");
    // Neither the code nor the state of the attempt reached the logs.
    let secrets: Vec<String> = ["code", "state"]
        .iter()
        .filter_map(|name| query_param(url, name))
        .collect();
    authnz_tests::logs::assert_not_logged(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
    body
}

/// Starts a dev login in `browser` and signs in; returns the callback URL (not visited).
async fn dev_callback(server: &TestServer, browser: &Browser, idp: &str, username: &str) -> String {
    let authorize = browser.start_login(&server.url, idp).await;
    dev_sign_in(browser, &authorize, username).await
}

fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .into_owned()
        .filter(|(key, _)| key != name)
        .collect();
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (key, value) in &pairs {
            query.append_pair(key, value);
        }
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    parsed.to_string()
}

#[tokio::test]
async fn missing_empty_or_forged_state_is_400() {
    // A1, A2.
    let server = dev_server().await;
    let browser = Browser::new();
    let callback = dev_callback(&server, &browser, "dev", "ann").await;
    // No state at all: refused by the spec's required parameter before the handler runs.
    expect_rejected(
        &server,
        &browser,
        &with_param(&callback, "state", None),
        400,
        "bad_request",
    )
    .await;
    let refused: serde_json::Value = browser
        .get(&with_param(&callback, "state", None))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        refused["message"], "the parameter `state` is missing or malformed",
        "the missing parameter is named"
    );
    expect_rejected(
        &server,
        &browser,
        &with_param(&callback, "state", Some("")),
        400,
        "missing_state",
    )
    .await;
    expect_rejected(
        &server,
        &browser,
        &with_param(&callback, "state", Some("forged-state-value")),
        400,
        "invalid_state",
    )
    .await;
    // The real state still works: the failures above did not consume it.
    assert_eq!(browser.get(&callback).await.status(), 303);
}

#[tokio::test]
async fn login_csrf_a_callback_from_another_browser_is_refused() {
    // A3: the attacker signs in as themselves and plants their callback in the victim's browser.
    let server = dev_server().await;
    let attacker = Browser::new();
    let callback = dev_callback(&server, &attacker, "dev", "attacker").await;
    let victim = Browser::new();
    expect_rejected(&server, &victim, &callback, 400, "browser_mismatch").await;
    assert_eq!(
        server.count("users").await,
        0,
        "the attacker's account was not created"
    );
    // The state died with the attempt: the attacker cannot use it either.
    expect_rejected(&server, &attacker, &callback, 400, "invalid_state").await;
}

#[tokio::test]
async fn a_callback_url_works_once() {
    // A4.
    let server = dev_server().await;
    let browser = Browser::new();
    let callback = dev_callback(&server, &browser, "dev", "ann").await;
    assert_eq!(browser.get(&callback).await.status(), 303);
    let other = Browser::new();
    expect_rejected(&server, &other, &callback, 400, "invalid_state").await;
    // Same browser: still refused, and its session is not touched.
    let before = server.dump().await;
    let response = browser.get(&callback).await;
    assert_eq!(response.status(), 400);
    assert_eq!(before, server.dump().await);
}

#[tokio::test]
async fn an_expired_state_is_400() {
    // A5.
    let server = dev_server().await;
    let browser = Browser::new();
    let callback = dev_callback(&server, &browser, "dev", "ann").await;
    server.app.clock.advance(601);
    expect_rejected(&server, &browser, &callback, 400, "expired_state").await;
    server.app.clock.advance(-601);
    expect_rejected(&server, &browser, &callback, 400, "invalid_state").await;
}

#[tokio::test]
async fn a_state_is_bound_to_its_idp() {
    // A6: a state issued for `dev2` presented at `dev`'s callback.
    let server = dev_server().await;
    let browser = Browser::new();
    let callback = dev_callback(&server, &browser, "dev2", "ann").await;
    let moved = callback.replace("/authnz/dev2/callback", "/authnz/dev/callback");
    expect_rejected(&server, &browser, &moved, 400, "state_mismatch").await;
}

#[tokio::test]
async fn duplicated_parameters_are_400() {
    // A9.
    let server = dev_server().await;
    let browser = Browser::new();
    let callback = dev_callback(&server, &browser, "dev", "ann").await;
    let state = query_param(&callback, "state").unwrap();
    expect_rejected(
        &server,
        &browser,
        &format!("{callback}&code=other"),
        400,
        "duplicate_parameter",
    )
    .await;
    expect_rejected(
        &server,
        &browser,
        &format!("{callback}&state={state}"),
        400,
        "duplicate_parameter",
    )
    .await;
    assert_eq!(browser.get(&callback).await.status(), 303);
}

#[tokio::test]
async fn an_idp_error_is_shown_escaped_and_consumes_the_state() {
    // A10.
    let server = dev_server().await;
    let browser = Browser::new();
    let callback = dev_callback(&server, &browser, "dev", "ann").await;
    let state = query_param(&callback, "state").unwrap();
    let error_url = format!(
        "{}/authnz/dev/callback?error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state={state}",
        server.url
    );
    let response = browser
        .client
        .get(&error_url)
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&lt;script&gt;"), "{page}");
    expect_rejected(&server, &browser, &callback, 400, "invalid_state").await;

    // An `error` with CR/LF cannot forge a log line: it is logged escaped, on its own line.
    let callback = dev_callback(&server, &browser, "dev", "ann").await;
    let state = query_param(&callback, "state").unwrap();
    let forged = format!(
        "{}/authnz/dev/callback?error=access_denied%0D%0A2026-12-02T00:00:00Z%20INFO%20forged-line-7781&state={state}",
        server.url
    );
    assert_eq!(browser.get(&forged).await.status(), 400);
    let logs = logs::all();
    assert!(logs.contains("forged-line-7781"), "the error is logged");
    assert!(
        !logs
            .lines()
            .any(|line| line.starts_with("2026-12-02T00:00:00Z INFO forged-line-7781")),
        "a forged log line"
    );
}

#[tokio::test]
async fn tokens_in_the_query_instead_of_a_code_are_ignored() {
    // A11.
    let server = dev_server().await;
    let browser = Browser::new();
    let callback = dev_callback(&server, &browser, "dev", "ann").await;
    let mut injected = with_param(&callback, "code", None);
    injected.push_str("&access_token=injected-access-token&id_token=eyJhbGciOiJub25lIn0.e30.");
    expect_rejected(&server, &browser, &injected, 400, "missing_code").await;
}

#[tokio::test]
async fn unknown_or_odd_idp_names_are_404() {
    // A13.
    let server = dev_server().await;
    let browser = Browser::new();
    for name in ["nope", "DEV", "Dev", "..%2F..%2Fetc", "dev%00", "%2e%2e"] {
        for path in ["login", "callback?code=a&state=b"] {
            let before = server.dump().await;
            let response = browser
                .get(&format!("{}/authnz/{name}/{path}", server.url))
                .await;
            assert_eq!(response.status(), 404, "{name}/{path}");
            assert_eq!(before, server.dump().await);
        }
    }
}

/// A hostile IdP and a login started against it: (server, idp, browser, state, nonce).
async fn hostile_login() -> (TestServer, HostileIdp, Browser, String, String) {
    let idp = HostileIdp::start().await;
    let server = Reserved::new().start(&idp.idp_toml("evil")).await;
    let browser = Browser::new();
    let authorize = browser.start_login(&server.url, "evil").await;
    let state = query_param(&authorize, "state").unwrap();
    let nonce = query_param(&authorize, "nonce").unwrap();
    (server, idp, browser, state, nonce)
}

#[tokio::test]
async fn mix_up_a_foreign_iss_is_refused_before_the_token_request() {
    // A7: the code and client secret are never sent.
    let (server, idp, browser, state, _) = hostile_login().await;
    idp.clear_calls();
    let url = format!(
        "{}/authnz/evil/callback?code=the-code&state={state}&iss=https%3A%2F%2Fattacker.example",
        server.url
    );
    expect_rejected(&server, &browser, &url, 400, "issuer_mismatch").await;
    assert!(
        !idp.called("/token"),
        "the token endpoint was called: {:?}",
        idp.calls()
    );
}

#[tokio::test]
async fn a_promised_iss_that_is_missing_is_refused() {
    // A8: discovery says authorization_response_iss_parameter_supported = true.
    let (server, idp, browser, state, _) = hostile_login().await;
    idp.clear_calls();
    let url = format!(
        "{}/authnz/evil/callback?code=the-code&state={state}",
        server.url
    );
    expect_rejected(&server, &browser, &url, 400, "issuer_missing").await;
    assert!(!idp.called("/token"));
}

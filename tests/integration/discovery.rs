//! SECURITY H67–H68: a discovery document that does not belong to the configured issuer, or
//! that points endpoints somewhere unsafe, disables that IdP only.

use authnz_tests::hostile::HostileIdp;
use authnz_tests::{Browser, Reserved};
use serde_json::json;

#[tokio::test]
async fn a_foreign_or_unsafe_discovery_disables_only_that_idp() {
    let mismatched = HostileIdp::start().await;
    mismatched.with(|s| s.discovery["issuer"] = json!("https://attacker.example"));
    let unsafe_endpoints = HostileIdp::start().await;
    unsafe_endpoints
        .with(|s| s.discovery["token_endpoint"] = json!("http://attacker.example/token"));
    let private = HostileIdp::start().await;
    private.with(|s| s.discovery["userinfo_endpoint"] = json!("ftp://127.0.0.1/userinfo"));
    let config = format!(
        "{}{}{}[idps.dev]\nkind = \"dev\"\n",
        mismatched.idp_toml("mismatched"),
        unsafe_endpoints.idp_toml("unsafe"),
        private.idp_toml("private")
    );
    let server = Reserved::new().start(&config).await;
    let browser = Browser::new();
    for name in ["mismatched", "unsafe", "private"] {
        let response = browser
            .get(&format!("{}/authnz/{name}/login", server.url))
            .await;
        assert_eq!(response.status(), 502, "{name}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "idp_unavailable", "{name}: {body}");
    }
    assert_eq!(
        server.count("pending_logins").await,
        0,
        "no login was started"
    );
    // The others keep working.
    assert_eq!(
        browser
            .get(&format!("{}/authnz/dev/login", server.url))
            .await
            .status(),
        200
    );
    // And an IdP that is down answers 502 quickly, without taking the server with it.
    drop(mismatched);
    let response = browser
        .get(&format!("{}/authnz/mismatched/login", server.url))
        .await;
    assert_eq!(response.status(), 502);
    assert!(!unsafe_endpoints.called("/token"));
}

#[tokio::test]
async fn health_reports_each_idp_and_missing_credentials_do_not_stop_the_server() {
    let broken = HostileIdp::start().await;
    broken.with(|s| s.discovery["issuer"] = json!("https://attacker.example"));
    let config = format!(
        "{}[idps.okta]\nkind = \"oidc\"\nlabel = \"Okta\"\nissuer = \"https://okta.example\"\nclient_id = \"${{AUTHNZ_TEST_NEVER_SET}}\"\n\n[idps.dev]\nkind = \"dev\"\n",
        broken.idp_toml("broken")
    );
    let server = Reserved::new().start(&config).await;
    let browser = Browser::new();
    // Let the background discovery finish.
    assert_eq!(
        browser
            .get(&format!("{}/authnz/broken/login", server.url))
            .await
            .status(),
        502
    );
    assert_eq!(
        browser
            .get(&format!("{}/authnz/dev/login", server.url))
            .await
            .status(),
        200
    );
    let health: serde_json::Value = browser
        .get(&format!("{}/healthz", server.url))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let state = |name: &str| {
        health["idps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|idp| idp["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from {health}"))
    };
    assert_eq!(state("dev")["state"], "ready");
    assert_eq!(state("broken")["state"], "failing");
    assert!(state("broken")["reason"]
        .as_str()
        .unwrap()
        .contains("attacker.example"));
    assert_eq!(state("okta")["state"], "unavailable");
    // The public report names no variable or file; the admin API does.
    let reason = state("okta")["reason"].as_str().unwrap().to_string();
    assert!(
        !reason.contains("AUTHNZ_TEST_NEVER_SET") && reason.contains("/api/admin/status"),
        "{reason}"
    );
    let detail = authnz::http::health(&server.app, true).await;
    assert_eq!(
        detail
            .idps
            .iter()
            .find(|idp| idp.name == "okta")
            .and_then(|idp| idp.reason.as_deref()),
        Some("idps.okta.client_id: environment variable AUTHNZ_TEST_NEVER_SET is not set")
    );
    let response = browser
        .get(&format!("{}/authnz/okta/login", server.url))
        .await;
    assert_eq!(response.status(), 503);
    let list: serde_json::Value = browser
        .get(&format!("{}/authnz", server.url))
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|idp| idp["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("broken"), json!("dev")],
        "unavailable IdPs get no button"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_idp_costs_only_its_own_logins() {
    // The token endpoint hangs; its login ends in 502 within the client timeout, while logins
    // through another IdP complete meanwhile.
    let slow = HostileIdp::start().await;
    slow.with(|s| s.token = authnz_tests::hostile::Reply::Hang(std::time::Duration::from_secs(8)));
    let config = format!("{}[idps.dev]\nkind = \"dev\"\n", slow.idp_toml("slow"));
    let server = Reserved::new().start(&config).await;
    let url = server.url.clone();
    let browser = Browser::new();
    let authorize = browser.start_login(&url, "slow").await;
    let state = authnz_tests::query_param(&authorize, "state").unwrap();
    let issuer: String = url::form_urlencoded::byte_serialize(slow.issuer.as_bytes()).collect();
    let slow_callback = format!("{url}/authnz/slow/callback?code=c&state={state}&iss={issuer}");
    let started = std::time::Instant::now();
    let hanging = tokio::spawn(async move { browser.get(&slow_callback).await.status().as_u16() });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for n in 0..5 {
        let other = Browser::new();
        let response =
            crate::login_flow::dev_login(&other, &url, "dev", &format!("quick{n}"), None).await;
        assert_eq!(
            response.status(),
            303,
            "another IdP's login while one hangs"
        );
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the other logins waited for the hanging IdP"
    );
    assert_eq!(hanging.await.unwrap(), 502);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "the hanging IdP was not cut off by the timeout"
    );
}

/// A failing discovery is tried once at a time and then not again for a while (doubling from
/// a second): a flood of logins and unauthenticated back-channel posts costs the IdP nothing.
#[tokio::test]
async fn a_failing_discovery_backs_off_instead_of_retrying_per_request() {
    let idp = HostileIdp::start().await;
    let good = idp.with(|s| s.discovery["issuer"].clone());
    idp.with(|s| s.discovery["issuer"] = json!("https://attacker.example"));
    let server = Reserved::new().start(&idp.idp_toml("evil")).await;
    let url = server.url.clone();
    let discoveries = || {
        idp.calls()
            .iter()
            .filter(|call| call.ends_with("/.well-known/openid-configuration"))
            .count()
    };
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let login = client.get(format!("{url}/authnz/evil/login")).send();
        let logout = client
            .post(format!("{url}/authnz/evil/backchannel-logout"))
            .form(&[("logout_token", "a.b.c")])
            .send();
        let (login, logout) = futures_util::join!(login, logout);
        statuses.push(login.unwrap().status().as_u16());
        statuses.push(logout.unwrap().status().as_u16());
    }
    assert!(statuses.iter().all(|status| *status == 502), "{statuses:?}");
    assert_eq!(discoveries(), 1, "one attempt, then the backoff");
    // The IdP is fixed; after the pause (a second after one failure), a login discovers it.
    idp.with(|s| s.discovery["issuer"] = good);
    let fixed = std::time::Instant::now();
    loop {
        let response = client
            .get(format!("{url}/authnz/evil/login"))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert!(
            fixed.elapsed() < std::time::Duration::from_secs(5),
            "never discovered again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        discoveries(),
        2,
        "the logins during the pause fetched nothing; one after it did"
    );
}

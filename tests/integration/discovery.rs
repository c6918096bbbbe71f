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
    assert_eq!(server.count("pending_logins"), 0, "no login was started");
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

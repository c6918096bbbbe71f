//! Pushed authorization requests (RFC 9126): against the real `oidc-provider` (a client that
//! must push), the browser carries only `client_id` and `request_uri`; the hostile IdP for
//! what a real one would not do (a requirement without an endpoint, a refusal, an answer
//! without a `request_uri`) and for what authnz pushes.

use authnz_tests::hostile::{HostileIdp, Reply, CLIENT_ID};
use authnz_tests::{oidc_idp_toml, Browser, OidcProvider, Reserved};
use serde_json::json;

/// The names of the query parameters of `url`.
fn parameters(url: &str) -> Vec<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(name, _)| name.into_owned())
        .collect()
}

/// The body of the last pushed authorization request the hostile IdP saw.
fn last_push(idp: &HostileIdp) -> String {
    idp.with(|script| {
        script
            .bodies
            .iter()
            .rev()
            .find(|(path, _)| path == "/par")
            .map(|(_, body)| body.clone())
            .unwrap()
    })
}

#[tokio::test]
async fn a_login_pushes_its_request_and_the_browser_carries_only_a_reference() {
    let pushing = Reserved::new();
    let in_the_url = Reserved::new();
    // A client the provider serves only pushed requests.
    let provider = OidcProvider::start_with(
        &[pushing.callback("corp"), in_the_url.callback("corp")],
        json!({}),
        json!({"require_pushed_authorization_requests": true}),
    );
    let server = pushing
        .start(&format!(
            "{}prompt = \"login\"\n",
            oidc_idp_toml("corp", &provider.issuer)
        ))
        .await;
    let browser = Browser::new();
    let authorize = browser.start_login(&server.url, "corp").await;
    assert!(
        authorize.starts_with(&format!("{}/auth?", provider.issuer)),
        "{authorize}"
    );
    assert_eq!(
        parameters(&authorize),
        ["client_id", "request_uri"],
        "{authorize}"
    );
    assert!(!authorize.contains("state="), "{authorize}");
    let callback = browser
        .sign_in_at_provider(
            &authorize,
            "alice",
            &format!("{}/authnz/corp/callback", server.url),
        )
        .await;
    assert_eq!(browser.get(&callback).await.status(), 303);
    let (status, me) = browser.me(&server.url).await;
    assert_eq!(status, 200);
    assert_eq!(me["identities"][0]["subject"], "alice");

    // `par = "never"`: the parameters in the URL, which this client may not use.
    let never = in_the_url
        .start(&format!(
            "{}par = \"never\"\n",
            oidc_idp_toml("corp", &provider.issuer)
        ))
        .await;
    let authorize = Browser::new().start_login(&never.url, "corp").await;
    assert!(parameters(&authorize).contains(&"state".to_string()));
    let refused = Browser::new().get(&authorize).await;
    let status = refused.status().as_u16();
    let text = refused.text().await.unwrap();
    assert!(
        status == 400 || text.contains("invalid_request"),
        "the provider refuses a request that was not pushed: {status} {text}"
    );
}

#[tokio::test]
async fn what_the_idp_says_of_pushed_requests_is_honoured_and_its_failures_named() {
    let idp = HostileIdp::start().await;
    let par = format!("{}/par", idp.issuer);
    idp.with(|script| {
        script.discovery["pushed_authorization_request_endpoint"] = json!(par);
        script.extra.insert(
            "/par".into(),
            Reply::Json(
                201,
                json!({"request_uri": "urn:ietf:params:oauth:request_uri:abc", "expires_in": 60}),
            ),
        );
    });
    let server = Reserved::new().start(&idp.idp_toml("corp")).await;
    let url = &server.url;
    let start = || async {
        let response = Browser::new()
            .get(&format!("{url}/authnz/corp/login"))
            .await;
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        (status, body)
    };

    // What is pushed: every parameter, the client's own authentication, nothing in the URL.
    let (status, body) = start().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["redirect_uri"],
        format!(
            "{}/authorize?client_id={CLIENT_ID}&request_uri=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3Aabc",
            idp.issuer
        )
    );
    let pushed = last_push(&idp);
    let authorization = idp.with(|script| {
        script
            .headers
            .iter()
            .rev()
            .find(|(path, _)| path == "/par")
            .and_then(|(_, headers)| headers.get("authorization").cloned())
    });
    let names: Vec<String> = url::form_urlencoded::parse(pushed.as_bytes())
        .map(|(name, _)| name.into_owned())
        .collect();
    for name in [
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    ] {
        assert!(names.contains(&name.to_string()), "{name} pushed: {pushed}");
    }
    assert_eq!(
        names.iter().filter(|name| *name == "client_id").count(),
        1,
        "{pushed}"
    );
    assert!(
        authorization.is_some_and(|value| value.to_str().unwrap().starts_with("Basic ")),
        "the client authenticates its push"
    );
    assert_eq!(server.count("pending_logins").await, 1);

    // A refusal, and an answer without a request_uri: no sign-in starts.
    for (reply, says) in [
        (
            Reply::Json(400, json!({"error": "invalid_request"})),
            "refused the pushed authorization request (400, invalid_request)",
        ),
        (
            Reply::Json(201, json!({"expires_in": 60})),
            "has no request_uri",
        ),
    ] {
        idp.with(|script| script.extra.insert("/par".into(), reply));
        let (status, body) = start().await;
        assert_eq!(status, 502, "{body}");
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
    }
    assert_eq!(
        server.count("pending_logins").await,
        1,
        "no new pending login"
    );

    // `par = "never"` against an IdP that requires pushed requests, and `"always"` or a
    // requirement without an endpoint: refused with what to do, before the browser goes.
    let never = Reserved::new()
        .start(&format!("{}par = \"never\"\n", idp.idp_toml("corp")))
        .await;
    idp.with(|script| {
        script.discovery["require_pushed_authorization_requests"] = json!(true);
    });
    let refused = Browser::new()
        .get(&format!("{}/authnz/corp/login", never.url))
        .await;
    assert_eq!(refused.status(), 502);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("takes only pushed authorization requests"),
        "{body}"
    );
    idp.with(|script| {
        script
            .discovery
            .as_object_mut()
            .unwrap()
            .remove("pushed_authorization_request_endpoint");
    });
    for (config, says) in [
        (
            format!("{}par = \"always\"\n", idp.idp_toml("corp")),
            "par = \\\"always\\\", but",
        ),
        (
            idp.idp_toml("corp"),
            "requires pushed authorization requests but names no",
        ),
    ] {
        let server = Reserved::new().start(&config).await;
        let response = Browser::new()
            .get(&format!("{}/authnz/corp/login", server.url))
            .await;
        assert_eq!(response.status(), 502);
        let body = response.text().await.unwrap();
        assert!(body.contains(says), "{body}");
        assert_eq!(server.count("pending_logins").await, 0);
    }
}

#[tokio::test]
async fn a_pushed_request_that_expired_at_the_idp_says_to_start_again() {
    let idp = HostileIdp::start().await;
    let par = format!("{}/par", idp.issuer);
    idp.with(|script| {
        script.discovery["pushed_authorization_request_endpoint"] = json!(par);
        script.extra.insert(
            "/par".into(),
            Reply::Json(
                201,
                json!({"request_uri": "urn:ietf:params:oauth:request_uri:short", "expires_in": 1}),
            ),
        );
    });
    let server = Reserved::new().start(&idp.idp_toml("corp")).await;
    let browser = Browser::new();
    let authorize = browser.start_login(&server.url, "corp").await;
    assert_eq!(parameters(&authorize), ["client_id", "request_uri"]);
    // The state went to the IdP only: it comes back with the IdP's refusal.
    let pushed = last_push(&idp);
    let state = url::form_urlencoded::parse(pushed.as_bytes())
        .find(|(name, _)| name == "state")
        .map(|(_, value)| value.into_owned())
        .unwrap();
    let response = browser
        .get(&format!(
            "{}/authnz/corp/callback?error=invalid_request_uri&state={state}&iss={}",
            server.url,
            url::form_urlencoded::byte_serialize(idp.issuer.as_bytes()).collect::<String>()
        ))
        .await;
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "idp_error");
    assert!(
        body["message"].as_str().unwrap().contains(
            "expired at the identity provider (invalid_request_uri): start the sign-in again"
        ),
        "{body}"
    );
    assert_eq!(browser.me(&server.url).await.0, 401);
    assert_eq!(
        server.count("pending_logins").await,
        0,
        "the state is spent"
    );
    assert!(!idp.called("/token"), "no code was redeemed");
}

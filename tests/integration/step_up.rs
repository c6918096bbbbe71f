//! Step-up per application (`[apps.<name>] max_auth_age_seconds`, `acr_values`): the
//! forward-auth check asks for a fresh sign-in at the session's IdP (`max_age`,
//! `acr_values`) when the session's sign-in is too old or not of the kind asked for; the
//! callback then checks `auth_time` and `acr` on the ID token. The real provider for the way
//! through, the hostile IdP for an ID token that ignores what was asked.

use authnz_tests::hostile::{HostileIdp, Reply};
use authnz_tests::jwt::key_a;
use authnz_tests::{oidc_idp_toml, query_param, Browser, OidcProvider, Reserved};
use serde_json::json;

/// `GET /authnz/auth?app=<app>` with the browser's cookies: the status and the JSON body.
async fn check(browser: &Browser, url: &str, app: &str) -> (u16, serde_json::Value) {
    let response = browser.get(&format!("{url}/authnz/auth?app={app}")).await;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// The vault's answer when it wants a new sign-in: its login URL.
async fn step_up(browser: &Browser, url: &str) -> String {
    let (status, body) = check(browser, url, "vault").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "step_up_required", "{body}");
    body["login_url"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_app_that_wants_a_recent_sign_in_gets_one_through_the_forward_check() {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(&[reserved.callback("corp")], json!({}));
    let url = reserved.url.clone();
    let config = format!(
        "{}\n[apps.vault]\nurl = \"{url}/vault\"\nmax_auth_age_seconds = 300\n\n[apps.wiki]\nurl = \"{url}/wiki\"\n",
        oidc_idp_toml("corp", &provider.issuer)
    );
    let server = reserved.start(&config).await;
    let browser = Browser::new();
    assert_eq!(
        browser
            .login_with_provider(&url, "corp", "alice")
            .await
            .status(),
        303
    );
    // A plain sign-in says nothing of when the person signed in at the provider (no
    // `auth_time`): the vault asks for a sign-in at the session's IdP with `max_age`; the wiki
    // lets the person in.
    let login = step_up(&browser, &url).await;
    assert_eq!(login, format!("{url}/authnz/corp/login?max_age=300"));
    assert_eq!(check(&browser, &url, "wiki").await.0, 200);

    // The sign-in it asks for: `max_age` reaches the provider, whose ID token then says when
    // the person signed in; the new session passes.
    let started = browser.get(&login).await;
    assert_eq!(started.status(), 200);
    let body: serde_json::Value = started.json().await.unwrap();
    let callback = browser
        .sign_in_at_provider(
            body["redirect_uri"].as_str().unwrap(),
            "alice",
            &format!("{url}/authnz/corp/callback"),
        )
        .await;
    assert_eq!(browser.get(&callback).await.status(), 303);
    assert_eq!(check(&browser, &url, "vault").await.0, 200, "recent enough");

    // Ten minutes on, the vault asks again; the wiki still lets the person in.
    server.app.clock.advance(600);
    assert_eq!(step_up(&browser, &url).await, login);
    assert_eq!(check(&browser, &url, "wiki").await.0, 200);
    server.app.clock.advance(-600);

    // An API key has no sign-in to show.
    let key: serde_json::Value = browser
        .client
        .post(format!("{url}/api/keys"))
        .header("Origin", url.as_str())
        .header("X-CSRF-Token", browser.csrf(&url).await)
        .json(&json!({"name": "script"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .get(format!("{url}/authnz/auth?app=vault"))
        .bearer_auth(key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "step_up_unsupported", "{body}");
}

#[tokio::test]
async fn an_id_token_that_ignores_max_age_or_acr_values_is_refused() {
    let idp = HostileIdp::start().await;
    idp.answer_userinfo(json!({"sub": "alice-sub"}));
    let server = Reserved::new().start(&idp.idp_toml("corp")).await;
    let url = &server.url;
    // One login with a step-up; `edit` makes its ID token's claims.
    let attempt = |query: &'static str, edit: fn(&mut serde_json::Value)| {
        let idp = &idp;
        async move {
            let browser = Browser::new();
            let started: serde_json::Value = browser
                .get(&format!("{url}/authnz/corp/login?{query}"))
                .await
                .json()
                .await
                .unwrap();
            let authorize = started["redirect_uri"].as_str().unwrap().to_string();
            let state = query_param(&authorize, "state").unwrap();
            let nonce = query_param(&authorize, "nonce").unwrap();
            let mut claims = idp.claims(&nonce, "at-1");
            edit(&mut claims);
            idp.with(|script| {
                script.token = Reply::Json(
                    200,
                    json!({
                        "access_token": "at-1",
                        "token_type": "Bearer",
                        "expires_in": 300,
                        "id_token": key_a().sign(json!({}), &claims),
                    }),
                )
            });
            let response = browser
                .get(&format!(
                    "{url}/authnz/corp/callback?code=c&state={state}&iss={}",
                    url::form_urlencoded::byte_serialize(idp.issuer.as_bytes()).collect::<String>()
                ))
                .await;
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (authorize, status, body, browser.me(url).await.0)
        }
    };

    // What was asked reaches the IdP.
    let (authorize, status, _, me) = attempt("max_age=60&acr_values=gold%20silver", |claims| {
        claims["auth_time"] = json!(authnz_tests::hostile::chrono_now() - 5);
        claims["acr"] = json!("silver");
    })
    .await;
    assert_eq!(query_param(&authorize, "max_age").as_deref(), Some("60"));
    assert_eq!(
        query_param(&authorize, "acr_values").as_deref(),
        Some("gold silver")
    );
    assert_eq!((status, me), (303, 200), "what was asked for signs in");

    for (query, edit, says) in [
        (
            "max_age=60",
            (|claims: &mut serde_json::Value| {
                claims.as_object_mut().unwrap().remove("auth_time");
            }) as fn(&mut serde_json::Value),
            "did not say when the person signed in",
        ),
        (
            "max_age=60",
            |claims| claims["auth_time"] = json!(authnz_tests::hostile::chrono_now() - 3600),
            "older than the application allows",
        ),
        (
            "acr_values=gold",
            |claims| claims["acr"] = json!("bronze"),
            "not of the kind the application asked for",
        ),
        (
            "acr_values=gold",
            |_| {},
            "not of the kind the application asked for",
        ),
    ] {
        let (_, status, body, me) = attempt(query, edit).await;
        assert_eq!(status, 401, "{query}: {body}");
        assert_eq!(body["error"], "id_token_invalid", "{body}");
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
        assert_eq!(me, 401, "no session");
    }
    assert_eq!(
        server.count("users").await,
        1,
        "only the good login made an account"
    );
}

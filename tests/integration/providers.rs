//! The built-in provider kinds, each pointed at the real `oidc-provider` with `issuer = ...`:
//! a full login through each, their authorize parameters, Google's hosted-domain refusal, and
//! identities that never merge across IdPs (SECURITY F54, F55). GitHub (plain OAuth 2.0) is
//! played by the hostile IdP.

use authnz_tests::hostile::{HostileIdp, Reply};
use authnz_tests::{
    assert_only_pending_consumed, query_param, Browser, OidcProvider, Reserved, OIDC_CLIENT_SECRET,
};
use serde_json::json;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const ERIN_OID: &str = "6c2b58e3-5d3a-4c44-a6a4-0f6f2a0e4c11";
const MAL_OID: &str = "0badc0de-5d3a-4c44-a6a4-0f6f2a0e4c11";

fn entry(name: &str, kind: &str, issuer: &str, settings: &str) -> String {
    format!(
        "[idps.{name}]\nkind = \"{kind}\"\nissuer = \"{issuer}\"\nclient_id = \"authnz\"\nclient_secret = \"{OIDC_CLIENT_SECRET}\"\n{settings}\n"
    )
}

#[tokio::test]
async fn every_built_in_kind_logs_in_through_the_real_provider() {
    let reserved = Reserved::new();
    let names = ["okta", "google", "keycloak", "entra"];
    let callbacks: Vec<String> = names.iter().map(|name| reserved.callback(name)).collect();
    let provider = OidcProvider::start(
        &callbacks,
        json!({
            "gail": {"hd": "example.test"},
            "otto": {"hd": "other.test"},
            "kim": {"groups": ["staff", "admins"]},
            "sam": {"email_verified": false},
            // nOAuth: an Entra tenant can put anyone's address in `email`.
            "erin": {"tid": TENANT, "oid": ERIN_OID},
            // nOAuth: an attacker's Entra tenant can put anyone's address in `email`.
            "mal": {"tid": TENANT, "oid": MAL_OID, "email": "alice@example.test", "email_verified": true},
        }),
    );
    let issuer = provider.issuer.clone();
    let config = [
        entry(
            "okta",
            "okta",
            &issuer,
            "domain = \"organization.okta.com\"",
        ),
        entry(
            "google",
            "google",
            &issuer,
            "hosted_domain = \"example.test\"",
        ),
        entry(
            "keycloak",
            "keycloak",
            &issuer,
            "url = \"https://kc.example.org\"\nrealm = \"research\"\nidp_hint = \"github\"",
        ),
        entry("entra", "entra", &issuer, &format!("tenant = \"{TENANT}\"")),
    ]
    .concat()
    // The authorize parameters are read from the URL, so none is pushed (PAR has its own tests).
    .replace(
        "client_id = \"authnz\"\n",
        "client_id = \"authnz\"\npar = \"never\"\n",
    );
    let server = reserved.start(&config).await;

    // Provider-specific authorize parameters.
    let browser = Browser::new();
    let google = browser.start_login(&server.url, "google").await;
    assert_eq!(query_param(&google, "hd").as_deref(), Some("example.test"));
    assert_eq!(
        query_param(&google, "access_type").as_deref(),
        Some("offline")
    );
    let keycloak = browser.start_login(&server.url, "keycloak").await;
    assert_eq!(
        query_param(&keycloak, "kc_idp_hint").as_deref(),
        Some("github")
    );
    let okta = browser.start_login(&server.url, "okta").await;
    assert_eq!(query_param(&okta, "hd"), None);
    assert_eq!(
        query_param(&okta, "scope").as_deref(),
        Some("openid email profile")
    );

    // A login through each kind; each makes its own identity (and, without linking, its own user).
    let mut users = Vec::new();
    for (idp, login, subject) in [
        ("okta", "alice", "alice".to_string()),
        ("google", "gail", "gail".to_string()),
        ("keycloak", "kim", "kim".to_string()),
        ("okta", "sam", "sam".to_string()),
        ("keycloak", "sam", "sam".to_string()),
        ("entra", "erin", format!("{TENANT}:{ERIN_OID}")),
    ] {
        let browser = Browser::new();
        let response = browser.login_with_provider(&server.url, idp, login).await;
        assert_eq!(response.status(), 303, "{idp}/{login}");
        let (status, me) = browser.me(&server.url).await;
        assert_eq!(status, 200);
        assert_eq!(me["identities"].as_array().unwrap().len(), 1);
        assert_eq!(me["identities"][0]["idp"], idp);
        assert_eq!(me["identities"][0]["subject"], subject.as_str());
        users.push((idp, login, me));
    }
    let ids: std::collections::BTreeSet<_> = users
        .iter()
        .map(|(_, _, me)| me["id"].to_string())
        .collect();
    assert_eq!(
        ids.len(),
        6,
        "F54: the same `sub` at two IdPs is two identities"
    );

    // alice's verified address already belongs to her okta account: a first keycloak login
    // with it is refused (409) and tells her what to do; nothing is created.
    let again = Browser::new();
    let authorize = again.start_login(&server.url, "keycloak").await;
    let callback = again
        .sign_in_at_provider(
            &authorize,
            "alice",
            &format!("{}/authnz/keycloak/callback", server.url),
        )
        .await;
    let before = server.dump().await;
    let response = again.get(&callback).await;
    assert_eq!(response.status(), 409);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "email_in_use", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("connect Keycloak"),
        "{body}"
    );
    assert_only_pending_consumed(&before, &server.dump().await);

    // F55 (nOAuth): Entra's email claim is never trusted. An Entra identity whose tenant
    // claims alice's address does not get into alice's account: 409, nothing stored.
    let erin = &users[5].2;
    assert_eq!(erin["identities"][0]["email_verified"], false);
    let mal = Browser::new();
    let authorize = mal.start_login(&server.url, "entra").await;
    let callback = mal
        .sign_in_at_provider(
            &authorize,
            "mal",
            &format!("{}/authnz/entra/callback", server.url),
        )
        .await;
    let before = server.dump().await;
    let response = mal.get(&callback).await;
    assert_eq!(response.status(), 409);
    assert_only_pending_consumed(&before, &server.dump().await);
    assert_eq!(mal.me(&server.url).await.0, 401);

    // Google with a hosted domain refuses an account of another domain: 403, no session.
    let otto = Browser::new();
    let authorize = otto.start_login(&server.url, "google").await;
    let callback = otto
        .sign_in_at_provider(
            &authorize,
            "otto",
            &format!("{}/authnz/google/callback", server.url),
        )
        .await;
    let before = server.dump().await;
    let response = otto.get(&callback).await;
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "login_denied", "{body}");
    assert_only_pending_consumed(&before, &server.dump().await);
    assert_eq!(otto.me(&server.url).await.0, 401);
}

#[tokio::test]
async fn github_logs_in_over_plain_oauth2() {
    let github = HostileIdp::start().await;
    github.with(|s| {
        s.token = Reply::Json(200, json!({"access_token": "gho_test_access_token_0001", "token_type": "bearer", "scope": "read:user,user:email"}));
        s.extra.insert("/user".into(), Reply::Json(200, json!({"id": 583231, "login": "Octocat", "name": "The Octocat"})));
        s.extra.insert(
            "/user/emails".into(),
            Reply::Json(200, json!([
                {"email": "octo@old.example", "primary": false, "verified": true},
                {"email": "octocat@example.test", "primary": true, "verified": true},
            ])),
        );
    });
    let config = format!(
        "[idps.github]\nkind = \"github\"\nclient_id = \"gh-client\"\nclient_secret = \"gh-secret-value-000\"\nurl = \"{0}\"\napi_url = \"{0}\"\n",
        github.issuer
    );
    let server = Reserved::new().start(&config).await;
    let browser = Browser::new();
    let authorize = browser.start_login(&server.url, "github").await;
    assert!(
        authorize.starts_with(&format!("{}/login/oauth/authorize?", github.issuer)),
        "{authorize}"
    );
    assert_eq!(
        query_param(&authorize, "scope").as_deref(),
        Some("read:user user:email"),
        "no openid scope"
    );
    assert_eq!(query_param(&authorize, "nonce"), None);
    assert_eq!(
        query_param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let state = query_param(&authorize, "state").unwrap();
    let response = browser
        .get(&format!(
            "{}/authnz/github/callback?code=abc&state={state}",
            server.url
        ))
        .await;
    assert_eq!(response.status(), 303);
    let (status, me) = browser.me(&server.url).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["identities"][0]["subject"], "583231");
    assert_eq!(me["identities"][0]["email"], "octocat@example.test");
    assert_eq!(me["identities"][0]["email_verified"], true);
    assert_eq!(me["username"], "octocat");
    // GitHub takes the client secret and the PKCE verifier in the token request body.
    let body = github.with(|s| s.token_bodies.last().cloned()).unwrap();
    assert!(
        body.contains("client_secret=gh-secret-value-000") && body.contains("code_verifier="),
        "{body}"
    );

    // The API refusing the token is the IdP's failure: 502, nothing stored.
    github.with(|s| {
        s.extra.insert(
            "/user".into(),
            Reply::Json(401, json!({"message": "Bad credentials"})),
        );
    });
    let other = Browser::new();
    let authorize = other.start_login(&server.url, "github").await;
    let state = query_param(&authorize, "state").unwrap();
    let before = server.dump().await;
    let response = other
        .get(&format!(
            "{}/authnz/github/callback?code=abc&state={state}",
            server.url
        ))
        .await;
    assert_eq!(response.status(), 502);
    assert_only_pending_consumed(&before, &server.dump().await);

    // A user object without an id cannot be an identity: 401.
    github.with(|s| {
        s.extra
            .insert("/user".into(), Reply::Json(200, json!({"login": "ghost"})));
    });
    let authorize = other.start_login(&server.url, "github").await;
    let state = query_param(&authorize, "state").unwrap();
    let response = other
        .get(&format!(
            "{}/authnz/github/callback?code=abc&state={state}",
            server.url
        ))
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(server.count("users").await, 1);
}

/// Tapis, played by the hostile IdP as its authenticator answers: the token answer nested in
/// `result`, HTTP Basic client authentication, the token in `X-Tapis-Token` for userinfo, and
/// refresh through the same nested answer.
#[tokio::test]
async fn tapis_logs_in_with_its_nested_answers_and_refreshes() {
    let idp = HostileIdp::start().await;
    let answer = |access: &str, refresh: &str| {
        Reply::Json(
            200,
            json!({"result": {
                       "access_token": {"access_token": access, "expires_at": "2026-12-02T19:53:03+00:00",
                                        "expires_in": 14400, "jti": "8ef1d271"},
                       "refresh_token": {"refresh_token": refresh, "expires_in": 86400, "jti": "9a0b"}},
                   "status": "success", "message": "Token created successfully.", "version": "dev"}),
        )
    };
    idp.with(|s| {
        s.extra.insert(
            "/v3/oauth2/tokens".into(),
            answer("tapis-access-one", "tapis-refresh-one"),
        );
        s.extra.insert(
            "/v3/oauth2/userinfo".into(),
            Reply::Json(
                200,
                json!({"result": {"username": "tacc-user", "email": "tacc-user@example.test",
                                  "given_name": "Tacc", "last_name": "User"},
                       "status": "success", "message": "User profile retrieved successfully."}),
            ),
        );
    });
    let toml = format!(
        "[idps.tacc]\nkind = \"tapis\"\nurl = \"{}\"\nclient_id = \"galaxy-client\"\nclient_secret = \"tapis-secret\"\n",
        idp.issuer
    );
    let server = Reserved::new().start(&toml).await;
    let browser = Browser::new();
    let authorize = browser.start_login(&server.url, "tacc").await;
    assert!(
        authorize.starts_with(&format!("{}/v3/oauth2/authorize?", idp.issuer)),
        "{authorize}"
    );
    let state = query_param(&authorize, "state").unwrap();
    let response = browser
        .get(&format!(
            "{}/authnz/tacc/callback?code=tapis-code&state={state}",
            server.url
        ))
        .await;
    assert_eq!(response.status(), 303, "{}", response.text().await.unwrap());
    let (_, me) = browser.me(&server.url).await;
    assert_eq!(me["username"], "tacc-user");
    assert_eq!(me["identities"][0]["subject"], "tacc-user");
    assert_eq!(me["identities"][0]["email_verified"], false);
    let (token_request, token_headers) = idp.with(|s| {
        let body = s
            .bodies
            .iter()
            .find(|(path, _)| path == "/v3/oauth2/tokens")
            .map(|(_, body)| body.clone())
            .unwrap();
        let headers = s
            .headers
            .iter()
            .find(|(path, _)| path == "/v3/oauth2/tokens")
            .map(|(_, headers)| headers.clone())
            .unwrap();
        (body, headers)
    });
    assert!(
        token_request.contains("grant_type=authorization_code")
            && token_request.contains("code=tapis-code")
            && !token_request.contains("tapis-secret"),
        "{token_request}"
    );
    assert!(token_headers["authorization"]
        .to_str()
        .unwrap()
        .starts_with("Basic "));
    let userinfo = idp.with(|s| {
        s.headers
            .iter()
            .find(|(path, _)| path == "/v3/oauth2/userinfo")
            .map(|(_, headers)| headers.clone())
            .unwrap()
    });
    assert_eq!(userinfo["x-tapis-token"], "tapis-access-one");
    assert!(userinfo.get("authorization").is_none());

    // The application's token, then a refresh through the nested answer.
    let tokens = format!("{}/api/users/me/tokens/tacc", server.url);
    let token: serde_json::Value = browser.get(&tokens).await.json().await.unwrap();
    assert_eq!(token["access_token"], "tapis-access-one");
    server.app.clock.advance(14_400);
    idp.with(|s| {
        s.extra.insert(
            "/v3/oauth2/tokens".into(),
            answer("tapis-access-two", "tapis-refresh-two"),
        )
    });
    let token: serde_json::Value = browser.get(&tokens).await.json().await.unwrap();
    assert_eq!(token["access_token"], "tapis-access-two", "{token}");
    let refresh = idp.with(|s| {
        s.bodies
            .iter()
            .rev()
            .find(|(path, _)| path == "/v3/oauth2/tokens")
            .map(|(_, body)| body.clone())
            .unwrap()
    });
    assert!(
        refresh.contains("grant_type=refresh_token")
            && refresh.contains("refresh_token=tapis-refresh-one"),
        "{refresh}"
    );
}

/// The `<img>` of the button that links to `/authnz/<name>/login`, as the page has it.
fn button_icon(page: &str, name: &str) -> String {
    let start = page
        .find(&format!("href=\"/authnz/{name}/login\""))
        .unwrap_or_else(|| panic!("a button for {name}:\n{page}"));
    let button = &page[start..];
    let button = &button[..button.find("</a>").expect("the button ends")];
    button
        .split_once("<img")
        .or_else(|| button.split_once("<svg"))
        .map(|(_, icon)| icon.split_once('>').map(|(icon, _)| icon).unwrap_or(icon))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn each_brand_shows_its_own_mark_and_an_admins_icon_wins() {
    // Nothing answers on port 9: the buttons are there whether or not discovery worked.
    let nowhere = "http://127.0.0.1:9";
    let config = [
        entry("google", "google", nowhere, ""),
        entry("entra", "entra", nowhere, "tenant = \"organizations\""),
        entry("okta", "okta", nowhere, "domain = \"example.okta.com\""),
        entry(
            "keycloak",
            "keycloak",
            nowhere,
            "url = \"http://127.0.0.1:9\"\nrealm = \"r\"",
        ),
        entry("orcid", "orcid", nowhere, ""),
        "[idps.github]\nkind = \"github\"\nclient_id = \"c\"\nclient_secret = \"s\"\n".to_string(),
        entry("uni", "oidc", nowhere, "label = \"University\""),
        entry(
            "own",
            "google",
            nowhere,
            "label = \"Staff\"\nicon = \"/static/staff.png\"",
        ),
    ]
    .concat();
    let server = Reserved::new().start(&config).await;
    let page = Browser::new()
        .get(&format!("{}/", server.url))
        .await
        .text()
        .await
        .unwrap();
    // Each brand's own colours, inside an image (never inline markup), named by the label.
    for (name, colour) in [
        ("google", "fill=%27%23EA4335%27"),
        ("entra", "fill=%27%23F25022%27"),
        ("okta", "fill=%27%23007DC1%27"),
        ("keycloak", "fill=%27%234D4D4D%27"),
        ("orcid", "fill=%27%23A6CE39%27"),
        ("github", "fill=%27%23181717%27"),
    ] {
        let icon = button_icon(&page, name);
        assert!(
            icon.contains("class=\"icon\" src=\"data:image/svg+xml,%3Csvg ")
                && icon.contains(colour),
            "{name}: {icon}"
        );
        assert!(
            icon.contains("alt=\"\""),
            "{name}: decorative, the label names it"
        );
    }
    assert!(
        !page.contains("<svg xmlns"),
        "no kind's SVG is inlined into the page"
    );
    // A generic OpenID provider has no brand: a badge with its label's initial.
    let badge = button_icon(&page, "uni");
    assert!(badge.contains("aria-hidden=\"true\""), "{badge}");
    assert!(
        page.contains(">U</text></svg><span>University</span>"),
        "{page}"
    );
    // The admin's icon wins over the kind's mark.
    let own = button_icon(&page, "own");
    assert!(own.contains("src=\"/static/staff.png\""), "{own}");
    // The JSON list hands the same icons to a single-page application.
    let list: serde_json::Value = Browser::new()
        .get(&format!("{}/authnz", server.url))
        .await
        .json()
        .await
        .unwrap();
    let icon_of = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|idp| idp["name"] == name)
            .map(|idp| idp["icon"].clone())
            .unwrap()
    };
    assert!(icon_of("google")
        .as_str()
        .unwrap()
        .starts_with("data:image/svg+xml,"));
    assert_eq!(icon_of("own"), "/static/staff.png");
    assert_eq!(icon_of("uni"), serde_json::Value::Null);
}

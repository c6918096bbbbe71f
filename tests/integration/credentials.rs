//! SECURITY I70–I75: who may do what with which credential. The dev IdP serves this machine
//! only; a bearer credential (API key, an IdP's access token) acts only within what it was
//! issued for; an ID token is never an access token; the provider's policy applies to bearer
//! tokens as to logins; admins are pinned to ids; logout needs its CSRF token.

use authnz_tests::hostile::{chrono_now, HostileIdp, CLIENT_ID};
use authnz_tests::jwt::key_a;
use authnz_tests::{Browser, Reserved, TestServer};
use serde_json::{json, Value};

use crate::login_flow::{dev_login, dev_sign_in};

const ACCESS_TOKEN: &str = "credentials-access-token-0001";

/// A client off this machine, as a trusted proxy on loopback reports it.
const REMOTE: &str = "198.51.100.7";

#[tokio::test]
async fn the_dev_idp_serves_only_this_machine() {
    // I70, the second wall: a proxy on loopback (trusted) forwards a client from elsewhere.
    let server = Reserved::new()
        .start_server(
            "trusted_proxies = [\"127.0.0.1\"]\n",
            "[idps.dev]\nkind = \"dev\"\n",
        )
        .await;
    let url = &server.url;
    let remote = |request: reqwest::RequestBuilder| request.header("X-Forwarded-For", REMOTE);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let discovery = format!("{url}/dev-idp/.well-known/openid-configuration");
    assert_eq!(client.get(&discovery).send().await.unwrap().status(), 200);
    for (what, request) in [
        ("discovery", client.get(&discovery)),
        ("jwks", client.get(format!("{url}/dev-idp/jwks"))),
        (
            "authorize form",
            client.get(format!("{url}/dev-idp/authorize")),
        ),
        (
            "authorize post",
            client
                .post(format!("{url}/dev-idp/authorize"))
                .form(&[("username", "admin")]),
        ),
        ("token", client.post(format!("{url}/dev-idp/token"))),
        ("login", client.get(format!("{url}/authnz/dev/login"))),
    ] {
        let response = remote(request).send().await.unwrap();
        assert_eq!(response.status(), 403, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "dev_idp_loopback_only", "{what}: {body}");
    }
    // A login begun here whose callback arrives from elsewhere starts no session.
    let browser = Browser::new();
    let authorize = browser.start_login(url, "dev").await;
    let callback = dev_sign_in(&browser, &authorize, "admin").await;
    let response = remote(browser.client.get(&callback)).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(browser.me(url).await.0, 401);
    assert_eq!(server.count("sessions").await, 0);
    assert_eq!(server.count("users").await, 0);
    // Positive control: from this machine, the same steps log in.
    let response = dev_login(&browser, url, "dev", "admin", None).await;
    assert_eq!(response.status(), 303);
    assert_eq!(browser.me(url).await.0, 200);
}

#[test]
fn check_refuses_the_dev_idp_on_a_network_listener() {
    // I70, the first wall: `check` (and `serve`, which loads the same way) name the place.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idps.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"0.0.0.0:8080\"\n\n[idps.dev]\nkind = \"dev\"\n",
    )
    .unwrap();
    for command in ["check", "serve"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_authnz_for_tests"))
            .args([command, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("{}:4:1: idps.dev.kind:", path.display()))
                && stderr.contains("server.listen is a loopback address"),
            "{command}: {stderr}"
        );
    }
}

/// Creates an API key with the browser's session; returns (id, secret).
async fn api_key(browser: &Browser, url: &str, expires_in_days: Option<i64>) -> (String, String) {
    let response = browser
        .client
        .post(format!("{url}/api/keys"))
        .header("Origin", url)
        .header("X-CSRF-Token", browser.csrf(url).await)
        .json(&match expires_in_days {
            Some(days) => json!({"name": "scripts", "expires_in_days": days}),
            None => json!({"name": "scripts"}),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let key: Value = response.json().await.unwrap();
    (
        key["id"].as_str().unwrap().to_string(),
        key["key"].as_str().unwrap().to_string(),
    )
}

/// What a bearer credential may not do: each answered 403 `session_required`.
async fn assert_bearer_cannot_manage(server: &TestServer, token: &str, idp: &str, key_id: &str) {
    let url = &server.url;
    let client = reqwest::Client::new();
    let before = server.dump().await;
    let attempts = [
        (
            "mint a key",
            client
                .post(format!("{url}/api/keys"))
                .json(&json!({"name": "forever"})),
        ),
        (
            "delete a key",
            client.delete(format!("{url}/api/keys/{key_id}")),
        ),
        (
            "delete the account",
            client.delete(format!("{url}/api/users/me?confirm=ann")),
        ),
        (
            "connect",
            client.post(format!("{url}/authnz/{idp}/connect")),
        ),
        (
            "disconnect",
            client.post(format!("{url}/authnz/{idp}/disconnect")),
        ),
    ];
    for (what, request) in attempts {
        let response = request.bearer_auth(token).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 403, "{what}: {body}");
        assert_eq!(body["error"], "session_required", "{what}: {body}");
    }
    let after = server.dump().await;
    for collection in ["users", "identities", "api_keys", "tokens", "sessions"] {
        assert_eq!(
            before.get(collection),
            after.get(collection),
            "{collection} changed"
        );
    }
}

#[tokio::test]
async fn an_api_key_cannot_mint_keys_or_take_the_account() {
    // I71: an expiring key must not make a permanent one, nor delete, connect or disconnect.
    let server = Reserved::new()
        .start("[idps.dev]\nkind = \"dev\"\n\n[idps.dev2]\nkind = \"dev\"\n")
        .await;
    let url = &server.url;
    let browser = Browser::new();
    dev_login(&browser, url, "dev", "ann", None).await;
    let (key_id, secret) = api_key(&browser, url, Some(1)).await;
    let client = reqwest::Client::new();
    // What the key is for: reading the account.
    let me = client
        .get(format!("{url}/api/users/me"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_bearer_cannot_manage(&server, &secret, "dev2", &key_id).await;
    // Nor the IdP tokens kept for the account.
    let tokens = client
        .get(format!("{url}/api/users/me/tokens/dev"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(tokens.status(), 403);
    // Positive control: the browser session (with its CSRF token) manages keys...
    let (_, second) = api_key(&browser, url, None).await;
    assert!(second.starts_with("authnz_"));
    assert_eq!(server.count("api_keys").await, 2);
    // ...with a body as the schema has it: a name is a string, a lifetime a number or absent.
    for body in [
        json!({"name": false}),
        json!({"name": 42}),
        json!({"name": "x", "expires_in_days": null}),
    ] {
        let response = browser
            .client
            .post(format!("{url}/api/keys"))
            .header("Origin", url)
            .header("X-CSRF-Token", browser.csrf(url).await)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
    }
    assert_eq!(server.count("api_keys").await, 2);
}

#[tokio::test]
async fn a_cross_site_read_of_the_idp_tokens_is_refused() {
    // A top-level cross-site GET carries the Lax cookie; a refused refresh would end the session.
    let server = Reserved::new().start("[idps.dev]\nkind = \"dev\"\n").await;
    let url = &server.url;
    let browser = Browser::new();
    dev_login(&browser, url, "dev", "ann", None).await;
    let tokens = format!("{url}/api/users/me/tokens/dev");
    let cross = browser
        .client
        .get(&tokens)
        .header("Sec-Fetch-Site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let same = browser
        .client
        .get(&tokens)
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200);
}

/// A login at the hostile IdP as `alice-sub`, with `edit` applied to the ID token's claims.
async fn hostile_login(
    server: &TestServer,
    idp: &HostileIdp,
    name: &str,
    edit: impl Fn(&mut Value),
) -> Browser {
    let browser = Browser::new();
    let response = idp
        .sign_in(
            &browser,
            &server.url,
            name,
            ACCESS_TOKEN,
            |mut claims| {
                edit(&mut claims);
                key_a().sign(json!({}), &claims)
            },
            json!({"refresh_token": "refresh-token-one"}),
        )
        .await;
    assert_eq!(response.status(), 303, "{}", response.text().await.unwrap());
    browser
}

/// The status of `GET path` with `token` as the bearer.
async fn bearer_status(url: &str, path: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_idp_access_token_acts_only_for_its_identity_and_an_id_token_is_none() {
    let idp = HostileIdp::start().await;
    idp.answer_userinfo(json!({"sub": "alice-sub"}));
    let toml = format!(
        "{}accepted_audiences = [\"galaxy-api\"]\n\n{}",
        idp.idp_toml("evil"),
        "[idps.dev]\nkind = \"dev\"\n"
    );
    let server = Reserved::new().start(&toml).await;
    let url = &server.url;
    let browser = hostile_login(&server, &idp, "evil", |_| {}).await;
    let now = chrono_now();
    let access = json!({"iss": idp.issuer, "aud": "galaxy-api", "sub": "alice-sub", "iat": now,
                        "exp": now + 300, "client_id": "galaxy", "scope": "openid", "jti": "at-1"});
    let good = key_a().sign(json!({"typ": "at+jwt"}), &access);
    assert_eq!(bearer_status(url, "/api/users/me", &good).await, 200);
    // I71: it reads the tokens of the identity it was issued for, and nothing else.
    assert_eq!(
        bearer_status(url, "/api/users/me/tokens/evil", &good).await,
        200
    );
    assert_eq!(
        bearer_status(url, "/api/users/me/tokens/dev", &good).await,
        403,
        "another IdP's tokens"
    );
    let (key_id, _) = api_key(&browser, url, Some(1)).await;
    assert_bearer_cannot_manage(&server, &good, "dev", &key_id).await;

    // I72: an ID token (or one shaped like it) is no access token, whatever its audience.
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut claims = access.clone();
        edit(&mut claims);
        claims
    };
    let refused = [
        (
            "aud lists our client",
            key_a().sign(
                json!({}),
                &edited(&|c| c["aud"] = json!(["galaxy-api", CLIENT_ID])),
            ),
        ),
        (
            "a nonce",
            key_a().sign(json!({}), &edited(&|c| c["nonce"] = json!("n-1"))),
        ),
        (
            "an at_hash",
            key_a().sign(json!({}), &edited(&|c| c["at_hash"] = json!("x"))),
        ),
        (
            "typ of another token",
            key_a().sign(json!({"typ": "logout+jwt"}), &access),
        ),
    ];
    for (case, token) in refused {
        assert_eq!(
            bearer_status(url, "/api/users/me", &token).await,
            401,
            "{case}"
        );
    }
    // `typ: JWT` and no `typ` are what many IdPs send for access tokens.
    for header in [json!({"typ": "JWT"}), json!({})] {
        assert_eq!(
            bearer_status(url, "/api/users/me", &key_a().sign(header.clone(), &access)).await,
            200,
            "{header}"
        );
    }
}

#[test]
fn accepted_audiences_may_not_name_the_entrys_own_client() {
    // I72 at config time.
    let text = format!(
        "[idps.corp]\nkind = \"oidc\"\nissuer = \"https://sso.example.org\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"s\"\naccepted_audiences = [\"api\", \"{CLIENT_ID}\"]\n"
    );
    let errors = authnz::config::parse(
        std::path::Path::new("idps.toml"),
        &text,
        &authnz::registry::Registry::builtin(),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains(
            "idps.toml:6:30: idps.corp.accepted_audiences: lists this entry's own client_id"
        ),
        "{errors}"
    );
}

#[tokio::test]
async fn the_providers_policy_applies_to_bearer_tokens() {
    // I72: Google's hosted domain is enforced on a bearer token exactly as on a login.
    let idp = HostileIdp::start().await;
    idp.answer_userinfo(json!({"sub": "alice-sub", "hd": "example.test"}));
    let toml = format!(
        "[idps.google]\nkind = \"google\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"s\"\nhosted_domain = \"example.test\"\naccepted_audiences = [\"galaxy-api\"]\n",
        idp.issuer
    );
    let server = Reserved::new().start(&toml).await;
    hostile_login(&server, &idp, "google", |claims| {
        claims["hd"] = json!("example.test")
    })
    .await;
    let now = chrono_now();
    let token = |hd: Option<&str>| {
        let mut claims = json!({"iss": idp.issuer, "aud": "galaxy-api", "sub": "alice-sub",
                                "iat": now, "exp": now + 300});
        if let Some(hd) = hd {
            claims["hd"] = json!(hd);
        }
        key_a().sign(json!({}), &claims)
    };
    let url = &server.url;
    assert_eq!(
        bearer_status(url, "/api/users/me", &token(Some("example.test"))).await,
        200
    );
    assert_eq!(
        bearer_status(url, "/api/users/me", &token(Some("evil.test"))).await,
        401
    );
    assert_eq!(bearer_status(url, "/api/users/me", &token(None)).await, 401);
}

#[tokio::test]
async fn admins_are_pinned_to_an_identity_not_a_username() {
    // I74: `dev:ada` is ada at the first dev IdP; whoever is called "ada" elsewhere is not.
    let server = Reserved::new()
        .start_server(
            "admins = [\"dev:ada\"]\n",
            "[idps.dev]\nkind = \"dev\"\n\n[idps.dev2]\nkind = \"dev\"\n",
        )
        .await;
    let url = &server.url;
    let (ada, other) = (Browser::new(), Browser::new());
    // The look-alike comes first and takes the username "ada".
    let authorize = other.start_login(url, "dev2").await;
    let query = url::Url::parse(&authorize).unwrap();
    let mut form: Vec<(String, String)> = query.query_pairs().into_owned().collect();
    form.push(("username".into(), "ada".into()));
    form.push(("email".into(), "mallory@evil.test".into()));
    let signed = other
        .client
        .post(format!("{url}/dev-idp/authorize"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let callback = signed.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(other.get(&callback).await.status(), 303);
    let (_, me) = other.me(url).await;
    assert_eq!(me["username"], "ada", "the look-alike holds the username");
    let response = dev_login(&ada, url, "dev", "ada", None).await;
    assert_eq!(response.status(), 303);
    let (_, me) = ada.me(url).await;
    assert_eq!(me["username"], "ada2");
    let status = |browser: &Browser| {
        let url = format!("{url}/api/admin/status");
        let get = browser.client.get(url).send();
        async move { get.await.unwrap().status().as_u16() }
    };
    assert_eq!(status(&other).await, 403);
    assert_eq!(status(&ada).await, 200);
    // A bare username is a config error that says what to write.
    let errors = authnz::config::parse(
        std::path::Path::new("idps.toml"),
        "[server]\nadmins = [\"ada\"]\n\n[idps.dev]\nkind = \"dev\"\n",
        &authnz::registry::Registry::builtin(),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("idps.toml:2:11: server.admins: \"ada\" looks like a username")
            && errors.contains("<idp>:<subject>"),
        "{errors}"
    );
}

#[tokio::test]
async fn logout_needs_the_sessions_csrf_token() {
    // G64: a same-origin post without the token, or one with no Origin at all, logs nobody out.
    let server = Reserved::new().start("[idps.dev]\nkind = \"dev\"\n").await;
    let url = &server.url;
    let browser = Browser::new();
    dev_login(&browser, url, "dev", "ann", None).await;
    let logout = format!("{url}/authnz/logout");
    for (what, request) in [
        (
            "same origin, no token",
            browser.client.post(&logout).header("Origin", url),
        ),
        ("no Origin, no token", browser.client.post(&logout)),
        (
            "a wrong token",
            browser
                .client
                .post(&logout)
                .header("Origin", url)
                .header("X-CSRF-Token", "forged"),
        ),
    ] {
        assert_eq!(request.send().await.unwrap().status(), 403, "{what}");
        assert_eq!(browser.me(url).await.0, 200, "{what}: logged out");
    }
    // The page's own form posts the token as a field.
    let csrf = browser.csrf(url).await;
    let response = browser
        .client
        .post(&logout)
        .header("Origin", url)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(browser.me(url).await.0, 401);
    assert_eq!(server.count("sessions").await, 0);
}

/// The account page's form post, as the browser sends it (same origin).
async fn page_post(
    browser: &Browser,
    url: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    browser
        .client
        .post(format!("{url}{path}"))
        .header("Origin", url)
        .header("Accept", "text/html")
        .form(form)
        .send()
        .await
        .unwrap()
}

/// The value of the page's `#new-key` input: the new key's secret.
fn shown_secret(html: &str) -> Option<String> {
    let input = html.split("id=\"new-key\"").nth(1)?;
    let value = input.split("value=\"").nth(1)?;
    Some(value.split('"').next()?.to_string())
}

#[tokio::test]
async fn api_keys_are_made_and_deleted_on_the_account_page() {
    let server = Reserved::new().start("[idps.dev]\nkind = \"dev\"\n").await;
    let url = &server.url;
    let browser = Browser::new();
    dev_login(&browser, url, "dev", "ann", None).await;
    let csrf = browser.csrf(url).await;
    let start = format!("{url}/");
    assert!(browser
        .page(&start, None)
        .await
        .1
        .contains("id=\"new-key-form\""));

    // Without the session's CSRF token, or with a bad name or lifetime, nothing is made.
    for form in [
        vec![("name", "laptop"), ("expires_in_days", "30")],
        vec![
            ("csrf", "wrong"),
            ("name", "laptop"),
            ("expires_in_days", "30"),
        ],
        vec![
            ("csrf", csrf.as_str()),
            ("name", "  "),
            ("expires_in_days", "30"),
        ],
        vec![
            ("csrf", csrf.as_str()),
            ("name", "laptop"),
            ("expires_in_days", "0"),
        ],
        vec![
            ("csrf", csrf.as_str()),
            ("name", "laptop"),
            ("expires_in_days", "soon"),
        ],
    ] {
        let response = page_post(&browser, url, "/authnz/keys/new", &form).await;
        assert!(
            matches!(response.status().as_u16(), 400 | 403),
            "{form:?}: {}",
            response.status()
        );
        assert!(shown_secret(&response.text().await.unwrap()).is_none());
    }
    assert_eq!(server.count("api_keys").await, 0);

    // Made: the secret is on the answer page once (not stored by any cache), and works.
    let response = page_post(
        &browser,
        url,
        "/authnz/keys/new",
        &[
            ("csrf", &csrf),
            ("name", "laptop <scripts>"),
            ("expires_in_days", "30"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let scripts: Vec<&str> = csp
        .split(';')
        .map(str::trim)
        .filter(|directive| directive.starts_with("script-src"))
        .collect();
    assert_eq!(scripts, ["script-src 'self'"], "no inline script: {csp}");
    let html = response.text().await.unwrap();
    assert!(
        html.contains("laptop &lt;scripts&gt;"),
        "the name is escaped: {html}"
    );
    assert!(
        html.contains("<script src=\"/authnz/assets/copy.js\"></script>"),
        "{html}"
    );
    let secret = shown_secret(&html).expect("the secret is shown");
    assert!(secret.starts_with("authnz_"), "{secret}");
    assert_eq!(bearer_status(url, "/api/users/me", &secret).await, 200);
    let client = reqwest::Client::new();
    let keys: Value = browser
        .get(&format!("{url}/api/keys"))
        .await
        .json()
        .await
        .unwrap();
    let key = &keys[0];
    assert_eq!(key["name"], "laptop <scripts>");
    let lifetime = key["expires_at"].as_i64().unwrap() - key["created_at"].as_i64().unwrap();
    assert_eq!(lifetime, 30 * 86_400);
    let page = browser.page(&start, None).await.1;
    assert!(page.contains("id=\"key-list\""), "{page}");
    assert!(
        !page.contains(&secret),
        "the account page never shows the secret"
    );

    // The copy buttons' script is served from this origin.
    let script = client
        .get(format!("{url}/authnz/assets/copy.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(script.text().await.unwrap().contains("navigator.clipboard"));

    // A bearer credential can neither make nor delete keys on the page.
    let id = key["id"].as_str().unwrap().to_string();
    for (path, form) in [
        ("/authnz/keys/new", vec![("name", "minted")]),
        ("/authnz/keys/delete", vec![("id", id.as_str())]),
    ] {
        let response = client
            .post(format!("{url}{path}"))
            .bearer_auth(&secret)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
    }
    assert_eq!(server.count("api_keys").await, 1);

    // Another person cannot delete it; its owner can, and then it no longer works.
    let other = Browser::new();
    dev_login(&other, url, "dev", "bob", None).await;
    let other_csrf = other.csrf(url).await;
    let response = page_post(
        &other,
        url,
        "/authnz/keys/delete",
        &[("csrf", &other_csrf), ("id", &id)],
    )
    .await;
    assert_eq!(response.status(), 404);
    assert_eq!(server.count("api_keys").await, 1);
    let response = page_post(
        &browser,
        url,
        "/authnz/keys/delete",
        &[("csrf", &csrf), ("id", &id)],
    )
    .await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/#api-keys");
    assert_eq!(server.count("api_keys").await, 0);
    assert_eq!(bearer_status(url, "/api/users/me", &secret).await, 401);
}

//! Forward authentication for the apps behind a reverse proxy, asked directly as a proxy
//! would (`/authnz/auth?app=`): identity headers by preset, 401 with the login URL, redirect
//! mode, the apps' policies (403), `anonymous_if`, what is believed of the original request,
//! signed assertions checked against the JWKS (SECURITY J79–J82), and the login landing back
//! on the app.

use authnz_tests::hostile::HostileIdp;
use authnz_tests::jwt::verify_es256;
use authnz_tests::{oidc_idp_toml, Browser, OidcProvider, Reserved, TestServer};
use serde_json::{json, Value};

use crate::hardening::{begin, cookie_value, PUBLIC};
use crate::login_flow::dev_login;

/// A signing key file in its own directory (kept alive by the caller).
pub fn signing_key() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing.pem");
    let der = authnz::signing::SigningKey::generate_pkcs8().unwrap();
    std::fs::write(&path, authnz::signing::pkcs8_pem(&der)).unwrap();
    (dir, path.display().to_string())
}

const APPS: &str = r#"
[apps.open]
url = "http://127.0.0.1:9100/app"
assertion = true
anonymous_if = ["header:x-api-key", "query:key"]

[apps.verified]
url = "http://127.0.0.1:9101"
require_verified_email = true

[apps.staff]
url = "http://127.0.0.1:9102"
headers = "oauth2-proxy"
allowed_groups = ["corp:staff"]

[apps.devonly]
url = "http://127.0.0.1:9103"
headers = "authelia"
allowed_idps = ["dev"]

[apps.other]
url = "http://127.0.0.1:9104"
assertion = true
"#;

/// authnz with the oidc-provider as `corp` (accounts with groups, one unverified address),
/// the dev IdP as `dev`, loopback as a trusted proxy, and the apps above.
struct Setup {
    server: TestServer,
    _provider: OidcProvider,
    _key: tempfile::TempDir,
}

/// Which store the server under test keeps its accounts in.
#[derive(Clone, Copy)]
enum Backend {
    Sled,
    Postgres,
}

async fn setup(backend: Backend) -> Setup {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(
        &[reserved.callback("corp")],
        json!({
            "ada": {"groups": ["staff", "cn=x,ou=y"], "name": "Ada Lovelace"},
            "bob": {"email_verified": false, "groups": ["eng"]},
            "eve": {"email": "ada@example.test", "email_verified": false},
        }),
    );
    let (key_dir, key) = signing_key();
    let extra_server = match backend {
        Backend::Sled => String::new(),
        Backend::Postgres => {
            let cluster = authnz_tests::postgres::cluster();
            let secret = key_dir.path().join("authnz.key");
            authnz::crypto::write_new_key(&secret).unwrap();
            format!(
                "secret_key_file = \"{}\"\n{}",
                secret.display(),
                cluster.toml(&cluster.create_database())
            )
        }
    };
    let server = reserved
        .start_server(
            &format!(
                "trusted_proxies = [\"127.0.0.1\"]\nsigning_key_file = \"{key}\"\n{extra_server}"
            ),
            &format!(
                "{}\n[idps.dev]\nkind = \"dev\"\n{APPS}",
                oidc_idp_toml("corp", &provider.issuer)
            ),
        )
        .await;
    Setup {
        server,
        _provider: provider,
        _key: key_dir,
    }
}

/// Asks as a proxy would: `GET /authnz/auth?<query>` with the browser's cookies and `headers`.
async fn ask(
    browser: &Browser,
    server: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = browser.client.get(format!("{server}/authnz/auth?{query}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// The keys authnz publishes for apps to verify assertions with.
pub async fn published_keys(browser: &Browser, server: &str) -> Value {
    browser
        .get(&format!("{server}/.well-known/jwks.json"))
        .await
        .json()
        .await
        .unwrap()
}

/// The logout form of the page an app links to, posted as a browser does.
pub async fn logout_form(
    browser: &Browser,
    server: &str,
    csrf: &str,
    next: &str,
) -> reqwest::Response {
    browser
        .client
        .post(format!("{server}/authnz/logout"))
        .header("Origin", server)
        .header("Accept", "text/html")
        .form(&[("csrf", csrf), ("next", next)])
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

async fn signed_in(setup: &Setup, login: &str) -> (Browser, Value) {
    let browser = Browser::new();
    let done = browser
        .login_with_provider(&setup.server.url, "corp", login)
        .await;
    assert_eq!(done.status(), 303, "login of {login}");
    let (status, me) = browser.me(&setup.server.url).await;
    assert_eq!(status, 200);
    (browser, me)
}

#[tokio::test]
async fn a_signed_in_person_is_told_to_the_app_in_its_preset_with_a_verifiable_assertion() {
    told_to_the_app(&setup(Backend::Sled).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_app_is_told_the_same() {
    told_to_the_app(&setup(Backend::Postgres).await).await;
    only_verified_addresses(&setup(Backend::Postgres).await).await;
}

async fn told_to_the_app(setup: &Setup) {
    let url = &setup.server.url;
    let (browser, me) = signed_in(setup, "ada").await;
    let answer = ask(&browser, url, "app=open", &[]).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        header(&answer, "cache-control").as_deref(),
        Some("no-store")
    );
    let user_id = me["id"].as_str().unwrap();
    for (name, want) in [
        ("x-authnz-user", me["username"].as_str().unwrap()),
        ("x-authnz-user-id", user_id),
        ("x-authnz-name", "Ada Lovelace"),
        ("x-authnz-email", "ada@example.test"),
        ("x-authnz-idp", "corp"),
        // Prefixed by the IdP, sorted, a comma inside a group name encoded.
        ("x-authnz-groups", "corp:cn=x%2Cou=y,corp:staff"),
    ] {
        assert_eq!(header(&answer, name).as_deref(), Some(want), "{name}");
    }
    assert!(
        answer.bytes().await.unwrap().is_empty(),
        "a 200 has no body"
    );

    // The assertion verifies against the published keys and names this app alone (J82).
    let answer = ask(&browser, url, "app=open", &[]).await;
    let jwt = header(&answer, "x-authnz-assertion").unwrap();
    let jwks = published_keys(&browser, url).await;
    let claims = verify_es256(&jwt, &jwks).expect("the assertion verifies");
    assert_eq!(claims["iss"], url.as_str());
    assert_eq!(claims["aud"], "http://127.0.0.1:9100/app");
    assert_eq!(claims["sub"], user_id);
    assert_eq!(claims["email"], "ada@example.test");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["idp"], "corp");
    assert_eq!(claims["groups"], json!(["corp:cn=x,ou=y", "corp:staff"]));
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 60, "assertion_ttl_seconds");
    assert!(claims["auth_time"].as_i64().unwrap() <= iat);
    assert!(claims["jti"].as_str().is_some_and(|jti| jti.len() >= 16));
    let other = ask(&browser, url, "app=other", &[]).await;
    let other_claims = verify_es256(&header(&other, "x-authnz-assertion").unwrap(), &jwks).unwrap();
    assert_eq!(other_claims["aud"], "http://127.0.0.1:9104");
    assert_ne!(other_claims["jti"], claims["jti"]);
    let mut tampered = jwt.clone();
    tampered.replace_range(jwt.len() - 4.., "AAAA");
    assert!(verify_es256(&tampered, &jwks).is_none());
    // Without `assertion`, the header is there, empty.
    let plain = ask(&browser, url, "app=verified", &[]).await;
    assert_eq!(plain.status(), 200);
    assert_eq!(header(&plain, "x-authnz-assertion").as_deref(), Some(""));

    // The other presets.
    let oauth2 = ask(&browser, url, "app=staff", &[]).await;
    assert_eq!(oauth2.status(), 200, "ada is in corp:staff");
    assert_eq!(
        header(&oauth2, "x-auth-request-user").as_deref(),
        Some(user_id)
    );
    assert_eq!(
        header(&oauth2, "x-auth-request-email").as_deref(),
        Some("ada@example.test")
    );
    assert_eq!(
        header(&oauth2, "x-auth-request-preferred-username").as_deref(),
        me["username"].as_str()
    );
    assert!(
        header(&oauth2, "x-authnz-user").is_none(),
        "one preset only"
    );

    // HEAD is answered like GET, headers and all.
    let head = browser
        .client
        .head(format!("{url}/authnz/auth?app=open"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(&head, "x-authnz-email").as_deref(),
        Some("ada@example.test")
    );

    // An API key of the account is a credential too; its groups are the account's.
    let created = browser
        .client
        .post(format!("{url}/api/keys"))
        .header("Origin", url.as_str())
        .header("X-CSRF-Token", me["csrf_token"].as_str().unwrap())
        .json(&json!({"name": "proxy test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let key: Value = created.json().await.unwrap();
    let script = Browser::new();
    let bearer = format!("Bearer {}", key["key"].as_str().unwrap());
    let by_key = ask(&script, url, "app=open", &[("authorization", &bearer)]).await;
    assert_eq!(by_key.status(), 200);
    assert_eq!(
        header(&by_key, "x-authnz-user-id").as_deref(),
        Some(user_id)
    );
    assert_eq!(header(&by_key, "x-authnz-idp").as_deref(), Some(""));

    // Unknown apps are named as such.
    let unknown = ask(&browser, url, "app=nope", &[]).await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"], "unknown_app");

    let metrics = browser
        .get(&format!("{url}/metrics"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("authnz_forward_auth_total{app=\"open\",outcome=\"admitted\"} 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn only_a_verified_address_the_account_owns_reaches_the_app() {
    only_verified_addresses(&setup(Backend::Sled).await).await;
}

async fn only_verified_addresses(setup: &Setup) {
    let url = &setup.server.url;
    // Bob's IdP did not verify his address: no app hears of it (J80)...
    let (bob, _) = signed_in(setup, "bob").await;
    let answer = ask(&bob, url, "app=open", &[]).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(header(&answer, "x-authnz-email").as_deref(), Some(""));
    let jwks = published_keys(&bob, url).await;
    let claims = verify_es256(&header(&answer, "x-authnz-assertion").unwrap(), &jwks).unwrap();
    assert!(claims.get("email").is_none() && claims.get("email_verified").is_none());
    // ...and an app that needs one refuses him, with a reason and no redirect: a page for a
    // browser (Caddy and Traefik hand it over), JSON for anyone else.
    let refused = ask(
        &bob,
        url,
        "app=verified&mode=redirect",
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        header(&refused, "cache-control").as_deref(),
        Some("no-store")
    );
    let page = refused.text().await.unwrap();
    assert!(
        page.contains("needs an email address your identity provider has verified"),
        "{page}"
    );
    let refused = ask(&bob, url, "app=verified", &[]).await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "email_not_verified");
    // Not in corp:staff.
    let refused = ask(&bob, url, "app=staff", &[]).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "not_in_group"
    );
    // Signed in with corp, where the app admits dev sessions only.
    let refused = ask(&bob, url, "app=devonly", &[]).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "idp_not_allowed"
    );

    // Eve's IdP claims Ada's address, unverified: an app that keys accounts by address
    // (Galaxy does) must never hear it, or Eve would be handed Ada's account there.
    let (eve, _) = signed_in(setup, "eve").await;
    let for_eve = ask(&eve, url, "app=open", &[]).await;
    assert_eq!(for_eve.status(), 200);
    assert_eq!(header(&for_eve, "x-authnz-email").as_deref(), Some(""));
    assert_eq!(ask(&eve, url, "app=verified", &[]).await.status(), 403);

    // A dev session passes devonly, in the authelia preset.
    let dev = Browser::new();
    assert_eq!(
        dev_login(&dev, url, "dev", "carol", None).await.status(),
        303
    );
    let answer = ask(&dev, url, "app=devonly", &[]).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(header(&answer, "remote-user").as_deref(), Some("carol"));
    assert_eq!(header(&answer, "remote-groups").as_deref(), Some(""));
    let metrics = dev
        .get(&format!("{url}/metrics"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "authnz_forward_auth_total{app=\"verified\",outcome=\"email_not_verified\"} 3"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_a_session_the_proxy_learns_where_to_send_the_person() {
    let setup = setup(Backend::Sled).await;
    let url = &setup.server.url;
    let nobody = Browser::new();
    let original = "http://127.0.0.1:9100/app/histories?page=2";
    let with_next = format!(
        "{url}/?next={}",
        url::form_urlencoded::byte_serialize(original.as_bytes()).collect::<String>()
    );

    // No credential: 401, a challenge, the login URL (to the start page without an original).
    let answer = ask(&nobody, url, "app=open", &[]).await;
    assert_eq!(answer.status(), 401);
    assert_eq!(
        header(&answer, "cache-control").as_deref(),
        Some("no-store")
    );
    assert!(header(&answer, "www-authenticate").is_some());
    assert_eq!(
        header(&answer, "x-authnz-login-url"),
        Some(format!("{url}/"))
    );
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");

    // The trusted proxy names the original request: it becomes `next`.
    let told = [("x-original-url", original), ("x-original-method", "GET")];
    let answer = ask(&nobody, url, "app=open", &told).await;
    assert_eq!(
        header(&answer, "x-authnz-login-url"),
        Some(with_next.clone())
    );
    let forwarded = [
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "127.0.0.1:9100"),
        ("x-forwarded-uri", "/app/histories?page=2"),
        ("x-forwarded-method", "GET"),
    ];
    let answer = ask(&nobody, url, "app=open", &forwarded).await;
    assert_eq!(
        header(&answer, "x-authnz-login-url"),
        Some(with_next.clone())
    );
    // A comma belongs to a URL (a query's list), not to a list of URLs.
    let listed = "http://127.0.0.1:9100/app/datasets?ids=1,2";
    let answer = ask(&nobody, url, "app=open", &[("x-original-url", listed)]).await;
    assert_eq!(
        header(&answer, "x-authnz-login-url"),
        Some(format!(
            "{url}/?next={}",
            url::form_urlencoded::byte_serialize(listed.as_bytes()).collect::<String>()
        ))
    );
    // An original URL off the app (another origin, another path, userinfo) is not believed.
    for off in [
        "http://evil.example/app/",
        "http://127.0.0.1:9100/other",
        "http://127.0.0.1:9100@evil.example/app/",
        "http://127.0.0.1:9101/app/",
    ] {
        let answer = ask(&nobody, url, "app=open", &[("x-original-url", off)]).await;
        assert_eq!(
            header(&answer, "x-authnz-login-url"),
            Some(format!("{url}/")),
            "{off}"
        );
    }
    // Nor another host, or a list of hosts (whichever of them a proxy chain appended).
    for host in [
        "evil.example",
        "127.0.0.1:9100, evil.example",
        "evil.example, 127.0.0.1:9100",
    ] {
        let told = [
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", host),
            ("x-forwarded-uri", "/app/"),
        ];
        let answer = ask(&nobody, url, "app=open", &told).await;
        assert_eq!(
            header(&answer, "x-authnz-login-url"),
            Some(format!("{url}/")),
            "{host}"
        );
    }

    // mode=redirect: a browser navigation gets a 302 there; anything else still 401.
    let page = [
        ("x-original-url", original),
        ("x-original-method", "GET"),
        ("accept", "text/html,application/xhtml+xml"),
        ("sec-fetch-mode", "navigate"),
    ];
    let answer = ask(&nobody, url, "app=open&mode=redirect", &page).await;
    assert_eq!(answer.status(), 302);
    assert_eq!(header(&answer, "location"), Some(with_next.clone()));
    assert_eq!(
        header(&answer, "cache-control").as_deref(),
        Some("no-store")
    );
    let not_navigations: [&[(&str, &str)]; 5] = [
        &[("accept", "application/json")],
        &[
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest"),
        ],
        &[("accept", "text/html"), ("sec-fetch-mode", "cors")],
        &[
            ("accept", "text/html"),
            ("x-original-url", original),
            ("x-original-method", "POST"),
        ],
        &[("accept", "text/html"), ("x-forwarded-method", "DELETE")],
    ];
    for headers in not_navigations {
        let answer = ask(&nobody, url, "app=open&mode=redirect", headers).await;
        assert_eq!(answer.status(), 401, "{headers:?}");
    }
    assert_eq!(
        ask(&nobody, url, "app=open", &page).await.status(),
        401,
        "mode=status never redirects (nginx auth_request)"
    );

    // A stale or forged cookie or key is no session either.
    for cookie in ["authnz_session=forged", "authnz_session="] {
        let answer = ask(&nobody, url, "app=open", &[("cookie", cookie)]).await;
        assert_eq!(answer.status(), 401, "{cookie}");
    }
    let answer = ask(
        &nobody,
        url,
        "app=open",
        &[("authorization", "Bearer authnz_forged")],
    )
    .await;
    assert_eq!(answer.status(), 401);

    // `anonymous_if`: the app checks that credential itself; every identity header goes empty,
    // so a proxy overwrites a client's own copy (J79).
    let spoof = [("x-api-key", "k-123"), ("x-authnz-user", "admin")];
    let answer = ask(&nobody, url, "app=open", &spoof).await;
    assert_eq!(answer.status(), 200);
    for name in [
        "x-authnz-user",
        "x-authnz-user-id",
        "x-authnz-name",
        "x-authnz-email",
        "x-authnz-idp",
        "x-authnz-groups",
        "x-authnz-assertion",
    ] {
        assert_eq!(header(&answer, name).as_deref(), Some(""), "{name}");
    }
    let keyed = "http://127.0.0.1:9100/app/api/histories?key=k-123";
    let answer = ask(&nobody, url, "app=open", &[("x-original-url", keyed)]).await;
    assert_eq!(answer.status(), 200, "query:key in the original URL");
    for (query, headers) in [
        ("app=open&key=k-123", vec![]),
        ("app=open", vec![("x-api-key", "")]),
        (
            "app=open",
            vec![("x-original-url", "http://127.0.0.1:9100/app/?key=")],
        ),
        ("app=verified", vec![("x-api-key", "k-123")]),
    ] {
        let answer = ask(&nobody, url, query, &headers).await;
        assert_eq!(answer.status(), 401, "{query} {headers:?}");
    }
    // Signed in, the session wins over an anonymous credential.
    let (ada, _) = signed_in(&setup, "ada").await;
    let answer = ask(&ada, url, "app=open", &[("x-api-key", "k-123")]).await;
    assert_eq!(
        header(&answer, "x-authnz-email").as_deref(),
        Some("ada@example.test")
    );
}

#[tokio::test]
async fn an_untrusted_peer_cannot_name_the_original_request() {
    // No trusted_proxies: what the peer says of the original request is ignored.
    let server = Reserved::new()
        .start(
            "[idps.dev]\nkind = \"dev\"\n\n[apps.open]\nurl = \"http://127.0.0.1:9100/app\"\nanonymous_if = [\"query:key\"]\n",
        )
        .await;
    let url = &server.url;
    let nobody = Browser::new();
    let told = [
        ("x-original-url", "http://127.0.0.1:9100/app/x?key=k-1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "127.0.0.1:9100"),
        ("x-forwarded-uri", "/app/x?key=k-1"),
    ];
    let answer = ask(&nobody, url, "app=open", &told).await;
    assert_eq!(
        answer.status(),
        401,
        "query:key was believed from an untrusted peer"
    );
    assert_eq!(
        header(&answer, "x-authnz-login-url"),
        Some(format!("{url}/"))
    );
}

#[tokio::test]
async fn the_login_lands_back_on_the_app_and_the_logout_goes_on_to_it() {
    let server = Reserved::new()
        .start("[idps.dev]\nkind = \"dev\"\n\n[apps.open]\nurl = \"http://127.0.0.1:9100/app\"\n")
        .await;
    let url = &server.url;
    let original = "http://127.0.0.1:9100/app/histories?page=2";
    let encoded: String = url::form_urlencoded::byte_serialize(original.as_bytes()).collect();

    // The sign-in page carries `next` into every IdP button...
    let browser = Browser::new();
    let page = browser
        .get(&format!("{url}/?next={encoded}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("href=\"/authnz/dev/login?next={encoded}\"")),
        "{page}"
    );
    // ...and one off the apps is dropped.
    let page = browser
        .get(&format!("{url}/?next=http%3A%2F%2Fevil.example%2Fapp"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("href=\"/authnz/dev/login\""), "{page}");

    // The login ends on the app.
    let done = dev_login(&browser, url, "dev", "ada", Some(original)).await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], original);
    for refused in [
        "http://evil.example/app",
        "http://127.0.0.1:9100@evil.example/app",
        "http://127.0.0.1:9100/other",
        "http://127.0.0.1:9100/app/%0d%0aSet-Cookie:%20x=1",
    ] {
        let other = Browser::new();
        let done = dev_login(&other, url, "dev", "bob", Some(refused)).await;
        assert_eq!(done.headers()["location"], format!("{url}/"), "{refused}");
    }

    // Signed in, the page links onward rather than redirecting (no loop).
    let page = browser
        .get(&format!("{url}/?next={encoded}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"continue\""), "{page}");

    // An app's logout link: a page whose form posts the logout, then on to `next`.
    let page = browser
        .get(&format!("{url}/authnz/logout?next={encoded}"))
        .await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let csrf = browser.csrf(url).await;
    assert!(
        page.contains(&format!("value=\"{csrf}\"")),
        "the form carries the CSRF token"
    );
    assert!(page.contains("name=\"next\""), "{page}");
    let (status, _) = browser.me(url).await;
    assert_eq!(status, 200, "GET never logs out");
    let out = logout_form(&browser, url, &csrf, original).await;
    assert_eq!(out.status(), 303);
    assert_eq!(out.headers()["location"], original);
    assert_eq!(browser.me(url).await.0, 401);
}

#[tokio::test]
async fn with_a_cookie_domain_the_session_reaches_the_apps_subdomains() {
    let idp = HostileIdp::start().await;
    idp.answer_userinfo(json!({"sub": "alice-sub"}));
    let server = Reserved::new()
        .start_behind_https_with(
            PUBLIC,
            "cookie_domain = \"example.test\"\n",
            &format!(
                "{}\n[apps.galaxy]\nurl = \"https://galaxy.example.test\"\n",
                idp.idp_toml("evil")
            ),
        )
        .await;
    let url = &server.url;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The pre-login cookie stays on this host (`__Host-`); the session is for the domain.
    let (binding, callback) = begin(&client, url, &idp).await;
    let done = client
        .get(&callback)
        .header("Cookie", format!("__Host-authnz_login={binding}"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    let (session, set) = cookie_value(&done, "__Secure-authnz_session");
    assert!(
        set.contains("; Domain=example.test;")
            && set.contains("; Path=/;")
            && set.contains("Secure")
            && set.contains("HttpOnly"),
        "{set}"
    );
    let auth = |cookie: String| {
        let request = client
            .get(format!("{url}/authnz/auth?app=galaxy"))
            .header("Cookie", cookie);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        auth(format!("__Secure-authnz_session={session}")).await,
        200
    );
    // The host-only and the plain forms are not this server's session cookie any more.
    assert_eq!(auth(format!("__Host-authnz_session={session}")).await, 401);
    assert_eq!(auth(format!("authnz_session={session}")).await, 401);
    // The logout clears the same cookie it set.
    let me: Value = client
        .get(format!("{url}/api/users/me"))
        .header("Cookie", format!("__Secure-authnz_session={session}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let out = client
        .post(format!("{url}/authnz/logout"))
        .header("Cookie", format!("__Secure-authnz_session={session}"))
        .header("X-CSRF-Token", me["csrf_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    let (cleared, set) = cookie_value(&out, "__Secure-authnz_session");
    assert!(
        cleared.is_empty() && set.contains("Domain=example.test") && set.contains("Max-Age=0"),
        "{set}"
    );
    assert_eq!(
        auth(format!("__Secure-authnz_session={session}")).await,
        401
    );
}

#[tokio::test]
async fn a_logout_through_the_idps_end_session_page_still_lands_on_the_app() {
    let reserved = Reserved::new();
    let home = format!("{}/", reserved.url);
    let provider = OidcProvider::start_with(
        &[reserved.callback("corp")],
        json!({}),
        json!({"post_logout_redirect_uris": [home]}),
    );
    let server = reserved
        .start(&format!(
            "{}\n[apps.open]\nurl = \"http://127.0.0.1:9100/app\"\n",
            oidc_idp_toml("corp", &provider.issuer)
        ))
        .await;
    let url = &server.url;
    let app = "http://127.0.0.1:9100/app/after-logout";
    let browser = Browser::new();
    assert_eq!(
        browser
            .login_with_provider(url, "corp", "ada")
            .await
            .status(),
        303
    );
    let csrf = browser.csrf(url).await;
    let out = logout_form(&browser, url, &csrf, app).await;
    assert_eq!(out.status(), 303);
    let end_session = out.headers()["location"].to_str().unwrap().to_string();
    assert!(end_session.starts_with(&provider.issuer), "{end_session}");
    let cookies: Vec<String> = out
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_string())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("authnz_session=;"))
            && cookies
                .iter()
                .any(|c| c.starts_with("authnz_logout_next=http")),
        "{cookies:?}"
    );
    // The provider asks to confirm, then returns to the start page...
    let mut at = end_session;
    let mut back = None;
    for _ in 0..5 {
        let answer = browser.get(&at).await;
        if answer.status().is_redirection() {
            let location = answer.headers()["location"].to_str().unwrap();
            let next = url::Url::parse(&at)
                .unwrap()
                .join(location)
                .unwrap()
                .to_string();
            if next.starts_with(&home) {
                back = Some(next);
                break;
            }
            at = next;
            continue;
        }
        let html = answer.text().await.unwrap();
        let attribute = |name: &str| {
            html.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("no {name} in {html}"))
                .to_string()
        };
        let action = url::Url::parse(&at)
            .unwrap()
            .join(&attribute("action"))
            .unwrap();
        let xsrf = html
            .split("name=\"xsrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no xsrf in {html}"))
            .to_string();
        let confirmed = browser
            .client
            .post(action.as_str())
            .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
            .send()
            .await
            .unwrap();
        let location = confirmed.headers()["location"].to_str().unwrap();
        at = action.join(location).unwrap().to_string();
        if at.starts_with(&home) {
            back = Some(at.clone());
            break;
        }
    }
    let back = back.expect("the provider returned to the start page");
    // ...which goes on to the app, once.
    let onward = browser.get(&back).await;
    assert_eq!(onward.status(), 303);
    assert_eq!(onward.headers()["location"], app);
    assert_eq!(browser.get(&home).await.status(), 200, "only once");
    assert_eq!(browser.me(url).await.0, 401);
}

/// Status, headers (but the request id, the date and the fresh assertion) and body.
async fn answer_of(response: reqwest::Response) -> (u16, Vec<(String, String)>, String) {
    let status = response.status().as_u16();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| {
            !["x-request-id", "date", "x-authnz-assertion"].contains(&name.as_str())
        })
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into(),
            )
        })
        .collect();
    headers.sort();
    let assertion = response.headers().contains_key("x-authnz-assertion");
    headers.push(("(assertion)".into(), assertion.to_string()));
    (status, headers, response.text().await.unwrap())
}

/// The check and `/api/users/me` with a plain session cookie are answered past the routing
/// layers; an extra parameter sends the same question through the documented operation.
#[tokio::test]
async fn the_hot_path_answers_as_the_documented_operations() {
    let setup = setup(Backend::Sled).await;
    let url = &setup.server.url;
    let (ada, _) = signed_in(&setup, "ada").await;
    let (bob, _) = signed_in(&setup, "bob").await;
    let stranger = reqwest::Client::new();
    let unknown = "authnz_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let session = |browser: &Browser| {
        format!(
            "authnz_session={}",
            browser.cookie(url, "authnz_session").unwrap()
        )
    };
    let mut cases = Vec::new();
    for (who, cookie) in [
        ("ada", session(&ada)),
        ("bob", session(&bob)),
        ("unknown", unknown.to_string()),
    ] {
        for query in [
            "app=open",
            "app=verified",
            "app=staff",
            "app=devonly",
            "app=other",
            "app=nosuch",
            "app=open&mode=redirect",
        ] {
            cases.push((
                who,
                cookie.clone(),
                format!("/authnz/auth?{query}"),
                format!("/authnz/auth?{query}&x=1"),
            ));
        }
        cases.push((
            who,
            cookie.clone(),
            "/api/users/me".into(),
            "/api/users/me?x=1".into(),
        ));
    }
    for (who, cookie, hot, documented) in cases {
        let ask = |path: String| {
            stranger
                .get(format!("{url}{path}"))
                .header("Cookie", &cookie)
                .header("Accept", "text/html")
                .header("Sec-Fetch-Mode", "navigate")
                .header("X-Original-URL", "http://127.0.0.1:9100/app/page?x=1")
                .send()
        };
        let (hot_answer, documented_answer) = (
            answer_of(ask(hot.clone()).await.unwrap()).await,
            answer_of(ask(documented).await.unwrap()).await,
        );
        assert_eq!(hot_answer, documented_answer, "{who} {hot}");
    }
}

/// What varies from one login to the next (state, nonce, PKCE challenge, the binding cookie)
/// replaced by `X`.
fn without_fresh_values(text: &str) -> String {
    let mut out = text.to_string();
    for name in [
        "state=",
        "nonce=",
        "code_challenge=",
        "authnz_login=",
        "request_uri=",
    ] {
        let mut rest = out.as_str();
        let mut replaced = String::new();
        while let Some(at) = rest.find(name) {
            replaced.push_str(&rest[..at + name.len()]);
            rest = &rest[at + name.len()..];
            let end = rest.find(['&', ';', '"']).unwrap_or(rest.len());
            replaced.push('X');
            rest = &rest[end..];
        }
        replaced.push_str(rest);
        out = replaced;
    }
    out
}

/// The start of a login takes the hot path too: its answers equal the documented operation's
/// but for the fresh values.
#[tokio::test]
async fn the_hot_login_answers_as_the_documented_operation() {
    let setup = setup(Backend::Sled).await;
    let url = &setup.server.url;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for accept in ["application/json", "text/html"] {
        for (hot, documented) in [
            ("/authnz/corp/login", "/authnz/corp/login?x=1"),
            (
                "/authnz/corp/login?next=%2Faccount",
                "/authnz/corp/login?next=%2Faccount&x=1",
            ),
            (
                "/authnz/dev/login?next=http%3A%2F%2F127.0.0.1%3A9100%2Fapp%2Fp",
                "/authnz/dev/login?next=http%3A%2F%2F127.0.0.1%3A9100%2Fapp%2Fp&x=1",
            ),
            (
                "/authnz/corp/login?next=https%3A%2F%2Fevil.example",
                "/authnz/corp/login?x=1&next=https%3A%2F%2Fevil.example",
            ),
            ("/authnz/nosuch/login", "/authnz/nosuch/login?x=1"),
        ] {
            let ask = |path: &str| {
                client
                    .get(format!("{url}{path}"))
                    .header("Accept", accept)
                    .send()
            };
            let (status, headers, body) = answer_of(ask(hot).await.unwrap()).await;
            let hot_answer = (
                status,
                without_fresh_values(&format!("{headers:?}")),
                without_fresh_values(&body),
            );
            let (status, headers, body) = answer_of(ask(documented).await.unwrap()).await;
            let documented_answer = (
                status,
                without_fresh_values(&format!("{headers:?}")),
                without_fresh_values(&body),
            );
            assert_eq!(hot_answer, documented_answer, "{accept} {hot}");
        }
    }
    // And `next` is kept: the hot login lands on it.
    let browser = Browser::new();
    let response = browser
        .get(&format!("{url}/authnz/corp/login?next=%2Faccount"))
        .await;
    let body: Value = response.json().await.unwrap();
    let callback = browser
        .sign_in_at_provider(
            body["redirect_uri"].as_str().unwrap(),
            "ada",
            &format!("{url}/authnz/corp/callback"),
        )
        .await;
    let landed = browser.get(&callback).await;
    assert_eq!(landed.status(), 303);
    assert_eq!(landed.headers()["location"], format!("{url}/account"));
}

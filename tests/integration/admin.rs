//! Running it: hot reload of `idps.toml` with logins in flight, a broken reload that changes
//! nothing, the admin API, health and metrics.

use authnz_tests::{oidc_idp_toml, Browser, OidcProvider, Reserved, TestServer};
use serde_json::json;

/// Replaces the `[idps.*]` part of the server's config file.
fn rewrite_idps(server: &TestServer, idps: &str) {
    let path = server.dir.path().join("idps.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let head = &text[..text.find("[idps.").unwrap_or(text.len())];
    std::fs::write(&path, format!("{head}{idps}")).unwrap();
}

fn with_label(name: &str, issuer: &str, label: &str) -> String {
    oidc_idp_toml(name, issuer).replace("label = \"Corp\"", &format!("label = \"{label}\""))
}

#[tokio::test]
async fn reload_swaps_idps_while_logins_are_in_flight() {
    let reserved = Reserved::new();
    let names = ["corp", "lab", "fresh"];
    let callbacks: Vec<String> = names.iter().map(|name| reserved.callback(name)).collect();
    let provider = OidcProvider::start(&callbacks, json!({}));
    let issuer = provider.issuer.clone();
    let server = reserved
        .start(&format!(
            "{}{}",
            with_label("corp", &issuer, "Corp"),
            with_label("lab", &issuer, "Lab")
        ))
        .await;
    let url = server.url.clone();

    // Someone logs in with lab before it goes away; two more logins are half-way through.
    let lab_user = Browser::new();
    assert_eq!(
        lab_user
            .login_with_provider(&url, "lab", "larry")
            .await
            .status(),
        303
    );
    let (in_flight_corp, in_flight_lab) = (Browser::new(), Browser::new());
    let corp_authorize = in_flight_corp.start_login(&url, "corp").await;
    let corp_callback = in_flight_corp
        .sign_in_at_provider(
            &corp_authorize,
            "carol",
            &format!("{url}/authnz/corp/callback"),
        )
        .await;
    let lab_authorize = in_flight_lab.start_login(&url, "lab").await;
    let lab_callback = in_flight_lab
        .sign_in_at_provider(
            &lab_authorize,
            "lena",
            &format!("{url}/authnz/lab/callback"),
        )
        .await;

    // The new config: corp relabelled, lab removed, fresh added.
    let before = server.app.current().number;
    rewrite_idps(
        &server,
        &format!(
            "{}{}",
            with_label("corp", &issuer, "Corp (new)"),
            with_label("fresh", &issuer, "Fresh")
        ),
    );
    let generation = server.app.reload().await.expect("the new config loads");
    assert!(generation > before);

    // The logins in flight finish against what they started with, lab included.
    assert_eq!(in_flight_corp.get(&corp_callback).await.status(), 303);
    assert_eq!(
        in_flight_lab.get(&lab_callback).await.status(),
        303,
        "a removed IdP's login in flight completes"
    );

    // From now on: the new list, lab is 404, its users stay, fresh works.
    let browser = Browser::new();
    let list: serde_json::Value = browser
        .get(&format!("{url}/authnz"))
        .await
        .json()
        .await
        .unwrap();
    let labels: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|idp| idp["label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(labels, ["Corp (new)", "Fresh"]);
    assert_eq!(
        browser
            .get(&format!("{url}/authnz/lab/login"))
            .await
            .status(),
        404
    );
    assert_eq!(
        lab_user.me(&url).await.0,
        200,
        "a removed IdP's users and sessions stay"
    );
    assert!(server
        .app
        .store
        .identity("lab", "larry")
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        browser
            .login_with_provider(&url, "fresh", "fran")
            .await
            .status(),
        303
    );

    // A broken config changes nothing and says why, on /healthz too.
    rewrite_idps(&server, "[idps.fresh]\nkind = \"oidcc\"\n");
    let error = server
        .app
        .reload()
        .await
        .expect_err("a broken config is refused");
    assert!(
        error.contains("idps.fresh.kind: unknown kind \"oidcc\""),
        "{error}"
    );
    let health: serde_json::Value = browser
        .get(&format!("{url}/healthz"))
        .await
        .json()
        .await
        .unwrap();
    // Publicly without the file's path; the admin API has the problems.
    let said = health["reload_error"].as_str().unwrap();
    assert!(
        said.contains("refused") && !said.contains("idps.toml"),
        "{health}"
    );
    let detail = authnz::http::health(&server.app, true).await;
    assert!(
        detail
            .reload_error
            .as_deref()
            .is_some_and(|error| error.contains("unknown kind")),
        "{detail:?}"
    );
    assert_eq!(health["generation"], generation);
    assert_eq!(
        Browser::new()
            .login_with_provider(&url, "fresh", "fred")
            .await
            .status(),
        303,
        "the old config serves on"
    );

    // Fixed: in force again, the error gone.
    rewrite_idps(&server, &with_label("fresh", &issuer, "Fresh"));
    assert!(server.app.reload().await.is_ok());
    let health: serde_json::Value = browser
        .get(&format!("{url}/healthz"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(health["reload_error"], serde_json::Value::Null);

    // Metrics moved: logins started/completed/failed, reloads, reload failures.
    assert_eq!(
        browser
            .get(&format!("{url}/authnz/fresh/callback?code=x&state=forged"))
            .await
            .status(),
        400
    );
    let metrics = browser
        .get(&format!("{url}/metrics"))
        .await
        .text()
        .await
        .unwrap();
    for line in [
        "authnz_logins_completed_total{idp=\"fresh\"} 2",
        "authnz_logins_failed_total{idp=\"fresh\",reason=\"invalid_state\"} 1",
        "authnz_logins_started_total{idp=\"lab\"} 2",
        "authnz_reload_failures_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("authnz_callback_duration_seconds_count{idp=\"corp\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authnz_jwks_fetches_total{idp=\"fresh\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_admin_api_is_for_admins() {
    let server = Reserved::new()
        .start_server("admins = [\"dev:ada\"]\n", "[idps.dev]\nkind = \"dev\"\n")
        .await;
    let url = server.url.clone();
    let (ada, bob) = (Browser::new(), Browser::new());
    crate::login_flow::dev_login(&ada, &url, "dev", "ada", None).await;
    crate::login_flow::dev_login(&bob, &url, "dev", "bob", None).await;
    assert_eq!(
        bob.get(&format!("{url}/api/admin/status")).await.status(),
        403
    );
    assert_eq!(
        Browser::new()
            .get(&format!("{url}/api/admin/status"))
            .await
            .status(),
        401
    );
    let status = ada.get(&format!("{url}/api/admin/status")).await;
    assert_eq!(status.status(), 200);
    let status: serde_json::Value = status.json().await.unwrap();
    assert_eq!(status["health"]["idps"][0]["name"], "dev");
    assert_eq!(bob.post(&url, "/api/admin/reload").await.status(), 403);
    let response = ada.post(&url, "/api/admin/reload").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["generation"].as_u64().unwrap() >= 2);
    // Invalid: 422 with every problem, nothing changed.
    let path = server.dir.path().join("idps.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("kind = \"dev\"", "kind = \"dev\"\ncolour = \"blue\""),
    )
    .unwrap();
    let response = ada.post(&url, "/api/admin/reload").await;
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("idps.dev.colour: unknown key"),
        "{body}"
    );
    assert_eq!(ada.me(&url).await.0, 200);
}

#[tokio::test]
async fn saving_the_file_reloads_it() {
    let server = Reserved::new()
        .start("[idps.dev]\nkind = \"dev\"\nlabel = \"Before\"\n")
        .await;
    let before = server.app.current().number;
    rewrite_idps(&server, "[idps.dev]\nkind = \"dev\"\nlabel = \"After\"\n");
    let mut reloaded = false;
    for _ in 0..40 {
        if server.app.current().number > before {
            reloaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        reloaded,
        "the watched file was not reloaded: {:?}",
        server.app.reload_status()
    );
    let list: serde_json::Value = Browser::new()
        .get(&format!("{}/authnz", server.url))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["label"], "After");
}

/// A reload keeps what an unchanged IdP discovered: no refetch, and an IdP that is down at
/// that moment stays usable. A change that discovery depends on (here the scopes) discovers
/// anew.
#[tokio::test]
async fn a_reload_keeps_the_discovery_of_unchanged_idps() {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(&[reserved.callback("corp")], json!({}));
    let issuer = provider.issuer.clone();
    // `par = "never"`: a login then starts without the provider, which goes away below.
    let never = |label: &str| format!("{}par = \"never\"\n", with_label("corp", &issuer, label));
    let server = reserved.start(&never("Corp")).await;
    let url = server.url.clone();
    let corp = server.app.current().idp("corp").unwrap();
    assert!(corp.discovered().await.is_ok());
    let fetches = |idp: &authnz::protocol::Idp| {
        use std::sync::atomic::Ordering::Relaxed;
        (
            idp.counters.discoveries.load(Relaxed),
            idp.counters.jwks_fetches.load(Relaxed),
        )
    };
    assert_eq!(fetches(&corp), (1, 1));

    // The provider goes down; the label changes; the reload keeps the discovery.
    drop(provider);
    rewrite_idps(&server, &never("Corp (new)"));
    server.app.reload().await.expect("the new config loads");
    let kept = server.app.current().idp("corp").unwrap();
    assert_eq!(kept.config.label, "Corp (new)");
    assert!(kept.is_ready().await, "ready at once, without the network");
    let started = Browser::new()
        .get(&format!("{url}/authnz/corp/login"))
        .await;
    assert_eq!(started.status(), 200, "logins still start");
    assert_eq!(fetches(&kept), (0, 0), "nothing was fetched again");

    // Other scopes: discovered anew, which fails while the provider is down.
    rewrite_idps(
        &server,
        &format!(
            "{}scopes = [\"openid\", \"email\"]\n",
            with_label("corp", &issuer, "Corp (new)")
        ),
    );
    server.app.reload().await.expect("the new config loads");
    let changed = server.app.current().idp("corp").unwrap();
    assert!(changed.discovered().await.is_err(), "discovered anew");
    assert_eq!(fetches(&changed).0, 1);
}

/// A page as a browser asks for it.
async fn html(browser: &Browser, url: &str) -> (u16, String) {
    browser.page(url, None).await
}

#[tokio::test]
async fn the_admin_page_shows_the_idps_and_logins_and_reloads() {
    let server = Reserved::new()
        .start_server(
            "admins = [\"dev:ada\"]\n",
            "[idps.dev]\nkind = \"dev\"\n\n[idps.dev2]\nkind = \"dev\"\nlabel = \"Second\"\n",
        )
        .await;
    let url = server.url.clone();
    let (ada, bob) = (Browser::new(), Browser::new());
    crate::login_flow::dev_login(&ada, &url, "dev", "ada", None).await;
    crate::login_flow::dev_login(&bob, &url, "dev", "bob", None).await;
    // A failed login, counted by its reason.
    let failed = Browser::new()
        .get(&format!("{url}/authnz/dev/callback?state=nope&code=x"))
        .await;
    assert_eq!(failed.status(), 400);

    // Nobody but an admin sees it, and only admins are offered the link.
    assert_eq!(
        html(&Browser::new(), &format!("{url}/authnz/admin"))
            .await
            .0,
        401
    );
    let (status, page) = html(&bob, &format!("{url}/authnz/admin")).await;
    assert_eq!(status, 403);
    assert!(page.contains("not_an_admin"), "{page}");
    assert!(!html(&bob, &format!("{url}/"))
        .await
        .1
        .contains("id=\"administration\""));
    assert!(html(&ada, &format!("{url}/"))
        .await
        .1
        .contains("id=\"administration\""));

    let (status, page) = html(&ada, &format!("{url}/authnz/admin")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<td id=\"generation\">1</td>"), "{page}");
    let row = page
        .split("<tr class=\"ready\"><td>dev<br>")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("a row for dev: {page}"));
    // Ada's and Bob's logins; the failed callback counts as a failure only.
    assert!(
        row.contains("<td>2</td><td>2</td>"),
        "two started, two completed: {row}"
    );
    assert!(row.contains("<code>invalid_state</code> 1"), "{row}");
    assert!(page.contains("dev2<br>"), "{page}");
    // The JSON says the same.
    let status: serde_json::Value = ada
        .get(&format!("{url}/api/admin/status"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["logins"][0]["idp"], "dev", "{status}");
    assert_eq!(status["logins"][0]["completed"], 2, "{status}");
    assert_eq!(
        status["logins"][0]["failed"][0]["reason"], "invalid_state",
        "{status}"
    );

    // The reload button: CSRF and admins only; a good file moves the generation on.
    let reload = |browser: &Browser, csrf: String| {
        let request = browser
            .client
            .post(format!("{url}/authnz/admin/reload"))
            .header("Origin", &url)
            .form(&[("csrf", csrf)]);
        async move { request.send().await.unwrap() }
    };
    assert_eq!(reload(&ada, "wrong".into()).await.status(), 403);
    assert_eq!(reload(&bob, bob.csrf(&url).await).await.status(), 403);
    assert_eq!(server.app.current().number, 1, "nothing reloaded");
    let response = reload(&ada, ada.csrf(&url).await).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/authnz/admin");
    assert_eq!(server.app.current().number, 2);
    let (_, page) = html(&ada, &format!("{url}/authnz/admin")).await;
    assert!(page.contains("<td id=\"generation\">2</td>"), "{page}");
    assert!(page.contains("succeeded"), "{page}");

    // A broken file: refused, every problem on the page, the generation stays.
    let path = server.dir.path().join("idps.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "label = \"Second\"",
            "label = \"Second\"\ncolour = \"<b>blue</b>\"",
        ),
    )
    .unwrap();
    assert_eq!(reload(&ada, ada.csrf(&url).await).await.status(), 303);
    assert_eq!(
        server.app.current().number,
        2,
        "the previous configuration stays"
    );
    let (_, page) = html(&ada, &format!("{url}/authnz/admin")).await;
    assert!(page.contains("was refused"), "{page}");
    assert!(
        page.contains("idps.dev2.colour"),
        "the problem, placed: {page}"
    );
    assert!(!page.contains("<b>blue</b>"), "escaped: {page}");

    // In German, every message from the catalogue.
    let (_, german) = ada.page(&format!("{url}/authnz/admin"), Some("de")).await;
    assert!(german.contains("<title>Verwaltung</title>"), "{german}");
    assert!(german.contains("wurde abgelehnt"), "{german}");
    assert!(!german.contains(authnz::i18n::MISSING), "{german}");
}

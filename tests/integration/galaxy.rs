//! A real Galaxy (`use_remote_user`) behind the recipes `docs/deploy/galaxy-nginx.conf` and
//! `docs/deploy/galaxy.yml`, with authnz and the test OpenID Provider: a person signs in and is
//! the right Galaxy user, a second linked identity is the same Galaxy user, forged headers
//! change nothing, an unverified address is refused (never someone else's Galaxy user), a
//! Galaxy API key works without an authnz session, and Galaxy's logout ends the authnz session.
//!
//! Galaxy comes from PyPI in a virtualenv that `scripts/galaxy-e2e` makes (and keeps) and names
//! in `AUTHNZ_GALAXY_VENV`; hence `#[ignore]` here, and that script runs it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use authnz_tests::{free_port, oidc_idp_toml, query_param, Browser, OidcProvider, Reserved};
use serde_json::{json, Value};

use crate::forward::logout_form;
use crate::login_flow::dev_sign_in;
use crate::proxies::{authnz_addr, nginx, recipe};

const SECRET: &str = "galaxy-remote-user-secret-for-tests";
const ADMIN_KEY: &str = "galaxy-bootstrap-admin-key-for-tests";

/// Galaxy, killed on drop.
struct Galaxy {
    child: Child,
    url: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Galaxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Galaxy on `port` with the recipe's settings (and `logout` as its logout link), a
/// fresh SQLite database, no tools and nothing fetched from the network.
fn start_galaxy(venv: &str, port: u16, logout: &str) -> Galaxy {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("tool_conf.xml"),
        "<?xml version=\"1.0\"?>\n<toolbox monitor=\"false\">\n</toolbox>\n",
    )
    .unwrap();
    std::fs::write(
        d.join("tool_data_table_conf.xml"),
        "<?xml version=\"1.0\"?>\n<tables>\n</tables>\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.join("data")).unwrap();
    let settings = recipe(
        "galaxy.yml",
        &[
            ("change-me-remote-user-secret", SECRET),
            (
                "https://login.example.org/authnz/logout?next=https%3A%2F%2Fgalaxy.example.org%2F",
                logout,
            ),
        ],
    );
    let d = d.display();
    let extra = [
        format!("data_dir: {d}/data"),
        format!(
            "database_connection: \"sqlite:///{d}/data/universe.sqlite?isolation_level=IMMEDIATE\""
        ),
        "id_secret: galaxy-id-secret-for-tests-0123456789".to_string(),
        format!("bootstrap_admin_api_key: {ADMIN_KEY}"),
        "conda_auto_init: false".to_string(),
        "conda_auto_install: false".to_string(),
        "involucro_auto_init: false".to_string(),
        "enable_mulled_containers: false".to_string(),
        "enable_celery_tasks: false".to_string(),
        format!("tool_config_file: {d}/tool_conf.xml"),
        format!("tool_data_table_config_path: {d}/tool_data_table_conf.xml"),
    ];
    let config = format!(
        "{settings}{}",
        extra
            .iter()
            .map(|line| format!("  {line}\n"))
            .collect::<String>()
    );
    let path = dir.path().join("galaxy.yml");
    std::fs::write(&path, config).unwrap();
    let log = dir.path().join("galaxy.log");
    let child = Command::new(format!("{venv}/bin/uvicorn"))
        .args([
            "--factory",
            "galaxy.webapps.galaxy.fast_factory:factory",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .env("GALAXY_CONFIG_FILE", &path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("galaxy.err")).unwrap())
        .spawn()
        .expect("Galaxy starts");
    Galaxy {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    }
}

impl Galaxy {
    /// Waits until Galaxy answers (it takes half a minute or more to start).
    async fn ready(&mut self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(300) {
            if let Ok(answer) = reqwest::get(format!("{}/api/version", self.url)).await {
                if answer.status() == 200 {
                    eprintln!("Galaxy ready in {:.0?}", started.elapsed());
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let err = self.log.with_file_name("galaxy.err");
                panic!(
                    "Galaxy exited with {status}:\n{}",
                    std::fs::read_to_string(err).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("Galaxy was not ready in 300 s");
    }
}

/// Who Galaxy says the browser is (`None`: anonymous, or not let through).
async fn galaxy_user(browser: &Browser, galaxy: &str) -> Option<Value> {
    let answer = browser
        .client
        .get(format!("{galaxy}/api/users/current"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    if answer.status() != 200 {
        return None;
    }
    let user: Value = answer.json().await.unwrap();
    user.get("email").is_some().then_some(user)
}

/// A page of Galaxy as a browser opens it.
async fn open_page(browser: &Browser, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = browser
        .client
        .get(url)
        .header("accept", "text/html,application/xhtml+xml")
        .header("sec-fetch-mode", "navigate");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Signs in at the test OpenID Provider from the login URL the proxy sent the browser to;
/// returns where the callback sends it.
async fn sign_in(
    browser: &Browser,
    authnz: &str,
    login_url: &str,
    login: &str,
) -> reqwest::Response {
    let next = query_param(login_url, "next").expect("the login URL carries next");
    let start = browser
        .get(&format!(
            "{authnz}/authnz/corp/login?next={}",
            url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        ))
        .await;
    let authorize: Value = start.json().await.unwrap();
    let callback = browser
        .sign_in_at_provider(
            authorize["redirect_uri"].as_str().unwrap(),
            login,
            &format!("{authnz}/authnz/corp/callback"),
        )
        .await;
    browser.get(&callback).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Galaxy in a virtualenv: scripts/galaxy-e2e runs it"]
async fn galaxy_behind_nginx_and_authnz() {
    let venv = std::env::var("AUTHNZ_GALAXY_VENV")
        .expect("AUTHNZ_GALAXY_VENV names Galaxy's virtualenv (scripts/galaxy-e2e makes it)");
    let (galaxy_port, nginx_port) = (free_port(), free_port());
    let front = format!("http://127.0.0.1:{nginx_port}");
    let reserved = Reserved::new();
    let authnz = reserved.url.clone();
    let logout = format!(
        "{authnz}/authnz/logout?next={}",
        url::form_urlencoded::byte_serialize(format!("{front}/").as_bytes()).collect::<String>()
    );
    // Galaxy takes the longest to start: first.
    let mut galaxy = start_galaxy(&venv, galaxy_port, &logout);
    let provider = OidcProvider::start(
        &[reserved.callback("corp")],
        json!({
            "ada": {"email": "ada@example.test", "name": "Ada Lovelace"},
            "bob": {"email": "bob@example.test", "email_verified": false},
            "eve": {"email": "ada@example.test", "email_verified": false},
        }),
    );
    let server = reserved
        .start_server(
            "trusted_proxies = [\"127.0.0.1\"]\n",
            &format!(
                "{}\n[idps.dev]\nkind = \"dev\"\n\n[apps.galaxy]\nurl = \"{front}\"\nrequire_verified_email = true\nanonymous_if = [\"header:x-api-key\", \"query:key\"]\n",
                oidc_idp_toml("corp", &provider.issuer)
            ),
        )
        .await;
    let _nginx = nginx(
        "galaxy-nginx.conf",
        nginx_port,
        &authnz_addr(&server),
        &format!("127.0.0.1:{galaxy_port}"),
        &[("change-me-remote-user-secret", SECRET)],
    )
    .await;
    galaxy.ready().await;

    // Straight to Galaxy, past nginx: no page without the proxy's secret.
    let direct = reqwest::Client::new()
        .get(format!("{}/", galaxy.url))
        .header("remote-user", "ada@example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 403, "Galaxy without GX-Secret");

    // Ada opens Galaxy, is sent to sign in, and comes back signed in as herself.
    let ada = Browser::new();
    let page = format!("{front}/");
    let answer = open_page(&ada, &page, &[]).await;
    assert_eq!(answer.status(), 302);
    let login_url = answer.headers()["location"].to_str().unwrap().to_string();
    assert!(
        login_url.starts_with(&format!("{authnz}/?next=")),
        "{login_url}"
    );
    let done = sign_in(&ada, &authnz, &login_url, "ada").await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], page.as_str());
    assert_eq!(open_page(&ada, &page, &[]).await.status(), 200);
    let user = galaxy_user(&ada, &front)
        .await
        .expect("signed in at Galaxy");
    assert_eq!(user["email"], "ada@example.test");
    let galaxy_id = user["id"].clone();

    // Headers a client forges change nothing: still Ada.
    let forged = [
        ("remote-user", "mallory@example.test"),
        ("remote_user", "mallory@example.test"),
        ("x-authnz-email", "mallory@example.test"),
        ("x_authnz_email", "mallory@example.test"),
        ("gx-secret", "guess"),
    ];
    assert_eq!(open_page(&ada, &page, &forged).await.status(), 200);
    let user = galaxy_user(&ada, &front).await.unwrap();
    assert_eq!(
        (&user["email"], &user["id"]),
        (&json!("ada@example.test"), &galaxy_id)
    );

    // A second identity linked to her account (the dev IdP) is the same Galaxy user.
    let csrf = ada.csrf(&authnz).await;
    let connect = ada
        .client
        .post(format!("{authnz}/authnz/dev/connect"))
        .header("Origin", authnz.as_str())
        .header("X-CSRF-Token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(connect.status(), 200, "connect");
    let authorize: Value = connect.json().await.unwrap();
    let callback = dev_sign_in(&ada, authorize["redirect_uri"].as_str().unwrap(), "ada-lab").await;
    assert_eq!(ada.get(&callback).await.status(), 303, "connected");
    let lab = Browser::new();
    let answer = open_page(&lab, &page, &[]).await;
    assert_eq!(answer.status(), 302);
    let start: Value = lab
        .get(&format!(
            "{authnz}/authnz/dev/login?next={}",
            url::form_urlencoded::byte_serialize(page.as_bytes()).collect::<String>()
        ))
        .await
        .json()
        .await
        .unwrap();
    let callback = dev_sign_in(&lab, start["redirect_uri"].as_str().unwrap(), "ada-lab").await;
    assert_eq!(
        lab.get(&callback).await.headers()["location"],
        page.as_str()
    );
    assert_eq!(open_page(&lab, &page, &[]).await.status(), 200);
    let user = galaxy_user(&lab, &front)
        .await
        .expect("signed in at Galaxy");
    assert_eq!(
        (&user["email"], &user["id"]),
        (&json!("ada@example.test"), &galaxy_id)
    );

    // Bob's IdP did not verify his address: Galaxy never hears of him.
    let bob = Browser::new();
    let answer = open_page(&bob, &page, &[]).await;
    let login_url = answer.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        sign_in(&bob, &authnz, &login_url, "bob").await.status(),
        303
    );
    assert_eq!(open_page(&bob, &page, &[]).await.status(), 403);
    // Eve's IdP claims Ada's address unverified: never Ada's Galaxy user.
    let eve = Browser::new();
    let done = sign_in(&eve, &authnz, &login_url, "eve").await;
    let answer = open_page(&eve, &page, &[]).await;
    assert_ne!(
        answer.status(),
        200,
        "Eve reached Galaxy (sign-in answered {})",
        done.status()
    );
    assert!(galaxy_user(&eve, &front).await.is_none());

    // A Galaxy API key works without an authnz session (anonymous_if), as a header or ?key=.
    let admin = reqwest::Client::new();
    let found: Value = admin
        .get(format!("{front}/api/users?f_email=ada@example.test"))
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found[0]["id"], galaxy_id);
    let key: String = admin
        .post(format!(
            "{front}/api/users/{}/api_key",
            galaxy_id.as_str().unwrap()
        ))
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let script = Browser::new();
    let by_header: Value = script
        .client
        .get(format!("{front}/api/users/current"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_header["id"], galaxy_id);
    let by_query: Value = script
        .get(&format!("{front}/api/users/current?key={key}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_query["id"], galaxy_id);
    let nothing = script.get(&format!("{front}/api/users/current")).await;
    assert_eq!(nothing.status(), 401, "no key, no session");
    // A key opens Galaxy's API only: its pages still need a person.
    let keyed_page = open_page(&script, &page, &[("x-api-key", &key)]).await;
    assert_eq!(keyed_page.status(), 403);

    // Galaxy's logout goes through authnz's: the authnz session ends, Galaxy asks to sign in.
    let html = open_page(&ada, &page, &[]).await.text().await.unwrap();
    let token = html
        .split("csrf_token = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("Galaxy's page has its CSRF token")
        .to_string();
    let out: Value = ada
        .get(&format!("{front}/user/logout?session_csrf_token={token}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(out["redirect_uri"], logout.as_str());
    let form = ada.get(&logout).await.text().await.unwrap();
    let field = |name: &str| {
        form.split(&format!("name=\"{name}\" value=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(|value| value.replace("&amp;", "&"))
            .unwrap_or_else(|| panic!("no {name} in {form}"))
    };
    let posted = logout_form(&ada, &authnz, &field("csrf"), &field("next")).await;
    assert_eq!(posted.status(), 303);
    assert_eq!(posted.headers()["location"], page.as_str());
    assert_eq!(ada.me(&authnz).await.0, 401, "the authnz session ended");
    assert_eq!(
        open_page(&ada, &page, &[]).await.status(),
        302,
        "Galaxy asks to sign in again"
    );
}

//! The deployment recipes of `docs/deploy/`, run as written in real nginx and real Caddy in
//! front of an echoing app: a browser sent to sign in and back, an API call's 401, the
//! identity reaching the app, a client's own identity headers never reaching it (SECURITY
//! J79), the app's policy (403), and the logout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use authnz_tests::jwt::verify_es256;
use authnz_tests::{
    free_port, oidc_idp_toml, repo_root, Browser, OidcProvider, Reserved, TestServer,
};
use serde_json::{json, Value};

use crate::forward::{published_keys, signing_key};
use crate::login_flow::dev_login;

/// An app that answers every request with what it received, as JSON.
async fn echo_app() -> String {
    use poem::listener::{Acceptor, Listener};
    let acceptor = poem::listener::TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let echo = poem::endpoint::make(|req: poem::Request| async move {
        let mut headers = serde_json::Map::new();
        for (name, value) in req.headers() {
            let values = headers
                .entry(name.as_str().to_string())
                .or_insert_with(|| json!([]));
            if let Some(values) = values.as_array_mut() {
                values.push(json!(String::from_utf8_lossy(value.as_bytes())));
            }
        }
        poem::web::Json(json!({
            "method": req.method().as_str(),
            "uri": req.uri().to_string(),
            "headers": headers,
        }))
    });
    tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(echo).await;
    });
    addr.to_string()
}

/// A proxy process, killed on drop.
pub struct Proxy {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A recipe from `docs/deploy/` with its example addresses replaced; every one must be there.
pub fn recipe(name: &str, replacements: &[(&str, &str)]) -> String {
    let path = repo_root().join("docs/deploy").join(name);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "{name} lacks {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// Waits until `port` accepts connections.
pub async fn wait_for(port: u16, child: &mut Child, log: &Path) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the proxy exited with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the proxy never listened on {port}");
}

fn binary(name: &str, debian_package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} is missing: scripts/test installs it (apt-get install {debian_package})");
}

/// Debian's nginx running the recipe `name` of `docs/deploy/` on `port`, asking `authnz` and
/// proxying to `app` (both `host:port`), with `more` replacements.
pub async fn nginx(name: &str, port: u16, authnz: &str, app: &str, more: &[(&str, &str)]) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let mut replacements: Vec<(&str, &str)> = more.to_vec();
    let (listen, authnz_server, app_server) = (
        format!("listen 127.0.0.1:{port};"),
        format!("server {authnz};"),
        format!("server {app};"),
    );
    replacements.extend([
        ("listen 443 ssl http2;", listen.as_str()),
        (
            "ssl_certificate /etc/ssl/galaxy.example.org/fullchain.pem;",
            "",
        ),
        (
            "ssl_certificate_key /etc/ssl/galaxy.example.org/privkey.pem;",
            "",
        ),
        ("server 127.0.0.1:8080;", authnz_server.as_str()),
        ("server 127.0.0.1:8081;", app_server.as_str()),
    ]);
    let server = recipe(name, &replacements);
    let d = dir.path().display();
    let user = if is_root() { "user root;" } else { "" };
    let conf = format!(
        "{user}\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
events {{ worker_connections 128; }}\n\
http {{\naccess_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n{server}\n}}\n"
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let log = dir.path().join("error.log");
    let mut child = Command::new(binary("nginx", "nginx"))
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    wait_for(port, &mut child, &log).await;
    Proxy {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

async fn caddy(port: u16, authnz: &str, app: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let site = recipe(
        "Caddyfile",
        &[
            (
                "galaxy.example.org {",
                &format!("http://127.0.0.1:{port} {{"),
            ),
            (
                "forward_auth 127.0.0.1:8080 {",
                &format!("forward_auth {authnz} {{"),
            ),
            (
                "reverse_proxy 127.0.0.1:8081",
                &format!("reverse_proxy {app}"),
            ),
        ],
    );
    let path = dir.path().join("Caddyfile");
    std::fs::write(
        &path,
        format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}"),
    )
    .unwrap();
    let log = dir.path().join("caddy.log");
    let mut child = Command::new(binary("caddy", "caddy"))
        .arg("run")
        .arg("--config")
        .arg(&path)
        .arg("--adapter")
        .arg("caddyfile")
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("caddy starts");
    wait_for(port, &mut child, &log).await;
    Proxy {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

/// authnz with the test OpenID Provider as `corp` (Ada in group `staff`) and the dev IdP,
/// this machine as its trusted proxy, and `[apps.galaxy]` on the proxy's port (admitting
/// `corp` sessions only, `X-Api-Key` checked by the app).
async fn authnz_for(port: u16, key: &str) -> (TestServer, OidcProvider) {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(
        &[reserved.callback("corp")],
        json!({"ada": {"groups": ["staff"], "name": "Ada Lovelace"}}),
    );
    let server = reserved
        .start_server(
            &format!("trusted_proxies = [\"127.0.0.1\"]\nsigning_key_file = \"{key}\"\n"),
            &format!(
                "{}\n[idps.dev]\nkind = \"dev\"\n\n\
[apps.galaxy]\nurl = \"http://127.0.0.1:{port}\"\nallowed_idps = [\"corp\"]\nanonymous_if = [\"header:x-api-key\"]\nassertion = true\n",
                oidc_idp_toml("corp", &provider.issuer)
            ),
        )
        .await;
    (server, provider)
}

/// A request through the proxy.
async fn through(browser: &Browser, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = browser.client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// The one value of a header the app received (`None`: absent or empty).
fn received(echo: &Value, name: &str) -> Option<String> {
    let values = echo["headers"][name].as_array()?;
    assert!(
        values.len() <= 1,
        "{name} reached the app twice: {values:?}"
    );
    values
        .first()
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
        .map(str::to_string)
}

const PAGE: [(&str, &str); 2] = [
    ("accept", "text/html,application/xhtml+xml"),
    ("sec-fetch-mode", "navigate"),
];
/// Identity headers of every preset, as a client might send them.
const SPOOFED: [(&str, &str); 10] = [
    ("x-authnz-user", "admin"),
    ("x_authnz_user", "admin"),
    ("x-authnz-email", "ceo@example.org"),
    ("x-authnz-groups", "corp:admins"),
    ("x-authnz-assertion", "forged"),
    ("remote-user", "admin"),
    ("remote_user", "admin"),
    ("remote-email", "ceo@example.org"),
    ("x-auth-request-email", "ceo@example.org"),
    ("x-auth-request-user", "admin"),
];

/// The whole journey through a proxy that runs a recipe.
async fn journey(proxy: &Proxy, server: &TestServer, app_upstream_seen: impl Fn(&Value)) {
    let authnz = &server.url;
    let page = format!("{}/histories/list?page=2", proxy.url);
    let login_url = format!(
        "{authnz}/?next={}",
        url::form_urlencoded::byte_serialize(page.as_bytes()).collect::<String>()
    );

    // Not signed in: a browser is sent to sign in, an API call gets 401, a POST is no page.
    let nobody = Browser::new();
    let answer = through(&nobody, &page, &PAGE).await;
    assert_eq!(answer.status(), 302, "a browser page without a session");
    assert_eq!(answer.headers()["location"], login_url.as_str());
    let answer = through(&nobody, &page, &[("accept", "application/json")]).await;
    assert_eq!(answer.status(), 401);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let posted = nobody
        .client
        .post(&page)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 401, "a POST is never redirected");
    // Identity headers sent by the client, with no session, get a 401 and never the app...
    let answer = through(&nobody, &page, &SPOOFED).await;
    assert_eq!(answer.status(), 401);
    // ...and with the app's own credential they pass, stripped (J79).
    let mut keyed = SPOOFED.to_vec();
    keyed.push(("x-api-key", "k-123"));
    let answer = through(&nobody, &page, &keyed).await;
    assert_eq!(answer.status(), 200, "anonymous_if");
    let echo: Value = answer.json().await.unwrap();
    assert_eq!(echo["uri"], "/histories/list?page=2");
    for name in [
        "x-authnz-user",
        "x_authnz_user",
        "x-authnz-email",
        "x-authnz-assertion",
    ] {
        assert_eq!(
            received(&echo, name),
            None,
            "{name} reached the app: {echo}"
        );
    }
    assert_eq!(received(&echo, "x-api-key").as_deref(), Some("k-123"));

    // The login the redirect leads to (at the real OpenID Provider) comes back to the page.
    let ada = Browser::new();
    let next = authnz_tests::query_param(&login_url, "next").unwrap();
    let start = ada
        .get(&format!(
            "{authnz}/authnz/corp/login?next={}",
            url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        ))
        .await;
    let authorize: Value = start.json().await.unwrap();
    let callback = ada
        .sign_in_at_provider(
            authorize["redirect_uri"].as_str().unwrap(),
            "ada",
            &format!("{authnz}/authnz/corp/callback"),
        )
        .await;
    let done = ada.get(&callback).await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], page.as_str());
    let (_, me) = ada.me(authnz).await;
    let answer = through(&ada, &page, &SPOOFED).await;
    assert_eq!(answer.status(), 200);
    let echo: Value = answer.json().await.unwrap();
    assert_eq!(
        received(&echo, "x-authnz-user"),
        me["username"].as_str().map(str::to_string),
        "{echo}"
    );
    assert_eq!(
        received(&echo, "x-authnz-user-id"),
        me["id"].as_str().map(str::to_string)
    );
    assert_eq!(
        received(&echo, "x-authnz-email").as_deref(),
        Some("ada@example.test")
    );
    assert_eq!(
        received(&echo, "x-authnz-name").as_deref(),
        Some("Ada Lovelace")
    );
    assert_eq!(received(&echo, "x-authnz-idp").as_deref(), Some("corp"));
    assert_eq!(
        received(&echo, "x-authnz-groups").as_deref(),
        Some("corp:staff"),
        "groups from the provider"
    );
    for name in [
        "x_authnz_user",
        "remote-user",
        "remote_user",
        "remote-email",
        "x-auth-request-email",
        "x-auth-request-user",
    ] {
        assert_eq!(
            received(&echo, name),
            None,
            "{name} reached the app: {echo}"
        );
    }
    let jwks = published_keys(&ada, authnz).await;
    let assertion = received(&echo, "x-authnz-assertion").expect("an assertion");
    let claims = verify_es256(&assertion, &jwks).expect("it verifies");
    assert_eq!(claims["aud"], proxy.url.as_str());
    assert_eq!(claims["sub"], me["id"]);
    app_upstream_seen(&echo);

    // Signed in with an IdP this app does not admit: 403, not a redirect.
    let other = Browser::new();
    assert_eq!(
        dev_login(&other, authnz, "dev", "bob", None).await.status(),
        303
    );
    let answer = through(&other, &page, &PAGE).await;
    assert_eq!(answer.status(), 403);

    // Logged out, the app is closed again.
    assert_eq!(ada.post(authnz, "/authnz/logout").await.status(), 200);
    assert_eq!(through(&ada, &page, &PAGE).await.status(), 302);
}

pub fn authnz_addr(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn nginx_runs_the_recipe_in_front_of_an_app() {
    let (_keys, key) = signing_key();
    let port = free_port();
    let (server, _provider) = authnz_for(port, &key).await;
    let app = echo_app().await;
    let proxy = nginx("nginx.conf", port, &authnz_addr(&server), &app, &[]).await;
    journey(&proxy, &server, |echo| {
        // nginx keeps its upstream connections open (no Connection: close per request).
        assert_eq!(received(echo, "connection"), None, "{echo}");
    })
    .await;
}

#[tokio::test]
async fn caddy_runs_the_recipe_in_front_of_an_app() {
    let (_keys, key) = signing_key();
    let port = free_port();
    let (server, _provider) = authnz_for(port, &key).await;
    let app = echo_app().await;
    let proxy = caddy(port, &authnz_addr(&server), &app).await;
    journey(&proxy, &server, |_| {}).await;
}

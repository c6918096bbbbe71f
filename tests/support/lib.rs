//! Test support: a real authnz server on loopback, the real `oidc-provider` (npm) as the
//! upstream IdP, a hostile in-process IdP, a cookie-keeping "browser", and captured logs.
//!
//! Everything here is for tests: panicking on a broken fixture is the right failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod hostile;
pub mod jwt;
pub mod logs;
pub mod postgres;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use authnz::registry::Registry;
use authnz::state::App;
use authnz::store::Dump;
use reqwest::cookie::{CookieStore, Jar};
use url::Url;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Cargo's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Whether authnz would load a plugin from below `dir`: it and every directory above it belong
/// to root or to this process's user and are writable by nobody else.
#[cfg(unix)]
fn passes_plugin_checks(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let euid = authnz::dylib::effective_uid().ok();
    let Ok(real) = std::fs::canonicalize(dir) else {
        return false;
    };
    real.ancestors().all(|dir| {
        std::fs::metadata(dir).is_ok_and(|metadata| {
            (metadata.uid() == 0 || Some(metadata.uid()) == euid) && metadata.mode() & 0o022 == 0
        })
    })
}

/// A fresh directory that passes the plugin loader's ownership checks: in the target
/// directory, or, when the checkout itself sits somewhere others may write (`/tmp`), in
/// `$HOME/.cache/authnz-tests`.
pub fn trusted_dir() -> tempfile::TempDir {
    let home = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/authnz-tests"));
    let candidates = [Some(target_dir()), home];
    for base in candidates.into_iter().flatten() {
        if std::fs::create_dir_all(&base).is_ok() && passes_plugin_checks(&base) {
            // The process-wide one of `plugin_library` is never removed: sweep those of runs
            // more than an hour old.
            for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                let stale = entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .is_some_and(|modified| {
                        modified.elapsed().unwrap_or_default()
                            > std::time::Duration::from_secs(3600)
                    });
                if stale
                    && entry
                        .file_name()
                        .to_string_lossy()
                        .starts_with("dylib-test-")
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
            return tempfile::Builder::new()
                .prefix("dylib-test-")
                .tempdir_in(&base)
                .unwrap();
        }
    }
    panic!(
        "no directory passes the plugin loader's checks: neither {} nor $HOME/.cache/authnz-tests is owned by root or this user and writable by nobody else",
        target_dir().display()
    );
}

/// A plugin library built by `scripts/test` (`cargo build -p <crate>`), copied into a
/// [`trusted_dir`] that lives as long as the test process.
pub fn plugin_library(name: &str) -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let built = target_dir().join("debug").join(format!("lib{name}.so"));
    assert!(
        built.exists(),
        "{} is missing: run scripts/test, which builds the plugin libraries first",
        built.display()
    );
    let dir = DIR.get_or_init(trusted_dir);
    let path = dir.path().join(format!("lib{name}.so"));
    if !path.exists() {
        // Copied under another name first, then renamed: a reader never sees half a file.
        let partial = dir
            .path()
            .join(format!(".lib{name}.so.{}", std::process::id()));
        std::fs::copy(&built, &partial).unwrap();
        let _ = std::fs::rename(&partial, &path);
    }
    path
}

/// A loopback port free now (for a server started as its own process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running authnz on a free loopback port, with its own database directory.
pub struct TestServer {
    pub app: Arc<App>,
    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub url: String,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A bound port, before the server starts (so the IdP can learn the redirect URI first).
pub struct Reserved {
    listener: TcpListener,
    pub url: String,
}

impl Reserved {
    pub fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        Self { listener, url }
    }

    /// The redirect URI authnz will use for IdP `name`.
    pub fn callback(&self, name: &str) -> String {
        format!("{}/authnz/{name}/callback", self.url)
    }

    /// Starts authnz with `idps` (the `[idps.*]` part of a config) appended to a `[server]`
    /// section for this port.
    pub async fn start(self, idps: &str) -> TestServer {
        self.start_with(idps, Registry::builtin()).await
    }

    /// Starts authnz with extra `[server]` lines.
    pub async fn start_server(self, server: &str, idps: &str) -> TestServer {
        self.start_full(server, idps, Registry::builtin()).await
    }

    /// Starts authnz with extra provider kinds registered (test providers).
    pub async fn start_with(self, idps: &str, registry: Registry) -> TestServer {
        self.start_full("", idps, registry).await
    }

    /// Starts authnz as if behind a TLS-terminating proxy: `public_url` is `https://...`, while
    /// the tests still talk plain HTTP to its loopback port (`TestServer::url`).
    pub async fn start_behind_https(self, public_url: &str, idps: &str) -> TestServer {
        self.start_config(
            &format!("public_url = \"{public_url}\"\n"),
            "",
            idps,
            Registry::builtin(),
        )
        .await
    }

    /// [`Reserved::start_behind_https`] with extra `[server]` lines.
    pub async fn start_behind_https_with(
        self,
        public_url: &str,
        server: &str,
        idps: &str,
    ) -> TestServer {
        self.start_config(
            &format!("public_url = \"{public_url}\"\n"),
            server,
            idps,
            Registry::builtin(),
        )
        .await
    }

    async fn start_full(self, server: &str, idps: &str, registry: Registry) -> TestServer {
        let public_url = format!("public_url = \"{}\"\n", self.url);
        self.start_config(&public_url, server, idps, registry).await
    }

    /// Starts authnz on an existing database directory (its key file beside it, as
    /// `<database>.key`).
    pub async fn start_on(self, database: &std::path::Path, idps: &str) -> TestServer {
        let server = format!("database = \"{}\"\n", database.display());
        let public_url = format!("public_url = \"{}\"\n", self.url);
        self.start_config(&public_url, &server, idps, Registry::builtin())
            .await
    }

    async fn start_config(
        self,
        public_url: &str,
        server: &str,
        idps: &str,
        registry: Registry,
    ) -> TestServer {
        logs::init();
        let dir = tempfile::tempdir().expect("tempdir");
        let database = if server.contains("database = ") || server.contains("[server.postgres]") {
            String::new()
        } else {
            format!("database = \"{}\"\n", dir.path().join("db").display())
        };
        let text = format!(
            "[server]\nlisten = \"{listen}\"\n{public_url}{database}{server}\n{idps}",
            listen = self.listener.local_addr().unwrap(),
        );
        let path = dir.path().join("idps.toml");
        std::fs::write(&path, &text).unwrap();
        let config = authnz::config::load(&path, &registry)
            .unwrap_or_else(|errors| panic!("test config invalid:\n{errors}\n---\n{text}"));
        let limits = authnz::protocol::HttpLimits {
            connect_timeout: std::time::Duration::from_secs(2),
            total_timeout: std::time::Duration::from_secs(3),
            max_body_bytes: 256 * 1024,
        };
        let app = App::build(config, limits, registry)
            .await
            .expect("app starts");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = Arc::clone(&app);
        tokio::spawn(async move {
            authnz::server::serve(served, self.listener, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        TestServer {
            app,
            url: self.url,
            dir,
            shutdown: Some(tx),
        }
    }
}

impl Default for Reserved {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestServer {
    /// Every record in the store.
    pub async fn dump(&self) -> Dump {
        self.app.store.dump().await.expect("dump")
    }

    /// Number of records in a collection.
    pub async fn count(&self, collection: &str) -> usize {
        self.dump()
            .await
            .get(collection)
            .map(|records| records.len())
            .unwrap_or(0)
    }

    /// The tokens stored (sealed) for an identity, opened.
    pub async fn tokens(&self, idp: &str, subject: &str) -> authnz::protocol::IdpTokens {
        let sealed = self
            .app
            .store
            .sealed_tokens(idp, subject)
            .await
            .unwrap()
            .expect("tokens stored");
        let plain = self
            .app
            .vault
            .open(&authnz::store::identity_key_public(idp, subject), &sealed)
            .unwrap();
        serde_json::from_slice(&plain).unwrap()
    }
}

/// Asserts that `after` equals `before` except for the listed consumed pending logins.
pub fn assert_only_pending_consumed(before: &Dump, after: &Dump) {
    for (collection, records) in before {
        let after_records = after.get(collection).cloned().unwrap_or_default();
        if collection == "pending_logins" {
            for key in after_records.keys() {
                assert!(records.contains_key(key), "a pending login was added");
            }
            continue;
        }
        assert_eq!(
            records.len(),
            after_records.len(),
            "collection {collection} changed size"
        );
        assert!(records == &after_records, "collection {collection} changed");
    }
}

/// The npm `oidc-provider`, started on a free port; killed on drop.
pub struct OidcProvider {
    pub issuer: String,
    child: Child,
}

impl OidcProvider {
    /// Starts it with one confidential client `authnz` for `redirect_uris`.
    pub fn start(redirect_uris: &[String], accounts: serde_json::Value) -> Self {
        Self::start_with(redirect_uris, accounts, serde_json::json!({}))
    }

    /// Starts it with extra client metadata (e.g. `backchannel_logout_uri`).
    pub fn start_with(
        redirect_uris: &[String],
        accounts: serde_json::Value,
        client: serde_json::Value,
    ) -> Self {
        Self::start_with_env(redirect_uris, accounts, client, &[])
    }

    /// [`OidcProvider::start_with`], with the provider's own settings in `env` (see
    /// `tests/oidc-provider/provider.mjs`).
    pub fn start_with_env(
        redirect_uris: &[String],
        accounts: serde_json::Value,
        client: serde_json::Value,
        env: &[(&str, &str)],
    ) -> Self {
        let mut metadata = serde_json::json!({
            "client_id": "authnz",
            "client_secret": OIDC_CLIENT_SECRET,
            "redirect_uris": redirect_uris,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        });
        if let (Some(metadata), Some(extra)) = (metadata.as_object_mut(), client.as_object()) {
            metadata.extend(extra.clone());
        }
        let clients = serde_json::json!([metadata]);
        let dir = repo_root().join("tests/oidc-provider");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "run `npm ci` in tests/oidc-provider (scripts/test does it)"
        );
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .env("OIDC_CLIENTS", clients.to_string())
            .env("OIDC_ACCOUNTS", accounts.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // AUTHNZ_TEST_PROVIDER_STDERR=1 shows the provider's own complaints.
            .stderr(
                if std::env::var_os("AUTHNZ_TEST_PROVIDER_STDERR").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                },
            )
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let issuer = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("oidc-provider did not start: {line:?}"))
            .to_string();
        Self { issuer, child }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const OIDC_CLIENT_SECRET: &str = "s3cret-for-tests-only";

/// `[idps.<name>]` for the oidc-provider.
pub fn oidc_idp_toml(name: &str, issuer: &str) -> String {
    format!(
        "[idps.{name}]\nkind = \"oidc\"\nlabel = \"Corp\"\nissuer = \"{issuer}\"\nclient_id = \"authnz\"\nclient_secret = \"{OIDC_CLIENT_SECRET}\"\n"
    )
}

/// How the provider sent the browser back: a redirect to this URL, or a form to post to an
/// action with these fields.
pub enum Back {
    Redirect(String),
    Posted(String, Vec<(String, String)>),
}

/// A browser: a cookie jar and a client that does not follow redirects by itself.
pub struct Browser {
    pub jar: Arc<Jar>,
    pub client: reqwest::Client,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self::built(reqwest::Client::builder())
    }

    /// A browser that names itself with `user_agent`.
    pub fn with_user_agent(user_agent: &str) -> Self {
        Self::built(reqwest::Client::builder().user_agent(user_agent))
    }

    fn built(builder: reqwest::ClientBuilder) -> Self {
        let jar = Arc::new(Jar::default());
        let client = builder
            .cookie_provider(Arc::clone(&jar))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .unwrap();
        Self { jar, client }
    }

    /// The value of cookie `name` for `url`.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let header = self.jar.cookies(&Url::parse(url).unwrap())?;
        header
            .to_str()
            .ok()?
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.unwrap()
    }

    /// `GET /authnz/<idp>/login` as a script: the authorize URL.
    pub async fn start_login(&self, server: &str, idp: &str) -> String {
        let response = self.get(&format!("{server}/authnz/{idp}/login")).await;
        assert_eq!(response.status(), 200, "login start");
        let body: serde_json::Value = response.json().await.unwrap();
        body["redirect_uri"].as_str().unwrap().to_string()
    }

    /// Drives the oidc-provider's login and consent forms from `authorize_url` until it
    /// redirects to `callback_prefix`; returns that callback URL (not yet visited).
    pub async fn sign_in_at_provider(
        &self,
        authorize_url: &str,
        login: &str,
        callback_prefix: &str,
    ) -> String {
        match self
            .sign_in_until_back(authorize_url, login, callback_prefix)
            .await
        {
            Back::Redirect(url) => url,
            Back::Posted(action, _) => panic!("the provider posted the answer to {action}"),
        }
    }

    /// [`Browser::sign_in_at_provider`] for a provider that may post the answer
    /// (`response_mode=form_post`): the redirect's URL, or the form's action and fields, not
    /// yet sent.
    pub async fn sign_in_until_back(
        &self,
        authorize_url: &str,
        login: &str,
        callback_prefix: &str,
    ) -> Back {
        let mut url = authorize_url.to_string();
        for _ in 0..20 {
            let response = self.get(&url).await;
            let status = response.status().as_u16();
            if status == 303 || status == 302 {
                let location = response.headers()["location"].to_str().unwrap().to_string();
                let next = Url::parse(&url)
                    .unwrap()
                    .join(&location)
                    .unwrap()
                    .to_string();
                if next.starts_with(callback_prefix) {
                    return Back::Redirect(next);
                }
                url = next;
                continue;
            }
            assert_eq!(status, 200, "unexpected status at {url}");
            let html = response.text().await.unwrap();
            let (action, form): (String, Vec<(String, String)>) =
                if html.contains("name=\"prompt\" value=\"login\"") {
                    let form = [("prompt", "login"), ("login", login), ("password", "x")];
                    (
                        url.clone(),
                        form.iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    )
                } else if html.contains("name=\"prompt\" value=\"consent\"") {
                    (url.clone(), vec![("prompt".into(), "consent".into())])
                } else if html.contains("document.forms[0].submit()") {
                    // A self-submitting form (e.g. ending the previous provider session before
                    // `prompt=login`): post its hidden fields to its action, as a browser would;
                    // the answer itself, posted back, is the caller's to send.
                    let (action, fields) = auto_submit_form(&html)
                        .unwrap_or_else(|| panic!("unreadable form at {url}: {html}"));
                    if action.starts_with(callback_prefix) {
                        return Back::Posted(action, fields);
                    }
                    (action, fields)
                } else {
                    panic!("unexpected page at {url}: {html}");
                };
            let post_to = Url::parse(&url).unwrap().join(&action).unwrap();
            let response = self
                .client
                .post(post_to.as_str())
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 303, "form post at {post_to}");
            let location = response.headers()["location"].to_str().unwrap().to_string();
            url = post_to.join(&location).unwrap().to_string();
        }
        panic!("the provider never redirected back");
    }

    /// A whole login through the oidc-provider; returns the callback's response.
    pub async fn login_with_provider(
        &self,
        server: &str,
        idp: &str,
        login: &str,
    ) -> reqwest::Response {
        let authorize = self.start_login(server, idp).await;
        let callback = self
            .sign_in_at_provider(
                &authorize,
                login,
                &format!("{server}/authnz/{idp}/callback"),
            )
            .await;
        self.get(&callback).await
    }

    /// `GET url` as a person's browser asks for a page (`Accept: text/html`, and
    /// `Accept-Language` when given): the status and the HTML.
    pub async fn page(&self, url: &str, accept_language: Option<&str>) -> (u16, String) {
        let mut request = self.client.get(url).header("Accept", "text/html");
        if let Some(languages) = accept_language {
            request = request.header("Accept-Language", languages);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// `GET url` as a browser navigates (`Accept: text/html`), redirects not followed.
    pub async fn visit(&self, url: &str) -> reqwest::Response {
        self.client
            .get(url)
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap()
    }

    /// The session's CSRF token (from `GET /api/users/me`).
    pub async fn csrf(&self, server: &str) -> String {
        let (_, me) = self.me(server).await;
        me["csrf_token"].as_str().unwrap_or_default().to_string()
    }

    /// A same-origin POST with the session's CSRF token.
    pub async fn post(&self, server: &str, path: &str) -> reqwest::Response {
        let csrf = self.csrf(server).await;
        self.client
            .post(format!("{server}{path}"))
            .header("Origin", server)
            .header("X-CSRF-Token", csrf)
            .send()
            .await
            .unwrap()
    }

    /// `GET /api/users/me` as JSON, with the status.
    pub async fn me(&self, server: &str) -> (u16, serde_json::Value) {
        let response = self.get(&format!("{server}/api/users/me")).await;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }
}

/// The action and hidden fields of a page's first form.
fn auto_submit_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let attribute = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        Some(tag[start..].split('"').next()?.to_string())
    };
    let form_tag = html.split("<form").nth(1)?.split('>').next()?;
    let action = attribute(form_tag, "action")?;
    let fields = html
        .split("<input")
        .skip(1)
        .filter_map(|input| {
            let tag = input.split('>').next()?;
            Some((
                attribute(tag, "name")?,
                attribute(tag, "value").unwrap_or_default(),
            ))
        })
        .collect();
    Some((action, fields))
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

//! PostgreSQL: the store conformance suite on a real database (two store objects, each with
//! its own pool, as two replicas have), the migrations, and several real authnz processes on
//! one database.

use std::sync::Arc;

use authnz::store::conformance::{self, Backend, Fresh};
use authnz::store::PgStore;
use authnz_tests::postgres::cluster;

/// Fresh databases on the throwaway cluster, two connection pools on each.
struct Postgres;

#[async_trait::async_trait]
impl Backend for Postgres {
    async fn fresh(&self) -> Result<Fresh, Box<dyn std::error::Error + Send + Sync>> {
        let cluster = cluster();
        let config = cluster.config(&cluster.create_database());
        let store = PgStore::connect(&config).await?;
        let other = PgStore::connect(&config).await?;
        Ok(Fresh {
            store: Arc::new(store),
            other: Arc::new(other),
            guard: Box::new(()),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_conformance_suite() {
    conformance::run_all(&Postgres).await.unwrap();
}

/// One `idps.toml` for every replica: the listener from `AUTHNZ_LISTEN`, one public URL (the
/// load balancer's), one key file, one database.
struct Replicas {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    database: String,
}

impl Replicas {
    fn new(provider: &authnz_tests::OidcProvider, public_url: &str) -> Self {
        let cluster = cluster();
        let database = cluster.create_database();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("authnz.key");
        let keygen = std::process::Command::new(env!("CARGO_BIN_EXE_authnz_for_tests"))
            .arg("keygen")
            .arg(&key)
            .output()
            .unwrap();
        assert!(keygen.status.success(), "keygen: {keygen:?}");
        let config = dir.path().join("idps.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"${{AUTHNZ_LISTEN}}\"\npublic_url = \"{public_url}\"\nsecret_key_file = \"{key}\"\nmax_logins_per_client = 100000\n{postgres}\n{idp}",
                key = key.display(),
                postgres = cluster.toml(&database),
                idp = authnz_tests::oidc_idp_toml("corp", &provider.issuer),
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            database,
        }
    }

    /// A replica on `port`, with this config (or `key` instead of the shared key file).
    fn spawn(&self, port: u16, key: Option<&std::path::Path>) -> tokio::process::Child {
        let mut config = self.config.clone();
        if let Some(key) = key {
            let text = std::fs::read_to_string(&self.config).unwrap();
            let shared = self.dir.path().join("authnz.key");
            config = self.dir.path().join("other.toml");
            std::fs::write(
                &config,
                text.replace(&shared.display().to_string(), &key.display().to_string()),
            )
            .unwrap();
        }
        tokio::process::Command::new(env!("CARGO_BIN_EXE_authnz_for_tests"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("AUTHNZ_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            // Only a replica expected to refuse is read (a running one would fill the pipe).
            .stderr(if key.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }
}

async fn wait_ready(url: &str) {
    for _ in 0..200 {
        if reqwest::get(format!("{url}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{url} did not become ready");
}

/// The callback URL (at the public URL), sent to one replica instead.
fn at(replica: &str, callback: &str, public_url: &str) -> String {
    callback.replacen(public_url, replica, 1)
}

/// Logins that cross replicas: four replicas started at once on an empty database apply the
/// migrations once and all become ready; a login started on A whose callback arrives at B
/// completes (nonce and PKCE checked on B); A knows the session; replaying the callback on A
/// is refused; logout on B ends the session on A; a login whose replica was killed with
/// SIGKILL before the callback completes on another; a replica with another key refuses to
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_cross_replicas_on_one_database() {
    let ports: Vec<u16> = (0..4).map(|_| authnz_tests::free_port()).collect();
    let urls: Vec<String> = ports
        .iter()
        .map(|port| format!("http://127.0.0.1:{port}"))
        .collect();
    // The public URL is the load balancer's; here it is A's address.
    let public_url = urls[0].clone();
    let provider = authnz_tests::OidcProvider::start(
        &[format!("{public_url}/authnz/corp/callback")],
        serde_json::json!({}),
    );
    let replicas = Replicas::new(&provider, &public_url);
    let mut children: Vec<_> = ports
        .iter()
        .map(|port| replicas.spawn(*port, None))
        .collect();
    for url in &urls {
        wait_ready(url).await;
    }
    let cluster = cluster();
    assert_eq!(
        cluster.psql(&replicas.database, "SELECT count(*) FROM authnz_migrations"),
        "3",
        "four replicas starting at once applied each migration once"
    );
    let (a, b) = (&urls[0], &urls[1]);

    // Started on A, finished on B.
    let browser = authnz_tests::Browser::new();
    let authorize = browser.start_login(a, "corp").await;
    let callback = browser
        .sign_in_at_provider(
            &authorize,
            "alice",
            &format!("{public_url}/authnz/corp/callback"),
        )
        .await;
    let response = browser.get(&at(b, &callback, &public_url)).await;
    assert_eq!(response.status(), 303, "the callback completes on B");
    let (status, on_b) = browser.me(b).await;
    assert_eq!(status, 200);
    let (status, on_a) = browser.me(a).await;
    assert_eq!(status, 200, "A knows the session B started");
    assert_eq!(on_a["id"], on_b["id"]);
    assert_eq!(
        cluster.psql(&replicas.database, "SELECT count(*) FROM users"),
        "1"
    );

    // The same callback again, now at A: the pending login is gone everywhere.
    let replay = authnz_tests::Browser::new();
    let response = replay.get(&at(a, &callback, &public_url)).await;
    assert!(
        response.status().is_client_error(),
        "a replayed callback is refused: {}",
        response.status()
    );
    let response = browser.get(&callback).await;
    assert!(
        response.status().is_client_error(),
        "also for the browser that started it"
    );

    // Logout on B ends the session on A.
    let csrf = browser.csrf(a).await;
    let response = browser
        .client
        .post(format!("{b}/authnz/logout"))
        .header("Origin", &public_url)
        .header("X-CSRF-Token", csrf)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success() || response.status().is_redirection());
    assert_eq!(browser.me(a).await.0, 401, "the session ended on A too");

    // A is killed between /login and the callback; B finishes the login.
    let browser = authnz_tests::Browser::new();
    let authorize = browser.start_login(a, "corp").await;
    children[0].start_kill().unwrap();
    let _ = children[0].wait().await;
    let callback = browser
        .sign_in_at_provider(
            &authorize,
            "alice",
            &format!("{public_url}/authnz/corp/callback"),
        )
        .await;
    let response = browser.get(&at(b, &callback, &public_url)).await;
    assert_eq!(response.status(), 303, "B completes the login A started");
    assert_eq!(browser.me(b).await.1["id"], on_b["id"], "the same person");

    // A replica given another key refuses to start, and says why.
    let other_key = replicas.dir.path().join("other.key");
    let keygen = std::process::Command::new(env!("CARGO_BIN_EXE_authnz_for_tests"))
        .arg("keygen")
        .arg(&other_key)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let refused = replicas
        .spawn(authnz_tests::free_port(), Some(&other_key))
        .wait_with_output()
        .await
        .unwrap();
    assert!(
        !refused.status.success(),
        "a replica with another key must not start"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("another secret key") && stderr.contains("other.key"),
        "{stderr}"
    );
    // And one given no key file at all refuses too: replicas never make their own.
    let missing = replicas.dir.path().join("missing.key");
    let refused = replicas
        .spawn(authnz_tests::free_port(), Some(&missing))
        .wait_with_output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("authnz keygen"), "{stderr}");
    assert!(!missing.exists(), "no key file was made");
    drop(children);
}

/// A database that goes away: `/readyz` turns 503 (the report names the backend), requests
/// that need it answer 503 `store_unavailable` within the pool's timeout instead of hanging,
/// and once the database is back, the server recovers without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_is_unavailable_then_recovers() {
    let own = authnz_tests::postgres::Cluster::start();
    let database = own.create_database();
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("authnz.key");
    authnz::crypto::write_new_key(&key).unwrap();
    let server = authnz_tests::Reserved::new()
        .start_server(
            &format!(
                "secret_key_file = \"{}\"\n{}",
                key.display(),
                own.toml(&database)
            ),
            "[idps.dev]\nkind = \"dev\"\n",
        )
        .await;
    let ready = |url: String| async move {
        let response = reqwest::get(format!("{url}/readyz")).await.unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        (status, body)
    };
    let until = |want: u16| {
        let url = server.url.clone();
        async move {
            for _ in 0..100 {
                let (status, body) = ready(url.clone()).await;
                if status == want {
                    return body;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("/readyz never answered {want}");
        }
    };
    let body = until(200).await;
    assert_eq!(body["store"], "ok");
    assert_eq!(body["store_backend"], "postgres");
    assert_eq!(body["config_digest"].as_str().map(str::len), Some(16));
    let browser = authnz_tests::Browser::new();
    let login = format!("{}/authnz/dev/login", server.url);
    assert_eq!(browser.get(&login).await.status(), 200);

    own.stop();
    let body = until(503).await;
    assert_eq!(body["store"], "failing");
    let started = std::time::Instant::now();
    let response = browser.get(&login).await;
    assert_eq!(response.status(), 503);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"], "store_unavailable", "{error}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(11),
        "answered within the pool's timeout"
    );

    own.restart();
    until(200).await;
    assert_eq!(
        browser.get(&login).await.status(),
        200,
        "the server recovered without a restart"
    );
}

/// `authnz copy-store` copies a sled database into PostgreSQL record for record (users, the
/// email index, identities with their sealed tokens, sessions, API keys), says what it copied,
/// copies nothing twice when run again, and refuses a database made with another key.
#[tokio::test]
async fn copy_store_moves_a_sled_database_into_postgres() {
    use authnz::store::conformance::sample_login;
    let dir = tempfile::tempdir().unwrap();
    let sled_dir = dir.path().join("sled");
    {
        let sled = authnz::store::SledStore::open(&sled_dir, 8 << 20).unwrap();
        sled.complete_login(&sample_login("corp", "s1", "u1", "x1"))
            .unwrap();
        let mut second = sample_login("lab", "s2", "", "x2");
        second.link_to = Some("u1".into());
        sled.complete_login(&second).unwrap();
        sled.complete_login(&sample_login("corp", "s3", "u3", "x3"))
            .unwrap();
        sled.put_api_key(
            "key-hash",
            &authnz::store::ApiKey {
                id: "k1".into(),
                user_id: "u3".into(),
                name: "laptop".into(),
                prefix: "authnz_ab".into(),
                created_at: 5,
                expires_at: Some(99),
            },
        )
        .unwrap();
        sled.flush().unwrap();
    }
    let cluster = cluster();
    let database = cluster.create_database();
    let key = dir.path().join("authnz.key");
    authnz::crypto::write_new_key(&key).unwrap();
    let config = dir.path().join("idps.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nsecret_key_file = \"{}\"\n{}",
            key.display(),
            cluster.toml(&database)
        ),
    )
    .unwrap();
    let copy = |config: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_authnz_for_tests"))
            .args(["copy-store", "--from"])
            .arg(&sled_dir)
            .arg("--config")
            .arg(config)
            .output()
            .unwrap()
    };
    let first = copy(&config);
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{first:?}");
    assert!(said.contains("users: 2 copied, 0 already there"), "{said}");
    assert!(said.contains("identities: 3 copied"), "{said}");
    assert!(said.contains("sessions: 3 copied"), "{said}");
    assert!(said.contains("API keys: 1 copied"), "{said}");
    let again = copy(&config);
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again:?}");
    assert!(said.contains("users: 0 copied, 2 already there"), "{said}");

    // Record for record what sled holds.
    let sled = authnz::store::SledStore::open(&sled_dir, 8 << 20)
        .unwrap()
        .dump()
        .unwrap();
    let postgres = PgStore::connect(&cluster.config(&database)).await.unwrap();
    let copied = authnz::store::Upkeep::dump(&postgres).await.unwrap();
    for collection in [
        "users",
        "emails",
        "identities",
        "tokens",
        "sessions",
        "api_keys",
    ] {
        assert_eq!(sled[collection], copied[collection], "{collection}");
        assert!(!copied[collection].is_empty(), "{collection}");
    }

    // Another key: the sealed tokens would not open; nothing is copied.
    let other_key = dir.path().join("other.key");
    authnz::crypto::write_new_key(&other_key).unwrap();
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(&key.display().to_string(), &other_key.display().to_string()),
    )
    .unwrap();
    let refused = copy(&other);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("another secret key"),
        "{refused:?}"
    );
}

/// Migrations: `check` refuses a database that lacks them (and `authnz migrate` applies
/// them); a database migrated by a newer binary, or whose applied migration was changed,
/// refuses to start, saying which.
#[tokio::test]
async fn migrations_are_checked_and_a_foreign_schema_refused() {
    let cluster = cluster();
    let database = cluster.create_database();
    let mut config = cluster.config(&database);
    config.migrate = authnz::config::Migrate::Check;
    let refused = PgStore::connect(&config)
        .await
        .err()
        .expect("check refuses");
    assert!(
        refused.to_string().contains("lacks migrations [1, 2, 3]")
            && refused.to_string().contains("authnz migrate"),
        "{refused}"
    );
    assert_eq!(
        cluster.psql(&database, "SELECT to_regclass('users') IS NULL"),
        "t",
        "check changed nothing"
    );
    assert_eq!(PgStore::migrate(&config).await.unwrap(), 3);
    assert_eq!(PgStore::migrate(&config).await.unwrap(), 0, "applied once");
    PgStore::connect(&config).await.expect("up to date");

    cluster.psql(
        &database,
        "INSERT INTO authnz_migrations (version, name, checksum) VALUES (99, 'future', 'x')",
    );
    let refused = PgStore::connect(&config)
        .await
        .err()
        .expect("newer refused");
    assert!(
        refused
            .to_string()
            .contains("migrated by a newer authnz (migration 99"),
        "{refused}"
    );
    cluster.psql(
        &database,
        "DELETE FROM authnz_migrations WHERE version = 99; UPDATE authnz_migrations SET checksum = 'edited' WHERE version = 1",
    );
    let refused = PgStore::connect(&config)
        .await
        .err()
        .expect("changed refused");
    assert!(
        refused
            .to_string()
            .contains("migration 1 (initial) as applied to the database differs"),
        "{refused}"
    );
}

/// TLS to the database, through a real PostgreSQL with `ssl = on` on loopback: `verify-full`
/// connects to the name its certificate carries and refuses another name and an unknown
/// authority; `require` checks the authority but not the name.
#[tokio::test]
async fn tls_to_the_database_verifies_what_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl runs");
        assert!(output.status.success(), "openssl {args:?}: {output:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                "/CN=authnz test CA",
                "-days",
                "2",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        path("ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    let port = authnz_tests::free_port();
    let cert = std::fs::read(path("server.crt")).unwrap();
    let key = std::fs::read(path("server.key")).unwrap();
    let own = authnz_tests::postgres::Cluster::start_with(
        &format!("listen_addresses = '127.0.0.1'\nport = {port}\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"),
        &[("server.crt", &cert), ("server.key", &key)],
    );
    let database = own.create_database();
    let config = |host: &str, tls, ca: bool| authnz::config::PostgresConfig {
        connection: format!("host={host} port={port} user=postgres dbname={database}")
            .parse()
            .unwrap(),
        tls,
        ca_file: ca.then(|| path("ca.crt")),
        pool_size: 2,
        migrate: authnz::config::Migrate::Auto,
    };
    use authnz::config::DbTls::{Require, VerifyFull};
    PgStore::connect(&config("localhost", VerifyFull, true))
        .await
        .expect("verify-full: the certificate's own name, a known authority");
    assert!(
        PgStore::connect(&config("127.0.0.1", VerifyFull, true))
            .await
            .is_err(),
        "verify-full refuses a name the certificate does not carry"
    );
    assert!(
        PgStore::connect(&config("localhost", VerifyFull, false))
            .await
            .is_err(),
        "verify-full refuses an authority outside the roots"
    );
    let store = PgStore::connect(&config("127.0.0.1", Require, true))
        .await
        .expect("require: a known authority, any name");
    authnz::store::Upkeep::probe(&store).await.unwrap();
    assert_ne!(
        own.psql(&database, "SELECT count(*) FROM pg_stat_ssl WHERE ssl"),
        "0",
        "the connection is encrypted"
    );
    assert!(
        PgStore::connect(&config("127.0.0.1", Require, false))
            .await
            .is_err(),
        "require still refuses an unknown authority"
    );
}

//! Faults: a full disk. Logins fail cleanly while it is full (500, nothing half-written), the
//! sessions in hand keep working, `/readyz` says the store is failing; once there is room again
//! the real binary, whose database (sled) cannot resume after a failed write, exits with a clear
//! message, and its restart serves with every account intact. The database lives on a small
//! tmpfs of the test's own (mounting one needs root: the test says so and stops early
//! otherwise). And a wrong key: a database remembers the key it was made with, and a server
//! given another refuses to start.

use authnz_tests::Browser;

use crate::login_flow::dev_login;

/// A tmpfs of `megabytes`, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(Self { dir })
    }

    /// Fills it up; returns the filler to remove.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let mut small = vec![0u8; 1024];
        while file.write_all(&small).is_ok() {}
        small.truncate(1);
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The real binary on `config`, its stderr kept.
fn spawn(config: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_authnz_for_tests"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// `/readyz`'s status, or 0 while nothing answers.
async fn readyz(url: &str) -> u16 {
    reqwest::get(format!("{url}/readyz"))
        .await
        .map_or(0, |response| response.status().as_u16())
}

/// Polls until `/readyz` answers `status` (at most ten seconds).
async fn until_ready_is(url: &str, status: u16) {
    for _ in 0..100 {
        if readyz(url).await == status {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_logins_cleanly_and_authnz_recovers_when_there_is_room() {
    let Some(disk) = SmallDisk::mount(32) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = authnz_tests::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("idps.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{url}\"\ndatabase = \"{}\"\n\n[idps.dev]\nkind = \"dev\"\n",
            disk.dir.path().join("db").display()
        ),
    )
    .unwrap();
    let mut server = spawn(&config);
    until_ready_is(&url, 200).await;
    let ann = Browser::new();
    assert_eq!(
        dev_login(&ann, &url, "dev", "ann", None).await.status(),
        303
    );
    let (_, before) = ann.me(&url).await;

    // Full: every login fails cleanly, the sessions in hand still work, /readyz says so.
    let filler = disk.fill();
    // The last page sled's log holds may still take a login or two; once a write fails,
    // every later one fails the same way.
    let mut failed = 0;
    for n in 0..20 {
        let response = dev_login(&Browser::new(), &url, "dev", &format!("full{n}"), None).await;
        if response.status() == 303 && failed == 0 && n < 15 {
            continue;
        }
        assert_eq!(response.status(), 500, "login {n} on a full disk");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["message"], "storage failure", "{body}");
        failed += 1;
        if failed == 5 {
            break;
        }
    }
    assert_eq!(failed, 5, "logins fail once the disk is full");
    until_ready_is(&url, 503).await;
    let report: serde_json::Value = reqwest::get(format!("{url}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["store"], "failing", "{report}");
    assert_eq!(ann.me(&url).await.0, 200, "reads still work");

    // Room again: sled cannot resume in place, so authnz exits, saying why...
    std::fs::remove_file(&filler).unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(15), server.wait())
        .await
        .expect("authnz went on with a store that cannot write")
        .unwrap();
    assert!(!status.success());
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(server.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(
        stderr.contains("cannot resume in place") && stderr.contains("restarts authnz"),
        "{stderr}"
    );
    // ...and the supervisor's restart serves again, with nothing lost.
    let _restarted = spawn(&config);
    until_ready_is(&url, 200).await;
    let again = Browser::new();
    assert_eq!(
        dev_login(&again, &url, "dev", "ann", None).await.status(),
        303
    );
    let (_, after) = again.me(&url).await;
    assert_eq!(after["id"], before["id"], "the account survived");
    assert_eq!(
        dev_login(&Browser::new(), &url, "dev", "bob", None)
            .await
            .status(),
        303
    );
}

/// Starts (and stops) authnz on `dir`'s database with the key `key` (and `previous` keys).
async fn start_with_key(
    dir: &std::path::Path,
    key: &str,
    previous: &[&str],
) -> Result<(), authnz::state::StartError> {
    let previous: Vec<String> = previous
        .iter()
        .map(|name| format!("\"{}\"", dir.join(name).display()))
        .collect();
    let text = format!(
        "[server]\ndatabase = \"{}\"\nsecret_key_file = \"{}\"\nprevious_secret_key_files = [{}]\n",
        dir.join("db").display(),
        dir.join(key).display(),
        previous.join(", ")
    );
    let path = dir.join("idps.toml");
    std::fs::write(&path, &text).unwrap();
    let registry = authnz::registry::Registry::builtin();
    let config = authnz::config::load(&path, &registry).unwrap_or_else(|errors| panic!("{errors}"));
    authnz::state::App::build(config, authnz::protocol::HttpLimits::default(), registry)
        .await
        .map(drop)
}

/// A database made with one key refuses a server given another (a regenerated key file, a
/// replica with a file of its own), naming the file; after a rotation (the old key listed as
/// previous) it starts, and from then on the new key alone is the database's.
#[tokio::test]
async fn a_database_refuses_a_server_with_another_key() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.key", "b.key"] {
        authnz::crypto::write_new_key(&dir.path().join(name)).unwrap();
    }
    start_with_key(dir.path(), "a.key", &[])
        .await
        .expect("the first start records its key");
    start_with_key(dir.path(), "a.key", &[])
        .await
        .expect("the same key starts again");
    let refused = start_with_key(dir.path(), "b.key", &[])
        .await
        .expect_err("another key is refused");
    let said = refused.to_string();
    assert!(
        matches!(refused, authnz::state::StartError::KeyMismatch { .. })
            && said.contains(&dir.path().join("b.key").display().to_string())
            && said.contains("previous_secret_key_files"),
        "{said}"
    );
    start_with_key(dir.path(), "b.key", &["a.key"])
        .await
        .expect("a rotation starts");
    start_with_key(dir.path(), "b.key", &[])
        .await
        .expect("after it, the new key alone is enough");
    let refused = start_with_key(dir.path(), "a.key", &[])
        .await
        .expect_err("the old key alone no longer is");
    assert!(matches!(
        refused,
        authnz::state::StartError::KeyMismatch { .. }
    ));
}

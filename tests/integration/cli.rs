//! The `authnz` binary: `check` reports every problem with file, line, column and key, and
//! exits non-zero; `openapi` prints the spec; the default config is valid.

use std::process::Command;

use authnz_tests::repo_root;

fn authnz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_authnz_for_tests"))
}

/// Writes `text` as an idps.toml in a fresh directory and runs `authnz <command> --config` on it.
fn run_on(
    command: &str,
    text: &str,
) -> (tempfile::TempDir, std::path::PathBuf, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idps.toml");
    std::fs::write(&path, text).unwrap();
    let output = authnz()
        .args([command, "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (dir, path, output)
}

/// `authnz check --online` on a config file of `text`.
pub async fn check_online(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idps.toml");
    std::fs::write(&path, text).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_authnz_for_tests"))
        .args(["check", "--online", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap()
}

#[test]
fn check_accepts_the_default_config() {
    let output = authnz()
        .args(["check", "--config"])
        .arg(repo_root().join("idps.toml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ok (1 identity provider, 3 unavailable)"),
        "{stdout}"
    );
    for name in ["okta", "google", "keycloak"] {
        assert!(
            stdout.contains(&format!("warning: idps.{name} is unavailable")),
            "{stdout}"
        );
    }
}

#[test]
fn check_reports_every_problem_and_fails() {
    let (_dir, path, output) = run_on("check", "[server]\nlisten = \"127.0.0.1:8080\"\ndatabase = \"${AUTHNZ_TEST_UNSET_VARIABLE}\"\n\n[idps.corp]\nkind = \"oidc\"\nissuer = \"http://sso.example.org\"\nclient_id = \"x\"\nclient_secret = \"s\"\ncolour = \"blue\"\n");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:7:10: idps.corp.issuer: http:// issuers are only allowed for loopback hosts"),
        format!("{file}:3:12: server.database: environment variable AUTHNZ_TEST_UNSET_VARIABLE is not set"),
        format!("{file}:10:1: idps.corp.colour: unknown key"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(stderr.contains("3 problem(s) found"), "{stderr}");
}

#[test]
fn check_names_a_syntax_error_position() {
    let (_dir, path, output) = run_on("check", "[server]\nlisten = \"127.0.0.1:8080\n");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:2:", path.display())),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_broken_config_without_starting() {
    let (dir, _path, output) = run_on(
        "serve",
        "[server]\npublic_url = \"https://login.example.org\"\n[idps.dev]\nkind = \"dev\"\n",
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("idps.dev.kind") && stderr.contains("loopback"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn check_warns_about_idps_without_credentials_but_passes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idps.toml");
    std::fs::write(
        &path,
        "[idps.okta]\nkind = \"oidc\"\nissuer = \"https://o.example\"\nclient_id = \"${AUTHNZ_TEST_UNSET_ID}\"\n",
    )
    .unwrap();
    let output = authnz()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("warning: idps.okta is unavailable: idps.okta.client_id: environment variable AUTHNZ_TEST_UNSET_ID is not set"),
        "{stdout}"
    );
}

#[test]
fn providers_lists_kinds_and_each_configured_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idps.toml");
    let library = authnz_tests::plugin_library("authnz_example_dylib");
    std::fs::write(
        &path,
        format!(
            "[idps.dev]\nkind = \"dev\"\n\n[idps.orcid]\nkind = \"dylib\"\npath = \"{}\"\nclient_id = \"c\"\n\n[idps.gone]\nkind = \"google\"\nclient_id = \"${{AUTHNZ_TEST_UNSET_GOOGLE}}\"\n",
            library.display()
        ),
    )
    .unwrap();
    let output = authnz()
        .args(["providers", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("built-in kinds: cilogon, dev, dylib, egi_checkin"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("dev") && l.ends_with("built-in")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{} (kind orcid, authnz-plugin 0.1.0)",
            library.display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("unavailable: idps.gone.client_id: environment variable AUTHNZ_TEST_UNSET_GOOGLE is not set"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_runs_discovery_for_each_idp() {
    let good = authnz_tests::hostile::HostileIdp::start().await;
    let bad = authnz_tests::hostile::HostileIdp::start().await;
    bad.with(|s| s.discovery["issuer"] = serde_json::json!("https://attacker.example"));
    let output = check_online(&format!("{}{}", good.idp_toml("good"), bad.idp_toml("bad"))).await;
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "idps.good: ok: issuer {}, 1 signing key(s), algorithms RS256, token endpoint {}/token",
            good.issuer, good.issuer
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "idps.bad: failed: discovery issuer \"https://attacker.example\" is not the configured"
        ),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("1 identity provider(s) failed the online check"));
}

/// `authnz keygen PATH` writes a key that `secret_key_file` takes (mode 0600), which every
/// replica given the file reads alike; it never overwrites one.
#[test]
fn keygen_writes_a_private_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys").join("authnz.key");
    let output = authnz().arg("keygen").arg(&path).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("every replica the same file"));
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written.trim_end().len(), 43, "32 bytes, base64url");
    assert!(written.ends_with('\n'));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // What two replicas read from it agrees: they seal and derive alike.
    let a = authnz::crypto::TokenVault::load(&path, &[]).unwrap();
    let b = authnz::crypto::TokenVault::load(&path, &[]).unwrap();
    let sealed = a.seal(b"context", b"tokens").unwrap();
    assert_eq!(b.open(b"context", &sealed).unwrap(), b"tokens");
    assert_eq!(
        a.login_secrets().derive("nonce", "state"),
        b.login_secrets().derive("nonce", "state")
    );
    // A second keygen refuses, names the file, and leaves the key as it was.
    let again = authnz().arg("keygen").arg(&path).output().unwrap();
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        said.contains(&path.display().to_string()) && said.contains("never overwritten"),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), written);
    assert!(
        !said.contains(written.trim_end()),
        "the key is never printed"
    );
}

/// `check --online` says when what an entry asks of its IdP is not what the IdP's discovery
/// offers: a client authentication it does not list, pushed requests it does not take or
/// requires, DPoP without ES256 proofs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_compares_the_relying_party_options_with_discovery() {
    let idp = authnz_tests::hostile::HostileIdp::start().await;
    idp.with(|s| {
        s.discovery["token_endpoint_auth_methods_supported"] =
            serde_json::json!(["client_secret_basic"]);
        s.discovery["dpop_signing_alg_values_supported"] = serde_json::json!(["RS256"]);
    });
    let entry = |name: &str, lines: &str| format!("{}{lines}\n", idp.idp_toml(name));
    let output = check_online(
        &[
            entry("post", "client_auth = \"client_secret_post\""),
            entry("pushed", "par = \"always\""),
            entry("bound", "dpop = true"),
            entry("plain", ""),
        ]
        .concat(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    for says in [
        "idps.post: failed: client_auth = \"client_secret_post\", but the IdP's token_endpoint_auth_methods_supported lists only client_secret_basic",
        "idps.pushed: failed: par = \"always\", but the identity provider's discovery has no pushed_authorization_request_endpoint",
        "idps.bound: failed: dpop = true, but the IdP takes DPoP proofs only in RS256 (authnz signs ES256)",
    ] {
        assert!(stdout.contains(says), "{says}\n{stdout}");
    }
    assert!(!stdout.contains("idps.plain: failed"), "{stdout}");
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("3 identity provider(s) failed the online check"));
}

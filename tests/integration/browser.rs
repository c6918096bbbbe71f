//! The pages in a real browser: Debian's headless chromium, driven by `tests/browser/e2e.mjs`
//! (playwright-core), against this server and the real `oidc-provider`. The script clicks the
//! IdP button with the keyboard, signs in on the provider's forms, lands on the account page,
//! connects and disconnects a second IdP, ends the session of another browser, sees an escaped error page, logs out, does the
//! Swagger UI programmatic login, and is sent by an app (`next`) to sign in, back, and out again
//! through the provider's own logout page. Screenshots go to `docs/screenshots/` (linked from the README).

use std::path::PathBuf;

use authnz_tests::{oidc_idp_toml, repo_root, Browser, OidcProvider, Reserved};
use serde_json::json;

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} is missing: scripts/test installs Debian's chromium (apt-get install chromium)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_in_a_real_browser() {
    let chromium = chromium();
    let script_dir = repo_root().join("tests/browser");
    assert!(
        script_dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/browser (scripts/test does it)"
    );
    let reserved = Reserved::new();
    let provider = OidcProvider::start_with(
        &[reserved.callback("corp"), reserved.callback("lab")],
        json!({}),
        json!({"post_logout_redirect_uris": [format!("{}/", reserved.url)]}),
    );
    let config = format!(
        "{}label = \"Corp SSO\"\n{}label = \"Lab\"\n\n[apps.docs]\nurl = \"{}/docs\"\n",
        oidc_idp_toml("corp", &provider.issuer).replace("label = \"Corp\"\n", ""),
        oidc_idp_toml("lab", &provider.issuer).replace("label = \"Corp\"\n", ""),
        reserved.url,
    );
    let server = reserved.start(&config).await;
    let shots = repo_root().join("docs/screenshots");
    let output = tokio::process::Command::new("node")
        .arg("e2e.mjs")
        .current_dir(&script_dir)
        .env("AUTHNZ_URL", &server.url)
        .env("PROVIDER_URL", &provider.issuer)
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(180), output)
        .await
        .expect("the browser run finished within 3 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser steps failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all browser steps passed"), "{stdout}");
    // What the browser did is in the store: one user, alice, with one identity left.
    let users = server.dump().await["users"].clone();
    assert_eq!(users.len(), 1);
    let identities = server
        .app
        .store
        .identities_of(&String::from_utf8_lossy(users.keys().next().unwrap()))
        .await
        .unwrap();
    assert_eq!(identities.len(), 1);
    assert_eq!(identities[0].idp, "corp");
    for shot in [
        "login",
        "account",
        "disconnect",
        "sessions",
        "api-key",
        "account-dark",
        "error",
        "swagger-me",
        "logout",
        "login-phone",
    ] {
        assert!(
            shots.join(format!("{shot}.png")).exists(),
            "{shot}.png was not written"
        );
    }
    let _ = Browser::new();
}

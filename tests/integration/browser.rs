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
    let server = reserved
        .start_server("admins = [\"corp:alice\"]\n", &config)
        .await;
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
    // The steps and every accessibility finding, for the record (`--nocapture`).
    println!("{stdout}");
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
        "login-de",
        "login-fr",
        "login-es",
        "account",
        "account-de",
        "account-fr",
        "account-es",
        "admin-de",
        "admin-fr",
        "admin-es",
        "disconnect",
        "sessions",
        "api-key",
        "admin",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_wear_the_organisations_look() {
    let files = tempfile::tempdir().unwrap();
    let logo = files.path().join("logo.svg");
    std::fs::write(
        &logo,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"40\" height=\"40\" viewBox=\"0 0 40 40\"><circle cx=\"20\" cy=\"20\" r=\"18\" fill=\"#7b1fa2\"/></svg>",
    )
    .unwrap();
    let css = files.path().join("extra.css");
    std::fs::write(&css, "h1{letter-spacing:.04em}").unwrap();
    let server_lines = format!(
        "[server.branding]\nname = \"Example University\"\nlogo = \"{}\"\nprimary_color = \"#7b1fa2\"\ncss = \"{}\"\nprivacy_url = \"https://example.edu/privacy\"\nhelp_url = \"https://example.edu/help\"\n",
        logo.display(),
        css.display()
    );
    let server = Reserved::new()
        .start_server(
            &server_lines,
            // The brands' own marks; nothing answers on port 9, and the buttons show anyway.
            "[idps.dev]\nkind = \"dev\"\nlabel = \"Dev\"\n\
[idps.google]\nkind = \"google\"\nissuer = \"http://127.0.0.1:9\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
[idps.entra]\nkind = \"entra\"\ntenant = \"organizations\"\nissuer = \"http://127.0.0.1:9\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
[idps.github]\nkind = \"github\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
        )
        .await;
    let url = &server.url;

    // Over HTTP: the title, header, footer, styles, and the logo under its content hash.
    let client = reqwest::Client::new();
    let html = client
        .get(format!("{url}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<title>Sign in · Example University</title>"),
        "{html}"
    );
    assert!(html.contains("h1{letter-spacing:.04em}"), "{html}");
    assert!(html.contains("background:#7b1fa2"), "{html}");
    assert!(
        html.contains("<a href=\"https://example.edu/privacy\">Privacy</a>"),
        "{html}"
    );
    let logo_path = html
        .split("<img src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a logo")
        .to_string();
    assert!(
        logo_path.starts_with("/assets/logo-") && logo_path.ends_with(".svg"),
        "{logo_path}"
    );
    let served = client
        .get(format!("{url}{logo_path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "image/svg+xml");
    assert!(served.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert!(served.headers().contains_key("content-security-policy"));
    assert_eq!(served.bytes().await.unwrap(), std::fs::read(&logo).unwrap());
    let other = client
        .get(format!("{url}/assets/logo-0000000000000000.svg"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    // An error page a browser sees is branded too.
    let error = client
        .get(format!("{url}/authnz/dev/callback?state=x&code=y"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(error.contains("· Example University</title>"), "{error}");

    // In chromium: the colour on the buttons, the logo shown, dark mode, a phone at 200%.
    run_script(
        "branding.mjs",
        &[("AUTHNZ_URL", url), ("PRIMARY", "rgb(123, 31, 162)")],
        "all branding steps passed",
    )
    .await;
}

/// Runs `script` of `tests/browser` in chromium with `env` (and SHOTS, CHROMIUM), within two
/// minutes; fails unless it exits zero having printed `done`. Its steps are printed.
async fn run_script(script: &str, env: &[(&str, &str)], done: &str) {
    let output = tokio::process::Command::new("node")
        .arg(script)
        .current_dir(repo_root().join("tests/browser"))
        .envs(env.iter().copied())
        .env("SHOTS", repo_root().join("docs/screenshots"))
        .env("CHROMIUM", chromium())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), output)
        .await
        .expect("the browser run finished within 2 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(done),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_whose_address_has_an_account_connects_the_new_idp() {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(
        &[reserved.callback("corp"), reserved.callback("lab")],
        json!({"alice-lab": {"email": "alice@example.test", "email_verified": true}}),
    );
    let config = format!(
        "{}prompt = \"login\"\n{}label = \"Lab\"\nprompt = \"login\"\n",
        oidc_idp_toml("corp", &provider.issuer),
        oidc_idp_toml("lab", &provider.issuer).replace("label = \"Corp\"\n", ""),
    );
    let server = reserved.start(&config).await;
    run_script(
        "conflict.mjs",
        &[
            ("AUTHNZ_URL", &server.url),
            ("PROVIDER_URL", &provider.issuer),
        ],
        "all conflict steps passed",
    )
    .await;
    assert_eq!(
        server.count("users").await,
        1,
        "one account, two identities"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_answer_signs_in_a_real_browser() {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(
        &[reserved.callback("corp"), reserved.callback("lab")],
        json!({}),
    );
    let config = format!(
        "{}response_mode = \"form_post\"\nprompt = \"login\"\n{}label = \"Lab\"\nrequire_create_confirmation = true\nprompt = \"login\"\n",
        oidc_idp_toml("corp", &provider.issuer),
        oidc_idp_toml("lab", &provider.issuer).replace("label = \"Corp\"\n", ""),
    );
    let server = reserved.start(&config).await;
    run_script(
        "form_post.mjs",
        &[
            ("AUTHNZ_URL", &server.url),
            ("PROVIDER_URL", &provider.issuer),
        ],
        "all form_post steps passed",
    )
    .await;
    assert_eq!(server.count("users").await, 3, "alice, grace, hedy");
}

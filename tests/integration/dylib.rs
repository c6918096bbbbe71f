//! Providers loaded from shared libraries: a full login through one, and every refusal of a
//! broken library (named file and reason, never a crash); a panicking provider costs one
//! login (502) and nothing else.

use std::path::PathBuf;

use authnz::registry::Registry;
use authnz_tests::{
    assert_only_pending_consumed, oidc_idp_toml, query_param, Browser, OidcProvider, Reserved,
    OIDC_CLIENT_SECRET,
};
use serde_json::json;

/// A plugin library built by `scripts/test`, where the loader accepts it.
fn library(name: &str) -> PathBuf {
    authnz_tests::plugin_library(name)
}

fn dylib_toml(name: &str, path: &std::path::Path, issuer: &str, extra: &str) -> String {
    format!(
        "[idps.{name}]\nkind = \"dylib\"\npath = \"{}\"\nissuer = \"{issuer}\"\nclient_id = \"authnz\"\nclient_secret = \"{OIDC_CLIENT_SECRET}\"\n{extra}\n",
        path.display()
    )
}

/// Config problems for `text`, as strings.
fn config_errors(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idps.toml");
    std::fs::write(&path, text).unwrap();
    match authnz::config::load(&path, &Registry::builtin()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[tokio::test]
async fn a_login_through_a_dynamic_provider_and_a_panicking_one() {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(
        &[
            reserved.callback("orcid"),
            reserved.callback("panicky"),
            reserved.callback("corp"),
        ],
        json!({}),
    );
    let config = format!(
        "{}{}{}{}",
        dylib_toml(
            "orcid",
            &library("authnz_example_dylib"),
            &provider.issuer,
            ""
        ),
        dylib_toml(
            "panicky",
            &library("authnz_faulty_plugin"),
            &provider.issuer,
            // The parameters are read from the authorize URL.
            "panic_in = \"map_identity\"\npar = \"never\""
        ),
        dylib_toml(
            "paramless",
            &library("authnz_faulty_plugin"),
            &provider.issuer,
            "panic_in = \"authorize_params\""
        ),
        oidc_idp_toml("corp", &provider.issuer),
    );
    let server = reserved.start(&config).await;

    let browser = Browser::new();
    let response = browser
        .login_with_provider(&server.url, "orcid", "sofia")
        .await;
    assert_eq!(response.status(), 303);
    let (status, me) = browser.me(&server.url).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["identities"][0]["idp"], "orcid");
    assert_eq!(me["identities"][0]["subject"], "sofia");
    assert_eq!(me["username"], "sofia");
    assert_eq!(
        me["email"],
        serde_json::Value::Null,
        "the ORCID provider maps no email"
    );
    let list: serde_json::Value = browser
        .get(&format!("{}/authnz", server.url))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        list[0]["label"], "ORCID",
        "the label comes from the library"
    );
    let icon = list[0]["icon"].as_str().unwrap_or_default();
    assert!(
        icon.starts_with("data:image/svg+xml,") && icon.contains("%3EiD%3C/text%3E"),
        "the library ships its own mark: {icon}"
    );

    // A provider whose authorize parameters fail does not start a login without them.
    let response = Browser::new()
        .get(&format!("{}/authnz/paramless/login", server.url))
        .await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "provider_failed", "{body}");
    assert_eq!(server.count("pending_logins").await, 0);

    // The faulty provider panics while mapping: 502 for that login, nothing stored.
    let panicky = Browser::new();
    let authorize = panicky.start_login(&server.url, "panicky").await;
    assert_eq!(
        query_param(&authorize, "faulty_hint").as_deref(),
        Some("1"),
        "provider authorize params"
    );
    let callback = panicky
        .sign_in_at_provider(
            &authorize,
            "mallory",
            &format!("{}/authnz/panicky/callback", server.url),
        )
        .await;
    let before = server.dump().await;
    let response = panicky.get(&callback).await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "provider_failed", "{body}");
    assert_only_pending_consumed(&before, &server.dump().await);
    assert_eq!(panicky.me(&server.url).await.0, 401);

    // Everything else keeps working: the same library, and a built-in provider.
    let again = Browser::new();
    assert_eq!(
        again
            .login_with_provider(&server.url, "orcid", "sofia")
            .await
            .status(),
        303
    );
    let other = Browser::new();
    assert_eq!(
        other
            .login_with_provider(&server.url, "corp", "carl")
            .await
            .status(),
        303
    );
    assert_eq!(server.count("users").await, 2);
}

#[test]
fn broken_libraries_are_refused_with_the_file_and_the_reason() {
    let issuer = "https://idp.example";
    let dir = authnz_tests::trusted_dir();

    // A missing file.
    let missing = dir.path().join("libnothing.so");
    let errors = config_errors(&dylib_toml("x", &missing, issuer, ""));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("idps.x.path") && errors[0].contains(&missing.display().to_string()),
        "{errors:?}"
    );
    assert!(errors[0].contains("cannot read"), "{errors:?}");

    // A file that is not a library.
    let text = dir.path().join("libtext.so");
    std::fs::write(&text, "not a library").unwrap();
    let errors = config_errors(&dylib_toml("x", &text, issuer, ""));
    assert!(
        errors.len() == 1 && errors[0].contains("cannot load"),
        "{errors:?}"
    );

    // A library that is not a provider (no entry symbol).
    let candidates = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
        "/usr/lib/aarch64-linux-gnu/libm.so.6",
    ];
    if let Some(libm) = candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        let errors = config_errors(&dylib_toml("x", &libm, issuer, ""));
        assert!(
            errors.len() == 1 && errors[0].contains("not an authnz provider"),
            "{errors:?}"
        );
    }

    // A constructor that rejects its settings: the plugin's own key and message.
    let faulty = library("authnz_faulty_plugin");
    let errors = config_errors(&dylib_toml("x", &faulty, issuer, "reject = true"));
    assert!(
        errors.len() == 1 && errors[0].contains("idps.x.reject: this provider refuses to start"),
        "{errors:?}"
    );
    let errors = config_errors(&dylib_toml(
        "x",
        &library("authnz_example_dylib"),
        issuer,
        "colour = \"blue\"",
    ));
    assert!(
        errors.len() == 1 && errors[0].contains("idps.x.colour: unknown key"),
        "{errors:?}"
    );
    assert!(
        errors[0].contains(":7:1:"),
        "the plugin's error points at its line: {errors:?}"
    );

    // A constructor that panics.
    let errors = config_errors(&dylib_toml("x", &faulty, issuer, "panic_in = \"new\""));
    assert!(
        errors.len() == 1 && errors[0].contains("panicked while reading its settings"),
        "{errors:?}"
    );

    // No path at all.
    let errors = config_errors(
        "[idps.x]\nkind = \"dylib\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\n",
    );
    assert!(
        errors.len() == 1 && errors[0].contains("idps.x.path: missing"),
        "{errors:?}"
    );
}

#[test]
#[cfg(unix)]
fn a_library_others_can_write_is_refused() {
    // SECURITY H69: the file and every directory above it, owner and group included.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let dir = authnz_tests::trusted_dir();
    let sub = dir.path().join("plugins");
    std::fs::create_dir(&sub).unwrap();
    let copy = sub.join("libcopy.so");
    std::fs::copy(library("authnz_example_dylib"), &copy).unwrap();
    let refused = |why: &str| {
        let errors = config_errors(&dylib_toml("x", &copy, "https://idp.example", ""));
        assert!(
            errors.len() == 1 && errors[0].contains("refused") && errors[0].contains(why),
            "{why}: {errors:?}"
        );
    };
    mode(&copy, 0o666);
    refused("the library");
    mode(&copy, 0o775);
    refused("is writable by its group");
    mode(&copy, 0o755);
    mode(&sub, 0o777);
    refused(&format!(
        "its directory {} is writable by every user",
        sub.display()
    ));
    mode(&sub, 0o1777);
    refused("writable by every user"); // sticky or not
    mode(&sub, 0o755);
    mode(dir.path(), 0o775);
    refused(&format!(
        "its directory {} is writable by its group",
        dir.path().display()
    ));
    mode(dir.path(), 0o700);
    assert!(config_errors(&dylib_toml("x", &copy, "https://idp.example", "")).is_empty());

    // A library in /tmp, which every user can write to (sticky), is refused.
    let in_tmp = tempfile::tempdir().unwrap();
    let tmp_copy = in_tmp.path().join("libcopy.so");
    std::fs::copy(&copy, &tmp_copy).unwrap();
    let errors = config_errors(&dylib_toml("x", &tmp_copy, "https://idp.example", ""));
    assert!(
        errors.len() == 1 && errors[0].contains("writable by every user"),
        "{errors:?}"
    );

    // Owned by someone else (only root can hand a file to another user).
    if authnz::dylib::effective_uid() == Ok(0) {
        let chown = std::process::Command::new("chown")
            .arg("65534")
            .arg(&copy)
            .status()
            .unwrap();
        assert!(chown.success());
        refused("belongs to uid 65534");
    }
}

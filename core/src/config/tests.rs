//! The parser's tests: exact messages and positions, secrets never shown, properties.

use super::*;

fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    let env = |name: &str| match name {
        "CLIENT_SECRET" => Some("s3cret-value".to_string()),
        _ => None,
    };
    parse(Path::new("idps.toml"), text, &Registry::builtin(), &env)
}

fn issues(text: &str) -> Vec<String> {
    match parse_str(text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9000"
public_url = "http://127.0.0.1:9000/"

[idps.corp]
kind = "oidc"
label = "Corp SSO"
issuer = "https://sso.example.org"
client_id = "authnz"
client_secret = "${CLIENT_SECRET}"

[idps.local]
kind = "oidc"
issuer = "http://127.0.0.1:4000"
client_id = "x"
"#;

#[test]
fn good_config_parses_in_order() -> Result<(), ConfigErrors> {
    let config = parse_str(GOOD)?;
    assert_eq!(config.server.public_url.as_str(), "http://127.0.0.1:9000/");
    assert_eq!(config.server.url("/a"), "http://127.0.0.1:9000/a");
    let names: Vec<_> = config.idps.iter().map(|idp| idp.name.as_str()).collect();
    assert_eq!(names, ["corp", "local"]);
    let corp = &config.idps[0];
    assert_eq!(
        corp.client_secret.as_ref().map(Secret::expose),
        Some("s3cret-value")
    );
    assert_eq!(corp.scopes, ["openid", "email", "profile"]);
    assert_eq!(corp.id_token_algs, None, "from discovery");
    assert!(
        !format!("{config:?}").contains("s3cret-value"),
        "secret in Debug"
    );
    Ok(())
}

#[test]
fn every_error_is_reported_with_position_and_key() {
    let text = r#"
[server]
listen = "nonsense"
colour = "blue"
database = "${MISSING_DIR}/db"

[idps.corp]
kind = "oidcc"
issuer = "http://sso.example.org"
client_id = "authnz"
client_secret = "${MISSING_VAR}"

[idps.Bad]
kind = "oidc"
issuer = "https://x.example"
client_id = "a"
domain = "x"
"#;
    let found = issues(text);
    let expected = [
        "idps.toml:3:10: server.listen: expected an address like 127.0.0.1:8080",
        "idps.toml:4:1: server.colour: unknown key",
        "idps.toml:8:8: idps.corp.kind: unknown kind \"oidcc\" (did you mean \"oidc\"?)",
        "idps.toml:5:12: server.database: environment variable MISSING_DIR is not set",
        "idps.toml:13:7: idps.Bad: IdP names appear in URLs",
        "idps.toml:17:1: idps.Bad.domain: unknown key (this kind takes no settings of its own)",
    ];
    for want in expected {
        assert!(
            found.iter().any(|line| line.starts_with(want)),
            "missing {want:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn trusted_proxies_parse_and_a_bad_one_is_named_where_it_stands() {
    let config = parse_str(
        "[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\"]\n\n[idps.dev]\nkind = \"dev\"\n",
    );
    let proxies = config
        .map(|config| config.server.trusted_proxies)
        .unwrap_or_default();
    assert_eq!(proxies.len(), 3);
    assert!(proxies[1].contains("10.9.8.7".parse().unwrap()));
    let found = issues("[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/33\"]\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("idps.toml:2:33: server.trusted_proxies: \"10.0.0.0/33\": the prefix length must be 0 to 32"),
        "{found:?}"
    );
    let found = issues("[server]\ntrusted_proxies = \"127.0.0.1\"\n");
    assert!(
        found[0].starts_with("idps.toml:2:19: server.trusted_proxies: expected a list of strings"),
        "{found:?}"
    );
}

#[test]
fn syntax_error_names_line_and_column() {
    let found = issues("[server]\nlisten = \n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("idps.toml:2:"), "{found:?}");
}

#[test]
fn http_issuer_only_on_loopback() {
    let text = |issuer: &str| {
        format!("[idps.a]\nkind = \"oidc\"\nissuer = \"{issuer}\"\nclient_id = \"c\"\n")
    };
    for ok in [
        "http://127.0.0.1:3000",
        "http://localhost:3000",
        "http://[::1]:3000",
        "https://idp.example",
    ] {
        assert!(
            issues(&text(ok)).is_empty(),
            "{ok}: {:?}",
            issues(&text(ok))
        );
    }
    for bad in [
        "http://idp.example",
        "http://10.0.0.1",
        "ftp://x",
        "https://idp.example/?a=b",
    ] {
        let found = issues(&text(bad));
        assert_eq!(found.len(), 1, "{bad}: {found:?}");
        assert!(found[0].contains("idps.a.issuer"), "{found:?}");
    }
}

#[test]
fn dev_idp_refused_off_loopback() {
    let found = issues(
        "[server]\npublic_url = \"https://login.example.org\"\n[idps.dev]\nkind = \"dev\"\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("loopback"), "{found:?}");
    assert!(issues("[idps.dev]\nkind = \"dev\"\n").is_empty());
    // SECURITY I70: a wildcard listener with the loopback public_url it defaults to.
    for listen in ["0.0.0.0:8080", "[::]:8080"] {
        let found = issues(&format!(
            "[server]\nlisten = \"{listen}\"\n\n[idps.dev]\nkind = \"dev\"\n"
        ));
        assert_eq!(found.len(), 1, "{listen}: {found:?}");
        assert!(
            found[0].starts_with("idps.toml:4:1: idps.dev.kind:")
                && found[0].contains("server.listen"),
            "{found:?}"
        );
    }
    assert!(issues("[server]\nlisten = \"[::1]:8080\"\n[idps.dev]\nkind = \"dev\"\n").is_empty());
}

#[test]
fn secrets_are_never_in_errors() {
    let found = issues(
        "[idps.a]\nkind = \"oidc\"\nissuer = \"https://i.example\"\nclient_id = \"c\"\nclient_secret = \"${CLIENT_SECRET}\"\nclient_secret_file = \"/nonexistent\"\n",
    );
    assert!(!found.is_empty());
    assert!(
        found.iter().all(|line| !line.contains("s3cret-value")),
        "{found:?}"
    );
}

#[test]
fn reserved_authorize_params_are_refused() {
    let found = issues(
        "[idps.a]\nkind = \"oidc\"\nissuer = \"https://i.example\"\nclient_id = \"c\"\n[idps.a.authorize_params]\nredirect_uri = \"https://evil\"\naccess_type = \"offline\"\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("idps.a.authorize_params.redirect_uri"),
        "{found:?}"
    );
}

#[test]
fn variable_defaults_and_secret_files() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "from-file\n")?;
    let text = format!(
        "[idps.a]\nkind = \"oidc\"\nissuer = \"${{ISSUER:-https://d.example}}\"\nclient_id = \"c\"\nclient_secret_file = \"{}\"\n",
        secret.display()
    );
    let config = parse_str(&text)?;
    assert_eq!(config.idps[0].issuer, "https://d.example");
    assert_eq!(
        config.idps[0].client_secret.as_ref().map(Secret::expose),
        Some("from-file")
    );
    Ok(())
}

#[test]
fn missing_credentials_make_an_idp_unavailable_not_the_config() -> Result<(), ConfigErrors> {
    let config = parse_str(
        "[idps.okta]\nkind = \"oidc\"\nlabel = \"Okta\"\nissuer = \"https://o.example\"\nclient_id = \"${OKTA_CLIENT_ID}\"\nclient_secret = \"${CLIENT_SECRET}\"\n\n[idps.files]\nkind = \"oidc\"\nissuer = \"https://f.example\"\nclient_id = \"c\"\nclient_secret_file = \"/nonexistent/secret\"\n\n[idps.dev]\nkind = \"dev\"\n",
    )?;
    assert_eq!(config.idps.len(), 1);
    assert_eq!(config.idps[0].name, "dev");
    let reasons: Vec<_> = config
        .unavailable
        .iter()
        .map(|idp| (idp.name.as_str(), idp.label.as_str(), idp.reason.as_str()))
        .collect();
    assert_eq!(
        reasons[0],
        (
            "okta",
            "Okta",
            "idps.okta.client_id: environment variable OKTA_CLIENT_ID is not set"
        )
    );
    assert_eq!(reasons[1].0, "files");
    assert!(
        reasons[1]
            .2
            .starts_with("client_secret_file: cannot read /nonexistent/secret"),
        "{reasons:?}"
    );
    assert!(!format!("{config:?}").contains("s3cret-value"));
    Ok(())
}

#[test]
fn exact_messages_with_suggestions() {
    let text = "[server]\nlisten = 8080\npublic_ur = \"http://127.0.0.1:8080\"\n\n[idps.okta]\nkind = \"okta\"\ndomian = \"o.okta.com\"\nclient_id = \"c\"\nclient_secert = \"s\"\n\n[idps.g]\nkind = \"gogle\"\nclient_id = \"c\"\n";
    let found = issues(text);
    let expected = [
        "idps.toml:2:10: server.listen: expected a string",
        "idps.toml:3:1: server.public_ur: unknown key (did you mean `public_url`?)",
        "idps.toml:7:1: idps.okta.domian: unknown key (did you mean `domain`?)",
        "idps.toml:9:1: idps.okta.client_secert: unknown key (did you mean `client_secret`?)",
        "idps.toml:12:8: idps.g.kind: unknown kind \"gogle\" (did you mean \"google\"?)",
    ];
    for want in expected {
        assert!(
            found.iter().any(|line| line == want),
            "missing {want:?} in {found:#?}"
        );
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_text_gives_a_config_or_located_errors(text in any::<String>()) {
            if let Err(errors) = parse_str(&text) {
                prop_assert!(!errors.0.is_empty());
                for issue in errors.0 {
                    prop_assert!(issue.line >= 1 && issue.column >= 1, "{issue}");
                }
            }
        }

        #[test]
        fn toml_shaped_input_never_panics(
            entries in proptest::collection::vec(("[a-z_]{1,12}", "[a-z_]{1,16}", prop_oneof![
                Just("\"oidc\"".to_string()), Just("\"dev\"".to_string()), Just("42".to_string()),
                Just("true".to_string()), Just("[\"a\", 1]".to_string()), Just("\"${X}\"".to_string()),
                Just("\"https://i.example\"".to_string()), Just("{ a = 1 }".to_string()),
            ]), 0..12)
        ) {
            let mut text = String::new();
            for (table, key, value) in entries {
                text.push_str(&format!("[idps.{table}]\n{key} = {value}\n"));
            }
            let _ = parse_str(&text);
        }
    }
}

#[test]
fn postgres_settings_are_checked_where_they_stand_and_never_echo_the_url() {
    let pg = |server: &str, table: &str| {
        issues(&format!("[server]\n{server}\n[server.postgres]\n{table}\n"))
    };
    let key = "secret_key_file = \"shared.key\"";
    // Good: a unix socket without TLS, a URL with a password that must never be shown.
    let config = parse_str(&format!(
        "[server]\n{key}\n[server.postgres]\nurl = \"postgresql://authnz:pw-s3cret@db.internal:5433/authnz\"\npool_size = 4\n"
    ))
    .expect("parses");
    let postgres = config.server.postgres.expect("postgres");
    assert_eq!(postgres.tls, DbTls::VerifyFull, "verify-full by default");
    assert_eq!(postgres.migrate, Migrate::Auto);
    assert_eq!(postgres.pool_size, 4);
    assert!(
        !format!("{postgres:?}").contains("pw-s3cret"),
        "Debug hides the password"
    );
    for (server, table, want) in [
        (
            format!("database = \"db\"\n{key}"),
            "url = \"host=/run/postgresql\"",
            "idps.toml:2:12: server.database: set either `database` (sled) or [server.postgres]",
        ),
        (
            String::new(),
            "url = \"host=/run/postgresql\"",
            "server.secret_key_file: required with [server.postgres]",
        ),
        (
            key.to_string(),
            "url = \"postgresql://u:pw-s3cret@db.internal/a?sslmode=prefer\"",
            "idps.toml:4:7: server.postgres.url: sslmode in the URL is not taken",
        ),
        (
            key.to_string(),
            "url = \"postgresql://u:pw-s3cret@db.internal/a\"\ntls = \"disable\"",
            "server.postgres.tls: \"disable\" is for a unix socket or a loopback address only, and db.internal is neither",
        ),
        (
            key.to_string(),
            "url = \"host=/run/postgresql\"\ntls = \"prefer\"",
            "idps.toml:5:7: server.postgres.tls: \"prefer\": expected",
        ),
        (
            key.to_string(),
            "url = \"host=/run/postgresql\"\npool_size = 0",
            "server.postgres.pool_size: must be at least 1",
        ),
        (
            key.to_string(),
            "url = \"host=/run/postgresql\"\nmigrate = \"sometimes\"",
            "server.postgres.migrate: \"sometimes\": expected \"auto\" or \"check\"",
        ),
        (
            key.to_string(),
            "url = \"host=/run/postgresql\"\npassword_file = \"/nonexistent/pw\"",
            "server.postgres.password_file: cannot read /nonexistent/pw",
        ),
        (key.to_string(), "tls = \"disable\"", "server.postgres.url: required"),
        (
            key.to_string(),
            "url = \"host=/run/postgresql\"\npoolsize = 3",
            "server.postgres.poolsize",
        ),
    ] {
        let found = pg(&server, table);
        assert!(
            found.iter().any(|issue| issue.contains(want)),
            "{table}: want {want:?}, got {found:#?}"
        );
        assert!(
            found.iter().all(|issue| !issue.contains("pw-s3cret")),
            "{found:#?}"
        );
    }
    // Loopback and unix sockets may go without TLS.
    for url in [
        "host=/run/postgresql",
        "postgresql://u@127.0.0.1/a",
        "host=localhost",
    ] {
        assert!(
            pg(key, &format!("url = \"{url}\"\ntls = \"disable\"")).is_empty(),
            "{url}"
        );
    }
}

#[test]
fn apps_parse_with_their_defaults() -> Result<(), ConfigErrors> {
    let config = parse_str(&format!(
        "{GOOD}\n[apps.echo]\nurl = \"http://127.0.0.1:9100/app/\"\nallowed_groups = [\"corp:staff\"]\nanonymous_if = [\"header:X-API-Key\"]\n"
    ))?;
    let app = config.app("echo").expect("the app");
    assert_eq!(app.audience, "http://127.0.0.1:9100/app");
    assert_eq!(app.headers, HeaderPreset::Authnz);
    assert!(!app.assertion && app.assertion_ttl == 60 && !app.require_verified_email);
    assert_eq!(app.allowed_groups, ["corp:staff"]);
    assert_eq!(app.anonymous_if, [Anonymous::Header("x-api-key".into())]);
    assert!(config.app("other").is_none());
    Ok(())
}

#[test]
fn app_and_cookie_settings_are_refused_where_they_stand() {
    let app = |body: &str| format!("{GOOD}\n[apps.echo]\n{body}\n");
    let cases = [
        (app("url = \"http://127.0.0.1:9100\"\ncolour = 1"), "idps.toml:20:1: apps.echo.colour: unknown key"),
        (app("label = \"x\""), "idps.toml:18:1: apps.echo.url: required"),
        (app("url = \"http://galaxy.example.org\""), "apps.echo.url: http:// is only allowed for loopback hosts"),
        (app("url = \"https://u:p@galaxy.example.org\""), "apps.echo.url: expected an http(s) URL without query, fragment or user"),
        (app("url = \"http://127.0.0.1:9100/?a=1\""), "apps.echo.url: expected an http(s) URL"),
        (app("url = \"http://localhost:9100\""), "apps.echo.url: the session cookie of 127.0.0.1 is not sent to localhost"),
        (app("url = \"http://127.0.0.1:9100\"\nallowed_idps = [\"nope\"]"), "idps.toml:20:17: apps.echo.allowed_idps: \"nope\" is not an [idps.*] entry"),
        (app("url = \"http://127.0.0.1:9100\"\nallowed_groups = [\"staff\"]"), "apps.echo.allowed_groups: \"staff\": expected \"<idp>:<group>\""),
        (app("url = \"http://127.0.0.1:9100\"\nallowed_groups = [\"other:staff\"]"), "apps.echo.allowed_groups: \"other:staff\""),
        (app("url = \"http://127.0.0.1:9100\"\nanonymous_if = [\"header:cookie\"]"), "apps.echo.anonymous_if: \"header:cookie\""),
        (app("url = \"http://127.0.0.1:9100\"\nassertion = true"), "idps.toml:20:13: apps.echo.assertion: needs [server] signing_key_file"),
        (app("url = \"http://127.0.0.1:9100\"\nassertion = \"yes\""), "apps.echo.assertion: expected true or false"),
        (app("url = \"http://127.0.0.1:9100\"\nassertion_ttl_seconds = 301"), "apps.echo.assertion_ttl_seconds: must be 1 to 300"),
        (app("url = \"http://127.0.0.1:9100\"\nheaders = \"remote\""), "apps.echo.headers: \"remote\": expected"),
        (format!("{GOOD}\n[apps.Echo]\nurl = \"http://127.0.0.1:9100\"\n"), "apps.Echo: app names appear in URLs"),
        (GOOD.replace("public_url = \"http://127.0.0.1:9000/\"", "public_url = \"http://127.0.0.1:9000/\"\ncookie_domain = \"example.org\""), "server.cookie_domain: a cookie shared with other hosts must be Secure"),
        (GOOD.replace("public_url = \"http://127.0.0.1:9000/\"", "public_url = \"https://login.example.org\"\ncookie_domain = \"org\""), "server.cookie_domain: expected a domain"),
        (GOOD.replace("public_url = \"http://127.0.0.1:9000/\"", "public_url = \"https://login.example.org\"\ncookie_domain = \"example.com\""), "server.cookie_domain: public_url's host login.example.org is not under \"example.com\""),
        (GOOD.replace("public_url = \"http://127.0.0.1:9000/\"", "public_url = \"https://login.example.org\"\ncookie_domain = \"example.org\"") + "\n[apps.echo]\nurl = \"https://galaxy.example.com\"\n", "apps.echo.url: galaxy.example.com is not under [server] cookie_domain = \"example.org\""),
        (GOOD.replace("public_url = \"http://127.0.0.1:9000/\"", "public_url = \"http://127.0.0.1:9000/\"\nsigning_key_file = \"/nonexistent/signing.pem\""), "server.signing_key_file: cannot read /nonexistent/signing.pem"),
    ];
    for (text, want) in cases {
        let found = issues(&text);
        assert!(
            found.iter().any(|issue| issue.contains(want)),
            "want {want:?} in {found:#?}"
        );
    }
    // An app under the cookie domain, and one on the login host itself (any port), are fine.
    let shared = GOOD.replace(
        "public_url = \"http://127.0.0.1:9000/\"",
        "public_url = \"https://login.example.org\"\ncookie_domain = \".Example.org\"",
    ) + "\n[apps.galaxy]\nurl = \"https://galaxy.example.org\"\n[apps.same]\nurl = \"https://login.example.org:8443/x\"\n";
    let config = parse_str(&shared).expect("parses");
    assert_eq!(config.server.cookie_domain.as_deref(), Some("example.org"));
}

#[test]
fn groups_claim_is_a_claim_name() {
    let text = GOOD.replace(
        "client_id = \"x\"",
        "client_id = \"x\"\ngroups_claim = \"\"",
    );
    assert!(issues(&text)
        .iter()
        .any(|issue| issue.contains("idps.local.groups_claim: must name a claim")));
    let text = GOOD.replace(
        "client_id = \"x\"",
        "client_id = \"x\"\ngroups_claim = \"roles\"",
    );
    let config = parse_str(&text).expect("parses");
    assert_eq!(config.idps[1].groups_claim.as_deref(), Some("roles"));
}

#[test]
fn branding_is_read_with_its_files_and_every_problem_is_placed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("logo.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .unwrap();
    std::fs::write(dir.path().join("extra.css"), "h1{letter-spacing:.02em}").unwrap();
    std::fs::write(
        dir.path().join("bad.css"),
        "h1{}</style><script>alert(1)</script>",
    )
    .unwrap();
    std::fs::write(dir.path().join("logo.bmp"), "BM").unwrap();
    let parse_in = |text: &str| {
        parse(
            &dir.path().join("idps.toml"),
            text,
            &Registry::builtin(),
            &|_| None,
        )
    };
    let config = parse_in(
        "[server.branding]\nname = \"Example University\"\nlogo = \"logo.svg\"\nprimary_color = \"#7B1FA2\"\ncss = \"extra.css\"\nprivacy_url = \"https://example.edu/privacy\"\nhelp_url = \"https://example.edu/help\"\n",
    )
    .expect("parses");
    let branding = config.server.branding.expect("branding");
    assert_eq!(branding.name.as_deref(), Some("Example University"));
    assert_eq!(branding.primary_color.as_deref(), Some("#7b1fa2"));
    assert_eq!(branding.css.as_deref(), Some("h1{letter-spacing:.02em}"));
    let logo = branding.logo.as_ref().expect("logo");
    assert!(
        logo.path.starts_with("/assets/logo-") && logo.path.ends_with(".svg"),
        "{}",
        logo.path
    );
    assert_eq!(logo.content_type, "image/svg+xml");
    assert!(
        !format!("{branding:?}").contains("<svg"),
        "Debug shows no file contents"
    );

    let problems = |table: &str| match parse_in(&format!("[server.branding]\n{table}\n")) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    let file = dir.path().join("idps.toml").display().to_string();
    for (table, want) in [
        (
            "logo = \"missing.svg\"",
            "2:8: server.branding.logo: cannot read",
        ),
        ("logo = \"logo.bmp\"", "2:8: server.branding.logo: "),
        (
            "primary_color = \"purple\"",
            "2:17: server.branding.primary_color: \"purple\": expected a colour",
        ),
        ("css = \"bad.css\"", "2:7: server.branding.css: "),
        (
            "privacy_url = \"http://example.edu/privacy\"",
            "2:15: server.branding.privacy_url: ",
        ),
        ("name = \"\"", "2:8: server.branding.name: must be 1 to 80"),
        ("colour = \"#fff\"", "server.branding.colour"),
    ] {
        let found = problems(table);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(&file) && p.contains(want)),
            "{table}: {found:#?}"
        );
    }
}

#[test]
fn message_overrides_and_the_default_language_are_checked_where_they_stand() {
    let config = parse_str(
        "[server]\ndefault_language = \"fr\"\n[server.branding.messages.en]\nsign-in-title = \"Sign in to Example\"\n[server.branding.messages.de]\nconnect-provider = \"Mit { $label } verknüpfen\"\n",
    )
    .expect("parses");
    assert_eq!(config.server.default_language, "fr");
    assert!(config.server.branding.expect("branding").messages.is_some());
    for (text, want) in [
        ("[server]\ndefault_language = \"it\"\n", "idps.toml:2:20: server.default_language: \"it\": expected one of en, de, fr, es"),
        ("[server.branding.messages.en]\nsign-in-titel = \"x\"\n", "idps.toml:2:1: server.branding.messages.en.sign-in-titel: no such message (did you mean `sign-in-title`?)"),
        ("[server.branding.messages.it]\nsign-in-title = \"x\"\n", "idps.toml:1:27: server.branding.messages.it: no catalogue for this language"),
        ("[server.branding.messages.en]\nsign-in-title = \"a { b\"\n", "idps.toml:2:1: server.branding.messages.en.sign-in-title: is not a Fluent message"),
        ("[server.branding.messages.en]\nsign-in-title = 3\n", "server.branding.messages.en.sign-in-title: expected a string"),
    ] {
        let found = issues(text);
        assert!(found.iter().any(|issue| issue.starts_with(want) || issue.contains(want)), "{text}: {found:#?}");
    }
}

#[test]
fn client_auth_takes_what_its_method_needs_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client.pem");
    std::fs::write(
        &key,
        crate::signing::pkcs8_pem(&crate::signing::SigningKey::generate_pkcs8().unwrap()),
    )
    .unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").unwrap();
    let entry = |lines: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:9000\"\n\n[idps.corp]\nkind = \"oidc\"\nissuer = \"https://sso.example.org\"\nclient_id = \"authnz\"\n{lines}\n"
        )
    };
    let good = parse_str(&entry(&format!(
        "client_auth = \"private_key_jwt\"\nclient_key_file = \"{}\"",
        key.display()
    )))
    .unwrap();
    let corp = &good.idps[0];
    assert_eq!(corp.client_auth, ClientAuth::PrivateKeyJwt);
    assert_eq!(corp.client_key.as_ref().unwrap().alg(), "ES256");
    assert_eq!(
        parse_str(&entry("client_secret = \"s\"")).unwrap().idps[0].client_auth,
        ClientAuth::Auto
    );
    for (lines, says) in [
        (
            "client_auth = \"private_key_jwt\"".to_string(),
            "idps.toml:8:15: idps.corp.client_key_file: private_key_jwt needs client_key_file",
        ),
        (
            format!(
                "client_auth = \"private_key_jwt\"\nclient_key_file = \"{}\"",
                junk.display()
            ),
            "idps.toml:9:19: idps.corp.client_key_file: ",
        ),
        (
            format!(
                "client_auth = \"private_key_jwt\"\nclient_key_file = \"{}\"\nclient_key_alg = \"PS256\"",
                key.display()
            ),
            "a P-256 key signs ES256 only",
        ),
        (
            format!(
                "client_secret = \"s\"\nclient_key_file = \"{}\"",
                key.display()
            ),
            "idps.corp.client_key_file: client_key_file is for client_auth = \"private_key_jwt\"",
        ),
        (
            "client_auth = \"client_secret_jwt\"".to_string(),
            "idps.corp.client_auth: client_secret_jwt needs client_secret or client_secret_file",
        ),
        (
            "client_auth = \"none\"\nclient_secret = \"s\"".to_string(),
            "idps.corp.client_auth: none sends no secret: remove client_secret",
        ),
        (
            "client_auth = \"mtls\"".to_string(),
            "idps.toml:8:15: idps.corp.client_auth: expected \"client_secret_basic\"",
        ),
        (
            "client_auth = \"private_key_jwt\"\nclient_key_alg = \"HS256\"".to_string(),
            "idps.corp.client_key_alg: expected one of ES256, RS256, PS256",
        ),
    ] {
        let found = issues(&entry(&lines));
        assert!(
            found.iter().any(|issue| issue.contains(says)),
            "{lines}: {found:?}"
        );
    }
    // A key file not there yet makes the entry wait, like a secret file.
    let missing = parse_str(&entry(&format!(
        "client_auth = \"private_key_jwt\"\nclient_key_file = \"{}\"",
        dir.path().join("later.pem").display()
    )))
    .unwrap();
    assert!(missing.idps.is_empty());
    assert!(
        missing.unavailable[0].reason.contains("cannot read"),
        "{:?}",
        missing.unavailable[0].reason
    );
}

#[test]
fn dpop_is_refused_for_a_plain_oauth2_kind() {
    let found = issues(
        "[server]\nlisten = \"127.0.0.1:9000\"\n\n[idps.gh]\nkind = \"github\"\nclient_id = \"c\"\nclient_secret = \"s\"\ndpop = true\n",
    );
    assert!(
        found.iter().any(|issue| issue.contains(
            "idps.gh.dpop: dpop needs an OpenID provider; kind \"github\" is plain OAuth 2.0"
        )),
        "{found:?}"
    );
}

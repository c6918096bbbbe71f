//! The pages in the person's language: chosen by `Accept-Language`, or by `?lang=` (which
//! sticks for the visit); every page in every language says only what a catalogue defines.

use authnz_tests::{Browser, Reserved};

use crate::login_flow::dev_login;

async fn page(browser: &Browser, url: &str, accept_language: Option<&str>) -> (u16, String) {
    browser.page(url, accept_language).await
}

#[tokio::test]
async fn each_page_speaks_the_language_the_browser_asks_for() {
    let server = Reserved::new()
        .start("[idps.dev]\nkind = \"dev\"\nlabel = \"Dev\"\n")
        .await;
    let url = &server.url;
    let anonymous = Browser::new();
    let (_, german) = page(
        &anonymous,
        &format!("{url}/"),
        Some("de-DE,de;q=0.9,en;q=0.5"),
    )
    .await;
    assert!(german.contains("<html lang=\"de\">"), "{german}");
    assert!(german.contains("<title>Anmelden</title>"), "{german}");
    assert!(
        german.contains("Wählen Sie, wie Sie sich anmelden:"),
        "{german}"
    );
    let (_, french) = page(&anonymous, &format!("{url}/"), Some("fr-CA, en;q=0.3")).await;
    assert!(french.contains("<title>Connexion</title>"), "{french}");
    let (_, other) = page(&anonymous, &format!("{url}/"), Some("ja")).await;
    assert!(other.contains("<html lang=\"en\">") && other.contains("<title>Sign in</title>"));
    // The dev IdP's own form too.
    let login: serde_json::Value = anonymous
        .get(&format!("{url}/authnz/dev/login"))
        .await
        .json()
        .await
        .unwrap();
    let (status, form) = page(
        &anonymous,
        login["redirect_uri"].as_str().unwrap(),
        Some("es"),
    )
    .await;
    assert_eq!(status, 200, "{form}");
    assert!(
        form.contains("<label for=\"username\">Nombre de usuario</label>"),
        "{form}"
    );
    assert!(form.contains("<strong>desarrollo</strong>"), "{form}");

    // Signed in, with a key and two sessions: every page, in every language, says only what
    // the catalogues define.
    let browser = Browser::new();
    dev_login(&browser, url, "dev", "ann", None).await;
    dev_login(&Browser::new(), url, "dev", "ann", None).await;
    let created = browser
        .client
        .post(format!("{url}/api/keys"))
        .header("Origin", url)
        .header("X-CSRF-Token", browser.csrf(url).await)
        .json(&serde_json::json!({"name": "scripts"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    for (lang, title) in [
        ("en", "Your account"),
        ("de", "Ihr Konto"),
        ("fr", "Votre compte"),
        ("es", "Su cuenta"),
    ] {
        let pages = [
            page(&browser, &format!("{url}/"), Some(lang)).await,
            page(&browser, &format!("{url}/authnz/logout"), Some(lang)).await,
            page(&anonymous, &format!("{url}/"), Some(lang)).await,
            page(&anonymous, &format!("{url}/authnz/logout"), Some(lang)).await,
            page(
                &anonymous,
                &format!("{url}/authnz/dev/callback?state=x&code=y"),
                Some(lang),
            )
            .await,
        ];
        assert!(
            pages[0].1.contains(&format!("<title>{title}</title>")),
            "{lang}: {}",
            pages[0].1
        );
        assert_eq!(pages[4].0, 400, "the error page");
        for (status, html) in &pages {
            assert!(
                !html.contains(authnz::i18n::MISSING),
                "{lang} ({status}): a message no catalogue defines: {html}"
            );
            assert!(
                html.contains(&format!("<html lang=\"{lang}\">")),
                "{lang}: {html}"
            );
        }
    }

    // A page answering a form post: the new API key, in German.
    let response = browser
        .client
        .post(format!("{url}/authnz/keys/new"))
        .header("Origin", url)
        .header("Accept", "text/html")
        .header("Accept-Language", "de")
        .form(&[
            ("csrf", browser.csrf(url).await.as_str()),
            ("name", "laptop"),
            ("expires_in_days", ""),
        ])
        .send()
        .await
        .unwrap();
    let html = response.text().await.unwrap();
    assert!(
        html.contains("<title>Ihr neuer API-Schlüssel</title>"),
        "{html}"
    );
    assert!(html.contains("data-done=\"Kopiert.\""), "{html}");
    assert!(html.contains("Er läuft nicht ab."), "{html}");
    assert!(!html.contains(authnz::i18n::MISSING), "{html}");

    // `?lang=` wins over the browser's languages, and sticks for the visit.
    let visitor = Browser::new();
    let response = visitor
        .client
        .get(format!("{url}/?lang=es"))
        .header("Accept-Language", "de")
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("authnz_lang=es;"), "{cookie}");
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("<title>Iniciar sesión</title>"));
    let (_, later) = page(&visitor, &format!("{url}/"), Some("de")).await;
    assert!(
        later.contains("<title>Iniciar sesión</title>"),
        "the choice sticks: {later}"
    );
    let (_, unknown) = page(&Browser::new(), &format!("{url}/?lang=xx"), Some("fr")).await;
    assert!(
        unknown.contains("<title>Connexion</title>"),
        "an unknown choice is ignored"
    );
}

#[tokio::test]
async fn json_errors_keep_their_code_and_say_their_message_in_the_language() {
    let server = Reserved::new().start("[idps.dev]\nkind = \"dev\"\n").await;
    let url = &server.url;
    let client = reqwest::Client::new();
    let error = |path: &'static str, lang: Option<&'static str>| {
        let mut request = client.get(format!("{url}{path}"));
        if let Some(lang) = lang {
            request = request.header("Accept-Language", lang);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, english) = error("/api/users/me", None).await;
    assert_eq!(
        (status, english["error"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(english["message"], "log in first");
    let (status, german) = error("/api/users/me", Some("de")).await;
    assert_eq!(status, 401);
    assert_eq!(german["error"], "unauthorized", "the code stays");
    assert_eq!(german["message"], "melden Sie sich zuerst an");
    let (status, french) = error("/authnz/dev/callback?state=nope&code=x", Some("fr")).await;
    assert_eq!(status, 400);
    assert_eq!(french["error"], "invalid_state");
    assert_eq!(
        french["message"],
        "cette connexion est inconnue ou a déjà servi"
    );
    // The error page a browser sees says it too.
    let page = client
        .get(format!("{url}/authnz/dev/callback?state=nope&code=x"))
        .header("Accept", "text/html")
        .header("Accept-Language", "es")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("este inicio de sesión es desconocido o ya se usó"),
        "{page}"
    );
    assert!(page.contains("<code>invalid_state</code>"), "{page}");
}

#[tokio::test]
async fn the_default_language_and_an_admins_own_words_apply_without_a_rebuild() {
    let server = Reserved::new()
        .start_server(
            "default_language = \"es\"\n[server.branding.messages.es]\nsign-in-title = \"Entre en Ejemplo\"\n",
            "[idps.dev]\nkind = \"dev\"\n",
        )
        .await;
    let url = &server.url;
    let anonymous = Browser::new();
    let (_, default) = page(&anonymous, &format!("{url}/"), None).await;
    assert!(default.contains("<html lang=\"es\">"), "{default}");
    assert!(
        default.contains("<title>Entre en Ejemplo</title>"),
        "the admin's words: {default}"
    );
    assert!(
        default.contains("Elija cómo iniciar sesión:"),
        "the rest from the catalogue"
    );
    let (_, english) = page(&anonymous, &format!("{url}/"), Some("en")).await;
    assert!(
        english.contains("<title>Sign in</title>"),
        "only Spanish was replaced: {english}"
    );
}

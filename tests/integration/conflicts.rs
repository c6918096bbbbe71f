//! A first sign-in whose email address already has an account, in a browser: the page that
//! says what to do and offers the way (sign in to that account as before), then the offer to
//! connect the new IdP, made in the same browser to that account alone; the connect itself is
//! the ordinary one. Scripts keep the plain 409.

use authnz_tests::{oidc_idp_toml, query_param, Browser, OidcProvider, Reserved, TestServer};
use serde_json::json;

/// Corp and Lab on the real provider, each asking who signs in (`prompt = "login"`, as the
/// provider keeps a session per browser), with `settings` added to both. At the provider,
/// `alice-lab` has alice's address, verified, and `mallory` has it unverified.
async fn server(settings: &str) -> (TestServer, OidcProvider) {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(
        &[reserved.callback("corp"), reserved.callback("lab")],
        json!({
            "alice-lab": {"email": "alice@example.test", "email_verified": true},
            "mallory": {"email": "alice@example.test", "email_verified": false},
        }),
    );
    let both = format!("prompt = \"login\"\n{settings}\n");
    let config = format!(
        "{}{both}{}label = \"Lab\"\n{both}",
        oidc_idp_toml("corp", &provider.issuer),
        oidc_idp_toml("lab", &provider.issuer).replace("label = \"Corp\"\n", ""),
    );
    (reserved.start(&config).await, provider)
}

/// Signs in at `idp` as `login` from `browser`, starting at `start` (a login URL, with its
/// `?next=`), as a script would start it: the callback URL, not yet visited.
async fn sign_in(browser: &Browser, url: &str, idp: &str, start: &str, login: &str) -> String {
    let response = browser.get(&format!("{url}{start}")).await;
    assert_eq!(response.status(), 200, "login start {start}");
    let body: serde_json::Value = response.json().await.unwrap();
    browser
        .sign_in_at_provider(
            body["redirect_uri"].as_str().unwrap(),
            login,
            &format!("{url}/authnz/{idp}/callback"),
        )
        .await
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_string()
}

/// The refused first sign-in of `login` at Lab in `browser`, as a browser visits the
/// callback: the page it is sent to (a path with its `?intent=`).
async fn refused_at_lab(browser: &Browser, server: &TestServer, login: &str) -> String {
    let url = &server.url;
    let callback = sign_in(browser, url, "lab", "/authnz/lab/login", login).await;
    let response = browser.visit(&callback).await;
    assert_eq!(response.status(), 303, "a browser is sent to the way on");
    assert!(
        response
            .headers()
            .get("set-cookie")
            .is_none_or(|cookie| !cookie.to_str().unwrap().starts_with("authnz_session=")),
        "no session"
    );
    let to = location(&response);
    assert!(
        to.starts_with(&format!("{url}/authnz/lab/email_in_use?intent=")),
        "{to}"
    );
    to.trim_start_matches(url.as_str()).to_string()
}

#[tokio::test]
async fn a_first_sign_in_whose_address_has_an_account_is_offered_the_way_to_connect() {
    let (server, _provider) = server("").await;
    let url = server.url.clone();
    let alice = Browser::new();
    let callback = sign_in(&alice, &url, "corp", "/authnz/corp/login", "alice").await;
    assert_eq!(alice.get(&callback).await.status(), 303);
    let (_, account) = alice.me(&url).await;
    assert_eq!(account["email"], "alice@example.test");

    // On another browser, alice tries Lab first: no second account, the page says why.
    let laptop = Browser::new();
    let page_path = refused_at_lab(&laptop, &server, "alice-lab").await;
    assert_eq!(server.count("users").await, 1, "no second account");
    assert_eq!(laptop.me(&url).await.0, 401);
    let (status, html) = laptop.page(&format!("{url}{page_path}"), None).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("<strong>alice@example.test</strong>"),
        "{html}"
    );
    assert!(
        html.contains("Sign in to it the way you did before"),
        "{html}"
    );
    // The verified address names the account's IdP (Corp) as the way in, and not Lab.
    let intent = query_param(&format!("{url}{page_path}"), "intent").unwrap();
    let next = format!("/authnz/lab/connect_after?intent={intent}");
    let corp_login = format!(
        "/authnz/corp/login?next={}",
        url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
    );
    assert!(
        html.contains(&format!("href=\"{}\"", corp_login.replace('&', "&amp;"))),
        "{corp_login}\n{html}"
    );
    assert!(!html.contains("href=\"/authnz/lab/login"), "{html}");
    // The failure is counted by its reason.
    let lab = &server.app.metrics.logins()["lab"];
    assert_eq!(lab.failed.get("email_in_use"), Some(&1), "{lab:?}");
    assert_eq!(lab.completed, 0);

    // Before signing in, the offer sends the browser back to the ways in.
    let response = laptop.visit(&format!("{url}{next}")).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), page_path);

    // Alice signs in with Corp as before and lands on the offer to connect Lab.
    let callback = sign_in(&laptop, &url, "corp", &corp_login, "alice").await;
    let response = laptop.visit(&callback).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), format!("{url}{next}"));
    let (status, offer) = laptop.page(&format!("{url}{next}"), None).await;
    assert_eq!(status, 200, "{offer}");
    assert!(offer.contains("action=\"/authnz/lab/connect\""), "{offer}");
    assert!(
        offer.contains(&format!("value=\"{}\"", laptop.csrf(&url).await)),
        "the session's CSRF token: {offer}"
    );
    assert!(offer.contains("Connect Lab"), "{offer}");

    // The form is the ordinary connect: a fresh sign-in at Lab, then both identities.
    let response = laptop.post(&url, "/authnz/lab/connect").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let callback = laptop
        .sign_in_at_provider(
            body["redirect_uri"].as_str().unwrap(),
            "alice-lab",
            &format!("{url}/authnz/lab/callback"),
        )
        .await;
    assert_eq!(laptop.get(&callback).await.status(), 303);
    let (_, me) = laptop.me(&url).await;
    assert_eq!(me["id"], account["id"]);
    let linked: Vec<(&str, &str)> = me["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["idp"].as_str().unwrap(), i["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(linked, [("corp", "alice"), ("lab", "alice-lab")]);
    assert_eq!(server.count("users").await, 1);

    // Done: the offer says so and is gone.
    let (status, done) = laptop.page(&format!("{url}{next}"), None).await;
    assert_eq!(status, 200);
    assert!(done.contains("already has a Lab identity"), "{done}");
    let (status, gone) = laptop.page(&format!("{url}{next}"), None).await;
    assert_eq!(status, 400, "{gone}");
    assert!(gone.contains("unknown or expired"), "{gone}");
}

#[tokio::test]
async fn the_offer_is_for_that_browser_and_that_account_and_scripts_keep_the_409() {
    let (server, _provider) = server("").await;
    let url = server.url.clone();
    let alice = Browser::new();
    let callback = sign_in(&alice, &url, "corp", "/authnz/corp/login", "alice").await;
    assert_eq!(alice.get(&callback).await.status(), 303);

    // Another browser holding the page's URL learns nothing.
    let laptop = Browser::new();
    let page_path = refused_at_lab(&laptop, &server, "alice-lab").await;
    let (status, html) = Browser::new()
        .page(&format!("{url}{page_path}"), None)
        .await;
    assert_eq!(status, 400);
    assert!(html.contains("another browser"), "{html}");
    assert!(!html.contains("alice@example.test"), "{html}");
    let (status, _) = laptop
        .page(
            &format!("{url}/authnz/lab/email_in_use?intent=forged"),
            None,
        )
        .await;
    assert_eq!(status, 400);

    // An unverified address: every other IdP is offered, none named as the account's.
    let phone = Browser::new();
    let unverified = refused_at_lab(&phone, &server, "mallory").await;
    let (status, html) = phone.page(&format!("{url}{unverified}"), None).await;
    assert_eq!(status, 200);
    assert!(html.contains("If it is your account"), "{html}");
    assert!(html.contains("href=\"/authnz/corp/login?next="), "{html}");

    // Signed in to another account (bob's), the offer is refused and forgotten.
    let intent = query_param(&format!("{url}{page_path}"), "intent").unwrap();
    let next = format!("/authnz/lab/connect_after?intent={intent}");
    let bob_login = format!(
        "/authnz/corp/login?next={}",
        url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
    );
    let callback = sign_in(&laptop, &url, "corp", &bob_login, "bob").await;
    assert_eq!(laptop.visit(&callback).await.status(), 303);
    let (status, other) = laptop.page(&format!("{url}{next}"), None).await;
    assert_eq!(status, 200);
    assert!(
        other.contains("which is not the account with that email address"),
        "{other}"
    );
    assert!(!other.contains("action=\"/authnz/lab/connect\""), "{other}");
    let (status, _) = laptop.page(&format!("{url}{next}"), None).await;
    assert_eq!(status, 400, "the offer is gone");
    let (_, bob) = laptop.me(&url).await;
    assert_eq!(bob["identities"].as_array().unwrap().len(), 1);

    // A script gets the plain refusal, and nothing is kept for it.
    let signups = server.count("signups").await;
    let script = Browser::new();
    let callback = sign_in(&script, &url, "lab", "/authnz/lab/login", "alice-lab").await;
    let response = script.get(&callback).await;
    assert_eq!(response.status(), 409);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "email_in_use");
    assert_eq!(server.count("signups").await, signups);
}

#[tokio::test]
async fn with_link_existing_never_the_refusal_offers_no_connect() {
    let (server, _provider) = server("link_existing = \"never\"").await;
    let url = server.url.clone();
    let alice = Browser::new();
    let callback = sign_in(&alice, &url, "corp", "/authnz/corp/login", "alice").await;
    assert_eq!(alice.get(&callback).await.status(), 303);
    let laptop = Browser::new();
    let callback = sign_in(&laptop, &url, "lab", "/authnz/lab/login", "alice-lab").await;
    let response = laptop.visit(&callback).await;
    assert_eq!(response.status(), 409);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("Sign in with the provider you used before"),
        "{html}"
    );
    assert!(!html.contains("connect_after"), "{html}");
    assert_eq!(server.count("signups").await, 0);
}

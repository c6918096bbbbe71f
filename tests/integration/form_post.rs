//! `response_mode = "form_post"` against the real `oidc-provider`: the provider posts the
//! answer to the callback; a post from another site (no SameSite=Lax cookies) is answered by
//! a page that posts the same fields again from this origin, which then completes the sign-in
//! with the browser's binding; a post from another browser, a replay, and a post to an entry
//! that answers by redirect are refused.

use authnz_tests::{oidc_idp_toml, Back, Browser, OidcProvider, Reserved};
use serde_json::json;

/// Posts the answer's `fields` to `action` from `browser`, as a browser posting from `origin`
/// (`Sec-Fetch-Site: site`, when given).
async fn post(
    browser: &Browser,
    action: &str,
    fields: &[(String, String)],
    origin: Option<&str>,
    site: &str,
) -> reqwest::Response {
    let mut request = browser
        .client
        .post(action)
        .header("Sec-Fetch-Site", site)
        .form(fields);
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_posted_answer_hops_once_and_signs_in_with_the_browsers_binding() {
    let reserved = Reserved::new();
    let provider = OidcProvider::start(
        &[reserved.callback("corp"), reserved.callback("lab")],
        json!({}),
    );
    let config = format!(
        "{}response_mode = \"form_post\"\n{}",
        oidc_idp_toml("corp", &provider.issuer),
        oidc_idp_toml("lab", &provider.issuer).replace("label = \"Corp\"", "label = \"Lab\""),
    );
    let server = reserved.start(&config).await;
    let url = server.url.clone();
    let callback = format!("{url}/authnz/corp/callback");
    let browser = Browser::new();
    let authorize = browser.start_login(&url, "corp").await;
    let Back::Posted(action, fields) = browser
        .sign_in_until_back(&authorize, "alice", &callback)
        .await
    else {
        panic!("the provider answered by redirect");
    };
    assert_eq!(action, callback);
    let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.contains(&"code") && names.contains(&"state"),
        "{names:?}"
    );

    // The provider's post, from its own site: a page that posts the fields again from here;
    // nothing is consumed yet.
    let pending = server.count("pending_logins").await;
    let first = post(
        &browser,
        &action,
        &fields,
        Some(&provider.issuer),
        "cross-site",
    )
    .await;
    assert_eq!(first.status(), 200);
    assert!(
        first.headers().get("set-cookie").is_none(),
        "no session from the cross-site post"
    );
    let page = first.text().await.unwrap();
    assert!(page.contains("data-auto-submit"), "{page}");
    assert!(
        page.contains("<script src=\"/authnz/assets/continue.js\"></script>"),
        "{page}"
    );
    assert!(page.contains("action=\"/authnz/corp/callback\""), "{page}");
    for (name, value) in &fields {
        assert!(
            page.contains(&format!("name=\"{name}\" value=\"{value}\"")),
            "{name} passed on: {page}"
        );
    }
    assert_eq!(server.count("pending_logins").await, pending);
    let script = browser
        .get(&format!("{url}/authnz/assets/continue.js"))
        .await;
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );

    // Another browser posting the same fields from here lacks the binding: refused, and the
    // sign-in is spent.
    let thief = Browser::new();
    let stolen = post(&thief, &action, &fields, Some(&url), "same-origin").await;
    assert_eq!(stolen.status(), 400);
    assert_eq!(thief.me(&url).await.0, 401);

    // A fresh sign-in: the same-origin post of the hop page completes it, in this browser.
    let authorize = browser.start_login(&url, "corp").await;
    let Back::Posted(action, fields) = browser
        .sign_in_until_back(&authorize, "alice", &callback)
        .await
    else {
        panic!("the provider answered by redirect");
    };
    let again = post(&browser, &action, &fields, Some(&url), "same-origin").await;
    assert_eq!(again.status(), 303);
    let (status, me) = browser.me(&url).await;
    assert_eq!(status, 200);
    assert_eq!(me["identities"][0]["subject"], "alice");
    // Replayed: the state is gone.
    let replay = post(&browser, &action, &fields, None, "same-origin").await;
    assert_eq!(replay.status(), 400);

    // An entry that answers by redirect takes no posted answer, and the other way round.
    let lab = Browser::new();
    let authorize = lab.start_login(&url, "lab").await;
    let redirect = lab
        .sign_in_at_provider(&authorize, "bob", &format!("{url}/authnz/lab/callback"))
        .await;
    let query: Vec<(String, String)> = url::Url::parse(&redirect)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let posted = post(
        &lab,
        &format!("{url}/authnz/lab/callback"),
        &query,
        None,
        "same-origin",
    )
    .await;
    assert_eq!(posted.status(), 400);
    let body: serde_json::Value = posted.json().await.unwrap();
    assert_eq!(body["error"], "wrong_response_mode", "{body}");
    assert_eq!(lab.me(&url).await.0, 401);
}

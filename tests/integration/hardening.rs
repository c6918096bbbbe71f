//! The smaller holes: `__Host-` cookies under https (SECURITY I78), a session planted before a
//! confirmed sign-up (G62), pending sign-ups that expire with their sealed tokens, and the
//! public health report, which names no file and no environment variable.

use authnz_tests::hostile::{HostileIdp, Reply};
use authnz_tests::jwt::key_a;
use authnz_tests::{query_param, Browser, Reserved};
use serde_json::json;

use crate::login_flow::dev_login;

pub const PUBLIC: &str = "https://login.example.test";

/// The value of cookie `name` in a `Set-Cookie` header.
pub fn cookie_value(response: &reqwest::Response, name: &str) -> (String, String) {
    let header = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    let value = header
        .strip_prefix(&format!("{name}="))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("{name} missing in {header}"))
        .to_string();
    (value, header)
}

/// Starts a login at the hostile IdP and scripts its answer: the binding cookie's value and
/// the callback URL.
pub async fn begin(client: &reqwest::Client, url: &str, idp: &HostileIdp) -> (String, String) {
    let start = client
        .get(format!("{url}/authnz/evil/login"))
        .send()
        .await
        .unwrap();
    let (binding, header) = cookie_value(&start, "__Host-authnz_login");
    assert!(
        header.contains("; Path=/;") && header.contains("Secure") && !header.contains("Domain"),
        "{header}"
    );
    let body: serde_json::Value = start.json().await.unwrap();
    let authorize = body["redirect_uri"].as_str().unwrap();
    let state = query_param(authorize, "state").unwrap();
    let nonce = query_param(authorize, "nonce").unwrap();
    let id_token = key_a().sign(json!({}), &idp.claims(&nonce, "https-access-token"));
    idp.with(|s| {
        s.token = Reply::Json(
            200,
            json!({"access_token": "https-access-token", "token_type": "Bearer",
                   "expires_in": 300, "id_token": id_token}),
        )
    });
    let mut callback = url::Url::parse(&format!("{url}/authnz/evil/callback")).unwrap();
    callback
        .query_pairs_mut()
        .append_pair("code", "c")
        .append_pair("state", &state)
        .append_pair("iss", &idp.issuer);
    (binding, callback.to_string())
}

#[tokio::test]
async fn under_https_the_cookies_are_host_prefixed_and_a_tossed_one_is_ignored() {
    let idp = HostileIdp::start().await;
    idp.answer_userinfo(json!({"sub": "alice-sub"}));
    let server = Reserved::new()
        .start_behind_https(PUBLIC, &idp.idp_toml("evil"))
        .await;
    let url = &server.url;
    // Cookies are sent by hand: the test speaks plain HTTP to what thinks it is behind TLS.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let callback_with = |callback: &str, cookie: String| {
        let request = client.get(callback).header("Cookie", cookie);
        async move { request.send().await.unwrap() }
    };
    // A plain `authnz_login` (as a sibling subdomain could set) does not bind the browser...
    let (binding, callback) = begin(&client, url, &idp).await;
    let tossed = callback_with(&callback, format!("authnz_login={binding}")).await;
    assert_eq!(tossed.status(), 400, "a plain authnz_login bound the login");
    // ...the prefixed one does.
    let (binding, callback) = begin(&client, url, &idp).await;
    let done = callback_with(&callback, format!("__Host-authnz_login={binding}")).await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], format!("{PUBLIC}/"));
    let (session, header) = cookie_value(&done, "__Host-authnz_session");
    assert!(
        header.contains("; Path=/;") && header.contains("Secure"),
        "{header}"
    );
    let me = |cookie: String| {
        let request = client
            .get(format!("{url}/api/users/me"))
            .header("Cookie", cookie);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(me(format!("__Host-authnz_session={session}")).await, 200);
    // A plain `authnz_session`, even a valid one, is ignored under https...
    assert_eq!(me(format!("authnz_session={session}")).await, 401);
    // ...and a tossed one beside the real one changes nothing.
    assert_eq!(
        me(format!(
            "authnz_session=tossed-by-a-sibling; __Host-authnz_session={session}; theme=dark"
        ))
        .await,
        200
    );
}

#[tokio::test]
async fn a_confirmed_sign_up_ends_a_planted_session_and_sign_ups_expire() {
    let server = Reserved::new()
        .start("[idps.dev]\nkind = \"dev\"\n\n[idps.open]\nkind = \"dev\"\nrequire_create_confirmation = true\n")
        .await;
    let url = server.url.clone();
    // Mallory has a session of her own and plants its cookie in Nora's browser.
    let mallory = Browser::new();
    assert_eq!(
        dev_login(&mallory, &url, "dev", "mallory", None)
            .await
            .status(),
        303
    );
    let planted = mallory.cookie(&url, "authnz_session").unwrap();
    let nora = Browser::new();
    nora.jar.add_cookie_str(
        &format!("authnz_session={planted}; Path=/"),
        &url::Url::parse(&url).unwrap(),
    );
    let response = dev_login(&nora, &url, "open", "nora", None).await;
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("/create_user?signup="), "{location}");
    let page = nora.get(&location).await.text().await.unwrap();
    let field = |name: &str| {
        page.split(&format!("name=\"{name}\" value=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_string()
    };
    let confirmed = nora
        .client
        .post(format!("{url}/authnz/open/create_user"))
        .header("Origin", &url)
        .form(&[("signup", field("signup")), ("csrf", field("csrf"))])
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 303);
    let (_, me) = nora.me(&url).await;
    assert_eq!(me["username"], "nora");
    assert_eq!(
        mallory.me(&url).await.0,
        401,
        "the planted session still works"
    );

    // A sign-up nobody confirms is swept with its sealed tokens once it expires.
    let idle = Browser::new();
    dev_login(&idle, &url, "open", "ida", None).await;
    assert_eq!(server.count("signups").await, 1);
    server.app.sweep().await;
    assert_eq!(server.count("signups").await, 1, "not yet expired");
    server.app.clock.advance(11 * 60);
    server.app.sweep().await;
    assert_eq!(server.count("signups").await, 0);
}

//! SECURITY I76, I77 and the provider-mapped subject: what happens to an identity's tokens after
//! the login. A refresh the IdP refuses ends the session and drops the tokens; concurrent
//! refreshes redeem the refresh token once; replaced refresh tokens are revoked; each session
//! logs out with its own ID token; a provider that maps `sub` (as Entra does) keeps working for
//! refresh, back-channel logout and bearer tokens.

use std::time::Duration;

use authnz_tests::hostile::{chrono_now, HostileIdp, Reply, CLIENT_ID};
use authnz_tests::jwt::key_a;
use authnz_tests::{query_param, Browser, Reserved, TestServer};
use serde_json::{json, Value};

const ACCESS_TOKEN: &str = "tokens-access-token-0001";

/// One login at the hostile IdP `name`, its ID token carrying `sid` and its token answer the
/// refresh token `refresh`; returns the browser and the ID token.
async fn login(
    server: &TestServer,
    idp: &HostileIdp,
    name: &str,
    sid: &str,
    refresh: &str,
) -> (Browser, String) {
    let browser = Browser::new();
    let mut id_token = String::new();
    let response = idp
        .sign_in(
            &browser,
            &server.url,
            name,
            ACCESS_TOKEN,
            |mut claims| {
                claims["sid"] = json!(sid);
                id_token = key_a().sign(json!({}), &claims);
                id_token.clone()
            },
            json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(response.status(), 303, "{}", response.text().await.unwrap());
    (browser, id_token)
}

/// A hostile IdP with revocation and end-session endpoints, and a server for it as `evil`.
async fn rig(extra_toml: &str) -> (HostileIdp, TestServer) {
    let idp = HostileIdp::start().await;
    idp.answer_userinfo(json!({"sub": "alice-sub"}));
    idp.with(|s| {
        let issuer = s.discovery["issuer"].as_str().unwrap().to_string();
        s.discovery["revocation_endpoint"] = json!(format!("{issuer}/revoke"));
        s.discovery["end_session_endpoint"] = json!(format!("{issuer}/session/end"));
        s.extra
            .insert("/revoke".into(), Reply::Json(200, json!({})));
    });
    let server = Reserved::new()
        .start(&format!("{}{extra_toml}", idp.idp_toml("evil")))
        .await;
    (idp, server)
}

/// How many refresh-token grants the IdP's token endpoint saw.
fn refresh_grants(idp: &HostileIdp) -> usize {
    idp.with(|s| {
        s.token_bodies
            .iter()
            .filter(|body| body.contains("grant_type=refresh_token"))
            .count()
    })
}

#[tokio::test]
async fn a_refresh_the_idp_refuses_ends_the_session_and_drops_the_tokens() {
    // I77: the person revoked authnz at the OP; its refresh answer is a 400 with no body.
    let (idp, server) = rig("").await;
    let (browser, _) = login(&server, &idp, "evil", "sid-1", "refresh-token-one").await;
    let tokens = format!("{}/api/users/me/tokens/evil", server.url);
    server.app.clock.advance(400);
    idp.with(|s| {
        s.token = Reply::Raw {
            status: 400,
            content_type: "text/plain".into(),
            body: Vec::new(),
        }
    });
    let response = browser.get(&tokens).await;
    assert_eq!(response.status(), 401, "a refusal, not an IdP failure");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "reauthenticate", "{body}");
    assert!(
        server
            .app
            .store
            .sealed_tokens("evil", "alice-sub")
            .await
            .unwrap()
            .is_none(),
        "the refused tokens are dropped"
    );
    assert_eq!(browser.me(&server.url).await.0, 401, "the session ended");
    assert_eq!(refresh_grants(&idp), 1);
    // No loop: asking again costs the IdP nothing.
    assert_eq!(browser.get(&tokens).await.status(), 401);
    assert_eq!(refresh_grants(&idp), 1);
    // A 5xx stays the IdP's failure: 502, tokens and session kept.
    server.app.clock.advance(-400);
    let (browser, _) = login(&server, &idp, "evil", "sid-2", "refresh-token-two").await;
    server.app.clock.advance(400);
    idp.with(|s| s.token = Reply::Json(503, json!({"error": "temporarily_unavailable"})));
    assert_eq!(browser.get(&tokens).await.status(), 502);
    assert_eq!(browser.me(&server.url).await.0, 200);
}

#[tokio::test]
async fn concurrent_refreshes_redeem_the_refresh_token_once() {
    // I77: IdPs with rotation and reuse detection revoke the whole grant on a second use.
    let (idp, server) = rig("").await;
    let (browser, _) = login(&server, &idp, "evil", "sid-1", "refresh-token-one").await;
    server.app.clock.advance(400);
    idp.with(|s| {
        s.token = Reply::Slow(
            Duration::from_millis(300),
            200,
            json!({"access_token": "fresh-access-token-0002", "token_type": "Bearer",
                   "expires_in": 3600, "refresh_token": "refresh-token-rotated"}),
        )
    });
    let tokens = format!("{}/api/users/me/tokens/evil", server.url);
    let answers = futures_util::future::join_all((0..5).map(|_| {
        let request = browser.client.get(&tokens).send();
        async move {
            let response = request.await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    }))
    .await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["access_token"], "fresh-access-token-0002");
    }
    assert_eq!(refresh_grants(&idp), 1, "one refresh for five callers");
    assert!(server.app.refreshing.is_empty(), "the lock is forgotten");
}

#[tokio::test]
async fn a_replaced_refresh_token_is_revoked_and_none_outlives_the_account() {
    // I77: a second login replaces the stored tokens; the refresh token it replaced must not
    // stay alive at the IdP, or deleting the account would leave a grant behind.
    let (idp, server) = rig("").await;
    let (first, _) = login(&server, &idp, "evil", "sid-1", "refresh-token-one").await;
    let (_second, _) = login(&server, &idp, "evil", "sid-2", "refresh-token-two").await;
    let revoked = || {
        idp.with(|s| {
            s.bodies
                .iter()
                .filter(|(path, _)| path == "/revoke")
                .map(|(_, body)| body.clone())
                .collect::<Vec<_>>()
        })
    };
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen = revoked();
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen.iter()
            .any(|body| body.contains("token=refresh-token-one")),
        "the replaced refresh token was not revoked: {seen:?}"
    );
    assert!(
        !seen.iter().any(|body| body.contains("refresh-token-two")),
        "the live one was revoked: {seen:?}"
    );
    // Deleting the account revokes the one it holds.
    let url = &server.url;
    let response = first
        .client
        .delete(format!("{url}/api/users/me?confirm=alice"))
        .header("Origin", url)
        .header("X-CSRF-Token", first.csrf(url).await)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(revoked()
        .iter()
        .any(|body| body.contains("token=refresh-token-two")));
}

#[tokio::test]
async fn each_session_logs_out_with_its_own_id_token() {
    // I76: two browsers, one identity; logging out of the first names the first's login.
    let (idp, server) = rig("").await;
    let (first, first_token) = login(&server, &idp, "evil", "sid-first", "refresh-1").await;
    let (second, second_token) = login(&server, &idp, "evil", "sid-second", "refresh-2").await;
    assert_ne!(first_token, second_token);
    let response = first.post(&server.url, "/authnz/logout").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let end = body["end_session_url"].as_str().unwrap();
    assert_eq!(
        query_param(end, "id_token_hint").as_deref(),
        Some(first_token.as_str()),
        "the hint names another browser's login"
    );
    assert_eq!(second.me(&server.url).await.0, 200);
}

/// A provider that keys identities by a mapping of `sub`, as Entra does with `tid:oid`.
struct Mapped;

impl authnz_plugin::IdentityProvider for Mapped {
    fn describe(&self) -> authnz_plugin::ProviderInfo {
        authnz_plugin::ProviderInfo {
            kind: "mapped".into(),
            ..Default::default()
        }
    }

    fn map_identity(
        &self,
        claims: &authnz_plugin::VerifiedClaims,
    ) -> Result<authnz_plugin::MappedIdentity, authnz_plugin::MapError> {
        let mut identity = authnz_plugin::standard_identity(claims);
        identity.subject = format!("mapped:{}", claims.subject);
        Ok(identity)
    }
}

fn mapped_factory(
    _: &authnz_plugin::ProviderSettings,
) -> Result<Box<dyn authnz_plugin::IdentityProvider>, Vec<authnz_plugin::ConfigError>> {
    Ok(Box::new(Mapped))
}

#[tokio::test]
async fn a_mapped_subject_serves_refresh_back_channel_logout_and_bearer_tokens() {
    let idp = HostileIdp::start().await;
    idp.answer_userinfo(json!({"sub": "alice-sub"}));
    let mut registry = authnz::registry::Registry::builtin();
    registry.register("mapped", mapped_factory);
    let toml = idp
        .idp_toml("evil")
        .replace("kind = \"oidc\"", "kind = \"mapped\"")
        + "accepted_audiences = [\"galaxy-api\"]\n";
    let server = Reserved::new().start_with(&toml, registry).await;
    let url = server.url.clone();
    let (browser, _) = login(&server, &idp, "evil", "sid-1", "refresh-token-one").await;
    let (_, me) = browser.me(&url).await;
    assert_eq!(me["identities"][0]["subject"], "mapped:alice-sub");

    // Refresh: the refreshed ID token's `sub` is the login's raw `sub`, not the mapping.
    server.app.clock.advance(400);
    let now = chrono_now() + 400;
    let refreshed = key_a().sign(
        json!({}),
        &json!({"iss": idp.issuer, "aud": CLIENT_ID, "sub": "alice-sub", "iat": now, "exp": now + 300}),
    );
    idp.with(|s| {
        s.token = Reply::Json(
            200,
            json!({"access_token": "fresh-access-token-0002", "token_type": "Bearer",
                   "expires_in": 300, "id_token": refreshed}),
        )
    });
    let response = browser
        .get(&format!("{url}/api/users/me/tokens/evil"))
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    server.app.clock.advance(-400);

    // A bearer access token of that identity.
    let now = chrono_now();
    let access = key_a().sign(
        json!({"typ": "at+jwt"}),
        &json!({"iss": idp.issuer, "aud": "galaxy-api", "sub": "alice-sub", "iat": now, "exp": now + 300}),
    );
    let status = reqwest::Client::new()
        .get(format!("{url}/api/users/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    // Back-channel logout by `sub` alone ends the session of the mapped identity.
    let logout_token = key_a().sign(
        json!({"typ": "logout+jwt"}),
        &json!({"iss": idp.issuer, "aud": CLIENT_ID, "iat": now, "jti": "bcl-mapped-1",
                "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
                "sub": "alice-sub"}),
    );
    let response = reqwest::Client::new()
        .post(format!("{url}/authnz/evil/backchannel-logout"))
        .form(&[("logout_token", logout_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["sessions_ended"], 1, "{body}");
    assert_eq!(browser.me(&url).await.0, 401);
}

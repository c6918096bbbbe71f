//! How authnz authenticates itself to the IdP (`client_auth`), against the real
//! `oidc-provider` registered for each method: `private_key_jwt` (ES256 and RS256) for the code,
//! the refresh and the revocation, a key the provider does not know refused, the public key at
//! `/authnz/{idp}/jwks.json`; `client_secret_jwt` and `client_secret_post`.

use authnz::client_key::ClientKey;
use authnz_tests::hostile::{HostileIdp, CLIENT_ID, CLIENT_SECRET};
use authnz_tests::jwt::key_a;
use authnz_tests::{Browser, OidcProvider, Reserved};
use serde_json::json;

/// A secret long enough for HS256 (the provider wants 256 bits for `client_secret_jwt`).
const LONG_SECRET: &str = "a-client-secret-of-more-than-thirty-two-bytes";

/// A fresh key in a PKCS#8 PEM file, and its public JWK: P-256, or RSA (`rsa`).
fn client_key(dir: &std::path::Path, rsa: bool) -> (std::path::PathBuf, serde_json::Value) {
    let der = if rsa {
        use rsa::pkcs8::EncodePrivateKey;
        rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
            .unwrap()
            .to_pkcs8_der()
            .unwrap()
            .as_bytes()
            .to_vec()
    } else {
        authnz::signing::SigningKey::generate_pkcs8().unwrap()
    };
    let path = dir.join(if rsa { "rsa.pem" } else { "ec.pem" });
    std::fs::write(&path, authnz::signing::pkcs8_pem(&der)).unwrap();
    let jwk = ClientKey::from_pkcs8(&der, None).unwrap().jwk();
    (path, jwk)
}

fn entry(issuer: &str, lines: &str) -> String {
    format!(
        "[idps.corp]\nkind = \"oidc\"\nissuer = \"{issuer}\"\nclient_id = \"authnz\"\n{lines}\n"
    )
}

#[tokio::test]
async fn private_key_jwt_signs_in_refreshes_and_revokes_without_a_secret() {
    let keys = tempfile::tempdir().unwrap();
    for rsa in [false, true] {
        let (path, jwk) = client_key(keys.path(), rsa);
        let reserved = Reserved::new();
        let provider = OidcProvider::start_with(
            &[reserved.callback("corp")],
            json!({}),
            json!({
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [jwk]},
            }),
        );
        let config = entry(
            &provider.issuer,
            &format!(
                "client_auth = \"private_key_jwt\"\nclient_key_file = \"{}\"\nscopes = [\"openid\", \"email\", \"offline_access\"]\nprompt = \"consent\"",
                path.display()
            ),
        );
        let server = reserved.start(&config).await;
        let url = &server.url;

        // The public key, for an IdP that fetches it.
        let jwks: serde_json::Value = Browser::new()
            .get(&format!("{url}/authnz/corp/jwks.json"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(jwks["keys"][0]["kid"], jwk["kid"]);
        assert_eq!(jwks["keys"][0]["alg"], if rsa { "RS256" } else { "ES256" });
        assert!(jwks["keys"][0].get("d").is_none(), "no private part");
        assert!(jwks["keys"][0].get("p").is_none(), "no private part");

        // A login: the provider took the assertion for the code.
        let alice = Browser::new();
        let response = alice.login_with_provider(url, "corp", "alice").await;
        assert_eq!(response.status(), 303, "rsa: {rsa}");
        let (status, me) = alice.me(url).await;
        assert_eq!(status, 200);
        assert_eq!(me["identities"][0]["subject"], "alice");

        // A refresh and a revocation, each with its own assertion.
        let idp = server.app.idp("corp").unwrap();
        let tokens = server.tokens("corp", "alice").await;
        assert!(tokens.refresh_token.is_some(), "offline_access gave one");
        let fresh = idp
            .refresh(&tokens, "alice", chrono::Utc::now().timestamp())
            .await
            .expect("the provider refreshed with an assertion");
        assert_ne!(fresh.access_token, tokens.access_token);
        assert!(idp.revoke(&fresh).await.expect("revoked with an assertion"));
        let refused = idp
            .refresh(&fresh, "alice", chrono::Utc::now().timestamp())
            .await;
        assert!(refused.is_err(), "the revoked refresh token is dead");
    }
}

#[tokio::test]
async fn a_key_the_provider_does_not_know_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let (_, registered) = client_key(keys.path(), false);
    let other = tempfile::tempdir().unwrap();
    let (path, _) = client_key(other.path(), false);
    let reserved = Reserved::new();
    let without_par = Reserved::new();
    let provider = OidcProvider::start_with(
        &[reserved.callback("corp"), without_par.callback("corp")],
        json!({}),
        json!({
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [registered]},
        }),
    );
    let config = entry(
        &provider.issuer,
        &format!(
            "client_auth = \"private_key_jwt\"\nclient_key_file = \"{}\"",
            path.display()
        ),
    );
    let server = reserved.start(&config).await;
    // The provider pushes its authorization requests: the unknown key is refused there, before
    // the browser is sent anywhere.
    let response = Browser::new()
        .get(&format!("{}/authnz/corp/login", server.url))
        .await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("refused the pushed authorization request (401, invalid_client)"),
        "{body}"
    );
    assert_eq!(server.count("pending_logins").await, 0);
    // Without PAR, at the token endpoint: no session, no account.
    let never = without_par
        .start(&format!("{config}par = \"never\"\n"))
        .await;
    let browser = Browser::new();
    let response = browser
        .login_with_provider(&never.url, "corp", "alice")
        .await;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(status == 401 || status == 502, "{status} {body}");
    assert_eq!(browser.me(&never.url).await.0, 401);
    assert_eq!(never.count("users").await, 0);
    // An entry without a key has no key set to show.
    let none = Browser::new()
        .get(&format!("{}/authnz/nope/jwks.json", server.url))
        .await;
    assert_eq!(none.status(), 404);
}

#[tokio::test]
async fn client_secret_jwt_and_client_secret_post_sign_in() {
    for method in ["client_secret_jwt", "client_secret_post"] {
        let reserved = Reserved::new();
        let provider = OidcProvider::start_with(
            &[reserved.callback("corp")],
            json!({}),
            json!({
                "client_secret": LONG_SECRET,
                "token_endpoint_auth_method": method,
            }),
        );
        let config = entry(
            &provider.issuer,
            &format!("client_auth = \"{method}\"\nclient_secret = \"{LONG_SECRET}\""),
        );
        let server = reserved.start(&config).await;
        let alice = Browser::new();
        let response = alice
            .login_with_provider(&server.url, "corp", "alice")
            .await;
        assert_eq!(response.status(), 303, "{method}");
        assert_eq!(alice.me(&server.url).await.0, 200, "{method}");
    }
}

#[tokio::test]
async fn each_assertion_is_fresh_and_names_whom_it_is_for() {
    let keys = tempfile::tempdir().unwrap();
    let (path, jwk) = client_key(keys.path(), false);
    for (audience, line) in [
        ("token_endpoint", ""),
        ("issuer", "client_assertion_audience = \"issuer\"\n"),
    ] {
        let idp = HostileIdp::start().await;
        idp.answer_userinfo(json!({"sub": "alice-sub"}));
        let config = idp
            .idp_toml("corp")
            .replace(&format!("client_secret = \"{CLIENT_SECRET}\"\n"), "")
            + &format!(
                "client_auth = \"private_key_jwt\"\nclient_key_file = \"{}\"\n{line}",
                path.display()
            );
        let server = Reserved::new().start(&config).await;
        let mut seen = Vec::new();
        for _ in 0..2 {
            let browser = Browser::new();
            let response = idp
                .sign_in(
                    &browser,
                    &server.url,
                    "corp",
                    "at-1",
                    |claims| key_a().sign(json!({}), &claims),
                    json!({}),
                )
                .await;
            assert_eq!(response.status(), 303, "{audience}");
            let body = idp.with(|script| script.token_bodies.last().cloned().unwrap());
            let form: std::collections::HashMap<String, String> =
                url::form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect();
            assert_eq!(
                form["client_assertion_type"],
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            );
            assert_eq!(form["client_id"], CLIENT_ID);
            assert!(!form.contains_key("client_secret"));
            let (header, claims) = authnz_tests::jwt::parts(&form["client_assertion"]);
            assert_eq!(header["kid"], jwk["kid"]);
            assert_eq!(header["alg"], "ES256");
            assert_eq!(claims["iss"], CLIENT_ID);
            assert_eq!(claims["sub"], CLIENT_ID);
            let expected = if audience == "issuer" {
                idp.issuer.clone()
            } else {
                format!("{}/token", idp.issuer)
            };
            assert_eq!(claims["aud"], expected.as_str());
            assert_eq!(
                claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
                60
            );
            seen.push(claims["jti"].as_str().unwrap().to_string());
        }
        assert_ne!(seen[0], seen[1], "a fresh jti each time");
    }
}

//! Sender-constrained tokens (`dpop = true`, RFC 9449) against the real `oidc-provider` for a
//! client whose tokens it binds: the sign-in (code exchange and userinfo with proofs), the
//! stored tokens bound to the identity's own key, which the provider refuses as bearer
//! tokens; a refresh and a revocation with proofs; the provider's nonce, met by one retry. The
//! hostile IdP for a bound answer nobody asked for, and an unbound one when one was.

use authnz_tests::hostile::{HostileIdp, Reply};
use authnz_tests::jwt::key_a;
use authnz_tests::{oidc_idp_toml, query_param, Browser, OidcProvider, Reserved};
use serde_json::json;

#[tokio::test]
async fn dpop_binds_the_tokens_to_the_identitys_key_with_and_without_nonces() {
    for nonce in ["0", "1"] {
        let reserved = Reserved::new();
        let provider = OidcProvider::start_with_env(
            &[reserved.callback("corp")],
            json!({}),
            json!({"dpop_bound_access_tokens": true}),
            &[("OIDC_DPOP_NONCE", nonce)],
        );
        let config = format!(
            "{}dpop = true\nscopes = [\"openid\", \"email\", \"offline_access\"]\nprompt = \"consent\"\n",
            oidc_idp_toml("corp", &provider.issuer)
        );
        let server = reserved.start(&config).await;
        let url = &server.url;
        let alice = Browser::new();
        let response = alice.login_with_provider(url, "corp", "alice").await;
        assert_eq!(response.status(), 303, "nonce {nonce}");
        let (_, me) = alice.me(url).await;
        assert_eq!(me["identities"][0]["subject"], "alice");

        // Bound: the key is the identity's, sealed with its tokens; the provider refuses the
        // access token as a bearer one.
        let tokens = server.tokens("corp", "alice").await;
        assert_eq!(tokens.token_type.as_deref(), Some("DPoP"));
        assert!(tokens.dpop_key.is_some());
        let bearer = reqwest::Client::new()
            .get(format!("{}/me", provider.issuer))
            .bearer_auth(&tokens.access_token)
            .send()
            .await
            .unwrap();
        assert_eq!(bearer.status(), 401, "a bound token is no bearer token");
        // What the application is told.
        let view: serde_json::Value = alice
            .client
            .get(format!("{url}/api/users/me/tokens/corp"))
            .header("Origin", url.as_str())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(view["token_type"], "DPoP", "{view}");

        // A refresh and a revocation, each with a proof of the same key.
        let idp = server.app.idp("corp").unwrap();
        let fresh = idp
            .refresh(&tokens, "alice", chrono::Utc::now().timestamp())
            .await
            .expect("refreshed with a proof");
        assert_ne!(fresh.access_token, tokens.access_token);
        assert_eq!(fresh.token_type.as_deref(), Some("DPoP"));
        assert_eq!(
            fresh.dpop_key, tokens.dpop_key,
            "the identity keeps its key"
        );
        assert!(idp.revoke(&fresh).await.expect("revoked"));
        assert!(idp
            .refresh(&fresh, "alice", chrono::Utc::now().timestamp())
            .await
            .is_err());
    }
}

#[tokio::test]
async fn a_bound_answer_nobody_asked_for_and_an_unbound_one_are_refused() {
    for (dpop, answer_type, says) in [
        (false, "DPoP", "DPoP-bound tokens, which were not asked for"),
        (true, "Bearer", "did not bind the tokens to the DPoP key"),
    ] {
        let idp = HostileIdp::start().await;
        idp.answer_userinfo(json!({"sub": "alice-sub"}));
        let config = format!(
            "{}{}",
            idp.idp_toml("corp"),
            if dpop { "dpop = true\n" } else { "" }
        );
        let server = Reserved::new().start(&config).await;
        let browser = Browser::new();
        let authorize = browser.start_login(&server.url, "corp").await;
        let state = query_param(&authorize, "state").unwrap();
        let nonce = query_param(&authorize, "nonce").unwrap();
        let claims = idp.claims(&nonce, "at-1");
        idp.with(|script| {
            script.token = Reply::Json(
                200,
                json!({
                    "access_token": "at-1",
                    "token_type": answer_type,
                    "expires_in": 300,
                    "id_token": key_a().sign(json!({}), &claims),
                }),
            )
        });
        let response = browser
            .get(&format!(
                "{}/authnz/corp/callback?code=c&state={state}&iss={}",
                server.url,
                url::form_urlencoded::byte_serialize(idp.issuer.as_bytes()).collect::<String>()
            ))
            .await;
        assert_eq!(response.status(), 502, "dpop {dpop}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
        assert_eq!(browser.me(&server.url).await.0, 401);
        assert_eq!(server.count("users").await, 0);
        if dpop {
            // The proof the token request carried: this call's method and URL, a fresh jti.
            let proof = idp.with(|script| {
                script
                    .headers
                    .iter()
                    .rev()
                    .find(|(path, _)| path == "/token")
                    .and_then(|(_, headers)| headers.get("dpop").cloned())
            });
            let proof = proof.expect("a DPoP proof on the token request");
            let (header, claims) = authnz_tests::jwt::parts(proof.to_str().unwrap());
            assert_eq!(header["typ"], "dpop+jwt");
            assert_eq!(header["alg"], "ES256");
            assert!(
                header["jwk"].get("d").is_none(),
                "no private part: {header}"
            );
            assert_eq!(claims["htm"], "POST");
            assert_eq!(claims["htu"], format!("{}/token", idp.issuer));
            assert!(claims["jti"].as_str().unwrap().len() >= 16);
        }
    }
}

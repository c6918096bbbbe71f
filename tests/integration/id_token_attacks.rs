//! SECURITY B14–B18, C19–C45, D46: what the token response, the ID token and userinfo must
//! satisfy, played by the hostile IdP. Every rejection asserts its status, that no session
//! started, that the store changed only by the consumed pending login, and (for ID-token
//! failures) that userinfo was never called. Positive controls sit beside the attacks.

use std::time::Duration;

use authnz_tests::hostile::{chrono_now, HostileIdp, Reply, CLIENT_ID, CLIENT_SECRET};
use authnz_tests::jwt::{self, key_a, key_b};
use authnz_tests::{
    assert_only_pending_consumed, logs, query_param, Browser, Reserved, TestServer,
};
use serde_json::{json, Value};

struct Rig {
    server: TestServer,
    idp: HostileIdp,
}

const ACCESS_TOKEN: &str = "hostile-access-token-value-0001";

impl Rig {
    async fn new() -> Self {
        let idp = HostileIdp::start().await;
        idp.answer_userinfo(json!({"sub": "alice-sub", "email": "alice@example.test"}));
        let server = Reserved::new().start(&idp.idp_toml("evil")).await;
        Self { server, idp }
    }

    /// A good ID token for `nonce`, after `edit` changed its claims.
    fn token(&self, nonce: &str, edit: impl FnOnce(&mut Value)) -> String {
        let mut claims = self.idp.claims(nonce, ACCESS_TOKEN);
        edit(&mut claims);
        key_a().sign(json!({}), &claims)
    }

    /// Starts a login, lets `script` set up the IdP for its nonce, and calls the callback.
    async fn attempt(&self, script: impl FnOnce(&HostileIdp, &str)) -> (u16, Value, Browser) {
        let browser = Browser::new();
        let authorize = browser.start_login(&self.server.url, "evil").await;
        let state = query_param(&authorize, "state").unwrap();
        let nonce = query_param(&authorize, "nonce").unwrap();
        script(&self.idp, &nonce);
        self.idp.clear_calls();
        let url = format!(
            "{}/authnz/evil/callback?code=code-{state}&state={state}&iss={}",
            self.server.url,
            url::form_urlencoded::byte_serialize(
                self.server
                    .app
                    .idp("evil")
                    .unwrap()
                    .config
                    .issuer
                    .as_bytes()
            )
            .collect::<String>()
        );
        let response = browser.get(&url).await;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body, browser)
    }

    async fn expect_rejected(
        &self,
        case: &str,
        status: u16,
        script: impl FnOnce(&HostileIdp, &str),
    ) -> Value {
        let before = self.server.dump().await;
        let sessions_before = before["sessions"].len();
        let (got, body, browser) = self.attempt(script).await;
        assert_eq!(got, status, "{case}: {body}");
        assert_eq!(
            browser.me(&self.server.url).await.0,
            401,
            "{case}: a session started"
        );
        let after = self.server.dump().await;
        assert_only_pending_consumed(&before, &after);
        assert_eq!(after["sessions"].len(), sessions_before, "{case}");
        // No token, code or secret of the attempt reached the logs.
        let code = self
            .idp
            .with(|s| s.token_bodies.last().cloned())
            .unwrap_or_default();
        let code = url::form_urlencoded::parse(code.as_bytes())
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        logs::assert_not_logged(&[ACCESS_TOKEN, CLIENT_SECRET, &code]);
        body
    }

    async fn expect_accepted(&self, case: &str, script: impl FnOnce(&HostileIdp, &str)) {
        let (status, body, browser) = self.attempt(script).await;
        assert_eq!(status, 303, "{case} (positive control): {body}");
        assert_eq!(browser.me(&self.server.url).await.0, 200, "{case}");
    }

    /// An ID-token rejection: 401, and userinfo never called.
    async fn expect_token_rejected(&self, case: &str, make: impl FnOnce(&Rig, &str) -> String) {
        let body = self
            .expect_rejected(case, 401, |idp, nonce| {
                let token = make(self, nonce);
                idp.answer_token(Some(token), ACCESS_TOKEN);
            })
            .await;
        assert_eq!(body["error"], "id_token_invalid", "{case}: {body}");
        assert!(!self.idp.called("/userinfo"), "{case}: userinfo was called");
    }
}

#[tokio::test]
async fn a_good_token_is_accepted_and_userinfo_is_checked() {
    let rig = Rig::new().await;
    rig.expect_accepted("good token", |idp, nonce| {
        let token = key_a().sign(json!({}), &idp.claims(nonce, ACCESS_TOKEN));
        idp.answer_token(Some(token), ACCESS_TOKEN);
    })
    .await;
    assert!(rig.idp.called("/userinfo"));
    // D48: the access token goes in the Authorization header, never in the URL.
    let (uri, authorization) = rig
        .idp
        .with(|script| script.userinfo_requests.last().cloned())
        .unwrap();
    assert_eq!(
        authorization.as_deref(),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );
    assert!(!uri.contains(ACCESS_TOKEN) && !uri.contains('?'), "{uri}");
    // The client authenticated at the token endpoint with the PKCE verifier.
    let body = rig
        .idp
        .with(|script| script.token_bodies.last().cloned())
        .unwrap();
    assert!(body.contains("code_verifier="), "{body}");
    assert!(
        !body.contains(CLIENT_SECRET),
        "the secret goes in the Authorization header, not the body"
    );
    logs::assert_not_logged(&[ACCESS_TOKEN, CLIENT_SECRET]);
}

#[tokio::test]
async fn token_responses_without_an_id_token_or_from_a_broken_idp_are_refused() {
    let rig = Rig::new().await;
    // B14: no ID token → no userinfo-only login.
    let body = rig
        .expect_rejected("no id_token", 401, |idp, _| {
            idp.answer_token(None, ACCESS_TOKEN)
        })
        .await;
    assert_eq!(body["error"], "id_token_missing");
    assert!(!rig.idp.called("/userinfo"));

    // B15: a redirect from the token endpoint is not followed.
    let target = format!("{}/stolen", rig.idp.issuer);
    let body = rig
        .expect_rejected("token 302", 502, |idp, _| {
            idp.with(|s| s.token = Reply::Redirect(target.clone()))
        })
        .await;
    assert!(
        body["error"].as_str().unwrap().starts_with("idp_"),
        "{body}"
    );
    assert!(!rig.idp.called("/stolen"), "the redirect was followed");

    // B16: 5xx, an HTML body, a body over the limit, a hang.
    rig.expect_rejected("token 500", 502, |idp, _| {
        idp.with(|s| s.token = Reply::Json(500, json!({"error": "server_error"})))
    })
    .await;
    rig.expect_rejected("token html", 502, |idp, _| {
        idp.with(|s| {
            s.token = Reply::Raw {
                status: 200,
                content_type: "text/html".into(),
                body: b"<html>hi</html>".to_vec(),
            }
        })
    })
    .await;
    rig.expect_rejected("token huge", 502, |idp, _| {
        idp.with(|s| {
            s.token = Reply::Raw {
                status: 200,
                content_type: "application/json".into(),
                body: vec![b' '; 2 * 1024 * 1024],
            }
        })
    })
    .await;
    let started = std::time::Instant::now();
    rig.expect_rejected("token hang", 502, |idp, _| {
        idp.with(|s| s.token = Reply::Hang(Duration::from_secs(8)))
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the timeout was not applied"
    );

    // B17: malformed JSON whose body carries a token-like secret: 502, and never logged.
    rig.expect_rejected("token malformed", 502, |idp, _| {
        idp.with(|s| {
            s.token = Reply::Raw {
                status: 200,
                content_type: "application/json".into(),
                body: br#"{"access_token": "leaky-token-in-a-broken-body", "token_type": "#
                    .to_vec(),
            }
        })
    })
    .await;
    logs::assert_not_logged(&["leaky-token-in-a-broken-body"]);

    // B18 (and the IdP refusing the code): invalid_grant → 401.
    let body = rig
        .expect_rejected("invalid_grant", 401, |idp, _| {
            idp.with(|s| s.token = Reply::Json(400, json!({"error": "invalid_grant"})))
        })
        .await;
    assert_eq!(body["error"], "code_rejected");
}

#[tokio::test]
async fn bad_signatures_and_algorithms_are_refused() {
    let rig = Rig::new().await;
    // C19: a bad RS256 signature.
    rig.expect_token_rejected("bad rs256 signature", |rig, nonce| {
        jwt::corrupt_signature(&rig.token(nonce, |_| {}))
    })
    .await;
    // C21: alg none.
    rig.expect_token_rejected("alg none", |rig, nonce| {
        jwt::unsigned(&rig.idp.claims(nonce, ACCESS_TOKEN))
    })
    .await;
    // C23/C22: HS256, with the client secret (HS256 is not an allowed alg here) and with the
    // RSA public key as the MAC key (algorithm confusion).
    rig.expect_token_rejected("hs256 with the secret", |rig, nonce| {
        jwt::sign_hs256(
            CLIENT_SECRET.as_bytes(),
            json!({}),
            &rig.idp.claims(nonce, ACCESS_TOKEN),
        )
    })
    .await;
    rig.expect_token_rejected("alg confusion", |rig, nonce| {
        let public = key_a().jwk()["n"].as_str().unwrap().to_string();
        jwt::sign_hs256(
            public.as_bytes(),
            json!({"kid": "key-a"}),
            &rig.idp.claims(nonce, ACCESS_TOKEN),
        )
    })
    .await;
    // C25: a header naming the attacker's key, signed with it; nothing fetched from jku.
    rig.expect_token_rejected("jwk/jku header injection", |rig, nonce| {
        let jku = format!("{}/attacker-jwks", rig.idp.issuer);
        key_b().sign(
            json!({"jku": jku, "jwk": key_b().jwk(), "kid": "key-b"}),
            &rig.idp.claims(nonce, ACCESS_TOKEN),
        )
    })
    .await;
    assert!(!rig.idp.called("/attacker-jwks"));
    // C26: crit header, and an encrypted-token header.
    rig.expect_token_rejected("crit header", |rig, nonce| {
        key_a().sign(
            json!({"crit": ["exp"]}),
            &rig.idp.claims(nonce, ACCESS_TOKEN),
        )
    })
    .await;
    rig.expect_token_rejected("JWE-encrypted token", |_, _| {
        let header = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"RSA-OAEP","enc":"A256GCM","kid":"key-a"}"#,
        );
        format!("{header}.ZW5jcnlwdGVkLWtleQ.aXYtaXYtaXYtaXY.Y2lwaGVydGV4dA.dGFn")
    })
    .await;
    rig.expect_token_rejected("not a JWT at all", |_, _| {
        "definitely-not-a-jwt".to_string()
    })
    .await;
    rig.expect_token_rejected("cty JWT", |rig, nonce| {
        key_a().sign(json!({"cty": "JWT"}), &rig.idp.claims(nonce, ACCESS_TOKEN))
    })
    .await;
}

#[tokio::test]
async fn none_stays_refused_even_when_discovery_advertises_it() {
    // C24: the allowed algorithms are pinned by config, not taken from discovery.
    let idp = HostileIdp::start().await;
    idp.with(|s| s.discovery["id_token_signing_alg_values_supported"] = json!(["HS256", "none"]));
    idp.answer_userinfo(json!({"sub": "alice-sub"}));
    let server = Reserved::new().start(&idp.idp_toml("evil")).await;
    let rig = Rig { server, idp };
    rig.expect_token_rejected("none advertised", |rig, nonce| {
        jwt::unsigned(&rig.idp.claims(nonce, ACCESS_TOKEN))
    })
    .await;
    rig.expect_token_rejected("hs256 advertised", |rig, nonce| {
        jwt::sign_hs256(
            CLIENT_SECRET.as_bytes(),
            json!({}),
            &rig.idp.claims(nonce, ACCESS_TOKEN),
        )
    })
    .await;
    rig.expect_accepted("rs256 still works", |idp, nonce| {
        idp.answer_token(
            Some(key_a().sign(json!({}), &idp.claims(nonce, ACCESS_TOKEN))),
            ACCESS_TOKEN,
        )
    })
    .await;
}

#[tokio::test]
async fn wrong_claims_are_refused() {
    let rig = Rig::new().await;
    let now = chrono_now();
    type Edit = Box<dyn Fn(&mut Value, &str)>;
    let cases: Vec<(&str, Edit)> = vec![
        // C27
        (
            "iss trailing slash",
            Box::new(|c, iss| c["iss"] = json!(format!("{iss}/"))),
        ),
        (
            "iss https",
            Box::new(|c, iss| c["iss"] = json!(iss.replace("http://", "https://"))),
        ),
        (
            "iss other",
            Box::new(|c, _| c["iss"] = json!("https://other.example")),
        ),
        // C28–C30
        (
            "aud wrong",
            Box::new(|c, _| c["aud"] = json!("someone-else")),
        ),
        (
            "aud missing",
            Box::new(|c, _| drop(c.as_object_mut().unwrap().remove("aud"))),
        ),
        (
            "aud extra",
            Box::new(|c, _| c["aud"] = json!([CLIENT_ID, "other"])),
        ),
        // C31
        (
            "azp other",
            Box::new(|c, _| c["azp"] = json!("other-client")),
        ),
        // C32
        ("expired", Box::new(move |c, _| c["exp"] = json!(now - 120))),
        // C33, C34
        (
            "iat missing",
            Box::new(|c, _| drop(c.as_object_mut().unwrap().remove("iat"))),
        ),
        (
            "iat future",
            Box::new(move |c, _| c["iat"] = json!(now + 600)),
        ),
        (
            "iat before the login",
            Box::new(move |c, _| c["iat"] = json!(now - 3600)),
        ),
        // C35, C36
        (
            "sub missing",
            Box::new(|c, _| drop(c.as_object_mut().unwrap().remove("sub"))),
        ),
        ("sub empty", Box::new(|c, _| c["sub"] = json!(""))),
        (
            "sub too long",
            Box::new(|c, _| c["sub"] = json!("x".repeat(256))),
        ),
        (
            "sub control chars",
            Box::new(|c, _| c["sub"] = json!("alice\n-sub")),
        ),
        // C37
        (
            "nonce wrong",
            Box::new(|c, _| c["nonce"] = json!("not-the-nonce")),
        ),
        (
            "nonce missing",
            Box::new(|c, _| drop(c.as_object_mut().unwrap().remove("nonce"))),
        ),
        // C44
        (
            "at_hash wrong",
            Box::new(|c, _| c["at_hash"] = json!(jwt::at_hash("another-access-token"))),
        ),
    ];
    for (case, edit) in &cases {
        let issuer = rig.idp.issuer.clone();
        rig.expect_token_rejected(case, |rig, nonce| {
            rig.token(nonce, |claims| edit(claims, &issuer))
        })
        .await;
    }
    // Positive controls at the edges: exp within the allowed skew, azp equal to client_id,
    // no at_hash at all, aud as a one-element array.
    rig.expect_accepted("exp within skew", |idp, nonce| {
        let mut claims = idp.claims(nonce, ACCESS_TOKEN);
        claims["exp"] = json!(now - 30);
        claims["azp"] = json!(CLIENT_ID);
        claims["aud"] = json!([CLIENT_ID]);
        claims.as_object_mut().unwrap().remove("at_hash");
        idp.answer_token(Some(key_a().sign(json!({}), &claims)), ACCESS_TOKEN);
    })
    .await;
}

#[tokio::test]
async fn an_id_token_from_an_earlier_login_is_refused() {
    // C38: a valid token for another (used) nonce.
    let rig = Rig::new().await;
    let mut old = None;
    rig.expect_accepted("first login", |idp, nonce| {
        let token = key_a().sign(json!({}), &idp.claims(nonce, ACCESS_TOKEN));
        old = Some(token.clone());
        idp.answer_token(Some(token), ACCESS_TOKEN);
    })
    .await;
    let old = old.unwrap();
    rig.expect_token_rejected("replayed id token", move |_, _| old)
        .await;
}

#[tokio::test]
async fn key_selection_rotation_and_refetch_limits() {
    let rig = Rig::new().await;
    let unkeyed = |claims: &Value| key_a().sign(json!({"kid": null}), claims);
    // C39: no kid, one key → accepted.
    rig.expect_accepted("kid absent, one key", |idp, nonce| {
        idp.answer_token(
            Some(unkeyed(&idp.claims(nonce, ACCESS_TOKEN))),
            ACCESS_TOKEN,
        )
    })
    .await;

    // C43: an unparseable key, an encryption key and a key with another alg beside the good one.
    rig.idp.with(|s| {
        let mut enc = key_b().jwk();
        enc["use"] = json!("enc");
        enc["kid"] = json!("key-a");
        let mut other_alg = key_b().jwk();
        other_alg["alg"] = json!("PS512");
        other_alg["kid"] = json!("key-a");
        s.jwks = Reply::Json(
            200,
            json!({"keys": [{"kty": "weird", "kid": "x"}, enc, other_alg, key_a().jwk()]}),
        );
    });
    let rig = {
        // A fresh server, so that discovery sees the new JWKS.
        let server = Reserved::new().start(&rig.idp.idp_toml("evil")).await;
        Rig {
            server,
            idp: rig.idp,
        }
    };
    rig.expect_accepted("good key among bad ones", |idp, nonce| {
        idp.answer_token(
            Some(key_a().sign(json!({}), &idp.claims(nonce, ACCESS_TOKEN))),
            ACCESS_TOKEN,
        )
    })
    .await;

    // C40: no kid, several signing keys → refused.
    rig.idp
        .with(|s| s.jwks = Reply::Json(200, json!({"keys": [key_a().jwk(), key_b().jwk()]})));
    let rig = {
        let server = Reserved::new().start(&rig.idp.idp_toml("evil")).await;
        Rig {
            server,
            idp: rig.idp,
        }
    };
    rig.expect_token_rejected("kid absent, two keys", |rig, nonce| {
        unkeyed(&rig.idp.claims(nonce, ACCESS_TOKEN))
    })
    .await;
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_floods_do_not_refetch() {
    let rig = Rig::new().await;
    rig.expect_accepted("before rotation", |idp, nonce| {
        idp.answer_token(
            Some(key_a().sign(json!({}), &idp.claims(nonce, ACCESS_TOKEN))),
            ACCESS_TOKEN,
        )
    })
    .await;
    let idp_state = rig.server.app.idp("evil").unwrap();
    let fetches = || {
        idp_state
            .counters
            .jwks_fetches
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(fetches(), 1);

    // C41: the IdP rotates to key B; the first token with the new kid triggers one refetch.
    rig.idp
        .with(|s| s.jwks = Reply::Json(200, json!({"keys": [key_b().jwk()]})));
    rig.expect_accepted("after rotation", |idp, nonce| {
        idp.answer_token(
            Some(key_b().sign(json!({}), &idp.claims(nonce, ACCESS_TOKEN))),
            ACCESS_TOKEN,
        )
    })
    .await;
    assert_eq!(fetches(), 2);

    // C42: unknown kids within the refetch interval do not fetch again.
    for i in 0..3 {
        rig.expect_token_rejected("unknown kid", |rig, nonce| {
            key_b().sign(
                json!({"kid": format!("random-{i}")}),
                &rig.idp.claims(nonce, ACCESS_TOKEN),
            )
        })
        .await;
    }
    assert_eq!(fetches(), 2, "a flood of unknown kids refetched the JWKS");
}

#[tokio::test]
async fn string_booleans_and_userinfo_checks() {
    let rig = Rig::new().await;
    // C45: "email_verified": "true" is accepted (never a 500).
    rig.expect_accepted("string boolean", |idp, nonce| {
        let mut claims = idp.claims(nonce, ACCESS_TOKEN);
        claims["email_verified"] = json!("true");
        idp.answer_token(Some(key_a().sign(json!({}), &claims)), ACCESS_TOKEN);
    })
    .await;

    // D46: userinfo for another subject → 401.
    let body = rig
        .expect_rejected("userinfo sub mismatch", 401, |idp, nonce| {
            idp.answer_token(
                Some(key_a().sign(json!({}), &idp.claims(nonce, ACCESS_TOKEN))),
                ACCESS_TOKEN,
            );
            idp.answer_userinfo(json!({"sub": "mallory", "email": "alice@example.test"}));
        })
        .await;
    assert_eq!(body["error"], "userinfo_invalid");

    // D47: userinfo as an unsigned JWT → 401.
    rig.expect_rejected("userinfo alg none", 401, |idp, nonce| {
        idp.answer_token(
            Some(key_a().sign(json!({}), &idp.claims(nonce, ACCESS_TOKEN))),
            ACCESS_TOKEN,
        );
        idp.with(|s| {
            s.userinfo = Reply::Raw {
                status: 200,
                content_type: "application/jwt".into(),
                body: jwt::unsigned(&json!({"sub": "alice-sub"})).into_bytes(),
            }
        });
    })
    .await;

    // The userinfo endpoint failing is the IdP's failure: 502.
    rig.expect_rejected("userinfo down", 502, |idp, nonce| {
        idp.answer_token(
            Some(key_a().sign(json!({}), &idp.claims(nonce, ACCESS_TOKEN))),
            ACCESS_TOKEN,
        );
        idp.with(|s| s.userinfo = Reply::Json(503, json!({})));
    })
    .await;
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_jwks_fetch() {
    // The refetch is coalesced: a burst of callbacks with a new kid fetches the JWKS once.
    let rig = Rig::new().await;
    rig.expect_accepted("warm up", |idp, nonce| {
        idp.answer_token(
            Some(key_a().sign(json!({}), &idp.claims(nonce, ACCESS_TOKEN))),
            ACCESS_TOKEN,
        )
    })
    .await;
    let idp_state = rig.server.app.idp("evil").unwrap();
    let fetches = || {
        idp_state
            .counters
            .jwks_fetches
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(fetches(), 1);
    rig.idp
        .with(|s| s.jwks = Reply::Json(200, json!({"keys": [key_b().jwk()]})));

    // Eight logins in flight; the token endpoint answers one token (for the last nonce), so
    // one login succeeds and the others fail their nonce check after the shared refetch.
    let mut callbacks = Vec::new();
    let mut last_nonce = String::new();
    for _ in 0..8 {
        let browser = Browser::new();
        let authorize = browser.start_login(&rig.server.url, "evil").await;
        let state = query_param(&authorize, "state").unwrap();
        last_nonce = query_param(&authorize, "nonce").unwrap();
        callbacks.push((browser, state));
    }
    let token = key_b().sign(json!({}), &rig.idp.claims(&last_nonce, ACCESS_TOKEN));
    rig.idp.answer_token(Some(token), ACCESS_TOKEN);
    let issuer: String = url::form_urlencoded::byte_serialize(rig.idp.issuer.as_bytes()).collect();
    let results = futures_util::future::join_all(callbacks.iter().map(|(browser, state)| {
        let url = format!(
            "{}/authnz/evil/callback?code=c&state={state}&iss={issuer}",
            rig.server.url
        );
        async move { browser.get(&url).await.status().as_u16() }
    }))
    .await;
    assert_eq!(fetches(), 2, "one shared refetch");
    assert_eq!(
        results.iter().filter(|s| **s == 303).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|s| **s == 401).count(),
        7,
        "{results:?}"
    );
}

#[tokio::test]
async fn es256_and_hs256_signatures_are_verified_when_allowed() {
    // C20: with ES256 and HS256 allowed by config, good signatures pass and bad ones fail.
    let idp = HostileIdp::start().await;
    idp.with(|s| s.jwks = Reply::Json(200, json!({"keys": [jwt::ec_key().jwk(), key_a().jwk()]})));
    idp.answer_userinfo(json!({"sub": "alice-sub"}));
    let toml = format!(
        "{}id_token_algs = [\"ES256\", \"HS256\", \"RS256\"]\n",
        idp.idp_toml("evil")
    );
    let server = Reserved::new().start(&toml).await;
    let rig = Rig { server, idp };
    rig.expect_accepted("good ES256", |idp, nonce| {
        idp.answer_token(
            Some(jwt::ec_key().sign(json!({}), &idp.claims(nonce, ACCESS_TOKEN))),
            ACCESS_TOKEN,
        )
    })
    .await;
    rig.expect_token_rejected("bad ES256", |rig, nonce| {
        jwt::corrupt_signature(&jwt::ec_key().sign(json!({}), &rig.idp.claims(nonce, ACCESS_TOKEN)))
    })
    .await;
    rig.expect_accepted("good HS256", |idp, nonce| {
        idp.answer_token(
            Some(jwt::sign_hs256(
                CLIENT_SECRET.as_bytes(),
                json!({}),
                &idp.claims(nonce, ACCESS_TOKEN),
            )),
            ACCESS_TOKEN,
        )
    })
    .await;
    rig.expect_token_rejected("bad HS256", |rig, nonce| {
        jwt::sign_hs256(
            b"not-the-client-secret",
            json!({}),
            &rig.idp.claims(nonce, ACCESS_TOKEN),
        )
    })
    .await;
    // C22 with HS256 allowed: MAC'd with the IdP's public RSA key material.
    rig.expect_token_rejected("alg confusion, HS256 allowed", |rig, nonce| {
        let public = key_a().jwk()["n"].as_str().unwrap().to_string();
        jwt::sign_hs256(
            public.as_bytes(),
            json!({"kid": "key-a"}),
            &rig.idp.claims(nonce, ACCESS_TOKEN),
        )
    })
    .await;
}

#[tokio::test]
async fn hs256_is_refused_for_a_public_client() {
    // C23: no client secret, so no HMAC key, even with HS256 allowed.
    let idp = HostileIdp::start().await;
    idp.answer_userinfo(json!({"sub": "alice-sub"}));
    let toml = format!(
        "[idps.evil]\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nid_token_algs = [\"HS256\", \"RS256\"]\n",
        idp.issuer
    );
    let server = Reserved::new().start(&toml).await;
    let rig = Rig { server, idp };
    rig.expect_token_rejected("HS256 public client", |rig, nonce| {
        jwt::sign_hs256(b"", json!({}), &rig.idp.claims(nonce, ACCESS_TOKEN))
    })
    .await;
    rig.expect_accepted("RS256 public client", |idp, nonce| {
        idp.answer_token(
            Some(key_a().sign(json!({}), &idp.claims(nonce, ACCESS_TOKEN))),
            ACCESS_TOKEN,
        )
    })
    .await;
}

#[tokio::test]
async fn a_changed_email_for_the_same_subject_is_the_same_user() {
    // F53: identities are keyed by (IdP, sub); the email is only an attribute.
    let rig = Rig::new().await;
    let mut ids = Vec::new();
    for email in ["alice@example.test", "alice@new-employer.example"] {
        let (status, body, browser) = rig
            .attempt(|idp, nonce| {
                let mut claims = idp.claims(nonce, ACCESS_TOKEN);
                claims["email"] = json!(email);
                idp.answer_token(Some(key_a().sign(json!({}), &claims)), ACCESS_TOKEN);
                idp.answer_userinfo(json!({"sub": "alice-sub", "email": email}));
            })
            .await;
        assert_eq!(status, 303, "{body}");
        let (_, me) = browser.me(&rig.server.url).await;
        assert_eq!(me["identities"][0]["email"], email);
        ids.push(me["id"].clone());
    }
    assert_eq!(ids[0], ids[1]);
    assert_eq!(rig.server.count("users").await, 1);
}

/// A multi-tenant provider like Entra's `common`, rebased onto the hostile IdP: discovery at
/// `<base>/common/v2.0`, tokens issued by `<base>/<tid>/v2.0`.
struct MultiTenant {
    base: String,
}

impl authnz_plugin::IdentityProvider for MultiTenant {
    fn describe(&self) -> authnz_plugin::ProviderInfo {
        authnz_plugin::ProviderInfo {
            kind: "multitenant".into(),
            issuer: Some(format!("{}/common/v2.0", self.base)),
            issuer_template: Some(format!("{}/{{tenantid}}/v2.0", self.base)),
            ..Default::default()
        }
    }

    fn map_identity(
        &self,
        claims: &authnz_plugin::VerifiedClaims,
    ) -> Result<authnz_plugin::MappedIdentity, authnz_plugin::MapError> {
        Ok(authnz_plugin::standard_identity(claims))
    }
}

fn multi_tenant_factory(
    settings: &authnz_plugin::ProviderSettings,
) -> Result<Box<dyn authnz_plugin::IdentityProvider>, Vec<authnz_plugin::ConfigError>> {
    let mut errors = Vec::new();
    let base = settings.required_str("base", &mut errors);
    base.map(|base| Box::new(MultiTenant { base }) as Box<dyn authnz_plugin::IdentityProvider>)
        .ok_or(errors)
}

#[tokio::test]
async fn multi_tenant_issuers_must_match_the_tokens_own_tenant() {
    let idp = HostileIdp::start().await;
    let template = format!("{}/{{tenantid}}/v2.0", idp.issuer);
    idp.with(|s| {
        s.discovery["issuer"] = json!(template);
        s.discovery["authorization_response_iss_parameter_supported"] = json!(false);
    });
    idp.answer_userinfo(json!({"sub": "alice-sub"}));
    let mut registry = authnz::registry::Registry::builtin();
    registry.register("multitenant", multi_tenant_factory);
    let toml = format!(
        "[idps.evil]\nkind = \"multitenant\"\nbase = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n",
        idp.issuer
    );
    let server = Reserved::new().start_with(&toml, registry).await;
    let rig = Rig { server, idp };
    let tenant = "9188040d-6c67-4c5b-b112-36a304b66dad";
    let base = rig.idp.issuer.clone();
    fn with_tenant(iss: String, tid: Option<&'static str>) -> impl FnOnce(&HostileIdp, &str) {
        move |idp: &HostileIdp, nonce: &str| {
            let mut claims = idp.claims(nonce, ACCESS_TOKEN);
            claims["iss"] = json!(iss);
            match tid {
                Some(tid) => claims["tid"] = json!(tid),
                None => drop(claims.as_object_mut().unwrap().remove("tid")),
            }
            idp.answer_token(Some(key_a().sign(json!({}), &claims)), ACCESS_TOKEN);
        }
    }
    rig.expect_accepted(
        "its own tenant",
        with_tenant(format!("{base}/{tenant}/v2.0"), Some(tenant)),
    )
    .await;
    for (case, iss, tid) in [
        (
            "another tenant's issuer",
            format!("{base}/00000000-0000-0000-0000-000000000001/v2.0"),
            Some(tenant),
        ),
        ("no tid", format!("{base}/{tenant}/v2.0"), None),
        (
            "the template itself",
            format!("{base}/{{tenantid}}/v2.0"),
            Some("{tenantid}"),
        ),
        (
            "the discovery base",
            format!("{base}/common/v2.0"),
            Some("common"),
        ),
    ] {
        let body = rig.expect_rejected(case, 401, with_tenant(iss, tid)).await;
        assert_eq!(body["error"], "id_token_invalid", "{case}: {body}");
    }
}

/// Logs in through the rig with a refresh token in the token response (IdP session `sid-1`).
async fn login_with_refresh(rig: &Rig) -> Browser {
    let (status, body, browser) = rig
        .attempt(|idp, nonce| {
            let mut claims = idp.claims(nonce, ACCESS_TOKEN);
            claims["sid"] = json!("sid-1");
            let id_token = key_a().sign(json!({}), &claims);
            idp.with(|s| {
                s.token = Reply::Json(
                    200,
                    json!({"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300,
                           "id_token": id_token, "refresh_token": "refresh-token-one"}),
                )
            });
        })
        .await;
    assert_eq!(status, 303, "{body}");
    browser
}

#[tokio::test]
async fn refresh_keeps_the_identity_or_ends_the_session() {
    let rig = Rig::new().await;
    let url = rig.server.url.clone();
    let tokens_url = format!("{url}/api/users/me/tokens/evil");
    // Refreshed ID tokens are issued "now" on the server's clock, which the test moves ahead.
    let refreshed = |edit: &dyn Fn(&mut Value)| {
        let now = chrono_now() + 400;
        let mut claims = json!({"iss": rig.idp.issuer, "aud": CLIENT_ID, "sub": "alice-sub", "iat": now, "exp": now + 300});
        edit(&mut claims);
        key_a().sign(json!({}), &claims)
    };
    let answer = |id_token: Option<String>, refresh: Option<&str>| {
        let mut body = json!({"access_token": "fresh-access-token-0002", "token_type": "Bearer", "expires_in": 300});
        if let Some(id_token) = id_token {
            body["id_token"] = json!(id_token);
        }
        if let Some(refresh) = refresh {
            body["refresh_token"] = json!(refresh);
        }
        rig.idp.with(|s| s.token = Reply::Json(200, body));
    };

    // Still valid: no refresh, the stored token is handed out.
    let browser = login_with_refresh(&rig).await;
    let token: Value = browser.get(&tokens_url).await.json().await.unwrap();
    assert_eq!(token["access_token"], ACCESS_TOKEN);

    // E49: a refreshed ID token for another subject, issuer or audience is refused; the old
    // tokens stay as they were and the session ends (log in again).
    type Edit<'a> = &'a dyn Fn(&mut Value);
    let cases: [(&str, Edit); 3] = [
        ("another sub", &|c| c["sub"] = json!("mallory-sub")),
        ("another iss", &|c| {
            c["iss"] = json!("https://attacker.example")
        }),
        ("another aud", &|c| c["aud"] = json!("someone-else")),
    ];
    for (case, edit) in cases {
        let browser = login_with_refresh(&rig).await;
        rig.server.app.clock.advance(400);
        let before = rig
            .server
            .app
            .store
            .sealed_tokens("evil", "alice-sub")
            .await
            .unwrap();
        answer(Some(refreshed(edit)), Some("refresh-token-evil"));
        let response = browser.get(&tokens_url).await;
        assert_eq!(response.status(), 401, "{case}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "refresh_invalid", "{case}: {body}");
        assert_eq!(
            rig.server
                .app
                .store
                .sealed_tokens("evil", "alice-sub")
                .await
                .unwrap(),
            before,
            "{case}: tokens kept"
        );
        assert_eq!(browser.me(&url).await.0, 401, "{case}: session ended");
        rig.server.app.clock.advance(-400);
    }

    // E50: a rotated refresh token replaces the old one; the new access token is handed out.
    let browser = login_with_refresh(&rig).await;
    rig.server.app.clock.advance(400);
    answer(Some(refreshed(&|_| {})), Some("refresh-token-two"));
    let response = browser.get(&tokens_url).await;
    assert_eq!(response.status(), 200);
    let token: Value = response.json().await.unwrap();
    assert_eq!(token["access_token"], "fresh-access-token-0002");
    let request = rig.idp.with(|s| s.token_bodies.last().cloned()).unwrap();
    assert!(
        request.contains("grant_type=refresh_token")
            && request.contains("refresh_token=refresh-token-one"),
        "{request}"
    );
    let sealed = rig
        .server
        .app
        .store
        .sealed_tokens("evil", "alice-sub")
        .await
        .unwrap()
        .unwrap();
    let stored: Value = serde_json::from_slice(
        &rig.server
            .app
            .vault
            .open(
                &authnz::store::identity_key_public("evil", "alice-sub"),
                &sealed,
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored["refresh_token"], "refresh-token-two");
    assert_eq!(stored["access_token"], "fresh-access-token-0002");
    rig.server.app.clock.advance(-400);

    // E50: invalid_grant ends the session, without retrying.
    let browser = login_with_refresh(&rig).await;
    rig.server.app.clock.advance(400);
    rig.idp
        .with(|s| s.token = Reply::Json(400, json!({"error": "invalid_grant"})));
    let calls_before = rig
        .idp
        .calls()
        .iter()
        .filter(|c| c.ends_with("/token"))
        .count();
    let response = browser.get(&tokens_url).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "reauthenticate");
    assert_eq!(
        rig.idp
            .calls()
            .iter()
            .filter(|c| c.ends_with("/token"))
            .count(),
        calls_before + 1,
        "one attempt"
    );
    assert_eq!(browser.me(&url).await.0, 401);
    logs::assert_not_logged(&[
        "refresh-token-one",
        "refresh-token-two",
        "fresh-access-token-0002",
    ]);
}

#[tokio::test]
async fn back_channel_logout_tokens_are_verified() {
    // G66: every malformed logout token is a 400 and ends nothing; a good one ends the session.
    let rig = Rig::new().await;
    let browser = login_with_refresh(&rig).await;
    let url = format!("{}/authnz/evil/backchannel-logout", rig.server.url);
    let good = || {
        let now = chrono_now();
        json!({"iss": rig.idp.issuer, "aud": CLIENT_ID, "iat": now, "jti": format!("jti-{now}"),
               "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
               "sub": "alice-sub", "sid": "sid-1"})
    };
    let post = |token: String| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .post(url)
                .form(&[("logout_token", token)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    type Make = Box<dyn Fn(Value) -> String>;
    let edit = |f: fn(&mut Value)| -> Make {
        Box::new(move |mut claims: Value| {
            f(&mut claims);
            key_a().sign(json!({}), &claims)
        })
    };
    let cases: Vec<(&str, Make)> = vec![
        ("alg none", Box::new(|claims: Value| jwt::unsigned(&claims))),
        (
            "HS256, not allowed",
            Box::new(|claims: Value| jwt::sign_hs256(CLIENT_SECRET.as_bytes(), json!({}), &claims)),
        ),
        (
            "bad signature",
            Box::new(|claims: Value| jwt::corrupt_signature(&key_a().sign(json!({}), &claims))),
        ),
        (
            "attacker's key",
            Box::new(|claims: Value| key_b().sign(json!({"kid": "key-a"}), &claims)),
        ),
        (
            "wrong iss",
            edit(|c| c["iss"] = json!("https://attacker.example")),
        ),
        ("wrong aud", edit(|c| c["aud"] = json!("someone-else"))),
        (
            "no events",
            edit(|c| drop(c.as_object_mut().unwrap().remove("events"))),
        ),
        (
            "wrong event",
            edit(|c| c["events"] = json!({"http://schemas.openid.net/event/other": {}})),
        ),
        ("a nonce", edit(|c| c["nonce"] = json!("n"))),
        (
            "no jti",
            edit(|c| drop(c.as_object_mut().unwrap().remove("jti"))),
        ),
        (
            "no sub or sid",
            edit(|c| {
                let c = c.as_object_mut().unwrap();
                c.remove("sub");
                c.remove("sid");
            }),
        ),
        ("old iat", edit(|c| c["iat"] = json!(chrono_now() - 3600))),
        (
            "typ of an ID token",
            Box::new(|claims: Value| key_a().sign(json!({"typ": "id_token+jwt"}), &claims)),
        ),
    ];
    for (case, make) in &cases {
        assert_eq!(post(make(good())).await, 400, "{case}");
        assert_eq!(
            browser.me(&rig.server.url).await.0,
            200,
            "{case}: the session must survive"
        );
    }
    assert_eq!(post("not-a-jwt".into()).await, 400);
    // Positive control: a good token ends the session it names (`typ` as the spec has it).
    let used = key_a().sign(json!({"typ": "logout+jwt"}), &good());
    assert_eq!(post(used.clone()).await, 200);
    assert_eq!(browser.me(&rig.server.url).await.0, 401);

    // I75: the same token again, within its `iat` window, ends nothing: the person's next
    // session survives it.
    let again = login_with_refresh(&rig).await;
    assert_eq!(post(used).await, 400, "a replayed logout token");
    assert_eq!(
        again.me(&rig.server.url).await.0,
        200,
        "the replay ended a session"
    );
}

#[tokio::test]
async fn idp_access_tokens_are_bearer_tokens_only_where_accepted() {
    let idp = HostileIdp::start().await;
    idp.answer_userinfo(json!({"sub": "alice-sub"}));
    let toml = format!(
        "{}accepted_audiences = [\"galaxy-api\"]\n",
        idp.idp_toml("evil")
    );
    let server = Reserved::new().start(&toml).await;
    let rig = Rig { server, idp };
    let browser = login_with_refresh(&rig).await;
    let (_, me) = browser.me(&rig.server.url).await;
    let now = chrono_now();
    let good = json!({"iss": rig.idp.issuer, "aud": "galaxy-api", "sub": "alice-sub", "iat": now, "exp": now + 300});
    let status_with = |token: String| {
        let url = format!("{}/api/users/me", rig.server.url);
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = status_with(key_a().sign(json!({}), &good)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], me["id"]);
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut claims = good.clone();
        edit(&mut claims);
        claims
    };
    let refused: Vec<(&str, String)> = vec![
        (
            "wrong aud",
            key_a().sign(json!({}), &edited(&|c| c["aud"] = json!("other-api"))),
        ),
        (
            "expired",
            key_a().sign(json!({}), &edited(&|c| c["exp"] = json!(now - 120))),
        ),
        (
            "no exp",
            key_a().sign(
                json!({}),
                &edited(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
            ),
        ),
        (
            "not yet valid",
            key_a().sign(json!({}), &edited(&|c| c["nbf"] = json!(now + 600))),
        ),
        (
            "unknown subject",
            key_a().sign(json!({}), &edited(&|c| c["sub"] = json!("bob-sub"))),
        ),
        (
            "other issuer",
            key_a().sign(
                json!({}),
                &edited(&|c| c["iss"] = json!("https://attacker.example")),
            ),
        ),
        ("alg none", jwt::unsigned(&good)),
        (
            "attacker's key",
            key_b().sign(json!({"kid": "key-a"}), &good),
        ),
        ("garbage", "a.b.c".to_string()),
    ];
    for (case, token) in refused {
        assert_eq!(status_with(token).await.0, 401, "{case}");
    }
    // An IdP without accepted_audiences accepts none of its tokens.
    let plain = Reserved::new().start(&rig.idp.idp_toml("evil")).await;
    let response = reqwest::Client::new()
        .get(format!("{}/api/users/me", plain.url))
        .bearer_auth(key_a().sign(json!({}), &good))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn userinfo_and_jwks_redirects_and_floods_are_not_followed() {
    // B15/B16 for the other endpoints: a redirect from userinfo or the JWKS is not followed and
    // fails that login with 502; an oversized JWKS is cut off.
    let rig = Rig::new().await;
    let target = format!("{}/stolen", rig.idp.issuer);
    rig.expect_rejected("userinfo 302", 502, |idp, nonce| {
        idp.answer_token(
            Some(key_a().sign(json!({}), &idp.claims(nonce, ACCESS_TOKEN))),
            ACCESS_TOKEN,
        );
        idp.with(|s| s.userinfo = Reply::Redirect(target.clone()));
    })
    .await;
    assert!(
        !rig.idp.called("/stolen"),
        "the userinfo redirect was followed"
    );

    // A key rotation whose refetched JWKS redirects, or is huge: the unknown key stays unknown.
    rig.idp.with(|s| {
        s.jwks = Reply::Redirect(format!(
            "{}/stolen",
            s.discovery["issuer"].as_str().unwrap()
        ))
    });
    rig.expect_token_rejected("jwks 302 on refetch", |rig, nonce| {
        key_b().sign(json!({}), &rig.idp.claims(nonce, ACCESS_TOKEN))
    })
    .await;
    assert!(!rig.idp.called("/stolen"), "the JWKS redirect was followed");

    let fresh = HostileIdp::start().await;
    fresh.with(|s| {
        s.jwks = Reply::Raw {
            status: 200,
            content_type: "application/json".into(),
            body: vec![b' '; 2 * 1024 * 1024],
        }
    });
    let server = Reserved::new().start(&fresh.idp_toml("huge")).await;
    let response = Browser::new()
        .get(&format!("{}/authnz/huge/login", server.url))
        .await;
    assert_eq!(
        response.status(),
        502,
        "a JWKS over the body limit makes discovery fail"
    );
}

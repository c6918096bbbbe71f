//! Defaults that must not break real providers: an OP that signs ES256 works without any
//! `id_token_algs`, `check --online` says when discovery, the keys and the allowed algorithms
//! do not meet, and a refused algorithm is logged at WARN with the key to set.

use authnz_tests::hostile::{HostileIdp, Reply};
use authnz_tests::jwt::{self, key_a};
use authnz_tests::{logs, Browser, Reserved, TestServer};
use serde_json::{json, Value};

/// An IdP that signs with ES256 only, and says so in its discovery.
async fn es256_idp() -> HostileIdp {
    let idp = HostileIdp::start().await;
    idp.with(|s| {
        s.jwks = Reply::Json(200, json!({"keys": [jwt::ec_key().jwk()]}));
        s.discovery["id_token_signing_alg_values_supported"] = json!(["ES256", "HS256", "none"]);
    });
    idp.answer_userinfo(json!({"sub": "alice-sub"}));
    idp
}

/// One login whose ID token `sign` makes; the callback's status.
async fn login(server: &TestServer, idp: &HostileIdp, sign: impl Fn(&Value) -> String) -> u16 {
    idp.sign_in(
        &Browser::new(),
        &server.url,
        "evil",
        "es-access-token",
        |claims| sign(&claims),
        json!({}),
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn an_op_that_signs_es256_works_out_of_the_box() {
    let idp = es256_idp().await;
    let server = Reserved::new().start(&idp.idp_toml("evil")).await;
    assert_eq!(
        login(&server, &idp, |claims| jwt::ec_key()
            .sign(json!({}), claims))
        .await,
        303,
        "ES256, advertised by discovery, with no id_token_algs"
    );
    // What discovery advertises beyond the asymmetric algorithms is not taken: HS256 needs
    // configuring, `none` never works.
    assert_eq!(
        login(&server, &idp, |claims| jwt::sign_hs256(
            authnz_tests::hostile::CLIENT_SECRET.as_bytes(),
            json!({}),
            claims
        ))
        .await,
        401
    );
    assert_eq!(login(&server, &idp, jwt::unsigned).await, 401);
    assert_eq!(
        login(&server, &idp, |claims| key_a().sign(json!({}), claims)).await,
        401,
        "RS256, which discovery does not list"
    );
    // A refused algorithm is a WARN that names the key to set.
    let logs = logs::all();
    assert!(
        logs.lines().any(|line| line.contains("WARN")
            && line.contains("alg=RS256")
            && line.contains("id_token_algs")),
        "no WARN for the refused algorithm"
    );
}

/// `authnz check --online` on `idps`; its stdout and whether it succeeded.
async fn check_online(idps: String) -> (String, bool) {
    let output = crate::cli::check_online(&idps).await;
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        output.status.success(),
    )
}

#[tokio::test]
async fn check_online_says_when_algorithms_and_keys_do_not_meet() {
    let idp = es256_idp().await;
    let (out, ok) = check_online(idp.idp_toml("evil")).await;
    assert!(ok && out.contains("algorithms ES256"), "{out}");
    // The IdP signs ES256, the config allows RS256 only.
    let (out, ok) = check_online(format!(
        "{}id_token_algs = [\"RS256\"]\n",
        idp.idp_toml("evil")
    ))
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("idps.evil: failed: the IdP signs ID tokens with ES256, HS256, none but id_token_algs allows only RS256: set id_token_algs = [\"ES256\", \"HS256\"]"),
        "{out}"
    );
    // Discovery says ES256, the JWKS holds an RSA key only.
    idp.with(|s| s.jwks = Reply::Json(200, json!({"keys": [key_a().jwk()]})));
    let (out, ok) = check_online(idp.idp_toml("evil")).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("idps.evil: failed: the JWKS has no key for ES256"),
        "{out}"
    );
}

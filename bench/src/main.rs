//! Benchmark helpers, so that authnz is measured and not its surroundings:
//!
//! - `authnz-bench hello PORT`: a bare poem handler, the framework's ceiling.
//! - `authnz-bench idp PORT DELAY_MS`: a stateless stub OpenID Provider with ES256 ID tokens.
//!   Every path prefix `/<anything>` is its own issuer (so 50 IdPs can be configured against one
//!   process); discovery answers after `DELAY_MS`. `authorize` redirects at once with a code that
//!   carries the nonce, so the token endpoint needs no state. `GET /<tenant>/stats` answers how
//!   often that tenant's JWKS was fetched.
//! - `authnz-bench seed DIR N`: a sled database in `DIR` holding N users, each with an identity
//!   at `stub`, sealed tokens and a session, written through authnz's own store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use poem::http::StatusCode;
use poem::listener::TcpListener;
use poem::web::{Data, Path};
use poem::{get, handler, EndpointExt, Request, Response, Route, Server};
use serde_json::{json, Value};

struct Stub {
    base: String,
    key: p256::ecdsa::SigningKey,
    delay: Duration,
    /// JWKS fetches by tenant.
    jwks_fetches: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn json_response(value: Value) -> Response {
    Response::builder()
        .content_type("application/json")
        .body(value.to_string())
}

fn query(req: &Request) -> Vec<(String, String)> {
    url_pairs(req.uri().query().unwrap_or_default())
}

fn url_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(text: &str) -> String {
    let text = text.replace('+', " ");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[handler]
async fn discovery(Path(tenant): Path<String>, Data(stub): Data<&Arc<Stub>>) -> Response {
    tokio::time::sleep(stub.delay).await;
    let issuer = format!("{}/{tenant}", stub.base);
    json_response(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

#[handler]
fn stats(Path(tenant): Path<String>, Data(stub): Data<&Arc<Stub>>) -> Response {
    let fetches = stub.jwks_fetches.lock().unwrap().get(&tenant).copied();
    json_response(json!({"jwks_fetches": fetches.unwrap_or(0)}))
}

#[handler]
fn jwks(Path(tenant): Path<String>, Data(stub): Data<&Arc<Stub>>) -> Response {
    *stub.jwks_fetches.lock().unwrap().entry(tenant).or_default() += 1;
    let point = stub.key.verifying_key().to_sec1_point(false);
    json_response(json!({"keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "stub",
        "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
    }]}))
}

#[handler]
fn authorize(req: &Request, Path(tenant): Path<String>, Data(stub): Data<&Arc<Stub>>) -> Response {
    let params = query(req);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // A new person per login: the subject comes from the state.
    let state = get("state");
    let sub = format!("u{}", &state[..state.len().min(16)]);
    let code = b64(json!({"nonce": get("nonce"), "sub": sub})
        .to_string()
        .as_bytes());
    let location = format!(
        "{}?code={}&state={}&iss={}",
        get("redirect_uri"),
        code,
        encode(&get("state")),
        encode(&format!("{}/{tenant}", stub.base))
    );
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header("Location", location)
        .finish()
}

#[handler]
async fn token(
    req: &Request,
    body: String,
    Path(tenant): Path<String>,
    Data(stub): Data<&Arc<Stub>>,
) -> Response {
    let form = url_pairs(&body);
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let client_id = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.split_once(':').map(|(id, _)| decode(id)))
        .unwrap_or_else(|| get("client_id"));
    let code: Value = URL_SAFE_NO_PAD
        .decode(get("code"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let sub = code["sub"].as_str().unwrap_or("user").to_string();
    let issued = now();
    let claims = json!({
        "iss": format!("{}/{tenant}", stub.base), "aud": client_id, "sub": sub,
        "iat": issued, "exp": issued + 300, "nonce": code["nonce"],
        "email": format!("{sub}@bench.test"), "email_verified": false,
    });
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "stub"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature: p256::ecdsa::Signature = stub.key.sign(input.as_bytes());
    let id_token = format!("{input}.{}", b64(&signature.to_bytes()));
    json_response(
        json!({"access_token": format!("at-{sub}"), "token_type": "Bearer", "expires_in": 300, "id_token": id_token}),
    )
}

#[handler]
fn userinfo(req: &Request) -> Response {
    let sub = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer at-"))
        .unwrap_or("user")
        .to_string();
    json_response(json!({"sub": sub}))
}

#[handler]
fn hello() -> &'static str {
    "hello"
}

/// Writes `count` users through authnz's store, on two threads, and flushes.
fn seed(dir: &std::path::Path, count: u64) {
    use authnz::store::sled_store::SledStore;
    use authnz::store::{CompletedLogin, EmailMatch};
    let store = SledStore::open(dir, 16 << 20).unwrap();
    let now = now();
    let threads = 2;
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let store = &store;
            scope.spawn(move || {
                for i in (thread..count).step_by(threads as usize) {
                    let subject = format!("seed-{i:07}");
                    let login = CompletedLogin {
                        idp: "stub".into(),
                        // Seeded people make the database big; none logs in again.
                        issuer: "https://seeded.bench.test".into(),
                        previous_issuers: Vec::new(),
                        email: Some(format!("{subject}@bench.test")),
                        email_verified: false,
                        display_name: Some(format!("Seeded user {i}")),
                        username: subject.clone(),
                        // About what two sealed tokens take: the plaintext is never read.
                        sealed_tokens: vec![7u8; 320],
                        session_hash: format!("{:064x}", i),
                        new_user_id: format!("{:032x}", u128::from(i) << 64 | 0x5eed),
                        now,
                        session_expires_at: now + 86_400,
                        sid: None,
                        groups: None,
                        csrf: format!("{:043x}", i),
                        sealed_id_token: None,
                        device: None,
                        network: None,
                        email_authoritative: false,
                        on_email_match: EmailMatch::Refuse,
                        link_to: None,
                        require_existing: false,
                        subject,
                    };
                    store.complete_login(&login).unwrap();
                    if i % 100_000 == 0 {
                        eprintln!("seed: {i} users");
                    }
                }
            });
        }
    });
    // Every seeded identity has its issuer: mark the database migrated, as a server's first
    // start would, so that each copy starts like one that has run before.
    store
        .migrate_issuers(&std::collections::BTreeMap::new())
        .unwrap();
    store.flush().unwrap();
    drop(store);
    // Opening once more replays the log and leaves a fresh snapshot, as a server that has run
    // for a while would: otherwise every copy's first start replays the whole seeding (~3.5 s).
    SledStore::reopen(dir, 16 << 20).unwrap();
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("seed") {
        let count = args
            .get(3)
            .and_then(|n| n.parse().ok())
            .expect("usage: authnz-bench seed DIR N");
        seed(std::path::Path::new(&args[2]), count);
        return;
    }
    let port: u16 = args
        .get(2)
        .and_then(|p| p.parse().ok())
        .expect("usage: authnz-bench hello|idp PORT [DELAY_MS]");
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"));
    match args.get(1).map(String::as_str) {
        Some("hello") => Server::new(listener)
            .run(Route::new().at("/", get(hello)))
            .await
            .unwrap(),
        Some("idp") => {
            let delay =
                Duration::from_millis(args.get(3).and_then(|d| d.parse().ok()).unwrap_or(0));
            let stub = Arc::new(Stub {
                base: format!("http://127.0.0.1:{port}"),
                key: p256::ecdsa::SigningKey::from_slice(&[42u8; 32]).unwrap(),
                delay,
                jwks_fetches: Default::default(),
            });
            let app = Route::new()
                .at("/:tenant/.well-known/openid-configuration", get(discovery))
                .at("/:tenant/jwks", get(jwks))
                .at("/:tenant/authorize", get(authorize))
                .at("/:tenant/token", poem::post(token))
                .at("/:tenant/userinfo", get(userinfo))
                .at("/:tenant/stats", get(stats))
                .data(stub);
            Server::new(listener).run(app).await.unwrap()
        }
        _ => panic!("usage: authnz-bench hello|idp PORT [DELAY_MS]"),
    }
}

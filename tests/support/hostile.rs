//! A hostile OpenID Provider in the test process: it answers discovery, JWKS, token and
//! userinfo with whatever the test scripts, and records every call, so a test can play the
//! attacks a real IdP would not make and check what authnz did (and did not) call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::http::StatusCode;
use poem::listener::TcpListener;
use poem::{handler, Body, EndpointExt, Request, Response, Route, Server};
use serde_json::{json, Value};

use crate::jwt;

pub const CLIENT_ID: &str = "authnz-test";
pub const CLIENT_SECRET: &str = "hostile-client-secret-0123456789";

/// A scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    Json(u16, Value),
    Raw {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
    Redirect(String),
    Hang(Duration),
    /// JSON, after a pause (to make concurrent callers overlap).
    Slow(Duration, u16, Value),
}

/// What the hostile IdP does, and what it saw.
#[derive(Debug)]
pub struct Script {
    pub discovery: Value,
    pub jwks: Reply,
    pub token: Reply,
    pub userinfo: Reply,
    /// `METHOD /path` of every request, in order.
    pub calls: Vec<String>,
    /// Bodies of token requests.
    pub token_bodies: Vec<String>,
    /// URI and `Authorization` header of every userinfo request.
    pub userinfo_requests: Vec<(String, Option<String>)>,
    /// Answers for other paths (e.g. a GitHub-style `/user`).
    pub extra: std::collections::HashMap<String, Reply>,
    /// Path and body of every request.
    pub bodies: Vec<(String, String)>,
    /// Path and headers of every request.
    pub headers: Vec<(String, poem::http::HeaderMap)>,
}

pub struct HostileIdp {
    pub issuer: String,
    pub script: Arc<Mutex<Script>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for HostileIdp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[handler]
async fn serve(
    req: &Request,
    body: Body,
    script: poem::web::Data<&Arc<Mutex<Script>>>,
) -> Response {
    let path = req.uri().path().to_string();
    let call = format!("{} {path}", req.method());
    let body = body.into_string().await.unwrap_or_default();
    let reply = {
        let mut script = script.lock().unwrap();
        script.calls.push(call);
        script.bodies.push((path.clone(), body.clone()));
        script.headers.push((path.clone(), req.headers().clone()));
        match path.as_str() {
            // Also below a path, for issuers like `<base>/common/v2.0`.
            discovery if discovery.ends_with("/.well-known/openid-configuration") => {
                Reply::Json(200, script.discovery.clone())
            }
            "/jwks" => script.jwks.clone(),
            // `/login/oauth/access_token` is where a GitHub-style provider takes codes.
            "/token" | "/login/oauth/access_token" => {
                script.token_bodies.push(body);
                script.token.clone()
            }
            "/userinfo" => {
                let authorization = req
                    .headers()
                    .get("authorization")
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string);
                script
                    .userinfo_requests
                    .push((req.uri().to_string(), authorization));
                script.userinfo.clone()
            }
            other => script
                .extra
                .get(other)
                .cloned()
                .unwrap_or_else(|| Reply::Json(404, json!({"error": "not_found"}))),
        }
    };
    match reply {
        Reply::Json(status, value) => Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .content_type("application/json")
            .body(value.to_string()),
        Reply::Raw {
            status,
            content_type,
            body,
        } => Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .content_type(content_type)
            .body(body),
        Reply::Redirect(location) => Response::builder()
            .status(StatusCode::FOUND)
            .header("Location", location)
            .finish(),
        Reply::Slow(duration, status, value) => {
            tokio::time::sleep(duration).await;
            Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .content_type("application/json")
                .body(value.to_string())
        }
        Reply::Hang(duration) => {
            tokio::time::sleep(duration).await;
            Response::builder()
                .status(StatusCode::GATEWAY_TIMEOUT)
                .finish()
        }
    }
}

impl HostileIdp {
    pub async fn start() -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = std_listener.local_addr().unwrap().port();
        drop(std_listener);
        let issuer = format!("http://127.0.0.1:{port}");
        let script = Arc::new(Mutex::new(Script {
            discovery: discovery(&issuer),
            jwks: Reply::Json(200, json!({"keys": [jwt::key_a().jwk()]})),
            token: Reply::Json(500, json!({"error": "not scripted"})),
            userinfo: Reply::Json(500, json!({"error": "not scripted"})),
            calls: Vec::new(),
            token_bodies: Vec::new(),
            userinfo_requests: Vec::new(),
            extra: std::collections::HashMap::new(),
            bodies: Vec::new(),
            headers: Vec::new(),
        }));
        let app = Route::new().at("/*path", serve).data(Arc::clone(&script));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let listener = TcpListener::bind(format!("127.0.0.1:{port}"));
        tokio::spawn(async move {
            let _ = Server::new(listener)
                .run_with_graceful_shutdown(
                    app,
                    async {
                        let _ = rx.await;
                    },
                    Some(Duration::from_secs(1)),
                )
                .await;
        });
        // Wait until it answers.
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            issuer,
            script,
            shutdown: Some(tx),
        }
    }

    /// `[idps.<name>]` for this IdP.
    pub fn idp_toml(&self, name: &str) -> String {
        format!(
            "[idps.{name}]\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n",
            self.issuer
        )
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut Script) -> R) -> R {
        f(&mut self.script.lock().unwrap())
    }

    pub fn calls(&self) -> Vec<String> {
        self.with(|script| script.calls.clone())
    }

    pub fn clear_calls(&self) {
        self.with(|script| script.calls.clear());
    }

    /// Whether any call was made to `path` since the last clear.
    pub fn called(&self, path: &str) -> bool {
        self.calls()
            .iter()
            .any(|call| call.ends_with(&format!(" {path}")))
    }

    /// Claims of a good ID token for this IdP.
    pub fn claims(&self, nonce: &str, access_token: &str) -> Value {
        let now = chrono_now();
        json!({
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": "alice-sub",
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            "email": "alice@example.test",
            "email_verified": true,
            "preferred_username": "alice",
            "at_hash": jwt::at_hash(access_token),
        })
    }

    /// Scripts the token endpoint to return `id_token` with `access_token`.
    pub fn answer_token(&self, id_token: Option<String>, access_token: &str) {
        let mut body = json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
        });
        if let Some(id_token) = id_token {
            body["id_token"] = Value::String(id_token);
        }
        self.with(|script| script.token = Reply::Json(200, body));
    }

    /// A whole login at this IdP, configured as `name` on the server at `server`: starts it in
    /// `browser`, scripts the token answer (`access_token`, the ID token `id_token` makes of
    /// this login's good claims, and the fields of `extra`, e.g. a refresh token) and calls the
    /// callback with its `iss`. Returns the callback's response.
    pub async fn sign_in(
        &self,
        browser: &crate::Browser,
        server: &str,
        name: &str,
        access_token: &str,
        id_token: impl FnOnce(Value) -> String,
        extra: Value,
    ) -> reqwest::Response {
        let authorize = browser.start_login(server, name).await;
        let state = crate::query_param(&authorize, "state").unwrap();
        let nonce = crate::query_param(&authorize, "nonce").unwrap();
        let mut body = json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token(self.claims(&nonce, access_token)),
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.with(|script| script.token = Reply::Json(200, body));
        let mut callback = url::Url::parse(&format!("{server}/authnz/{name}/callback")).unwrap();
        callback
            .query_pairs_mut()
            .append_pair("code", "code-1")
            .append_pair("state", &state)
            .append_pair("iss", &self.issuer);
        browser.get(callback.as_str()).await
    }

    /// Scripts userinfo to return these claims.
    pub fn answer_userinfo(&self, claims: Value) {
        self.with(|script| script.userinfo = Reply::Json(200, claims));
    }
}

/// Unix seconds now.
pub fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The default discovery document of a hostile IdP at `issuer`.
pub fn discovery(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "authorization_response_iss_parameter_supported": true,
    })
}

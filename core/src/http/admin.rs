//! Operations: liveness and readiness, metrics, and for the admins named in the config the
//! detailed status and a reload.

use std::collections::HashMap;
use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::error::{FlowError, Status};
use crate::state::App;

use super::caller::{admin, check_csrf, Auth};
use super::error::{error_responses, ErrorBody};
use super::tags::ApiTags;

/// The state of one IdP.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct IdpHealth {
    pub name: String,
    pub kind: String,
    /// `ready` (discovered), `pending` (not yet discovered), `failing` (the last discovery
    /// failed) or `unavailable` (credentials missing from the config).
    pub state: String,
    /// Why it is failing or unavailable.
    pub reason: Option<String>,
    /// Unix seconds of the last successful discovery.
    pub discovered_at: Option<i64>,
    /// JWKS fetches so far (discovery and key-rotation refetches).
    pub jwks_fetches: u64,
}

/// Liveness and the state of every IdP.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Health {
    /// `ok` while the server serves.
    pub status: String,
    /// Whether every configured IdP has been discovered.
    pub ready: bool,
    /// The configuration generation in force (1 at start, +1 per reload).
    pub generation: u64,
    /// Unix seconds when it was loaded.
    pub loaded_at: i64,
    /// Why the last reload was refused (the previous configuration stays in force), if it was.
    pub reload_error: Option<String>,
    /// `ok`, or `failing` while the database cannot take writes (a full disk, a database gone
    /// away): not ready.
    pub store: String,
    /// The store's backend: `sled` (embedded) or `postgres` (shared by replicas).
    pub store_backend: String,
    /// A digest of the loaded `idps.toml` (the first 16 hex digits of its SHA-256): replicas
    /// that show different digests run different configurations.
    pub config_digest: String,
    /// Why the store fails (admin API only).
    pub store_error: Option<String>,
    pub idps: Vec<IdpHealth>,
}

/// The health report (shared by `/healthz`, `/readyz` and the admin API). Only `detail` (the
/// admin API) says why an entry is unavailable: the reason names files and environment
/// variables, which are nobody else's business.
pub async fn health(app: &App, detail: bool) -> Health {
    let generation = app.current();
    let mut idps = Vec::new();
    for idp in &generation.idps {
        let discovered_at = idp.discovered_at().await;
        let (state, reason) = match (discovered_at, idp.last_error()) {
            (Some(_), _) => ("ready", None),
            (None, Some(error)) => ("failing", Some(error)),
            (None, None) => ("pending", None),
        };
        idps.push(IdpHealth {
            name: idp.config.name.clone(),
            kind: idp.config.kind.clone(),
            state: state.to_string(),
            reason,
            discovered_at,
            jwks_fetches: idp
                .counters
                .jwks_fetches
                .load(std::sync::atomic::Ordering::Relaxed),
        });
    }
    for entry in &generation.config.unavailable {
        idps.push(IdpHealth {
            name: entry.name.clone(),
            kind: entry.kind.clone(),
            state: "unavailable".to_string(),
            reason: Some(if detail {
                entry.reason.clone()
            } else {
                "its credentials are not configured yet (admins: see /api/admin/status)".to_string()
            }),
            discovered_at: None,
            jwks_fetches: 0,
        });
    }
    let store_failure = app.store_failure();
    Health {
        status: "ok".to_string(),
        ready: store_failure.is_none()
            && idps
                .iter()
                .all(|idp| idp.state == "ready" || idp.state == "unavailable"),
        store: if store_failure.is_some() {
            "failing"
        } else {
            "ok"
        }
        .to_string(),
        store_error: store_failure.filter(|_| detail),
        store_backend: app.store.backend().to_string(),
        config_digest: generation.config.digest.clone(),
        generation: generation.number,
        loaded_at: generation.loaded_at,
        reload_error: app.reload_status().last_error.map(|error| {
            if detail {
                error
            } else {
                "the last reload was refused; the previous configuration stays in force (admins: see /api/admin/status)".to_string()
            }
        }),
        idps,
    }
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Every IdP is discovered.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// Some IdP is still being discovered or failing, or the database cannot take writes.
    #[oai(status = 503)]
    NotReady(Json<Health>),
}

#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// Prometheus text exposition format.
    #[oai(status = 200, content_type = "text/plain; version=0.0.4")]
    Ok(PlainText<String>),
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    /// The server is alive; each IdP's state.
    #[oai(status = 200)]
    Ok(Json<Health>),
}

/// The admin routes.
pub struct AdminApi;

error_responses!(AdminError {
    /// Not logged in.
    Unauthorized = 401,
    /// Not an admin (`[server] admins`), or a cross-site request.
    Forbidden = 403,
    /// The new configuration is invalid: nothing changed (the message lists every problem).
    Invalid = 422,
});

/// Logins failed for one reason.
#[derive(Debug, Object)]
pub struct Failures {
    /// The error code (`invalid_state`, `id_token_invalid`, ...).
    pub reason: String,
    pub count: u64,
}

/// The logins of one IdP since start (the counters of `/metrics`).
#[derive(Debug, Object)]
pub struct IdpLogins {
    pub idp: String,
    pub started: u64,
    pub completed: u64,
    /// Most frequent first.
    pub failed: Vec<Failures>,
}

/// Every IdP's logins since start, IdPs in config order (then any the config no longer has).
pub(crate) fn logins(app: &App) -> Vec<IdpLogins> {
    let mut counted = app.metrics.logins();
    let mut names: Vec<String> = app
        .current()
        .idps
        .iter()
        .map(|idp| idp.config.name.clone())
        .collect();
    names.extend(
        counted
            .keys()
            .filter(|name| !names.contains(name))
            .cloned()
            .collect::<Vec<_>>(),
    );
    names
        .into_iter()
        .map(|idp| {
            let counts = counted.remove(&idp).unwrap_or_default();
            let mut failed: Vec<Failures> = counts
                .failed
                .into_iter()
                .map(|(reason, count)| Failures { reason, count })
                .collect();
            failed.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
            IdpLogins {
                idp,
                started: counts.started,
                completed: counts.completed,
                failed,
            }
        })
        .collect()
}

/// The server's state for admins.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AdminStatus {
    pub health: Health,
    /// Logins per IdP since start.
    pub logins: Vec<IdpLogins>,
    /// Successful reloads since start.
    pub reloads: u64,
    /// Refused reloads since start.
    pub reload_failures: u64,
    /// Unix seconds of the last reload attempt.
    pub last_reload_attempt_at: Option<i64>,
}

#[derive(ApiResponse)]
pub enum AdminStatusResponse {
    /// Every IdP's state, the configuration generation and the reloads.
    #[oai(status = 200)]
    Ok(Json<AdminStatus>),
}

/// A successful reload.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Reloaded {
    /// The generation now in force.
    pub generation: u64,
}

#[derive(ApiResponse)]
pub enum ReloadResponse {
    /// The new configuration is in force; logins already started finish with the old one.
    #[oai(status = 200)]
    Ok(Json<Reloaded>),
}

#[OpenApi]
impl AdminApi {
    /// Liveness, and for each IdP whether it is ready, still being discovered, failing (with
    /// the last error) or unavailable (with the reason). Never shows a secret.
    #[oai(path = "/healthz", method = "get", tag = "ApiTags::Authnz")]
    async fn healthz(&self, app: Data<&Arc<App>>) -> HealthResponse {
        HealthResponse::Ok(Json(health(&app, false).await))
    }

    /// Readiness: 200 once every configured IdP is discovered and while the database takes
    /// writes; 503 otherwise (same report).
    #[oai(path = "/readyz", method = "get", tag = "ApiTags::Authnz")]
    async fn readyz(&self, app: Data<&Arc<App>>) -> ReadyResponse {
        let report = health(&app, false).await;
        if report.ready {
            ReadyResponse::Ready(Json(report))
        } else {
            ReadyResponse::NotReady(Json(report))
        }
    }

    /// Prometheus metrics: logins started, completed and failed per IdP and reason, callback
    /// latency, JWKS fetches, reloads.
    #[oai(path = "/metrics", method = "get", tag = "ApiTags::Authnz")]
    async fn metrics(&self, app: Data<&Arc<App>>) -> MetricsResponse {
        let generation = app.current();
        let jwks: Vec<(String, u64)> = generation
            .idps
            .iter()
            .map(|idp| {
                (
                    idp.config.name.clone(),
                    idp.counters
                        .jwks_fetches
                        .load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect();
        MetricsResponse::Ok(PlainText(app.metrics.render(&jwks, generation.number)))
    }

    /// The server's state: every IdP, the configuration generation and the reloads (admins).
    #[oai(path = "/api/admin/status", method = "get", tag = "ApiTags::Admin")]
    async fn admin_status(
        &self,
        app: Data<&Arc<App>>,
        auth: Auth,
    ) -> Result<AdminStatusResponse, AdminError> {
        let app = *app;
        admin(app, &auth).await?;
        let reload = app.reload_status();
        Ok(AdminStatusResponse::Ok(Json(AdminStatus {
            health: health(app, true).await,
            logins: logins(app),
            reloads: reload.reloads,
            reload_failures: reload.failures,
            last_reload_attempt_at: reload.last_attempt_at,
        })))
    }

    /// Re-reads `idps.toml` and swaps in every IdP at once, or, if anything in it is wrong,
    /// changes nothing and answers every problem (admins). `SIGHUP` and saving the file do the
    /// same.
    #[oai(path = "/api/admin/reload", method = "post", tag = "ApiTags::Admin")]
    async fn admin_reload(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
    ) -> Result<ReloadResponse, AdminError> {
        let app = *app;
        let caller = admin(app, &auth).await?;
        check_csrf(app, req, &caller, &HashMap::new())?;
        match app.reload().await {
            Ok(generation) => Ok(ReloadResponse::Ok(Json(Reloaded { generation }))),
            Err(problems) => {
                Err(FlowError::new(Status::Invalid, "invalid_config", problems).into())
            }
        }
    }
}

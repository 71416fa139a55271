//! The admin HTTP API: accounts, mailbox figures, health and metrics.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::address::normalise;
use crate::auth::{new_account, MAX_PASSWORD_LEN};
use crate::server::ServerContext;
use crate::store::{delete_account_and_mail, StoreError};

type Ctx = State<Arc<ServerContext>>;

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

pub fn router(ctx: Arc<ServerContext>) -> Router {
    let users = Router::new()
        .route("/users", get(list_users))
        .route("/users/{address}", axum::routing::put(put_user).delete(delete_user))
        .route("/users/{address}/mailbox", get(mailbox))
        .route("/repair", get(repair_status).post(start_repair))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(users)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .with_state(ctx)
}

pub async fn serve(listener: TcpListener, ctx: Arc<ServerContext>, mut stop: watch::Receiver<bool>) {
    let app = router(ctx);
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "admin API stopped");
    }
}

async fn require_token(State(ctx): Ctx, request: Request, next: Next) -> Result<Response, ApiError> {
    if let Some(token) = &ctx.config.admin_token {
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given != Some(format!("Bearer {token}").as_str()) {
            return Err(ApiError(StatusCode::UNAUTHORIZED, "a valid bearer token is required".into()));
        }
    }
    Ok(next.run(request).await)
}

async fn readyz(State(ctx): Ctx) -> Result<Json<serde_json::Value>, ApiError> {
    ctx.store.ping().await?;
    Ok(Json(json!({ "status": "ready", "store": ctx.store.backend() })))
}

async fn metrics(State(ctx): Ctx) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &ctx.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn list_users(State(ctx): Ctx) -> Result<Json<serde_json::Value>, ApiError> {
    let mut users = ctx.store.list_accounts().await?;
    users.sort();
    Ok(Json(json!({ "users": users })))
}

#[derive(Deserialize)]
struct PasswordBody {
    password: String,
}

async fn put_user(
    State(ctx): Ctx,
    Path(address): Path<String>,
    body: Result<Json<PasswordBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let address = normalise(&address).map_err(|e| bad_request(e.to_string()))?;
    let Json(body) = body.map_err(|e| bad_request(format!("expected JSON {{\"password\": \"...\"}}: {e}")))?;
    if body.password.is_empty() || body.password.len() > MAX_PASSWORD_LEN {
        return Err(bad_request(format!("password must be 1 to {MAX_PASSWORD_LEN} octets")));
    }
    // Informational only (201 vs 200): the write is a plain upsert either way.
    let existed = ctx.store.get_account(&address).await?.is_some();
    let password = body.password;
    let account_address = address.clone();
    let account = crate::auth::run_kdf(move || new_account(&account_address, &password))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    if !existed {
        // Mail that raced with an earlier deletion of this address must not reach the new owner.
        let leftovers: Vec<_> = ctx.store.listing(&address).await?.into_iter().map(|e| e.id).collect();
        for batch in leftovers.chunks(100) {
            crate::store::expunge(ctx.store.as_ref(), &address, batch).await?;
        }
    }
    ctx.store.put_account(&account).await?;
    tracing::info!(%address, created = !existed, "account saved");
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!({ "address": address, "created": !existed }))))
}

async fn delete_user(State(ctx): Ctx, Path(address): Path<String>) -> Result<StatusCode, ApiError> {
    let address = normalise(&address).map_err(|e| bad_request(e.to_string()))?;
    if ctx.store.get_account(&address).await?.is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no account {address}")));
    }
    // Forgotten before (no delivery here trusts it any more) and after (none that raced in does).
    ctx.accounts.forget(&address);
    let deleted = delete_account_and_mail(ctx.store.as_ref(), &address).await;
    ctx.accounts.forget(&address);
    deleted?;
    tracing::info!(%address, "account deleted with its mail");
    Ok(StatusCode::NO_CONTENT)
}

async fn mailbox(State(ctx): Ctx, Path(address): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let address = normalise(&address).map_err(|e| bad_request(e.to_string()))?;
    if ctx.store.get_account(&address).await?.is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no account {address}")));
    }
    let listing = ctx.store.listing(&address).await?;
    let octets: u64 = listing.iter().map(|e| e.size).sum();
    Ok(Json(json!({ "address": address, "messages": listing.len(), "octets": octets })))
}

#[derive(Deserialize)]
struct RepairQuery {
    grace_secs: Option<u64>,
    rate: Option<u32>,
    reset: Option<bool>,
}

async fn repair_status(State(ctx): Ctx) -> Json<crate::repair::RepairStatus> {
    Json(ctx.repair.lock().unwrap().clone())
}

/// Starts a repair run in the background (one at a time); poll `GET /repair` for progress.
async fn start_repair(
    State(ctx): Ctx,
    axum::extract::Query(q): axum::extract::Query<RepairQuery>,
) -> Result<(StatusCode, Json<crate::repair::RepairStatus>), ApiError> {
    let defaults = crate::repair::RepairOptions::default();
    let options = crate::repair::RepairOptions {
        grace: q.grace_secs.map_or(defaults.grace, std::time::Duration::from_secs),
        rate: q.rate.unwrap_or(defaults.rate),
        reset: q.reset.unwrap_or(false),
    };
    {
        let mut status = ctx.repair.lock().unwrap();
        if status.running {
            return Err(ApiError(StatusCode::CONFLICT, "a repair is already running".into()));
        }
        status.running = true;
        status.error = None;
        status.runs += 1;
    }
    let task_ctx = ctx.clone();
    tokio::spawn(async move {
        let progress_ctx = task_ctx.clone();
        let result = crate::repair::run(task_ctx.store.as_ref(), options, move |p| {
            let mut s = progress_ctx.repair.lock().unwrap();
            (s.phase, s.checked, s.fixed) = (p.phase.clone(), p.checked, p.fixed);
        })
        .await;
        let mut status = task_ctx.repair.lock().unwrap();
        status.running = false;
        if let Err(e) = result {
            tracing::warn!(error = %e, "repair stopped; it resumes where it stopped on the next run");
            status.error = Some(e.to_string());
        }
    });
    let status = ctx.repair.lock().unwrap().clone();
    Ok((StatusCode::ACCEPTED, Json(status)))
}

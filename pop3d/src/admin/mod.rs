//! The HTTP side of pop3d: the admin API (accounts, mailbox figures, repair) and the operations
//! endpoints (health, readiness, metrics).
//!
//! Two listeners. `admin` serves everything and guards the account and repair routes ([`guard`]):
//! with a token configured every such request must carry it; without one only loopback clients
//! are served, and start-up refuses a non-loopback admin bind. `ops` serves only the operations
//! endpoints, so it can be opened to probes and Prometheus without opening the accounts.

mod guard;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::context::ServerContext;
use crate::store::StoreError;

type Ctx = State<Arc<ServerContext>>;

/// Every error is JSON `{"error": ...}`, whatever the route.
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
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

/// Health, readiness and metrics: what probes and Prometheus read. Nothing here changes state or
/// names an account.
fn operations() -> Router<Arc<ServerContext>> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

fn json_errors(router: Router<Arc<ServerContext>>) -> Router<Arc<ServerContext>> {
    router.fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") }).method_not_allowed_fallback(
        || async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here") },
    )
}

/// The admin listener's routes.
pub fn router(ctx: Arc<ServerContext>) -> Router {
    let guarded = users::routes().route_layer(middleware::from_fn_with_state(ctx.clone(), guard::require_admin));
    json_errors(operations().merge(guarded)).with_state(ctx)
}

/// The ops listener's routes.
pub fn ops_router(ctx: Arc<ServerContext>) -> Router {
    json_errors(operations()).with_state(ctx)
}

/// Serves `app` until `stop`, with each request's peer address available to the guard.
pub async fn serve(listener: TcpListener, app: Router, mut stop: watch::Receiver<bool>) {
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "HTTP listener stopped");
    }
}

async fn readyz(State(ctx): Ctx) -> Result<Json<serde_json::Value>, ApiError> {
    if ctx.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining: shutting down"));
    }
    ctx.store.ping().await?;
    Ok(Json(json!({ "status": "ready", "store": ctx.store.backend() })))
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics(State(ctx): Ctx) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &ctx.registry) {
        // What prometheus_client writes is OpenMetrics (`# EOF`, counter families typed without
        // `_total`); labelled as the 0.0.4 text format, Prometheus lost the counters' types.
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

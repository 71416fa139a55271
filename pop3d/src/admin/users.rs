//! Account routes: create, change, delete, list, quota, mailbox figures; and repair runs.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{bad_request, ApiError, Ctx};
use crate::address::normalise;
use crate::auth::{new_account, MAX_PASSWORD_LEN};
use crate::context::ServerContext;
use crate::store::{delete_account_and_mail, Account};

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

pub fn routes() -> Router<Arc<ServerContext>> {
    Router::new()
        .route("/users", get(list_users))
        .route("/users/{address}", put(put_user).delete(delete_user))
        .route("/users/{address}/quota", put(put_quota))
        .route("/users/{address}/mailbox", get(mailbox))
        .route("/repair", get(repair_status).post(start_repair))
}

async fn list_users(State(ctx): Ctx) -> Result<Json<serde_json::Value>, ApiError> {
    let mut users = ctx.store.list_accounts().await?;
    users.sort();
    Ok(Json(json!({ "users": users })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutUserBody {
    password: String,
    /// Absent: keep the account's current quota.
    #[serde(default, deserialize_with = "some_quota")]
    quota_mb: Option<Option<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    /// `null`: back to the server's default.
    quota_mb: Option<u64>,
}

/// Tells `"quota_mb": null` (reset) from an absent key (keep).
fn some_quota<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// The address of a new account: normal, and not one LMTP could never deliver to.
fn account_address(ctx: &ServerContext, raw: &str) -> Result<String, ApiError> {
    let address = normalise(raw).map_err(|e| bad_request(e.to_string()))?;
    if let Some(d) = ctx.config.recipient_delimiter {
        let local = address.rsplit_once('@').map_or("", |(l, _)| l);
        if local.contains(d) {
            return Err(bad_request(format!(
                "{address}: the local part contains the recipient delimiter {d:?}; mail to it goes to the \
                 address without the {d}tag, so create that one"
            )));
        }
    }
    Ok(address)
}

fn quota_octets(mb: u64) -> Result<u64, ApiError> {
    mb.checked_mul(1 << 20).ok_or_else(|| bad_request("quota_mb is too large"))
}

async fn put_user(
    State(ctx): Ctx,
    Path(address): Path<String>,
    body: JsonBody<PutUserBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let address = account_address(&ctx, &address)?;
    let Json(body) = body.map_err(|e| bad_request(format!("expected JSON {{\"password\": \"...\"}}: {e}")))?;
    let min = ctx.config.min_password_length;
    let length = body.password.chars().count();
    if length < min || body.password.len() > MAX_PASSWORD_LEN {
        return Err(bad_request(format!("password must be {min} to {MAX_PASSWORD_LEN} characters")));
    }
    // Informational only (201 vs 200): the write is a plain upsert either way.
    let current = ctx.store.get_account(&address).await?;
    let existed = current.is_some();
    let quota = match body.quota_mb {
        Some(q) => q.map(quota_octets).transpose()?,
        None => current.and_then(|a| a.quota),
    };
    let (password, account_address, iterations) = (body.password, address.clone(), ctx.config.scram_iterations);
    let mut account = crate::auth::run_kdf(move || new_account(&account_address, &password, iterations))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    account.quota = quota;
    if !existed {
        // Mail that raced with an earlier deletion of this address must not reach the new owner.
        let leftovers: Vec<_> = ctx.store.listing(&address).await?.into_iter().map(|e| e.id).collect();
        for batch in leftovers.chunks(100) {
            crate::store::expunge(ctx.store.as_ref(), &address, batch).await?;
        }
    }
    ctx.store.put_account(&account).await?;
    ctx.accounts.forget(&address);
    tracing::info!(%address, created = !existed, "account saved");
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!({ "address": address, "created": !existed }))))
}

async fn existing(ctx: &ServerContext, raw: &str) -> Result<Account, ApiError> {
    let address = normalise(raw).map_err(|e| bad_request(e.to_string()))?;
    ctx.store
        .get_account(&address)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no account {address}")))
}

async fn put_quota(
    State(ctx): Ctx,
    Path(address): Path<String>,
    body: JsonBody<QuotaBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body.map_err(|e| bad_request(format!("expected JSON {{\"quota_mb\": N or null}}: {e}")))?;
    let mut account = existing(&ctx, &address).await?;
    account.quota = body.quota_mb.map(quota_octets).transpose()?;
    ctx.store.put_account(&account).await?;
    ctx.accounts.forget(&account.address);
    tracing::info!(address = %account.address, quota = ?account.quota, "quota set");
    Ok(Json(json!({ "address": account.address, "quota_octets": effective_quota(&ctx, &account) })))
}

fn effective_quota(ctx: &ServerContext, account: &Account) -> Option<u64> {
    account.quota.or(ctx.config.mailbox_quota).filter(|q| *q > 0)
}

async fn delete_user(State(ctx): Ctx, Path(address): Path<String>) -> Result<StatusCode, ApiError> {
    let address = existing(&ctx, &address).await?.address;
    // Forgotten before (no delivery here trusts it any more) and after (none that raced in does).
    ctx.accounts.forget(&address);
    let deleted = delete_account_and_mail(ctx.store.as_ref(), &address).await;
    ctx.accounts.forget(&address);
    deleted?;
    tracing::info!(%address, "account deleted with its mail");
    Ok(StatusCode::NO_CONTENT)
}

async fn mailbox(State(ctx): Ctx, Path(address): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let account = existing(&ctx, &address).await?;
    let listing = ctx.store.listing(&account.address).await?;
    let octets: u64 = listing.iter().map(|e| e.size).sum();
    Ok(Json(json!({
        "address": account.address,
        "messages": listing.len(),
        "octets": octets,
        "quota_octets": effective_quota(&ctx, &account),
    })))
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
            return Err(ApiError::new(StatusCode::CONFLICT, "a repair is already running"));
        }
        status.running = true;
        status.error = None;
        status.runs += 1;
    }
    let task_ctx = ctx.clone();
    tokio::spawn(async move {
        let started = crate::metrics::unix_now();
        // A run that resumes an interrupted one covers only from when that one began, which is
        // not known here: only a fresh run moves the "covered until" gauge.
        let resumed = match task_ctx.store.load_progress(crate::repair::TASK).await {
            Ok(Some(p)) if !options.reset && p.phase != "done" => Some(p.fixed),
            _ => None,
        };
        let progress_ctx = task_ctx.clone();
        let result = crate::repair::run(task_ctx.store.as_ref(), options, move |p| {
            let mut s = progress_ctx.repair.lock().unwrap();
            (s.phase, s.checked, s.fixed) = (p.phase.clone(), p.checked, p.fixed);
        })
        .await;
        record_repair(&task_ctx.metrics.repair, &result, started, resumed, options.grace);
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

/// The repair metrics of a finished run. `resumed`: the fixed count the run resumed from.
fn record_repair(
    m: &crate::metrics::RepairMetrics,
    result: &crate::store::Result<crate::store::RepairProgress>,
    started: f64,
    resumed: Option<u64>,
    grace: std::time::Duration,
) {
    let label = if result.is_ok() { "completed" } else { "failed" };
    m.runs.get_or_create(&crate::metrics::ResultLabel { result: label }).inc();
    if let Ok(p) = result {
        m.fixed.inc_by(p.fixed.saturating_sub(resumed.unwrap_or(0)));
        if resumed.is_none() {
            m.covered_until.set(started - grace.as_secs_f64());
        }
    }
}

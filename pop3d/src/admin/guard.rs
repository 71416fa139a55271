//! Who may use the account and repair routes.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, Ctx};

/// With a token: the request must carry it (`Authorization: Bearer <token>`, the scheme in any
/// case, RFC 9110 11.1). Without one: loopback clients only. Start-up already refuses a
/// non-loopback bind without a token; checking each peer as well keeps the rule true whatever
/// the bind turns out to accept.
pub async fn require_admin(
    State(ctx): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match &ctx.config.admin_token {
        Some(token) => {
            let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
            if !given.is_some_and(|g| same_token(g, token)) {
                tracing::info!(%peer, path = %request.uri().path(), "admin request without a valid token refused");
                return Err(ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required"));
            }
        }
        None if !peer.ip().to_canonical().is_loopback() => {
            tracing::info!(%peer, path = %request.uri().path(), "admin request from a non-loopback client refused (no token configured)");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the account API answers loopback clients only unless an admin token is configured",
            ));
        }
        None => {}
    }
    Ok(next.run(request).await)
}

/// The credentials of a `Bearer` authorization header.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim())
}

/// Compares digests in constant time, so neither the content nor the length of the token leaks
/// through response timing.
fn same_token(given: &str, token: &str) -> bool {
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(token.as_bytes()));
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_is_case_insensitive_and_credentials_must_match() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert!(same_token("0123456789abcdef", "0123456789abcdef"));
        assert!(!same_token("0123456789abcdeX", "0123456789abcdef"));
        assert!(!same_token("", "0123456789abcdef"));
    }
}

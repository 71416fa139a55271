//! Bearer tokens (OAUTHBEARER, XOAUTH2): JWTs checked locally against a JWKS file.
//!
//! Local validation means no network call per poll: a client polling every minute costs one
//! signature check. The JWKS file is reloaded when it changes (key rotation), like the TLS
//! certificate. Only asymmetric keys are used: a JWKS is public, so an `oct` (HMAC) key in it
//! would let anyone mint tokens.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::OAuthConfig;
use crate::reload::{Reload, Reloadable};

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read JWKS {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid JWKS {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// Why a token was refused (logged at debug; the client only learns "invalid_token").
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token header: {0}")]
    Header(String),
    #[error("no key in the JWKS for kid {0:?}")]
    UnknownKey(Option<String>),
    #[error("algorithm {0:?} is not allowed for this key")]
    Algorithm(Algorithm),
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("claim {0} is missing or not a string")]
    NoUser(String),
}

/// The asymmetric algorithms accepted; HS* never (see the module comment).
const ALLOWED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

pub struct BearerValidator {
    config: OAuthConfig,
    keys: RwLock<Arc<JwkSet>>,
    seen: Mutex<Vec<u8>>,
}

fn parse_jwks(path: &Path, bytes: &[u8]) -> Result<JwkSet, JwksError> {
    let invalid = |reason: String| JwksError::Invalid { path: path.display().to_string(), reason };
    let mut set: JwkSet = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    set.keys.retain(|k| !matches!(k.algorithm, AlgorithmParameters::OctetKey(_)));
    if set.keys.is_empty() {
        return Err(invalid("no public (RSA, EC or OKP) key".into()));
    }
    for key in &set.keys {
        DecodingKey::from_jwk(key).map_err(|e| invalid(format!("key {:?}: {e}", key.common.key_id)))?;
    }
    Ok(set)
}

/// Whether `alg` (from the token header) may be used with `key`.
fn algorithm_fits(key: &Jwk, alg: Algorithm) -> bool {
    if !ALLOWED.contains(&alg) {
        return false;
    }
    if let Some(declared) = key.common.key_algorithm {
        let declared = match declared {
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::PS256 => Algorithm::PS256,
            KeyAlgorithm::PS384 => Algorithm::PS384,
            KeyAlgorithm::PS512 => Algorithm::PS512,
            KeyAlgorithm::ES256 => Algorithm::ES256,
            KeyAlgorithm::ES384 => Algorithm::ES384,
            KeyAlgorithm::EdDSA => Algorithm::EdDSA,
            _ => return false,
        };
        return declared == alg;
    }
    // No "alg" on the key: the key type must match the algorithm family.
    matches!(
        (&key.algorithm, alg),
        (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)
            | (AlgorithmParameters::RSA(_), Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512)
            | (AlgorithmParameters::EllipticCurve(_), Algorithm::ES256 | Algorithm::ES384)
            | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
    )
}

impl BearerValidator {
    pub fn load(config: OAuthConfig) -> Result<Arc<Self>, JwksError> {
        let bytes = std::fs::read(&config.jwks)
            .map_err(|source| JwksError::Read { path: config.jwks.display().to_string(), source })?;
        let set = parse_jwks(&config.jwks, &bytes)?;
        Ok(Arc::new(Self { config, keys: RwLock::new(Arc::new(set)), seen: Mutex::new(bytes) }))
    }

    /// Checks signature, expiry, issuer and audience; returns the user claim (not yet normalised).
    pub fn validate(&self, token: &str) -> Result<String, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Header(e.to_string()))?;
        let keys = self.keys.read().unwrap().clone();
        let key = match &header.kid {
            Some(kid) => keys.find(kid),
            // Without a kid, a JWKS of exactly one key is unambiguous.
            None if keys.keys.len() == 1 => keys.keys.first(),
            None => None,
        }
        .ok_or_else(|| TokenError::UnknownKey(header.kid.clone()))?;
        if !algorithm_fits(key, header.alg) {
            return Err(TokenError::Algorithm(header.alg));
        }
        let decoding = DecodingKey::from_jwk(key).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = 30;
        match &self.config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.config.issuer {
            validation.set_issuer(&[iss]);
        }
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &decoding, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        match data.claims.get(&self.config.user_claim) {
            Some(serde_json::Value::String(user)) if !user.is_empty() => Ok(user.clone()),
            _ => Err(TokenError::NoUser(self.config.user_claim.clone())),
        }
    }
}

impl Reloadable for BearerValidator {
    fn what(&self) -> &'static str {
        "OAuth JWKS"
    }

    fn reload_if_changed(&self) -> Reload {
        let bytes = match std::fs::read(&self.config.jwks) {
            Ok(b) => b,
            Err(e) => return Reload::Failed(format!("cannot read {}: {e}", self.config.jwks.display())),
        };
        let mut seen = self.seen.lock().unwrap();
        if *seen == bytes {
            return Reload::Unchanged;
        }
        let parsed = parse_jwks(&self.config.jwks, &bytes);
        *seen = bytes;
        match parsed {
            Ok(set) => {
                *self.keys.write().unwrap() = Arc::new(set);
                Reload::Loaded
            }
            Err(e) => Reload::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;

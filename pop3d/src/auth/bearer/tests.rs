use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// An ES256 key pair: the signing key and its JWK.
fn es256(kid: &str) -> (EncodingKey, serde_json::Value) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw(); // 0x04 || x || y
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                     "x": B64URL.encode(&raw[1..33]), "y": B64URL.encode(&raw[33..65])});
    (EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(), jwk)
}

fn ed25519(kid: &str) -> (EncodingKey, serde_json::Value) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": B64URL.encode(pair.public_key_raw())});
    (EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(), jwk)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn token(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    validator: Arc<BearerValidator>,
}

fn setup(keys: &[serde_json::Value], issuer: Option<&str>, audience: Option<&str>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
    let config = OAuthConfig {
        jwks: path.clone(),
        issuer: issuer.map(str::to_owned),
        audience: audience.map(str::to_owned),
        user_claim: "email".into(),
    };
    Setup { validator: BearerValidator::load(config).unwrap(), path, _dir: dir }
}

#[test]
fn valid_tokens_give_the_user_claim() {
    let (k1, j1) = es256("k1");
    let (k2, j2) = ed25519("k2");
    let s = setup(&[j1, j2], Some("https://idp.test"), Some("pop3"));
    let claims = json!({"email": "alice@example.com", "exp": now() + 300, "iss": "https://idp.test", "aud": "pop3"});
    assert_eq!(
        s.validator.validate(&token(&k1, Algorithm::ES256, Some("k1"), claims.clone())).unwrap(),
        "alice@example.com"
    );
    assert_eq!(s.validator.validate(&token(&k2, Algorithm::EdDSA, Some("k2"), claims)).unwrap(), "alice@example.com");
}

#[test]
fn each_failure_is_refused() {
    let (k1, j1) = es256("k1");
    let (other, _) = es256("k1");
    let s = setup(&[j1], Some("https://idp.test"), Some("pop3"));
    let good = json!({"email": "a@x.test", "exp": now() + 300, "iss": "https://idp.test", "aud": "pop3"});
    let with = |patch: serde_json::Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let refused = |t: String| s.validator.validate(&t).unwrap_err();
    assert!(
        matches!(refused(token(&k1, Algorithm::ES256, Some("k1"), with(json!({"exp": now() - 3600})))), TokenError::Invalid(e) if e.contains("Expired"))
    );
    assert!(matches!(
        refused(token(&k1, Algorithm::ES256, Some("k1"), with(json!({"exp": null})))),
        TokenError::Invalid(_)
    ));
    assert!(matches!(
        refused(token(&k1, Algorithm::ES256, Some("k1"), with(json!({"iss": "https://evil.test"})))),
        TokenError::Invalid(_)
    ));
    assert!(matches!(
        refused(token(&k1, Algorithm::ES256, Some("k1"), with(json!({"aud": "imap"})))),
        TokenError::Invalid(_)
    ));
    assert!(matches!(
        refused(token(&k1, Algorithm::ES256, Some("k1"), with(json!({"email": null})))),
        TokenError::NoUser(_)
    ));
    assert!(
        matches!(refused(token(&other, Algorithm::ES256, Some("k1"), good.clone())), TokenError::Invalid(_)),
        "wrong signer"
    );
    assert!(matches!(refused(token(&k1, Algorithm::ES256, Some("nope"), good.clone())), TokenError::UnknownKey(_)));
    // alg confusion: an HMAC token "signed" with the public key material
    let hs = token(&EncodingKey::from_secret(b"public"), Algorithm::HS256, Some("k1"), good.clone());
    assert!(matches!(refused(hs), TokenError::Algorithm(Algorithm::HS256)));
    assert!(matches!(s.validator.validate("not.a.jwt").unwrap_err(), TokenError::Header(_)));
}

#[test]
fn hmac_keys_in_the_jwks_are_ignored_and_an_empty_set_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}).to_string()).unwrap();
    let config = OAuthConfig { jwks: path, issuer: None, audience: None, user_claim: "email".into() };
    assert!(matches!(BearerValidator::load(config), Err(JwksError::Invalid { .. })));
}

#[test]
fn jwks_rotation_is_picked_up_and_a_broken_file_keeps_the_old_keys() {
    let (k1, j1) = es256("k1");
    let (k2, j2) = es256("k2");
    let s = setup(std::slice::from_ref(&j1), None, None);
    let claims = json!({"email": "a@x.test", "exp": now() + 300});
    let t1 = token(&k1, Algorithm::ES256, Some("k1"), claims.clone());
    let t2 = token(&k2, Algorithm::ES256, Some("k2"), claims);
    assert!(s.validator.validate(&t2).is_err());
    std::fs::write(&s.path, json!({ "keys": [j2] }).to_string()).unwrap();
    assert_eq!(s.validator.reload_if_changed(), Reload::Loaded);
    assert!(s.validator.validate(&t2).is_ok());
    assert!(s.validator.validate(&t1).is_err(), "retired key");
    std::fs::write(&s.path, "{ broken").unwrap();
    assert!(matches!(s.validator.reload_if_changed(), Reload::Failed(_)));
    assert!(s.validator.validate(&t2).is_ok(), "old keys still in use");
}

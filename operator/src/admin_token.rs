//! The bearer token of pop3d's admin API, one per Pop3Cluster, in a Secret every pod mounts.
//!
//! pop3d refuses to bind its admin API to a non-loopback address without a token, and the pods'
//! admin port is reachable from the pod network (within the NetworkPolicy), so every cluster
//! needs one. Unless the spec names a Secret, the operator creates `<cluster>-admin-token` once
//! and never writes it again: rotating is an edit of that Secret by whoever holds the clients'
//! copy (the pods roll on its hash); an operator that rewrote it would lock every client out.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};
use rand::RngCore;

use crate::controller::{secret, secret_bytes};
use crate::pop3d_config::ADMIN_TOKEN_KEY;
use crate::resources::{sha256_hex, LABEL_CLUSTER, LABEL_MANAGED_BY};
use crate::telemetry::Metrics;
use crate::{Error, Result, FIELD_MANAGER};
use crds::Pop3Cluster;

/// pop3d refuses to start with a shorter token (after trimming), so the status says it first.
pub const MIN_TOKEN_LEN: usize = 16;

/// The Secret the pods mount: the one the spec names, else the generated one.
pub fn secret_name(cluster: &Pop3Cluster) -> String {
    cluster.spec.admin.token_secret_name.clone().unwrap_or_else(|| format!("{}-admin-token", cluster.name_any()))
}

/// 32 bytes from a CSPRNG, hex: 256 bits, printable, so it fits an `Authorization` header and a
/// shell variable as is.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The generated Secret, owned by the cluster so it goes when the cluster goes.
pub fn generated_secret(cluster: &Pop3Cluster, token: &str) -> Result<Secret> {
    let owner =
        cluster.controller_owner_ref(&()).ok_or_else(|| Error::InvalidSpec("the Pop3Cluster has no uid yet".into()))?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(cluster)),
            namespace: cluster.namespace(),
            labels: Some(
                [
                    (LABEL_CLUSTER.to_owned(), cluster.name_any()),
                    (LABEL_MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned()),
                ]
                .into(),
            ),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some([(ADMIN_TOKEN_KEY.to_owned(), ByteString(token.as_bytes().to_vec()))].into()),
        ..Default::default()
    })
}

/// What the reconcile learns about the token.
#[derive(Debug, Default)]
pub struct TokenFacts {
    /// Hash of the token, for the pod template (a rotation rolls the pods).
    pub hash: String,
    /// The operator created the Secret in this reconcile (its name).
    pub created: Option<String>,
    /// A key derived from the token (never shown anywhere), so that the hashes of other secrets
    /// in the pod template (the Cassandra password) reveal nothing to whoever reads a Deployment.
    pub hash_key: Vec<u8>,
    /// (reason, message) when the token is unusable: the pods cannot start without it.
    pub problem: Option<(String, String)>,
}

/// Reads the token Secret, creating the generated one when it does not exist yet.
pub async fn ensure(client: &Client, cluster: &Pop3Cluster, metrics: &Metrics) -> Result<TokenFacts> {
    let ns = cluster.namespace().unwrap_or_default();
    let name = secret_name(cluster);
    let named = cluster.spec.admin.token_secret_name.is_some();
    let mut facts = TokenFacts::default();
    let found = match secret(client, &ns, &name).await? {
        Some(s) => Some(s),
        None if named => None,
        None => {
            let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
            match api.create(&PostParams::default(), &generated_secret(cluster, &new_token())?).await {
                Ok(s) => {
                    metrics.write("create");
                    facts.created = Some(name.clone());
                    Some(s)
                }
                // Another operator replica (a leader hand-over) was first: use its token.
                Err(kube::Error::Api(e)) if e.code == 409 => secret(client, &ns, &name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let token = found.as_ref().and_then(|s| secret_bytes(s, ADMIN_TOKEN_KEY));
    facts.problem = problem(&name, found.is_some(), token.as_deref());
    facts.hash = match &token {
        Some(t) => sha256_hex(&[t]),
        None => "missing".into(),
    };
    facts.hash_key = sha256_hex(&[b"popfleet.io/secret-hash-key", &token.unwrap_or_default()]).into_bytes();
    Ok(facts)
}

/// Why the Secret cannot serve as the token, if it cannot: the checks pop3d makes at start, so
/// the status says it rather than pods that never become ready.
fn problem(name: &str, exists: bool, token: Option<&[u8]>) -> Option<(String, String)> {
    let what = match token.map(std::str::from_utf8) {
        _ if !exists => "not found".to_owned(),
        None => "has no key token".to_owned(),
        Some(Err(_)) => "has a token that is not UTF-8 text".to_owned(),
        Some(Ok(t)) if t.trim().is_empty() => "has an empty token".to_owned(),
        Some(Ok(t)) if t.trim().len() < MIN_TOKEN_LEN => format!("has a token shorter than {MIN_TOKEN_LEN} characters"),
        Some(Ok(_)) => return None,
    };
    Some(("AdminTokenSecretMissing".into(), format!("admin token Secret {name} {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::cluster;

    #[test]
    fn the_generated_secret_is_owned_and_holds_a_fresh_token() {
        let c = cluster(serde_json::json!({}));
        assert_eq!(secret_name(&c), "mail-admin-token");
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, b);
        let s = generated_secret(&c, &a).unwrap();
        assert_eq!(s.metadata.namespace.as_deref(), Some("ns"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("1234-5678", Some(true)));
        assert_eq!(s.metadata.labels.as_ref().unwrap()[LABEL_MANAGED_BY], FIELD_MANAGER);
        assert_eq!(secret_bytes(&s, "token").unwrap(), a.as_bytes());
    }

    #[test]
    fn a_named_secret_replaces_the_generated_one() {
        let c = cluster(serde_json::json!({"admin": {"tokenSecretName": "ops-token"}}));
        assert_eq!(secret_name(&c), "ops-token");
    }

    #[test]
    fn unusable_secrets_are_reported() {
        let reason = |exists, token: Option<&[u8]>| problem("t", exists, token).map(|(_, m)| m);
        assert_eq!(reason(false, None).as_deref(), Some("admin token Secret t not found"));
        assert_eq!(reason(true, None).as_deref(), Some("admin token Secret t has no key token"));
        assert_eq!(reason(true, Some(b" \n")).as_deref(), Some("admin token Secret t has an empty token"));
        assert_eq!(
            reason(true, Some(b" 0123456789abcde\n")).as_deref(),
            Some("admin token Secret t has a token shorter than 16 characters")
        );
        assert_eq!(
            reason(true, Some(b"\xff0123456789abcdef")).as_deref(),
            Some("admin token Secret t has a token that is not UTF-8 text")
        );
        assert_eq!(reason(true, Some(b"0123456789abcdef\n")), None);
        assert_eq!(reason(true, Some(new_token().as_bytes())), None);
        assert_eq!(problem("t", false, None).unwrap().0, "AdminTokenSecretMissing");
    }
}

//! What a cluster's objects depend on in the Secrets it names: the hashes that roll the pods when
//! a Secret's content changes, whether the Cassandra TLS Secret has a client certificate, and
//! what is missing (for the status). The admin token Secret is created here when needed.

use kube::{Client, ResourceExt};

use crate::controller::{secret, secret_bytes};
use crate::resources::{sha256_hex, SecretFacts};
use crate::telemetry::Metrics;
use crate::{admin_token, Result};
use crds::Pop3Cluster;

pub struct Facts {
    pub secrets: SecretFacts,
    /// (reason, message) of each problem, for the Degraded condition.
    pub problems: Vec<(String, String)>,
    /// The name of the admin token Secret, when this pass created it.
    pub token_created: Option<String>,
}

pub async fn read(client: &Client, cluster: &Pop3Cluster, metrics: &Metrics) -> Result<Facts> {
    let ns = cluster.namespace().unwrap_or_default();
    let spec = &cluster.spec;
    let mut problems = Vec::new();
    let mut secrets = SecretFacts::default();
    if let Some(t) = &spec.pop3.tls {
        secrets.pop3_tls_hash = Some(match secret(client, &ns, &t.secret_name).await? {
            Some(s) => sha256_hex(&[
                &secret_bytes(&s, "tls.crt").unwrap_or_default(),
                &secret_bytes(&s, "tls.key").unwrap_or_default(),
            ]),
            None => {
                problems.push(("TlsSecretMissing".to_owned(), format!("TLS Secret {} not found", t.secret_name)));
                "missing".to_owned()
            }
        });
    }
    if let Some(t) = &spec.cassandra.tls {
        let found = secret(client, &ns, &t.secret_name).await?;
        let (ca, crt, key) = match &found {
            Some(s) => (secret_bytes(s, "ca.crt"), secret_bytes(s, "tls.crt"), secret_bytes(s, "tls.key")),
            None => (None, None, None),
        };
        if ca.is_none() {
            problems.push((
                "CassandraTlsSecretMissing".to_owned(),
                match found {
                    None => format!("Cassandra TLS Secret {} not found", t.secret_name),
                    Some(_) => format!("Cassandra TLS Secret {} has no ca.crt", t.secret_name),
                },
            ));
        }
        secrets.cassandra_client_cert = crt.is_some() && key.is_some();
        secrets.cassandra_tls_hash =
            Some(sha256_hex(&[&ca.unwrap_or_default(), &crt.unwrap_or_default(), &key.unwrap_or_default()]));
    }

    let token = admin_token::ensure(client, cluster, metrics).await?;
    secrets.admin_token_hash = Some(token.hash);
    if let Some(c) = &spec.cassandra.credentials_secret {
        // A missing Secret or key is reported by the keyspace step, which needs the credentials too.
        let found = secret(client, &ns, &c.name).await?;
        let value = |key: &str| found.as_ref().and_then(|s| secret_bytes(s, key)).unwrap_or_default();
        secrets.cassandra_credentials_hash =
            Some(sha256_hex(&[&token.hash_key, &value(&c.username_key), &value(&c.password_key)]));
    }
    problems.extend(token.problem);
    Ok(Facts { secrets, problems, token_created: token.created })
}

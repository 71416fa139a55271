//! The keys the operator manages.

/// Keys of pop3d's configuration the operator writes itself; a `Pop3Cluster`'s `config` overrides
/// may not set them (they would point pods at the wrong store, address, keyspace or certificate,
/// or open the admin API). `admin_token` is never written, but is refused too: a token in
/// `config` would sit in a ConfigMap, readable by whoever may read ConfigMaps, beside the Secret
/// the pods mount. The CRD's schema refuses them (a CEL rule made from this list) and the operator
/// skips them when it lays the overrides over its own keys.
pub const MANAGED_KEYS: &[&str] = &[
    "store",
    "data_dir",
    "pop3",
    "pop3s",
    "lmtp",
    "admin",
    "admin_token_file",
    "admin_token",
    "ops",
    "cassandra",
    "local_dc",
    "keyspace",
    "read_consistency",
    "write_consistency",
    "cassandra_username",
    "cassandra_password",
    "allow_insecure_auth",
    "tls_cert",
    "tls_key",
    "cassandra_tls_ca",
    "cassandra_tls_cert",
    "cassandra_tls_key",
    "cassandra_tls_server_name",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileConfig;

    /// A managed key that is no field would refuse a harmless override and protect nothing.
    #[test]
    fn every_managed_key_is_a_real_key() {
        let keys = FileConfig::keys();
        let strays: Vec<_> = MANAGED_KEYS.iter().filter(|k| !keys.contains(k)).collect();
        assert!(strays.is_empty(), "managed but not a key of the file: {strays:?}");
    }
}

//! The `POP3D_*` environment variables. Every setting `key` of the file is also the variable
//! `POP3D_<KEY>` ([`name`]; pop3d's flags are declared with exactly these names, and a test there
//! holds every flag to it). The constants are the names other parts write themselves.

/// What every pop3d variable starts with.
pub const PREFIX: &str = "POP3D_";

/// The variable of the setting `key`: `idle_timeout` -> `POP3D_IDLE_TIMEOUT`.
pub fn name(key: &str) -> String {
    format!("{PREFIX}{}", key.to_ascii_uppercase())
}

/// The config file's path (a flag only: it is not a key of the file).
pub const CONFIG: &str = "POP3D_CONFIG";
/// The log filter (`info`, `pop3d=debug`, ...), read by the tracing subscriber.
pub const LOG: &str = "POP3D_LOG";
/// The admin token itself; there is no flag for it, so it never shows in `ps`.
pub const ADMIN_TOKEN: &str = "POP3D_ADMIN_TOKEN";
/// Cassandra credentials: the operator passes them from a Secret, never through the ConfigMap.
pub const CASSANDRA_USERNAME: &str = "POP3D_CASSANDRA_USERNAME";
pub const CASSANDRA_PASSWORD: &str = "POP3D_CASSANDRA_PASSWORD";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_variables_follow_the_rule() {
        assert_eq!(name("idle_timeout"), "POP3D_IDLE_TIMEOUT");
        for (key, constant) in [
            ("config", CONFIG),
            ("log", LOG),
            ("admin_token", ADMIN_TOKEN),
            ("cassandra_username", CASSANDRA_USERNAME),
            ("cassandra_password", CASSANDRA_PASSWORD),
        ] {
            assert_eq!(name(key), constant);
        }
    }
}

//! Hand-written schemas for the maps: schemars has no attribute for `maxProperties` or for
//! validating map values, and CEL rules need bounded sizes or the apiserver refuses the CRD for
//! exceeding its cost budget.

use schemars::{json_schema, Schema, SchemaGenerator};

use pop3d_config::MANAGED_KEYS;

pub fn config_overrides(_: &mut SchemaGenerator) -> Schema {
    let managed: Vec<String> = MANAGED_KEYS.iter().map(|k| format!("'{k}'")).collect();
    json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": { "type": "string", "maxLength": 1024 },
        "x-kubernetes-validations": [
            {
                "rule": "self.all(k, k.matches('^[a-z][a-z0-9_]{0,63}$'))",
                "message": "config keys are pop3d setting names in snake_case (e.g. idle_timeout)"
            },
            {
                "rule": format!("self.all(k, !(k in [{}]))", managed.join(", ")),
                "message": format!("these pop3d settings are set by the operator from the spec and cannot be overridden: {}", MANAGED_KEYS.join(", "))
            }
        ]
    })
}

pub fn contact_points(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "minProperties": 1,
        "maxProperties": 16,
        "additionalProperties": {
            "type": "array",
            "minItems": 1,
            "maxItems": 16,
            "items": { "type": "string", "minLength": 1, "maxLength": 260 }
        },
        "x-kubernetes-validations": [
            {
                "rule": "self.all(dc, self[dc].all(p, p.matches('^[^:/ ]+:[0-9]{1,5}$')))",
                "message": "contact points are host:port"
            }
        ]
    })
}

pub fn replication(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "minProperties": 1,
        "maxProperties": 16,
        "additionalProperties": { "type": "integer", "format": "int32" },
        "x-kubernetes-validations": [
            {
                "rule": "self.all(dc, self[dc] >= 1 && self[dc] <= 9)",
                "message": "replication factors are 1 to 9 per datacenter (the operator never removes a datacenter's replicas; do that in CQL after decommissioning)"
            },
            {
                "rule": "self.all(dc, dc.matches('^[A-Za-z0-9_-]{1,64}$'))",
                "message": "Cassandra datacenter names are letters, digits, _ and -"
            }
        ]
    })
}

fn metadata_map(max: u32, refused: &str, message: &str) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": max,
        "additionalProperties": { "type": "string", "maxLength": 1024 },
        "x-kubernetes-validations": [
            { "rule": format!("self.all(k, k.size() <= 317 && !({refused}))"), "message": message }
        ]
    })
}

pub fn pod_labels(_: &mut SchemaGenerator) -> Schema {
    metadata_map(
        32,
        "k.startsWith('popfleet.io/') || k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/managed-by']",
        "pod labels cannot be popfleet.io/* or app.kubernetes.io/{name,instance,managed-by}: the operator sets those",
    )
}

pub fn pod_annotations(_: &mut SchemaGenerator) -> Schema {
    metadata_map(
        64,
        "k.startsWith('popfleet.io/')",
        "pod annotations cannot be popfleet.io/*: the operator keeps its hashes there",
    )
}

/// Untyped on purpose: the API server checks the merged pod template when the overlay is applied
/// (the full PodTemplateSpec schema would make the CRD several times its size).
pub fn template_overlay(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

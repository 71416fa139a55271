//! The NetworkPolicy in front of a datacenter's pop3d pods.
//!
//! The ports differ in who needs them: POP3 clients are anywhere (often outside the cluster,
//! behind a LoadBalancer), LMTP is for the MTA (by default only pods of the cluster's namespace:
//! LMTP authenticates nobody, and the Service that carries POP3 to the Internet carries LMTP
//! too), health and metrics are for the kubelet and
//! Prometheus, and the admin API (accounts, password resets, repair) is for account tooling only.
//! The token locks the admin API; this fences it, so a leaked token alone is not enough from an
//! arbitrary pod. Egress is left open: pop3d needs Cassandra and DNS, wherever they are.
//!
//! Ports are the container ports, not the Service's: a policy sees the traffic after the Service
//! has translated it.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::pop3d_config::{ADMIN_PORT, LMTP_PORT, OPS_PORT, POP3S_PORT, POP3_PORT};
use crate::resources::{meta, selector_labels};
use crate::Result;
use crds::{DatacenterSpec, Pop3Cluster, ADMIN_CLIENT_LABEL};

/// The datacenter's policy, or None when `spec.networkPolicy.enabled` is false.
pub fn build(cluster: &Pop3Cluster, dc: &DatacenterSpec) -> Result<Option<NetworkPolicy>> {
    let spec = &cluster.spec;
    let np = &spec.network_policy;
    if !np.enabled {
        return Ok(None);
    }
    let mut pop3 = vec![POP3_PORT];
    if spec.pop3.tls.is_some() {
        pop3.push(POP3S_PORT);
    }
    let admin_clients = NetworkPolicyPeer {
        // No namespaceSelector: the policy's own namespace only.
        pod_selector: Some(LabelSelector {
            match_labels: Some([(ADMIN_CLIENT_LABEL.to_owned(), "true".to_owned())].into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let admin_from = std::iter::once(admin_clients).chain(np.admin_from.iter().cloned()).collect();
    let same_namespace = NetworkPolicyPeer { pod_selector: Some(LabelSelector::default()), ..Default::default() };
    let lmtp_from = Some(if np.lmtp_from.is_empty() { vec![same_namespace] } else { np.lmtp_from.clone() });
    Ok(Some(NetworkPolicy {
        metadata: meta(cluster, &dc.name)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster, &dc.name)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                rule(&pop3, None),
                rule(&[LMTP_PORT], lmtp_from),
                rule(&[OPS_PORT], None),
                rule(&[ADMIN_PORT], Some(admin_from)),
            ]),
            ..Default::default()
        }),
    }))
}

/// `from: None` admits every source; the protocol is left to its default (TCP), like the other
/// objects leave out what the apiserver fills in.
fn rule(ports: &[i32], from: Option<Vec<NetworkPolicyPeer>>) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        ports: Some(
            ports
                .iter()
                .map(|p| NetworkPolicyPort { port: Some(IntOrString::Int(*p)), ..Default::default() })
                .collect(),
        ),
        from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::cluster;

    /// (ports, sources as JSON) per rule; an absent source list is "anywhere".
    fn rules(p: &NetworkPolicy) -> Vec<(Vec<i32>, Option<serde_json::Value>)> {
        let ingress = p.spec.as_ref().unwrap().ingress.clone().unwrap();
        ingress
            .into_iter()
            .map(|r| {
                let ports = r
                    .ports
                    .unwrap()
                    .into_iter()
                    .map(|p| match p.port.unwrap() {
                        IntOrString::Int(i) => i,
                        IntOrString::String(s) => panic!("named port {s}"),
                    })
                    .collect();
                (ports, r.from.map(|f| serde_json::to_value(f).unwrap()))
            })
            .collect()
    }

    #[test]
    fn by_default_only_admin_clients_reach_the_admin_port() {
        let c = cluster(serde_json::json!({}));
        let p = build(&c, &c.spec.datacenters[1]).unwrap().expect("enabled by default");
        assert_eq!(p.metadata.name.as_deref(), Some("mail-west"));
        assert_eq!(p.metadata.owner_references.as_ref().unwrap()[0].uid, "1234-5678");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(
            spec.pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap(),
            &selector_labels(&c, "west"),
            "this datacenter's pods only"
        );
        assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_owned()][..]));
        assert_eq!(
            rules(&p),
            vec![
                (vec![1110], None),
                (vec![2424], Some(serde_json::json!([{"podSelector": {}}]))),
                (vec![9090], None),
                (
                    vec![8080],
                    Some(serde_json::json!([{"podSelector": {"matchLabels": {"popfleet.io/admin-client": "true"}}}]))
                ),
            ]
        );
    }

    #[test]
    fn lmtp_and_admin_sources_come_from_the_spec() {
        let mta = serde_json::json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mta"}}});
        let ops = serde_json::json!({"ipBlock": {"cidr": "10.9.0.0/24"}});
        let c = cluster(serde_json::json!({
            "pop3": {"tls": {"secretName": "t"}},
            "networkPolicy": {"lmtpFrom": [mta], "adminFrom": [ops]}
        }));
        let r = rules(&build(&c, &c.spec.datacenters[0]).unwrap().unwrap());
        assert_eq!(r[0], (vec![1110, 1995], None), "POP3S too with TLS");
        assert_eq!(r[1], (vec![2424], Some(serde_json::json!([mta]))));
        assert_eq!(r[2], (vec![9090], None));
        assert_eq!(r[3].0, vec![8080]);
        let admin = r[3].1.as_ref().unwrap().as_array().unwrap();
        assert_eq!(admin.len(), 2, "admin clients and the extra peer: {admin:?}");
        assert_eq!(admin[1], ops);
    }

    #[test]
    fn disabled_makes_none() {
        let c = cluster(serde_json::json!({"networkPolicy": {"enabled": false}}));
        assert!(build(&c, &c.spec.datacenters[0]).unwrap().is_none());
    }

    /// Every port the pod listens on is in exactly one rule: a port left out would be closed,
    /// and the admin port in an open rule would undo the point.
    #[test]
    fn every_container_port_is_covered() {
        let c = cluster(serde_json::json!({"pop3": {"tls": {"secretName": "t"}}}));
        let ch = crate::resources::build(&c, &c.spec.datacenters[0], &Default::default()).unwrap();
        let pod = ch.deployment.spec.unwrap().template.spec.unwrap();
        let mut container: Vec<i32> = pod.containers[0].ports.iter().flatten().map(|p| p.container_port).collect();
        let mut covered: Vec<i32> = rules(&ch.network_policy.unwrap()).into_iter().flat_map(|(p, _)| p).collect();
        container.sort();
        covered.sort();
        assert_eq!(container, covered);
    }
}

//! Prometheus metrics (text exposition at the admin API's `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: &'static str,
}

#[derive(Default)]
pub struct Metrics {
    pub connections: Family<ProtocolLabel, Counter>,
    pub connections_refused: Family<ProtocolLabel, Counter>,
    pub active_sessions: Family<ProtocolLabel, Gauge>,
    pub logins: Family<ResultLabel, Counter>,
    pub retrieved_octets: Counter,
    pub expunged_messages: Counter,
    pub deliveries: Family<ResultLabel, Counter>,
    pub delivered_octets: Counter,
    pub tls_handshakes: Family<ResultLabel, Counter>,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("pop3d");
        r.register("connections", "Accepted connections", self.connections.clone());
        r.register(
            "connections_refused",
            "Connections refused by a connection cap or the PROXY protocol policy",
            self.connections_refused.clone(),
        );
        r.register("active_sessions", "Open sessions", self.active_sessions.clone());
        r.register("logins", "POP3 login attempts by result", self.logins.clone());
        r.register("retrieved_octets", "Message octets sent by RETR and TOP", self.retrieved_octets.clone());
        r.register("expunged_messages", "Messages removed at QUIT", self.expunged_messages.clone());
        r.register("deliveries", "LMTP per-recipient delivery outcomes", self.deliveries.clone());
        r.register("delivered_octets", "Octets stored by LMTP deliveries", self.delivered_octets.clone());
        r.register(
            "tls_handshakes",
            "TLS handshakes (implicit, STLS, STARTTLS) by result",
            self.tls_handshakes.clone(),
        );
    }

    pub fn protocol(&self, protocol: &'static str) -> ProtocolLabel {
        ProtocolLabel { protocol }
    }
}

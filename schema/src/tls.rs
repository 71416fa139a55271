//! The TLS client configuration for Cassandra's native protocol, shared by pop3d and the operator.
//!
//! Only the cluster's own CA is trusted (no system roots: a public CA has no business vouching
//! for a database node). The driver names each node by its IP address, so by default a node's
//! certificate must carry that IP as a subject alternative name. Where nodes come and go with
//! changing addresses (Kubernetes), `server_name` makes every node's certificate be checked
//! against one DNS name instead; the chain is verified either way. A client certificate is sent
//! when Cassandra requires one (`require_client_auth`).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("Cassandra CA: {0}")]
    Ca(String),
    #[error("Cassandra client certificate: {0}")]
    Identity(String),
    #[error("Cassandra TLS server name {0:?} is not a DNS name")]
    ServerName(String),
    #[error("Cassandra TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// PEM material for the connection, as read from files (pop3d) or a Secret (the operator).
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// CA certificate(s) that sign the nodes' certificates.
    pub ca_pem: Vec<u8>,
    /// Client certificate chain and key, both PEM, for `require_client_auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// DNS name every node's certificate must carry instead of the node's IP address.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Makes ring the process's default rustls provider. The driver's `rustls-023` feature brings in
/// rustls with aws-lc-rs as well, and with two providers compiled in, libraries that call
/// `ClientConfig::builder()` (kube's client) panic unless one was chosen. Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration to hand to the driver (`SessionBuilder::tls_context`).
pub fn client_config(m: &TlsMaterial) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&m.ca_pem) {
        let cert = cert.map_err(|e| TlsSetupError::Ca(e.to_string()))?;
        roots.add(cert).map_err(|e| TlsSetupError::Ca(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsSetupError::Ca("no PEM certificate found".into()));
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsSetupError::Ca(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match &m.server_name {
        None => verifier,
        Some(name) => {
            let name = ServerName::try_from(name.clone()).map_err(|_| TlsSetupError::ServerName(name.clone()))?;
            Arc::new(FixedName { inner: verifier, name })
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &m.identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let chain = CertificateDer::pem_slice_iter(chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsSetupError::Identity(e.to_string()))?;
            if chain.is_empty() {
                return Err(TlsSetupError::Identity("no PEM certificate found".into()));
            }
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsSetupError::Identity(format!("key: {e}")))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| TlsSetupError::Identity(e.to_string()))?
        }
    };
    Ok(Arc::new(config))
}

/// Verifies the chain as usual, but against one configured name instead of the node's address.
#[derive(Debug)]
struct FixedName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _node_address: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_material_that_cannot_work() {
        let m = |ca: &[u8], name: Option<&str>| TlsMaterial {
            ca_pem: ca.to_vec(),
            identity: None,
            server_name: name.map(str::to_owned),
        };
        assert!(matches!(client_config(&m(b"", None)), Err(TlsSetupError::Ca(_))));
        assert!(matches!(client_config(&m(b"not pem", None)), Err(TlsSetupError::Ca(_))));
        let junk = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(client_config(&m(junk, None)), Err(TlsSetupError::Ca(_))));
    }
}

//! TLS with rustls: the server configuration (TLS 1.2 and 1.3 only, ring provider) and a
//! certificate resolver that reloads the PEM files when they change.
//!
//! Kubernetes rotates Secrets and cert-manager renews certificates in place, so the files are
//! polled (`crate::reload`) and a changed pair is loaded without a restart. A broken new pair (unparsable, or key
//! not matching the certificate) is logged and the previous one keeps serving: an expired
//! certificate tomorrow beats no TLS at all today.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::reload::{Reload, Reloadable};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: invalid PEM certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("the private key in {key} does not belong to the certificate in {cert}: {reason}")]
    Mismatch { cert: PathBuf, key: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and private key and checks that they belong together.
pub fn load_pair(files: &TlsFiles, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate { path: files.cert.clone(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: files.cert.clone() });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::BadKey { path: files.key.clone(), reason: e.to_string() })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

/// Serves the current certificate to every handshake and swaps it when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// The file contents last looked at (loaded or rejected), so a broken pair is reported once.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl Reloadable for ReloadingCert {
    fn what(&self) -> &'static str {
        "TLS certificate"
    }

    fn reload_if_changed(&self) -> Reload {
        ReloadingCert::reload_if_changed(self)
    }
}

impl ReloadingCert {
    /// Loads the pair now; a server must not start with a broken certificate.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let (cert_pem, key_pem) = (read(&files.cert)?, read(&files.key)?);
        let key = load_pair(&files, &cert_pem, &key_pem)?;
        Ok(Arc::new(Self { files, current: RwLock::new(Arc::new(key)), seen: Mutex::new((cert_pem, key_pem)) }))
    }

    /// Rereads the files; loads them if they changed and are valid. Returns what happened.
    pub fn reload_if_changed(&self) -> Reload {
        let (cert_pem, key_pem) = match (read(&self.files.cert), read(&self.files.key)) {
            (Ok(c), Ok(k)) => (c, k),
            // A missing file during a rotation (symlink swap) is normal for a moment.
            (Err(e), _) | (_, Err(e)) => return Reload::Failed(e.to_string()),
        };
        let mut seen = self.seen.lock().unwrap();
        if seen.0 == cert_pem && seen.1 == key_pem {
            return Reload::Unchanged;
        }
        let result = load_pair(&self.files, &cert_pem, &key_pem);
        *seen = (cert_pem, key_pem);
        match result {
            Ok(key) => {
                *self.current.write().unwrap() = Arc::new(key);
                Reload::Loaded
            }
            Err(e) => Reload::Failed(e.to_string()),
        }
    }

    /// The certificate chain now served (for tests and logs).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap().clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Builds the acceptor: TLS 1.3 and 1.2 only (RFC 8314 §4.1), no client certificates.
pub fn acceptor(cert: Arc<ReloadingCert>) -> Result<TlsAcceptor, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (cert.cert.pem(), cert.key_pair.serialize_pem())
    }

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") }
    }

    fn write(f: &TlsFiles, cert: &str, key: &str) {
        std::fs::write(&f.cert, cert).unwrap();
        std::fs::write(&f.key, key).unwrap();
    }

    #[test]
    fn loads_then_reloads_a_changed_pair_and_keeps_the_old_one_when_broken() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let (c1, k1) = pair("one.test");
        write(&f, &c1, &k1);
        let r = ReloadingCert::load(f.clone()).unwrap();
        let first = r.current().cert[0].clone();
        assert_eq!(r.reload_if_changed(), Reload::Unchanged);

        let (c2, k2) = pair("two.test");
        write(&f, &c2, &k2);
        assert_eq!(r.reload_if_changed(), Reload::Loaded);
        let second = r.current().cert[0].clone();
        assert_ne!(first, second);

        // a key that does not match the certificate: refused, the old pair stays
        write(&f, &c1, &k2);
        assert!(matches!(r.reload_if_changed(), Reload::Failed(e) if e.contains("does not belong")));
        assert_eq!(r.current().cert[0], second);
        // reported once, not at every poll
        assert_eq!(r.reload_if_changed(), Reload::Unchanged);

        write(&f, "garbage", &k1);
        assert!(matches!(r.reload_if_changed(), Reload::Failed(_)));
        assert_eq!(r.current().cert[0], second);

        write(&f, &c1, &k1);
        assert_eq!(r.reload_if_changed(), Reload::Loaded);
        assert_eq!(r.current().cert[0], first);
    }

    #[test]
    fn refuses_to_start_with_a_broken_pair() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        assert!(matches!(ReloadingCert::load(f.clone()), Err(TlsError::Read { .. })));
        let (c1, _) = pair("one.test");
        let (_, k2) = pair("two.test");
        write(&f, &c1, &k2);
        assert!(matches!(ReloadingCert::load(f.clone()), Err(TlsError::Mismatch { .. })));
        write(&f, "", &k2);
        assert!(matches!(ReloadingCert::load(f.clone()), Err(TlsError::NoCertificate { .. })));
        write(&f, &c1, "");
        assert!(matches!(ReloadingCert::load(f), Err(TlsError::BadKey { .. })));
    }

    #[test]
    fn acceptor_builds() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let (c, k) = pair("one.test");
        write(&f, &c, &k);
        acceptor(ReloadingCert::load(f).unwrap()).unwrap();
    }
}

//! TLS helpers shared by every binary: one crypto provider, PEM loading, client configs.
//!
//! Every binary calls [`install_crypto_provider`] before any TLS use: the workspace compiles
//! both ring and aws-lc-rs (the latter through the embedded broker), and rustls refuses to
//! guess between two. The agent only needs ring.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {path}: {error}")]
    Certs { path: PathBuf, error: String },
    #[error("no certificate in {0}")]
    NoCert(PathBuf),
    #[error("cannot read private key file {path}: {error}")]
    Key { path: PathBuf, error: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Installs ring as the process-wide rustls provider. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certs {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(path.to_path_buf()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_path_buf(),
        error: e.to_string(),
    })
}

/// Paths of one MQTT client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A mutual-TLS client config: trusts only the fleet CA, presents the given certificate,
/// TLS 1.2 and 1.3 only.
pub fn client_config(id: &ClientIdentity) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in load_certs(&id.ca)? {
        roots.add(ca)?;
    }
    let certs = load_certs(&id.cert)?;
    let key = load_key(&id.key)?;
    client_config_from_parts(roots, certs, key)
}

pub fn client_config_from_parts(
    roots: RootCertStore,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    Ok(Arc::new(cfg))
}

/// A TLS client config without a client certificate (tests: "no certificate" must be refused).
pub fn client_config_without_cert(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots.add(c)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

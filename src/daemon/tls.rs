//! TLS for the daemon's API listener (`serve --tls-cert FILE --tls-key FILE`).
//!
//! Guarantees callers can rely on:
//! * The certificate chain and key are PEM files; the key must match the chain's first
//!   certificate, or loading fails with a one-line error naming the file to fix.
//! * [`CertStore::reload`] re-reads both files and swaps them in one step for every handshake
//!   that starts afterwards; connections already established keep the certificate they
//!   negotiated and go on undisturbed. A failed reload keeps the previous pair in service.
//! * Only TLS 1.2 and 1.3 with rustls' safe defaults (ring provider); HTTP/1.1 via ALPN.
//! * Every new connection does a full handshake (no session resumption), so every new
//!   connection is authenticated by the certificate in force when it starts.
//!
//! Why a [`ResolvesServerCert`] instead of swapping whole `ServerConfig`s: the acceptor and
//! its settings stay fixed, so the only thing that changes on reload is one `Arc` behind a
//! lock held for a pointer copy; a handshake reads it once, so it never sees half a rotation.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Where the certificate chain and its key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {path}: {source}; check the path and that the daemon's user may read it")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the TLS certificate file {0} holds no PEM certificate: give the chain as -----BEGIN CERTIFICATE----- blocks, server certificate first")]
    NoCertificate(PathBuf),
    #[error("the TLS key file {0} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): give the key of the certificate")]
    NoKey(PathBuf),
    #[error("the TLS key {key} cannot be used with the certificate {cert} ({reason}): give the key that belongs to the certificate")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot set up TLS: {0}; this is a bug, please report it")]
    Setup(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and checks a certificate chain and its key.
pub fn load_certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read("certificate", &files.cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate(files.cert.clone()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let key_pem = read("key", &files.key)?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey(files.key.clone()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })
}

/// The daemon's current certificate, swapped whole on reload.
pub struct CertStore {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of every Debug output.
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the pair once; errors are the user's to fix before the daemon can start.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let ck = load_certified_key(&files)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Arc::new(ck)),
        }))
    }

    /// Re-reads both files; on success new handshakes use them, on failure nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = Arc::new(load_certified_key(&self.files)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = ck;
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The acceptor for the API listener; it asks this store for the certificate on every
    /// handshake.
    pub fn acceptor(self: &Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        // No session resumption: a resumed session skips the certificate, so after a rotation
        // clients would go on being served under the old one (tests/daemon_tls.rs saw exactly
        // that). A full handshake costs well under a millisecond, and API clients are few.
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

//! TLS client configuration for the directory: the system's roots plus an extra CA from `ldap.ca_file`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// Why `ldap.ca_file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read ldap.ca_file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("ldap.ca_file {path} is not PEM certificates: {reason}")]
    NotPem { path: PathBuf, reason: String },
    #[error("ldap.ca_file {path} holds no certificate")]
    Empty { path: PathBuf },
    #[error("ldap.ca_file {path} holds a certificate rustls refuses: {source}")]
    Refused { path: PathBuf, source: rustls::Error },
    #[error("cannot set up TLS: {0}")]
    Setup(rustls::Error),
}

/// A rustls client config trusting the system's roots and every certificate in the PEM file `ca`.
pub fn config_with_ca(ca: &Path) -> Result<Arc<ClientConfig>, Error> {
    let path = || ca.to_path_buf();
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| Error::Read { path: path(), reason: e.to_string() })?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::NotPem { path: path(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(Error::Empty { path: path() });
    }
    for cert in certs {
        roots.add(cert).map_err(|source| Error::Refused { path: path(), source })?;
    }
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(Error::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

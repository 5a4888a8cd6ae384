//! TLS client configuration for the directory: the system's roots plus an extra CA from `ldap.ca_file`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// A rustls client config trusting the system's roots and every certificate in the PEM file `ca`.
pub fn config_with_ca(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("cannot read ldap.ca_file {}: {e}", ca.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ldap.ca_file {} is not PEM certificates: {e}", ca.display()))?;
    if certs.is_empty() {
        return Err(format!("ldap.ca_file {} holds no certificate", ca.display()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("ldap.ca_file {} holds a certificate rustls refuses: {e}", ca.display()))?;
    }
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

//! TLS client configuration for the directory: the system's roots plus an extra CA from `ldap.ca_file`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

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

/// The system's trusted roots, read once.
static SYSTEM_ROOTS: LazyLock<Vec<CertificateDer<'static>>> =
    LazyLock::new(|| rustls_native_certs::load_native_certs().certs);

/// The rustls client config for the directory: the system's roots plus every certificate in the PEM file
/// `ca`, if any; with `skip_verify`, any certificate at all (`danger_skip_tls_verify`, test directories).
pub fn client_config(ca: Option<&Path>, skip_verify: bool) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(Error::Setup)?;
    if skip_verify {
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        return Ok(Arc::new(config));
    }
    let mut roots = RootCertStore::empty();
    for cert in SYSTEM_ROOTS.iter() {
        let _ = roots.add(cert.clone());
    }
    if let Some(ca) = ca {
        let path = || ca.to_path_buf();
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
    }
    Ok(Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
}

/// Accepts any certificate, still checking that the handshake is signed by the key it presents.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

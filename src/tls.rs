//! Whom a TLS client trusts, for both ends (the directory and CloudShell): the system's roots plus the
//! certificates of a `*.ca_file`; and what a failed handshake means, in words an operator can act on. It builds
//! rustls client configurations and reads their errors; it opens no connection.
//!
//! A certificate in a `ca_file` that is the server's own certificate is trusted as that exact certificate,
//! self-signed or not, CA or not: `openssl req -x509` makes a `CA:TRUE` certificate, which webpki refuses as a
//! server certificate (`CaUsedAsEndEntity`) although OpenSSL, `ldapsearch` and browsers' exceptions accept it.
//! The host name, the validity dates and the handshake signature are still checked.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why a `ca_file` cannot be used. `key` is the configuration key (`ldap.ca_file`, `cloudshell.ca_file`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {key} {path}: {reason}")]
    Read { key: &'static str, path: PathBuf, reason: String },
    #[error("{key} {path} is not PEM certificates: {reason}")]
    NotPem { key: &'static str, path: PathBuf, reason: String },
    #[error("{key} {path} holds no certificate")]
    Empty { key: &'static str, path: PathBuf },
    #[error("{key} {path} holds a certificate that cannot be used as a trust anchor (is it DER, not PEM?)")]
    Refused {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot set up TLS")]
    Setup(#[source] rustls::Error),
}

/// The system's trusted roots, read once.
static SYSTEM_ROOTS: LazyLock<Vec<CertificateDer<'static>>> =
    LazyLock::new(|| rustls_native_certs::load_native_certs().certs);

/// A rustls client configuration: the system's roots plus every certificate in the PEM file `ca` (the
/// configuration key `key`), each also trusted as the server's exact certificate; with `skip_verify`, any
/// certificate at all (`danger_skip_tls_verify`, test directories).
pub fn client_config(key: &'static str, ca: Option<&Path>, skip_verify: bool) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(Error::Setup)?;
    if skip_verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    for cert in SYSTEM_ROOTS.iter() {
        let _ = roots.add(cert.clone());
    }
    let mut exact = Vec::new();
    if let Some(ca) = ca {
        let path = || ca.to_path_buf();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| Error::Read { key, path: path(), reason: e.to_string() })?
            .collect::<Result<_, _>>()
            .map_err(|e| Error::NotPem { key, path: path(), reason: e.to_string() })?;
        if certs.is_empty() {
            return Err(Error::Empty { key, path: path() });
        }
        for cert in certs {
            roots.add(cert.clone()).map_err(|source| Error::Refused { key, path: path(), source })?;
            exact.push(cert);
        }
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| Error::Setup(rustls::Error::General(e.to_string())))?;
    let verifier = ChainedOrExact { webpki, exact };
    Ok(builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth())
}

/// The default (webpki) verification, and, where it refuses a certificate only for not chaining as a server
/// certificate should, acceptance of a certificate that is byte for byte one from the `ca_file`.
#[derive(Debug)]
struct ChainedOrExact {
    webpki: Arc<WebPkiServerVerifier>,
    exact: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for ChainedOrExact {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(verified) => return Ok(verified),
            Err(e) => e,
        };
        // webpki checks the server certificate's own dates (and then its CA flag) before it looks for an
        // issuer, and stops at the first failure: so a certificate refused as a CA used as a server's, or for
        // an unknown issuer, is within its dates. An expired one fails with `Expired` and stays refused.
        if !(is_ca_used_as_end_entity(&refused)
            || matches!(refused, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)))
            || !self.exact.iter().any(|c| c.as_ref() == end_entity.as_ref())
        {
            return Err(refused);
        }
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// webpki's `CaUsedAsEndEntity`, which rustls passes on as an "other" certificate error.
fn is_ca_used_as_end_entity(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            matches!(other.0.downcast_ref::<webpki::Error>(), Some(webpki::Error::CaUsedAsEndEntity))
        }
        _ => false,
    }
}

/// Accepts any certificate, still checking that the handshake is signed by the key it presents.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

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

/// What the words about a failed handshake refer to.
pub struct Context<'a> {
    /// The server as the configuration names it (`ldaps://dc1:636`, `https://cs:9443`).
    pub server: &'a str,
    /// The key holding the extra CA: `ldap.ca_file` or `cloudshell.ca_file`.
    pub ca_key: &'static str,
    /// Whether that key is set.
    pub ca_set: bool,
    /// What to do when the server does not speak TLS at all.
    pub plain_hint: &'static str,
}

/// The rustls error somewhere in `e`'s chain, if any. An I/O error wrapping another error counts as its
/// source: `std::io::Error::source` skips the error it wraps, and hyper's connector wraps rustls's error in
/// two of them.
pub fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        next = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// A failed handshake in words: what is wrong and what to do. Never the library's own names (the error
/// itself stays the cause underneath).
pub fn describe(e: &rustls::Error, cx: &Context<'_>) -> String {
    use rustls::Error as E;
    let date = |t: &UnixTime| {
        chrono::DateTime::from_timestamp(t.as_secs() as i64, 0)
            .map_or_else(|| "an unreadable date".to_string(), |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    };
    let server = cx.server;
    let trust_hint = if cx.ca_set {
        format!(
            "it is signed neither by a CA in {} nor by one this host trusts: put the CA that issued it (or, for a \
             self-signed certificate, the server's certificate itself) in {}",
            cx.ca_key, cx.ca_key
        )
    } else {
        format!(
            "it is not signed by a CA this host trusts: set {} to the CA that issued it (or, for a self-signed \
             certificate, to the server's certificate itself)",
            cx.ca_key
        )
    };
    match e {
        E::InvalidMessage(_) => format!("the server at {server} did not answer with TLS: {}", cx.plain_hint),
        E::InvalidCertificate(c) => {
            let what = match c {
                CertificateError::ExpiredContext { not_after, .. } => {
                    format!("it expired on {}: renew it on the server", date(not_after))
                }
                CertificateError::Expired => "it has expired: renew it on the server".into(),
                CertificateError::NotValidYetContext { not_before, .. } => {
                    format!("it is not valid before {}: check this host's clock and the server's", date(not_before))
                }
                CertificateError::NotValidYet => "it is not valid yet: check this host's clock and the server's".into(),
                CertificateError::NotValidForNameContext { expected, presented } => {
                    let expected = expected.to_str();
                    if presented.is_empty() {
                        format!(
                            "it does not name {expected} (it names no host): have it reissued with {expected} as \
                             a subject alternative name"
                        )
                    } else {
                        format!(
                            "it does not name {expected} (it names {}): use one of those names in the URL, or have \
                             it reissued for {expected}",
                            presented.iter().map(|n| plain_name(n)).collect::<Vec<_>>().join(", ")
                        )
                    }
                }
                CertificateError::NotValidForName => {
                    "it does not name the host in the URL: use the name it was issued for, or have it reissued".into()
                }
                CertificateError::UnknownIssuer => trust_hint,
                CertificateError::Revoked => "it has been revoked: have the server's certificate replaced".into(),
                CertificateError::BadSignature => {
                    format!("its signature does not verify: the certificate is damaged or forged ({trust_hint})")
                }
                _ if is_ca_used_as_end_entity(e) => format!(
                    "it is a CA certificate (as `openssl req -x509` makes) used as the server's own: put that very \
                     certificate in {} to trust it",
                    cx.ca_key
                ),
                _ => format!("it cannot be used ({trust_hint})"),
            };
            format!("TLS handshake with {server} failed: the server's certificate is refused: {what}")
        }
        E::AlertReceived(_) | E::PeerIncompatible(_) | E::NoCertificatesPresented => format!(
            "TLS handshake with {server} failed: the server refused the handshake: it may need a TLS version or \
             cipher this client does not offer (TLS 1.2 or 1.3), or it may not speak TLS on that port ({})",
            cx.plain_hint
        ),
        _ => format!("TLS handshake with {server} failed: the connection was not secured (the cause follows)"),
    }
}

/// A name as webpki lists it (`DnsName("dc1")`, `IpAddress(10.0.0.1)`), as the operator writes it.
fn plain_name(listed: &str) -> &str {
    for (open, close) in [("DnsName(\"", "\")"), ("IpAddress(", ")"), ("UniformResourceIdentifier(\"", "\")")] {
        if let Some(name) = listed.strip_prefix(open).and_then(|rest| rest.strip_suffix(close)) {
            return name;
        }
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(ca_set: bool) -> Context<'static> {
        Context { server: "ldaps://dc1:636", ca_key: "ldap.ca_file", ca_set, plain_hint: "use the ldaps port" }
    }

    /// The words name what is wrong and the key to set, and never a rustls or webpki name.
    #[test]
    fn handshake_failures_are_told_in_words_without_library_names() {
        let cases: Vec<(rustls::Error, bool, &str)> = vec![
            (
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                false,
                "did not answer with TLS",
            ),
            (CertificateError::UnknownIssuer.into(), false, "set ldap.ca_file"),
            (CertificateError::UnknownIssuer.into(), true, "in ldap.ca_file"),
            (
                CertificateError::ExpiredContext {
                    time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000)),
                    not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_700_000_000)),
                }
                .into(),
                true,
                "it expired on 2023-11-14 22:13:20 UTC",
            ),
            (
                CertificateError::NotValidForNameContext {
                    expected: ServerName::try_from("dc1").unwrap(),
                    presented: vec!["DnsName(\"dc2\")".into(), "IpAddress(10.0.0.1)".into()],
                }
                .into(),
                true,
                "does not name dc1 (it names dc2, 10.0.0.1)",
            ),
            (
                CertificateError::Other(rustls::OtherError(Arc::new(webpki::Error::CaUsedAsEndEntity))).into(),
                false,
                "put that very certificate in ldap.ca_file",
            ),
        ];
        for (e, ca_set, expected) in cases {
            let text = describe(&e, &cx(ca_set));
            assert!(text.contains(expected), "{text}");
            assert!(text.contains("ldaps://dc1:636"), "{text}");
            for name in ["DnsName", "InvalidContentType", "UnknownIssuer", "CaUsedAsEndEntity", "Other(", "Expired"] {
                assert!(!text.contains(name), "{name} in {text}");
            }
        }
    }

    #[test]
    fn the_rustls_error_is_found_inside_an_io_error() {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::NoCertificatesPresented);
        assert!(matches!(find_rustls_error(&io), Some(rustls::Error::NoCertificatesPresented)));
        // As hyper's connector hands it on: an I/O error in an I/O error.
        let twice = std::io::Error::other(io);
        assert!(matches!(find_rustls_error(&twice), Some(rustls::Error::NoCertificatesPresented)));
        assert!(find_rustls_error(&std::io::Error::other("plain")).is_none());
    }
}

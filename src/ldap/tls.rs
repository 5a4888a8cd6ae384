//! TLS for the directory: the client configuration from `ldap.ca_file` and the words for a failed handshake.
//! The trust rules themselves are [`crate::tls`]'s, shared with CloudShell's client.

use std::sync::Arc;

use rustls::ClientConfig;

use super::Settings;

/// The configuration key holding the directory's extra CA.
const CA_KEY: &str = "ldap.ca_file";

/// The rustls client config for the directory: the system's roots plus `ldap.ca_file`; with
/// `danger_skip_tls_verify`, any certificate at all.
pub(super) fn client_config(s: &Settings) -> Result<Arc<ClientConfig>, crate::tls::Error> {
    crate::tls::client_config(CA_KEY, s.ca_file.as_deref(), s.danger_skip_tls_verify).map(Arc::new)
}

/// A failed handshake with `url`, in words: what is wrong and what to do.
pub(super) fn describe_handshake(e: &std::io::Error, s: &Settings, url: &str) -> String {
    let cx = crate::tls::Context {
        server: url,
        ca_key: CA_KEY,
        ca_set: s.ca_file.is_some(),
        plain_hint: "is it an ldap:// port? use ldap:// (with ldap.starttls = true) or the server's ldaps port \
                     (636 by default)",
    };
    match crate::tls::find_rustls_error(e) {
        Some(r) => crate::tls::describe(r, &cx),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("the server at {url} did not answer with TLS (it closed the connection): {}", cx.plain_hint)
        }
        None => format!("TLS handshake with {url} failed: {e}"),
    }
}

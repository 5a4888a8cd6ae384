//! Reaching the directory: connect (LDAPS or StartTLS, with an extra CA), bind as the service account, and
//! fail over across the configured URLs.

use std::collections::HashSet;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, StdStream};
use secrecy::ExposeSecret;

use super::error::{Cause, INVALID_CREDENTIALS, rc_name};
use super::guard::{self, Verdict};
use super::{Error, Settings};

/// Connects and binds to the first server that answers, trying each URL in order, each up to
/// `connect_retries + 1` times. Returns the connection and the URL that served it. A bind refused for bad
/// credentials is not retried elsewhere (it would only lock the account out faster).
pub(super) async fn connect(s: &Settings) -> Result<(Ldap, String, Verdict), Error> {
    if s.danger_skip_tls_verify {
        tracing::warn!(urls = ?s.urls, "tls certificate verification is disabled (danger_skip_tls_verify)");
    }
    let mut failures: Vec<Error> = Vec::new();
    for url in &s.urls {
        for attempt in 0..=s.connect_retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            match connect_one(s, url).await {
                Ok((ldap, verdict)) => {
                    if !failures.is_empty() {
                        tracing::warn!(url = %url, failed = failures.len(), "directory failover");
                    }
                    tracing::info!(url = %url, "directory connected");
                    return Ok((ldap, url.clone(), verdict));
                }
                Err(e) if same_everywhere(&e) => return Err(e),
                Err(e) if certificate_refused(&e) => {
                    // The same server shows the same certificate again: on to the next URL (whose server may
                    // have another).
                    tracing::warn!(url = %url, error = %e, "directory connection failed");
                    failures.push(e);
                    break;
                }
                Err(e) => {
                    tracing::warn!(url = %url, attempt = attempt + 1, error = %e, "directory connection failed");
                    failures.push(e);
                }
            }
        }
    }
    match failures.len() {
        0 => Err(Error::Connect { url: "(none)".into(), reason: "ldap.url lists no server".into() }),
        1 => Err(failures.remove(0)),
        _ if s.urls.len() == 1 => Err(failures.pop().expect("more than one")),
        _ => {
            let mut seen = HashSet::new();
            let reasons: Vec<String> =
                failures.iter().map(|e| e.to_string()).filter(|r| seen.insert(r.clone())).collect();
            Err(Error::Connect {
                url: s.urls.join(", "),
                reason: format!("no server answered: {}", reasons.join("; ")).into(),
            })
        }
    }
}

/// A failure another server would repeat: our own TLS settings, or a password the directory refused.
fn same_everywhere(e: &Error) -> bool {
    match e {
        Error::Tls { .. } => true,
        Error::Bind { code, .. } => *code == Some(INVALID_CREDENTIALS),
        _ => false,
    }
}

/// A TLS handshake that failed on the server's certificate, which a new attempt would meet again.
fn certificate_refused(e: &Error) -> bool {
    matches!(e, Error::Connect { .. })
        && crate::tls::find_rustls_error(e).is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)))
}

async fn connect_one(s: &Settings, url: &str) -> Result<(Ldap, Verdict), Error> {
    let (stream, verdict) = guard::open(s, url).await?;
    // The guard has made the connection (and TLS): ldap3 speaks plain LDAP over the local socket it relays.
    let conn_settings = LdapConnSettings::new().set_std_stream(StdStream::Unix(stream));
    let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, "ldapi://")
        .await
        .map_err(|e| Error::Connect { url: url.to_string(), reason: Cause::new(e) })?;
    ldap3::drive!(conn);
    let bound = ldap.with_timeout(s.timeout).simple_bind(&s.bind_dn, s.bind_password.expose_secret()).await;
    match bound {
        Ok(result) if result.rc == 0 => Ok((ldap, verdict)),
        Ok(result) => Err(Error::Bind {
            url: url.to_string(),
            bind_dn: s.bind_dn.clone(),
            code: Some(result.rc),
            reason: {
                let mut reason = format!("result code {} ({}) {}", result.rc, rc_name(result.rc), result.text);
                if result.rc == 8 {
                    reason.push_str(" (the server wants TLS for simple binds: use ldaps:// or starttls = true)");
                }
                reason.trim().to_string()
            },
        }),
        Err(_) if verdict.reason().is_some() => {
            Err(Error::Connect { url: url.to_string(), reason: verdict.reason().unwrap_or_default().into() })
        }
        Err(LdapError::Timeout { .. }) => {
            Err(Error::Timeout { url: url.to_string(), operation: "bind".into(), timeout: s.timeout })
        }
        Err(e) => Err(Error::Connect { url: url.to_string(), reason: Cause::new(e) }),
    }
}

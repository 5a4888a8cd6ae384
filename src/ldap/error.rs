//! What can go wrong reading the directory. Each error names the URL and the operation; none carries the
//! bind password.

use std::time::Duration;

/// A directory failure: fatal for the run (connect, bind) or for one group (the rest).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The server could not be reached, or TLS could not be set up.
    #[error("cannot connect to the directory at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The server refused the service account's credentials.
    #[error("the directory at {url} refused the bind as {bind_dn:?}: {reason}")]
    Bind {
        url: String,
        bind_dn: String,
        /// The LDAP result code, when the server answered with one (49: invalid credentials).
        code: Option<u32>,
        reason: String,
    },
    /// No group has the configured name.
    #[error("group {name:?} not found in the directory at {url} (searched {base_dn} with {filter})")]
    GroupNotFound { url: String, name: String, base_dn: String, filter: String },
    /// More than one group has the configured name.
    #[error("group name {name:?} is ambiguous in the directory at {url}: {dns:?}")]
    AmbiguousGroup { url: String, name: String, dns: Vec<String> },
    /// Nesting goes deeper than the configured cap.
    #[error("group {name:?} nests groups deeper than {depth} levels (ldap.max_nesting_depth)")]
    TooDeep { name: String, depth: usize },
    /// The server refused the page size.
    #[error(
        "the directory at {url} refused ldap.page_size = {page_size} during {operation}: {reason}; lower ldap.page_size"
    )]
    PageSize { url: String, page_size: i32, operation: String, reason: String },
    /// An operation did not finish in time.
    #[error("the directory at {url} did not answer {operation} within {timeout:?}")]
    Timeout { url: String, operation: String, timeout: Duration },
    /// A search failed (possibly halfway: nothing it read is used).
    #[error("{operation} failed on the directory at {url}: {reason}")]
    Search { url: String, operation: String, reason: String },
    /// The TLS settings could not be used.
    #[error("cannot use the TLS settings for {url}: {reason}")]
    Tls { url: String, reason: String },
}

impl Error {
    /// A short, stable name of the failure kind, for reports and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Connect { .. } => "connect",
            Error::Bind { .. } => "bind",
            Error::GroupNotFound { .. } => "group_not_found",
            Error::AmbiguousGroup { .. } => "group_ambiguous",
            Error::TooDeep { .. } => "nesting_too_deep",
            Error::PageSize { .. } => "page_size",
            Error::Timeout { .. } => "timeout",
            Error::Search { .. } => "search",
            Error::Tls { .. } => "tls",
        }
    }
}

/// invalidCredentials: the bind DN or password is wrong.
pub const INVALID_CREDENTIALS: u32 = 49;

/// The name RFC 4511 gives an LDAP result code.
pub fn rc_name(rc: u32) -> &'static str {
    match rc {
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        8 => "strongerAuthRequired",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `error_kind` in reports and the `group_<kind>` metric label: operators alert on these.
    #[test]
    fn error_kinds_are_pinned() {
        let (url, s) = ("ldap://x".to_string(), String::new());
        let kinds: Vec<&str> = [
            Error::Connect { url: url.clone(), reason: s.clone() },
            Error::Bind { url: url.clone(), bind_dn: s.clone(), code: None, reason: s.clone() },
            Error::GroupNotFound { url: url.clone(), name: s.clone(), base_dn: s.clone(), filter: s.clone() },
            Error::AmbiguousGroup { url: url.clone(), name: s.clone(), dns: vec![] },
            Error::TooDeep { name: s.clone(), depth: 1 },
            Error::PageSize { url: url.clone(), page_size: 1, operation: s.clone(), reason: s.clone() },
            Error::Timeout { url: url.clone(), operation: s.clone(), timeout: Duration::from_secs(1) },
            Error::Search { url: url.clone(), operation: s.clone(), reason: s.clone() },
            Error::Tls { url, reason: s },
        ]
        .iter()
        .map(Error::kind)
        .collect();
        assert_eq!(
            kinds,
            [
                "connect",
                "bind",
                "group_not_found",
                "group_ambiguous",
                "nesting_too_deep",
                "page_size",
                "timeout",
                "search",
                "tls"
            ]
        );
        assert_eq!(rc_name(INVALID_CREDENTIALS), "invalidCredentials");
    }
}

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

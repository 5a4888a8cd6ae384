//! What can go wrong reading the directory. Each error names the URL and the operation; none carries the
//! bind password. A connect or search failure keeps its cause as [`std::error::Error::source`] (a [`Cause`]),
//! so `{:#}` and error-chain walkers reach it; the cause is type-erased, so no `ldap3` type leaves `ldap`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A directory failure: fatal for the run (connect, bind) or for one group (the rest).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The server could not be reached, or TLS could not be set up.
    #[error("cannot connect to the directory at {url}: {reason}")]
    Connect {
        url: String,
        #[source]
        reason: Cause,
    },
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
    Search {
        url: String,
        operation: String,
        #[source]
        reason: Cause,
    },
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

/// Why a connect or a search failed: the error underneath (ldap3's, the socket's, a range sequence's), or a
/// message where there is none. It reads as that error's message, so the operator's text is the one the
/// message held when it was a `String`; it is cloned with the snapshot (hence `Arc`), and two causes are
/// equal when they read the same, as the strings were.
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// The cause is `e` itself: its message is shown, and its own source follows it in the chain.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(e))
    }

    /// The cause is `e`, told in our own words (`message`, which usually quotes it and adds a hint): the
    /// message is shown, and `e` follows it in the chain.
    pub fn described(message: String, e: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause::new(Described { message, source: Box::new(e) })
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Cause {
        Cause::new(Message(message))
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Cause {
        Cause::from(message.to_string())
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The cause stands in for the error it holds (whose message it shows): the chain goes on with that error's
/// source, so no message is printed twice.
impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

/// A cause that is only a message: no error underneath. Its `Debug` is the string's, as the field's was.
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::error::Error for Message {}

/// An error told in our own words: see [`Cause::described`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Described {
    message: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// invalidCredentials: the bind DN or password is wrong.
pub const INVALID_CREDENTIALS: u32 = 49;

/// A result code in words, as the errors name it: `result code 32 (noSuchObject) text`.
pub fn result_reason(rc: u32, text: &str) -> String {
    format!("result code {rc} ({}) {text}", rc_name(rc)).trim().to_string()
}

/// The name RFC 4511 gives an LDAP result code.
/// The LDAP result codes (RFC 4511 4.1.9) this program tells apart; [`rc_name`] names them for people.
pub mod rc {
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const REFERRAL: u32 = 10;
    pub const ADMIN_LIMIT_EXCEEDED: u32 = 11;
    /// The server does not know a control sent as critical.
    pub const UNAVAILABLE_CRITICAL_EXTENSION: u32 = 12;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INSUFFICIENT_ACCESS: u32 = 50;
    pub const UNAVAILABLE: u32 = 52;
    pub const UNWILLING_TO_PERFORM: u32 = 53;
}

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
            Error::Connect { url: url.clone(), reason: s.as_str().into() },
            Error::Bind { url: url.clone(), bind_dn: s.clone(), code: None, reason: s.clone() },
            Error::GroupNotFound { url: url.clone(), name: s.clone(), base_dn: s.clone(), filter: s.clone() },
            Error::AmbiguousGroup { url: url.clone(), name: s.clone(), dns: vec![] },
            Error::TooDeep { name: s.clone(), depth: 1 },
            Error::PageSize { url: url.clone(), page_size: 1, operation: s.clone(), reason: s.clone() },
            Error::Timeout { url: url.clone(), operation: s.clone(), timeout: Duration::from_secs(1) },
            Error::Search { url: url.clone(), operation: s.clone(), reason: s.as_str().into() },
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

    /// An error with a source of its own, as ldap3's and rustls's are.
    #[derive(Debug, thiserror::Error)]
    #[error("io error: connection reset by peer")]
    struct Wrapped(#[source] std::io::Error);

    fn wrapped() -> Wrapped {
        Wrapped(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer"))
    }

    /// The messages of `e` and of each source under it, in order.
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        std::iter::successors(Some(e), |e| e.source()).map(ToString::to_string).collect()
    }

    #[test]
    fn connect_and_search_errors_keep_their_cause_as_the_source_and_read_as_before() {
        let url = "ldaps://dc1:636".to_string();
        let connect = Error::Connect { url: url.clone(), reason: Cause::new(wrapped()) };
        assert_eq!(
            connect.to_string(),
            "cannot connect to the directory at ldaps://dc1:636: io error: connection reset by peer"
        );
        assert_eq!(
            chain(&connect)[1..],
            ["io error: connection reset by peer", "connection reset by peer"],
            "the cause, then its own source"
        );

        let described = Error::Connect {
            url: url.clone(),
            reason: Cause::described("TLS handshake failed: io error (set ldap.ca_file)".into(), wrapped()),
        };
        assert_eq!(
            described.to_string(),
            "cannot connect to the directory at ldaps://dc1:636: TLS handshake failed: io error (set ldap.ca_file)"
        );
        assert_eq!(chain(&described)[2..], ["io error: connection reset by peer", "connection reset by peer"]);

        let search =
            Error::Search { url: url.clone(), operation: "the user search".into(), reason: Cause::new(wrapped()) };
        assert_eq!(
            search.to_string(),
            "the user search failed on the directory at ldaps://dc1:636: io error: connection reset by peer"
        );
        assert_eq!(chain(&search)[1..], ["io error: connection reset by peer", "connection reset by peer"]);

        // A cause that is only a message is a source too, and reads as the string did (`Debug` included).
        let message = Error::Search {
            url,
            operation: "the group search".into(),
            reason: "the server sent a malformed entry".into(),
        };
        assert_eq!(
            message.to_string(),
            "the group search failed on the directory at ldaps://dc1:636: the server sent a malformed entry"
        );
        assert_eq!(chain(&message)[1..], ["the server sent a malformed entry"]);
        assert!(format!("{message:?}").contains(r#"reason: "the server sent a malformed entry""#), "{message:?}");

        // The snapshot is cloned and compared: a clone is equal, and causes compare by what they say.
        assert_eq!(search.clone(), search);
        assert_eq!(
            Error::Search { url: "u".into(), operation: "o".into(), reason: Cause::new(wrapped()) },
            Error::Search {
                url: "u".into(),
                operation: "o".into(),
                reason: "io error: connection reset by peer".into()
            }
        );
    }
}

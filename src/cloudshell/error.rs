//! What can go wrong talking to CloudShell. Every variant names the call; none carries a secret.

use std::time::Duration;

/// A failed CloudShell call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached (DNS, refused, reset, TLS).
    #[error("cannot reach CloudShell for {method} {path}: {reason}")]
    Connect {
        method: String,
        path: String,
        reason: String,
        /// The request may have reached the server (the connection broke after it was sent).
        sent: bool,
    },
    /// No complete answer within the request timeout.
    #[error("CloudShell did not answer {method} {path} within {timeout:?}")]
    Timeout { method: String, path: String, timeout: Duration, sent: bool },
    /// The login was refused: wrong username, password or domain, or not a system administrator.
    #[error("CloudShell refused the login of {username:?} in domain {domain:?} (status {status}): {body_excerpt}")]
    LoginRefused { username: String, domain: String, status: u16, body_excerpt: String },
    /// An answer with a status the call does not expect.
    #[error("CloudShell answered {method} {path} with status {status}: {body_excerpt}")]
    Status { method: String, path: String, status: u16, body_excerpt: String },
    /// A 2xx answer whose body is not what the reference describes.
    #[error("CloudShell's answer to {method} {path} is not understood ({reason}): {body_excerpt}")]
    Decode { method: String, path: String, reason: String, body_excerpt: String },
    /// The server's cursors do not lead to an end.
    #[error("CloudShell's paging of {path} does not end: {reason}")]
    Paging { path: String, reason: String },
}

impl Error {
    /// Whether the server may have acted on the request although no usable answer came back: the answer
    /// was lost (timeout, cut connection) or unreadable.
    pub fn may_have_taken_effect(&self) -> bool {
        match self {
            Error::Connect { sent, .. } | Error::Timeout { sent, .. } => *sent,
            Error::Decode { .. } => true,
            Error::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The HTTP status, when the server answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::LoginRefused { status, .. } | Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How much of a body an error quotes.
const EXCERPT_CHARS: usize = 200;

/// A short, single-line excerpt of an answer body, with `secrets` blanked out.
pub fn excerpt(body: &[u8], secrets: &[&str]) -> String {
    if body.is_empty() {
        return "(empty body)".to_string();
    }
    let mut text = String::from_utf8_lossy(body).into_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "***");
    }
    let mut out = String::new();
    let mut last_space = false;
    for c in text.chars() {
        let c = if c.is_whitespace() || c.is_control() { ' ' } else { c };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
        if out.chars().count() >= EXCERPT_CHARS {
            out.push('…');
            break;
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::excerpt;

    #[test]
    fn excerpts_are_short_single_line_and_blank_secrets() {
        let html = "<html>\n  <body>\tInternal   Server Error for s3cret</body></html>";
        assert_eq!(excerpt(html.as_bytes(), &["s3cret"]), "<html> <body> Internal Server Error for ***</body></html>");
        assert_eq!(excerpt(b"", &[]), "(empty body)");
        let long = "x".repeat(1000);
        assert_eq!(excerpt(long.as_bytes(), &[]).chars().count(), 201);
        assert_eq!(excerpt(&[0xff, b'a'], &[]), "\u{fffd}a");
    }
}

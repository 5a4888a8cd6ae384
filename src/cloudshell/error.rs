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
    /// The TLS handshake failed: the certificate is refused, or the server does not speak TLS there. Not retried:
    /// another attempt meets the same certificate. `reason` says in words what is wrong and what to do; the
    /// library's error is the source.
    #[error("cannot reach CloudShell for {method} {path}: {reason}")]
    Tls {
        method: String,
        path: String,
        reason: String,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `cloudshell.ca_file` cannot be used.
    #[error("cannot use the TLS settings for CloudShell: {0}")]
    TlsSettings(#[source] crate::tls::Error),
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
    /// A redirect, never followed: CloudShell's API does not redirect, and following one would send the login
    /// body (the password) or an import to whatever host it names.
    #[error(
        "CloudShell answered {method} {path} with a redirect ({status}) to {location:?}; CloudShell's API does not \
         redirect, so it was not followed and nothing was sent there: check cloudshell.url (scheme, host, port, \
         path prefix)"
    )]
    Redirect { method: String, path: String, status: u16, location: String },
    /// An answer larger than `cloudshell.max_answer_mib`: not read further.
    #[error(
        "CloudShell's answer to {method} {path} is larger than {limit} bytes (cloudshell.max_answer_mib); it was \
         not read further"
    )]
    TooLarge { method: String, path: String, limit: u64 },
    /// A call in flight abandoned on a second stop request (or one not started after the first).
    #[error("{method} {path} abandoned: the run was asked to stop")]
    Abandoned { method: String, path: String },
    /// The server's cursors do not lead to an end.
    #[error("CloudShell's paging of {path} does not end: {reason}")]
    Paging { path: String, reason: String },
}

impl Error {
    /// A call given up for a stop request.
    pub(super) fn abandoned(method: &str, path: &str) -> Error {
        Error::Abandoned { method: method.into(), path: format!("/{path}") }
    }

    /// Whether the server may have acted on the request although no usable answer came back: the answer
    /// was lost (timeout, cut connection) or unreadable.
    pub fn may_have_taken_effect(&self) -> bool {
        match self {
            Error::Connect { sent, .. } | Error::Timeout { sent, .. } => *sent,
            Error::Decode { .. } | Error::TooLarge { .. } | Error::Abandoned { .. } => true,
            Error::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The HTTP status, when the server answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::LoginRefused { status, .. } | Error::Status { status, .. } | Error::Redirect { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// How much of a body an error quotes.
const EXCERPT_CHARS: usize = 200;

/// `text` from a peer with `secrets` blanked out, whether the peer wrote them as they are or JSON-escaped
/// (`\"`, `\\`, `\u00e9`, .NET's `\u002B` for `+`...): escapes are decoded before matching.
pub(super) fn mask(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    let secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return text;
    }
    for secret in &secrets {
        text = text.replace(secret, "***");
    }
    if text.contains('\\') {
        text = unescape(&text);
        for secret in &secrets {
            text = text.replace(secret, "***");
        }
    }
    text
}

/// Decodes JSON string escapes wherever they stand in `text` (it need not be valid JSON); anything that is
/// not a valid escape stays as it is.
fn unescape(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let hex = |at: usize| -> Option<u32> {
        let s: String = chars.get(at..at + 4)?.iter().collect();
        u32::from_str_radix(&s, 16).ok()
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '\\' || i + 1 >= chars.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let simple = match chars[i + 1] {
            '"' => Some('"'),
            '\\' => Some('\\'),
            '/' => Some('/'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            _ => None,
        };
        if let Some(d) = simple {
            out.push(d);
            i += 2;
            continue;
        }
        if chars[i + 1] == 'u'
            && let Some(high) = hex(i + 2)
        {
            // A surrogate pair is two escapes for one character.
            if (0xD800..0xDC00).contains(&high)
                && chars.get(i + 6) == Some(&'\\')
                && chars.get(i + 7) == Some(&'u')
                && let Some(low) = hex(i + 8)
                && let Some(ch) = char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00)))
            {
                out.push(ch);
                i += 12;
                continue;
            }
            if let Some(ch) = char::from_u32(high) {
                out.push(ch);
                i += 6;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// A short, single-line excerpt of an answer body, with `secrets` blanked out (raw or JSON-escaped).
pub fn excerpt(body: &[u8], secrets: &[&str]) -> String {
    if body.is_empty() {
        return "(empty body)".to_string();
    }
    let text = mask(&String::from_utf8_lossy(body), secrets);
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
    use super::{excerpt, mask};

    #[test]
    fn secrets_are_masked_raw_and_json_escaped() {
        let secret = "p\"a\\ss+<>&'é😀";
        let json = serde_json::to_string(secret).unwrap(); // "p\"a\\ss+<>&'é😀"
        let dotnet = "p\\u0022a\\u005Css\\u002B\\u003C\\u003E\\u0026\\u0027\\u00e9\\uD83D\\uDE00";
        for echoed in [secret.to_string(), json.trim_matches('"').to_string(), dotnet.to_string()] {
            let text = format!("{{\"Message\": \"bad password {echoed} for admin\"}}");
            let masked = mask(&text, &[secret]);
            assert!(
                !masked.contains("ss+<>") && !masked.contains("u002B") && masked.contains("***"),
                "{echoed}: {masked}"
            );
            assert!(masked.contains("for admin"), "the rest is kept: {masked}");
        }
        assert_eq!(mask("no secret here \\q \\u12", &["tok"]), "no secret here \\q \\u12", "odd escapes stay");
        assert_eq!(mask("a\\nb", &["a\\nb"]), "***", "a secret that looks like an escape, raw");
    }

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

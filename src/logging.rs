//! Log output: `tracing` events on stderr, plain text (without colours or timestamps under journald, which
//! adds its own) or JSON lines for log shippers. `RUST_LOG` overrides the default filter.
//!
//! Logged values come from peers (DNs, usernames, server messages), so the text format escapes every
//! control character in every field and message (`\n`, `\r`, `\u{1b}`, `\0`...): one event stays one line
//! and a value cannot forge a line or drive the terminal. JSON lines escape them by JSON's own rules.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Plain text (without colours or timestamps under journald).
    Text,
    /// JSON lines, for log shippers.
    Json,
}

/// Our own events at info, dependencies' at warn.
const DEFAULT_FILTER: &str = "warn,cloudshell_ldap_sync=info";

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
        LogFormat::Text if under_journald => {
            builder.fmt_fields(EscapedFields).with_ansi(false).without_time().try_init()
        }
        LogFormat::Text => builder.fmt_fields(EscapedFields).with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
    if let Err(e) = result {
        eprintln!("warning: logging was already set up: {e}");
    }
}

/// Text values printed with every control character escaped; other text as it is.
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::write(&mut EscapingWriter(f), format_args!("{}", self.0))
    }
}

impl<T: fmt::Debug> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::write(&mut EscapingWriter(f), format_args!("{:?}", self.0))
    }
}

/// Passes text through, control characters (C0, DEL, C1) written as Rust escapes.
struct EscapingWriter<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for EscapingWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(char::is_control) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found at a char boundary");
            write!(self.0, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// The text format's fields: tracing-subscriber's own layout, every value escaped.
struct EscapedFields;

impl<'a> MakeVisitor<Writer<'a>> for EscapedFields {
    type Visitor = EscapingVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> EscapingVisitor<'a> {
        EscapingVisitor(DefaultVisitor::new(target, true))
    }
}

struct EscapingVisitor<'a>(DefaultVisitor<'a>);

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // As the default visitor does: a message as it is, other strings quoted.
        if field.name() == "message" {
            self.0.record_debug(field, &Escaped(format_args!("{value}")))
        } else {
            self.0.record_debug(field, &Escaped(value))
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.record_debug(field, &Escaped(value))
    }
}

impl VisitOutput<fmt::Result> for EscapingVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl VisitFmt for EscapingVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_other_text_kept() {
        let hostile = "uid=eve\nINFO forged,ou=Ünïcode\u{1b}[31m\r\0\u{85}\u{7f}";
        let shown = Escaped(hostile).to_string();
        assert_eq!(shown, "uid=eve\\nINFO forged,ou=Ünïcode\\u{1b}[31m\\r\\u{0}\\u{85}\\u{7f}");
        assert_eq!(Escaped("plain, ünïcode").to_string(), "plain, ünïcode");
        assert_eq!(format!("{:?}", Escaped("a\tb")), "\"a\\tb\"", "Debug quotes as before");
    }
}

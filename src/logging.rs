//! Log output: `tracing` events on stderr, plain text (under journald without colours or timestamps, which it adds
//! itself, and with each line's level as the entry's priority) or JSON lines for log shippers. `-v`/`-q` move
//! the default filter up or down; `RUST_LOG`, when set, replaces it. Colours only on a terminal, and never
//! with `NO_COLOR` set (no-color.org).
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

/// Our own events at info, dependencies' at warn; the TLS libraries' not at all below `-vvv`: a refused
/// certificate fails the connection with an error that says in words what the library would log
/// (`rustls_platform_verifier` logged an ERROR line of its own before our error, naming its enums).
const DEFAULT_FILTER: &str = "warn,rustls=off,rustls_platform_verifier=off,cloudshell_ldap_sync=info";

/// The default filter at a verbosity (each `-v` one more, each `-q` one less): 0 is [`DEFAULT_FILTER`], 1 our
/// debug events, 2 our trace events, 3 and up dependencies' debug events too; -1 warnings, -2 and below errors.
fn default_filter(verbosity: i8) -> &'static str {
    match verbosity {
        i8::MIN..=-2 => "error,rustls=off,rustls_platform_verifier=off",
        -1 => "warn,rustls=off,rustls_platform_verifier=off",
        0 => DEFAULT_FILTER,
        1 => "warn,rustls=off,rustls_platform_verifier=off,cloudshell_ldap_sync=debug",
        2 => "warn,rustls=off,rustls_platform_verifier=off,cloudshell_ldap_sync=trace",
        3.. => "debug,cloudshell_ldap_sync=trace",
    }
}

/// Whether text logs use ANSI colours: on a terminal, unless `NO_COLOR` is set to anything but the empty string.
fn use_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber, filtered by `RUST_LOG` when it is set, else by the default filter moved
/// by `verbosity` (`-v`/`-q`). Safe to call once per process.
pub fn init(format: LogFormat, verbosity: i8) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(verbosity)));
    let under_journald = stderr_is_the_journal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json if under_journald => {
            builder.json().with_current_span(true).with_span_list(true).map_event_format(JournalPriority).try_init()
        }
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
        LogFormat::Text if under_journald => builder
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .without_time()
            .map_event_format(JournalPriority)
            .try_init(),
        LogFormat::Text => {
            let colour = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
            builder.fmt_fields(EscapedFields).with_ansi(colour).try_init()
        }
    };
    if let Err(e) = result {
        eprintln!("warning: logging was already set up: {e}");
    }
}

/// Whether stderr is the journal's stream: `$JOURNAL_STREAM` names its device and inode (systemd.exec(5)). The
/// variable alone is not enough: a child of a service inherits it with its stderr sent elsewhere.
fn stderr_is_the_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let stderr = std::io::stderr().as_fd().try_clone_to_owned().map(std::fs::File::from);
    match stderr.and_then(|f| f.metadata()) {
        Ok(m) => names_the_stream(&stream.to_string_lossy(), m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// `$JOURNAL_STREAM` is `<device>:<inode>`, both decimal.
fn names_the_stream(value: &str, dev: u64, ino: u64) -> bool {
    value.split_once(':').is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

/// Puts the event's syslog priority in front of each line, as `<3>` for an error: journald takes it for the
/// entry's priority (`SyslogLevelPrefix=`, on by default) and drops it from the message, so that
/// `journalctl -p warning` and alerts on the priority see errors and warnings. Without it every line is info.
pub struct JournalPriority<F>(pub F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
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

/// Log output kept in memory, for unit tests that read what was logged.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("a test's log buffer")).into_owned()
    }
}

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("a test's log buffer").extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_journald_each_line_carries_its_priority() {
        let events = || {
            tracing::error!(error = "x", "run failed");
            tracing::warn!("held");
            tracing::info!("run finished");
            tracing::debug!("detail");
        };
        let (lines, sink) = (Captured::default(), Captured::default());
        let text_sink = lines.clone();
        let text = tracing_subscriber::fmt()
            .with_writer(move || text_sink.clone())
            .with_max_level(tracing::Level::DEBUG)
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .without_time()
            .map_event_format(JournalPriority)
            .finish();
        tracing::subscriber::with_default(text, events);
        let text = lines.text();
        let prefixes: Vec<&str> = text.lines().map(|l| &l[..3]).collect();
        assert_eq!(prefixes, ["<3>", "<4>", "<6>", "<7>"], "{text}");
        assert!(text.lines().next().unwrap().starts_with("<3>ERROR ") && text.contains("run failed"), "{text}");

        // JSON lines the same way: journald strips the prefix, and what it keeps is one JSON object.
        let json_sink = sink.clone();
        let json = tracing_subscriber::fmt()
            .with_writer(move || json_sink.clone())
            .with_max_level(tracing::Level::DEBUG)
            .json()
            .map_event_format(JournalPriority)
            .finish();
        tracing::subscriber::with_default(json, events);
        let json = sink.text();
        for (line, priority) in json.lines().zip(["<3>", "<4>", "<6>", "<7>"]) {
            let object = line.strip_prefix(priority).unwrap_or_else(|| panic!("{priority}: {line}"));
            serde_json::from_str::<serde_json::Value>(object).unwrap_or_else(|e| panic!("{e}: {object}"));
        }
        assert_eq!(json.lines().count(), 4, "{json}");
    }

    /// What `events` log through the default filter at `verbosity`, a line each ending with the message.
    fn logged_at(verbosity: i8, events: impl FnOnce()) -> String {
        let lines = Captured::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(default_filter(verbosity)))
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .finish();
        tracing::subscriber::with_default(subscriber, events);
        lines.text()
    }

    #[test]
    fn verbosity_moves_our_level_and_quiet_keeps_warnings_then_errors() {
        // The levels that get through at a verbosity, for our events and for a dependency's.
        let shown = |verbosity: i8| -> (String, String) {
            let text = logged_at(verbosity, || {
                tracing::error!("e");
                tracing::warn!("w");
                tracing::info!("i");
                tracing::debug!("d");
                tracing::trace!("t");
                tracing::error!(target: "ldap3", "E");
                tracing::warn!(target: "ldap3", "W");
                tracing::info!(target: "ldap3", "I");
                tracing::debug!(target: "ldap3", "D");
            });
            let last = |l: &str| l.chars().last().unwrap();
            let ours = text.lines().map(last).filter(|c| c.is_lowercase()).collect();
            let theirs = text.lines().map(last).filter(|c| c.is_uppercase()).collect();
            (ours, theirs)
        };
        assert_eq!(shown(0), ("ewi".into(), "EW".into()), "the default: our info, dependencies' warnings");
        assert_eq!(shown(1), ("ewid".into(), "EW".into()), "-v");
        assert_eq!(shown(2), ("ewidt".into(), "EW".into()), "-vv");
        assert_eq!(shown(3), ("ewidt".into(), "EWID".into()), "-vvv");
        assert_eq!(shown(-1), ("ew".into(), "EW".into()), "-q");
        assert_eq!(shown(-2), ("e".into(), "E".into()), "-qq");
        assert_eq!(shown(-9), ("e".into(), "E".into()), "-qqq.. as -qq");
    }

    #[test]
    fn tls_libraries_log_nothing_below_vvv() {
        let shown = |verbosity: i8| -> String {
            logged_at(verbosity, || {
                tracing::error!(target: "rustls_platform_verifier::verification::others", "failed to verify TLS certificate");
                tracing::warn!(target: "rustls::common_state", "Sending warning alert");
            })
        };
        for verbosity in -2..=2 {
            assert_eq!(shown(verbosity), "", "at verbosity {verbosity}");
        }
        assert_eq!(shown(3).lines().count(), 2, "-vvv shows them");
    }

    #[test]
    fn no_color_turns_colours_off_on_a_terminal() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(true, Some(OsStr::new("0"))), "any value but empty counts (no-color.org)");
        assert!(use_colour(true, Some(OsStr::new(""))), "set but empty: ignored (no-color.org)");
        assert!(!use_colour(false, None), "never into a pipe or a file");
    }

    #[test]
    fn the_journal_stream_is_recognised_by_device_and_inode() {
        assert!(names_the_stream("8:1234", 8, 1234));
        assert!(!names_the_stream("8:1234", 8, 1235), "another stream: a child's stderr sent elsewhere");
        assert!(!names_the_stream("", 8, 1234));
        assert!(!names_the_stream("garbage", 8, 1234));
    }

    #[test]
    fn control_characters_are_escaped_and_other_text_kept() {
        let hostile = "uid=eve\nINFO forged,ou=Ünïcode\u{1b}[31m\r\0\u{85}\u{7f}";
        let shown = Escaped(hostile).to_string();
        assert_eq!(shown, "uid=eve\\nINFO forged,ou=Ünïcode\\u{1b}[31m\\r\\u{0}\\u{85}\\u{7f}");
        assert_eq!(Escaped("plain, ünïcode").to_string(), "plain, ünïcode");
        assert_eq!(format!("{:?}", Escaped("a\tb")), "\"a\\tb\"", "Debug quotes as before");
    }
}

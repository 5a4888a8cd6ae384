//! Log output: `tracing` events on stderr, plain text (without colours or timestamps under journald, which
//! adds its own) or JSON lines for log shippers. `RUST_LOG` overrides the default filter.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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
        LogFormat::Text if under_journald => builder.with_ansi(false).without_time().try_init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
    if let Err(e) = result {
        eprintln!("warning: logging was already set up: {e}");
    }
}

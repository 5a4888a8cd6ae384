//! The audit trail as operators read it (`history`): which rows a `--since` asks for, and the rows as an
//! aligned table or one JSON object. It reads what `state.db` holds and decides nothing; opening the database
//! and choosing the rows are [`crate::state::db`]'s.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::logging::Escaped;
use crate::state::db::AuditRow;

/// The heading of each column of the table, in order.
const HEADINGS: [&str; 7] = ["TIME", "RUN", "USER", "ACTION", "GROUP", "REASON", "RESULT"];

/// `--since`'s value: a duration such as `"30d"`, for the command line's parser (a usage error names an example).
pub fn parse_since(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like \"30d\", \"12h\" or \"90min\": {e}"))
}

/// The time `since` before `now`, as the rows' times are written (RFC 3339, UTC, seconds): the earliest row
/// `--since` shows. An error for a duration reaching before the calendar's start.
pub fn since(now: DateTime<Utc>, since: Duration) -> Result<String, String> {
    chrono::Duration::from_std(since)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .ok_or_else(|| {
            format!("--since {} reaches too far back: give a shorter duration", humantime::format_duration(since))
        })
}

/// The rows as a table: a heading line, then one line per row, oldest first, each column as wide as its widest
/// value; `-` for a row with no user or no group. Control characters are escaped.
pub fn to_text(rows: &[AuditRow]) -> String {
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let or_dash = |v: &Option<String>| v.as_deref().map_or_else(|| "-".to_string(), |v| Escaped(v).to_string());
            [
                Escaped(&r.at).to_string(),
                Escaped(&r.run_id).to_string(),
                or_dash(&r.username),
                r.action.words().to_string(),
                or_dash(&r.group),
                Escaped(&r.reason).to_string(),
                Escaped(&r.result).to_string(),
            ]
        })
        .collect();
    let mut widths = HEADINGS.map(|h| h.chars().count());
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let headings = HEADINGS.map(String::from);
    for row in std::iter::once(&headings).chain(&cells) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What to say when no row matched: where was looked, for whom, since when.
pub fn nothing(database: &Path, username: Option<&str>, since: Option<&str>) -> String {
    let mut line = "no history".to_string();
    if let Some(user) = username {
        let _ = write!(line, " for {:?}", Escaped(user));
    }
    if let Some(since) = since {
        let _ = write!(line, " since {since}");
    }
    let _ = write!(line, " in {}", database.display());
    line
}

/// The rows as one JSON object: `state_database` (its path) and `entries` (the rows, oldest first).
pub fn to_json(database: &Path, rows: &[AuditRow]) -> serde_json::Value {
    serde_json::json!({ "state_database": database.display().to_string(), "entries": rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::db::Action;

    fn row(at: &str, user: Option<&str>, action: Action, group: Option<&str>, reason: &str, result: &str) -> AuditRow {
        AuditRow {
            run_id: "r1".into(),
            at: at.into(),
            action,
            username: user.map(Into::into),
            group: group.map(Into::into),
            reason: reason.into(),
            result: result.into(),
        }
    }

    #[test]
    fn the_table_aligns_its_columns_under_a_heading_with_dashes_for_no_user_or_group() {
        let rows = [
            row("2026-01-01T00:00:00Z", None, Action::GroupImported, Some("Engineering"), "configured", "ok"),
            row("2026-01-02T00:00:00Z", Some("alice"), Action::Deactivated, None, "left every configured group", "ok"),
            row("2026-01-03T00:00:00Z", Some("bob\x1b[2J"), Action::Held, None, "limit", "held"),
        ];
        let text = to_text(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "TIME                  RUN  USER          ACTION          GROUP        REASON                       RESULT",
                "2026-01-01T00:00:00Z  r1   -             group imported  Engineering  configured                   ok",
                "2026-01-02T00:00:00Z  r1   alice         deactivated     -            left every configured group  ok",
                "2026-01-03T00:00:00Z  r1   bob\\u{1b}[2J  held            -            limit                        held",
            ]
        );
    }

    #[test]
    fn since_counts_back_from_now_in_the_rows_format_and_refuses_what_is_not_a_duration() {
        let now = DateTime::parse_from_rfc3339("2026-03-31T12:00:00.75Z").unwrap().to_utc();
        assert_eq!(since(now, parse_since("30d").unwrap()).unwrap(), "2026-03-01T12:00:00Z");
        assert_eq!(since(now, parse_since(" 12h ").unwrap()).unwrap(), "2026-03-31T00:00:00Z");
        let e = parse_since("a month").unwrap_err();
        assert!(e.starts_with("\"a month\" is not a duration like \"30d\""), "{e}");
        let e = since(now, Duration::from_secs(u64::MAX / 2)).unwrap_err();
        assert!(e.contains("too far back"), "{e}");
    }

    #[test]
    fn nothing_found_says_where_for_whom_and_since_when() {
        let db = Path::new("/var/lib/x/state.db");
        assert_eq!(nothing(db, None, None), "no history in /var/lib/x/state.db");
        assert_eq!(
            nothing(db, Some("Alice"), Some("2026-01-01T00:00:00Z")),
            "no history for \"Alice\" since 2026-01-01T00:00:00Z in /var/lib/x/state.db"
        );
    }
}

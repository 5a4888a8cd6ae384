//! The deserialiser's messages in an operator's words: `invalid type: string "1000", expected i64` becomes
//! `expected an integer, got the string "1000" (write it without quotes)`, and an unknown key gets the nearest
//! known key when one is close, instead of the list of every key. Only serde's standard message forms are
//! rewritten (`serde::de::Error`'s default messages, stable across serde 1.x); any other message passes
//! through unchanged. Knows nothing of files or positions: [`super::parse`] adds those.

/// Where the example configuration, which shows every key, is installed by the package.
const EXAMPLE: &str = "/usr/share/doc/cloudshell-ldap-sync/example.toml";

/// Rewrites one message from the deserialiser. `table` is the table being read, as written in the file
/// (`""` at the top, `[ldap]`, `[[sync.mapping]]`); `value` is the text of the offending value in the file, when the error points at one.
pub(super) fn message(raw: &str, table: &str, value: Option<&str>) -> String {
    if let Some(rest) = raw.strip_prefix("invalid type: ").or_else(|| raw.strip_prefix("invalid value: "))
        && let Some((got, expected)) = rest.rsplit_once(", expected ")
    {
        return wrong_type(got, expected);
    }
    if let Some(rest) = raw.strip_prefix("unknown field `")
        && let Some((name, known)) = rest.split_once('`')
    {
        return unknown_key(name, table, &backquoted(known));
    }
    if let Some(name) = raw.strip_prefix("data did not match any variant of untagged enum ") {
        let expected = match name.trim() {
            "RawUrls" => "a URL such as \"ldaps://dc1.example.org:636\", or a list of them",
            "RawNesting" => "true, false, \"recursive\", \"in_chain\" or \"auto\"",
            _ => return raw.to_string(),
        };
        return match value {
            Some(v) => format!("expected {expected}, got {}", excerpt(v)),
            None => format!("expected {expected}"),
        };
    }
    raw.to_string()
}

/// `expected <what the key takes>, got <what the file has>`, from serde's `Unexpected` and `Expected` texts.
fn wrong_type(got: &str, expected: &str) -> String {
    let expected_words = match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "isize" | "usize" => {
            "an integer"
        }
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "path string" => "a string in quotes",
        "a sequence" => "a list in brackets, like [\"a\", \"b\"]",
        e if e.starts_with("struct ") || e == "a map" => "a table",
        e => e,
    };
    let quoted = |s: &str| s.strip_prefix('`').and_then(|s| s.strip_suffix('`')).map(str::to_string);
    let got_words = if let Some(s) = got.strip_prefix("string ") {
        let unquoted: String = serde_json::from_str(s).unwrap_or_default();
        let hint = match expected_words {
            "an integer" if unquoted.trim().parse::<i64>().is_ok() => " (write it without quotes)",
            "a number" if unquoted.trim().parse::<f64>().is_ok() => " (write it without quotes)",
            "true or false" if matches!(unquoted.trim(), "true" | "false") => " (write it without quotes)",
            _ => "",
        };
        format!("the string {s}{hint}")
    } else if let Some(n) = got.strip_prefix("integer ").and_then(|n| n.strip_suffix(" as i128")) {
        format!("{}, which is out of range", quoted(n).unwrap_or_else(|| n.to_string()))
    } else if let Some(n) = got.strip_prefix("integer ").and_then(quoted) {
        format!("the integer {n}")
    } else if let Some(n) = got.strip_prefix("floating point ").and_then(quoted) {
        format!("the number {n}")
    } else if let Some(b) = got.strip_prefix("boolean ").and_then(quoted) {
        b
    } else {
        match got {
            "sequence" => "a list".to_string(),
            "map" => "a table".to_string(),
            other => other.to_string(),
        }
    };
    format!("expected {expected_words}, got {got_words}")
}

/// The names in serde's "expected one of `a`, `b`" (or "expected `a`").
fn backquoted(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// An unknown key or table, with the nearest known one when it is close enough to be a typing mistake.
fn unknown_key(name: &str, table: &str, known: &[&str]) -> String {
    let (what, place) = if table.is_empty() {
        ("a table".to_string(), "of the configuration".to_string())
    } else {
        ("a key".to_string(), format!("of {table}"))
    };
    if let Some(near) = nearest(name, known) {
        return format!("not {what} {place}; did you mean {near}?");
    }
    if known.len() <= 6 {
        let list: Vec<String> =
            known.iter().map(|k| if table.is_empty() { format!("[{k}]") } else { k.to_string() }).collect();
        return format!("not {what} {place}, which takes {}", list.join(", "));
    }
    format!("not {what} {place} (every key is shown, with its default, in the example configuration, {EXAMPLE})")
}

/// The known name nearest to `name` (case-insensitively, by edit distance), if it is within a third of its
/// length (one edit for short names, at most three).
fn nearest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let name = name.to_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&name, &k.to_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.chars().count() / 3).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A value as written, cut short if long.
fn excerpt(value: &str) -> String {
    let value = value.trim();
    match value.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &value[..cut]),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_types_read_as_what_was_expected_and_what_was_found() {
        for (raw, shown) in [
            (
                "invalid type: string \"1000\", expected i64",
                "expected an integer, got the string \"1000\" (write it without quotes)",
            ),
            ("invalid type: string \"big\", expected i64", "expected an integer, got the string \"big\""),
            ("invalid type: integer `5`, expected a boolean", "expected true or false, got the integer 5"),
            ("invalid type: string \"yes\", expected a boolean", "expected true or false, got the string \"yes\""),
            ("invalid type: boolean `true`, expected a string", "expected a string in quotes, got true"),
            ("invalid type: floating point `1.5`, expected i64", "expected an integer, got the number 1.5"),
            (
                "invalid type: string \"Team\", expected a sequence",
                "expected a list in brackets, like [\"a\", \"b\"], got the string \"Team\"",
            ),
            ("invalid type: integer `3`, expected struct RawLdap", "expected a table, got the integer 3"),
            (
                "invalid type: integer `99999999999999999999` as i128, expected i64",
                "expected an integer, got 99999999999999999999, which is out of range",
            ),
        ] {
            assert_eq!(message(raw, "[ldap]", None), shown, "{raw}");
        }
    }

    #[test]
    fn an_unknown_key_suggests_the_nearest_only_when_close() {
        let raw = "unknown field `base_dm`, expected one of `url`, `bind_dn`, `base_dn`, `user_filter`, \
                   `group_filter`, `page_size`, `timeout`";
        assert_eq!(message(raw, "[ldap]", None), "not a key of [ldap]; did you mean base_dn?");
        let raw = "unknown field `Base_DN`, expected one of `url`, `bind_dn`, `base_dn`";
        assert_eq!(message(raw, "[ldap]", None), "not a key of [ldap]; did you mean base_dn?");
        let far = message(
            "unknown field `colour`, expected one of `url`, `bind_dn`, `base_dn`, `a`, `b`, `c`, `d`",
            "[ldap]",
            None,
        );
        assert!(!far.contains("did you mean") && far.contains("example configuration"), "{far}");
        let top = "unknown field `sinc`, expected one of `ldap`, `cloudshell`, `sync`, `schedule`, `log`, `monitor`";
        assert_eq!(message(top, "", None), "not a table of the configuration; did you mean sync?");
        let top = "unknown field `metrics`, expected one of `ldap`, `cloudshell`, `sync`, `schedule`, `log`, `monitor`";
        assert_eq!(
            message(top, "", None),
            "not a table of the configuration, which takes [ldap], [cloudshell], [sync], [schedule], [log], [monitor]"
        );
        // One letter off a two-letter key is not a typo of it.
        assert_eq!(nearest("ab", &["cd", "log"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn untagged_values_say_what_they_take_and_other_messages_pass_through() {
        let shown = message("data did not match any variant of untagged enum RawUrls", "[ldap]", Some("[1, 2]"));
        assert!(shown.starts_with("expected a URL such as \"ldaps://") && shown.ends_with("got [1, 2]"), "{shown}");
        assert_eq!(message("duplicate key", "[ldap]", None), "duplicate key");
    }
}

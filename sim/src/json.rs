//! Request-body parsing as the reference describes CloudShell's server: input field names bind
//! case-insensitively and trailing commas (as in Quali's own examples) are tolerated.

use serde_json::{Map, Value};

/// Parses a request body leniently: trailing commas before `}` or `]` are dropped (outside strings).
pub fn parse_lenient(body: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(body).map_err(|_| "request body is not UTF-8".to_string())?;
    let cleaned = strip_trailing_commas(text);
    serde_json::from_str(&cleaned).map_err(|e| format!("request body is not valid JSON: {e}"))
}

fn strip_trailing_commas(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut pending_comma: Option<String> = None; // the comma and any whitespace after it
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if let Some(pending) = pending_comma.as_mut() {
            if c.is_whitespace() {
                pending.push(c);
                continue;
            }
            let pending = pending_comma.take().expect("checked above");
            if c == '}' || c == ']' {
                // drop the comma, keep the whitespace
                out.push_str(&pending[1..]);
            } else {
                out.push_str(&pending);
            }
        }
        match c {
            ',' => pending_comma = Some(String::from(",")),
            '"' => {
                in_string = true;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    if let Some(pending) = pending_comma {
        out.push_str(&pending);
    }
    out
}

/// Looks a field up by name, ignoring case, in a JSON object.
pub fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value)
}

/// A field that must be a string when present and not null.
pub fn string_field(object: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match field(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("field {name} must be a string, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_trailing_commas_outside_strings() {
        let v = parse_lenient(br#"{"GroupName": "a,]", "AllowUpdate": true, }"#).unwrap();
        assert_eq!(v["GroupName"], "a,]");
        assert_eq!(v["AllowUpdate"], true);
        let v = parse_lenient(b"[1, 2,\n ]").unwrap();
        assert_eq!(v, serde_json::json!([1, 2]));
    }

    #[test]
    fn keeps_escaped_quotes_inside_strings() {
        let v = parse_lenient(br#"{"a": "x\",}", }"#).unwrap();
        assert_eq!(v["a"], "x\",}");
    }

    #[test]
    fn rejects_real_garbage() {
        assert!(parse_lenient(b"{\"a\": }").unwrap_err().contains("not valid JSON"));
        assert!(parse_lenient(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn binds_field_names_case_insensitively() {
        let v = parse_lenient(br#"{"username": "admin", "PASSWORD": "x"}"#).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(string_field(o, "Username").unwrap().as_deref(), Some("admin"));
        assert_eq!(string_field(o, "Password").unwrap().as_deref(), Some("x"));
        assert_eq!(string_field(o, "Domain").unwrap(), None);
        assert!(
            string_field(&serde_json::from_str::<Map<String, Value>>(r#"{"Username": 3}"#).unwrap(), "Username")
                .is_err()
        );
    }
}

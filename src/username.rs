//! Usernames, normalised once: CloudShell and directories treat `JPorter` and `jporter` as one user, so
//! every comparison, set and map key in the daemon goes through this type.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A username that compares, hashes and orders case-insensitively (Unicode lower-casing) and displays as
/// written. Cheap to clone (shared strings): plans hold one per membership.
#[derive(Clone)]
pub struct Username {
    original: Arc<str>,
    folded: Arc<str>,
}

impl Username {
    /// A username, or `None` for an empty or all-blank one.
    pub fn new(name: &str) -> Option<Username> {
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let folded = name.to_lowercase();
        let original: Arc<str> = Arc::from(name);
        // Most names are already lower case: share one allocation then.
        let folded = if folded == name { original.clone() } else { Arc::from(folded) };
        Some(Username { original, folded })
    }

    /// As written in the directory or CloudShell.
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The case-folded form used for comparison.
    pub fn folded(&self) -> &str {
        &self.folded
    }
}

impl PartialEq for Username {
    fn eq(&self, other: &Username) -> bool {
        self.folded == other.folded
    }
}

impl Eq for Username {}

impl Hash for Username {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.folded.hash(state);
    }
}

impl PartialOrd for Username {
    fn partial_cmp(&self, other: &Username) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Username {
    fn cmp(&self, other: &Username) -> Ordering {
        self.folded.cmp(&other.folded)
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.original)
    }
}

/// Written as it was written in (the report's failures, `users.json`).
impl serde::Serialize for Username {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.original)
    }
}

/// Read as [`Username::new`] reads it; a blank name is an error.
impl<'de> serde::Deserialize<'de> for Username {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Username, D::Error> {
        let text = String::deserialize(deserializer)?;
        Username::new(&text).ok_or_else(|| serde::de::Error::custom("a blank username"))
    }
}

#[cfg(test)]
mod tests {
    use super::Username;
    use std::collections::HashSet;

    fn u(s: &str) -> Username {
        Username::new(s).unwrap()
    }

    #[test]
    fn compares_case_insensitively_and_displays_as_written() {
        assert_eq!(u("JPorter"), u("jporter"));
        assert_eq!(u("ÉLODIE"), u("élodie"), "Unicode-aware");
        assert_ne!(u("jporter"), u("jporter2"));
        let set: HashSet<Username> = [u("JPorter"), u("jporter"), u("JPORTER")].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert_eq!(u("JPorter").to_string(), "JPorter");
        assert!(u("alice") < u("Bob"));
    }

    #[test]
    fn serialises_as_written_and_reads_back_refusing_blank_names() {
        assert_eq!(serde_json::to_string(&u("JPorter")).unwrap(), r#""JPorter""#);
        let read: Username = serde_json::from_str(r#""JPorter""#).unwrap();
        assert_eq!((read.as_str(), read.folded()), ("JPorter", "jporter"));
        assert!(serde_json::from_str::<Username>(r#"" ""#).is_err());
    }

    #[test]
    fn refuses_blank_names() {
        assert!(Username::new("").is_none());
        assert!(Username::new("   ").is_none());
        assert_eq!(u(" x ").as_str(), "x");
    }
}

//! Directory group names, compared by one rule: LDAP's caseIgnoreMatch, the rule directories apply to a
//! group's name (lower-cased, trimmed, runs of spaces as one). A configured name (`sync.groups`,
//! `[[sync.mapping]] directory_group`) and a name the directory returns are both a [`GroupName`], so one name
//! means one group in the configuration's duplicate checks, in the match of a configured name to a group
//! entry, and in the membership mapping. CloudShell's own group names are not directory group names and are
//! not this type.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// A directory group name that compares, hashes and orders by [`fold`] and displays (and is sent, in an
/// import by group name) exactly as written.
#[derive(Clone)]
pub struct GroupName {
    text: String,
    folded: String,
}

impl GroupName {
    /// The name as written; any text is a name (the configuration refuses blank ones itself).
    pub fn new(text: &str) -> GroupName {
        GroupName { text: text.to_string(), folded: fold(text) }
    }

    /// As written in the configuration or the directory.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The folded form used for comparison.
    pub fn folded(&self) -> &str {
        &self.folded
    }
}

/// Folds a value as caseIgnoreMatch does: lower-cased, trimmed, with runs of spaces as one. The one rule
/// for group names, and for the values of a DN (`ldap::dn`).
pub fn fold(value: &str) -> String {
    let lowered = value.to_lowercase();
    let mut out = String::with_capacity(lowered.len());
    let mut last_space = false;
    for c in lowered.trim().chars() {
        if c == ' ' {
            if last_space {
                continue;
            }
            last_space = true;
        } else {
            last_space = false;
        }
        out.push(c);
    }
    out
}

impl PartialEq for GroupName {
    fn eq(&self, other: &GroupName) -> bool {
        self.folded == other.folded
    }
}

impl Eq for GroupName {}

impl Hash for GroupName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.folded.hash(state);
    }
}

impl PartialOrd for GroupName {
    fn partial_cmp(&self, other: &GroupName) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GroupName {
    fn cmp(&self, other: &GroupName) -> Ordering {
        self.folded.cmp(&other.folded)
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// As the text's own `Debug` (quoted, escaped): messages that quote a group name read as they always did.
impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.text.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::{GroupName, fold};
    use std::collections::HashSet;

    fn g(s: &str) -> GroupName {
        GroupName::new(s)
    }

    #[test]
    fn compares_as_case_ignore_match_and_displays_as_written() {
        assert_eq!(g("Ops (EU)"), g(" ops (eu) "));
        assert_eq!(g("Ops  (EU)"), g("ops (eu)"), "inner runs of spaces are one space");
        assert_eq!(g("ÉQUIPE"), g("équipe"), "Unicode-aware");
        assert_ne!(g("Ops"), g("Ops2"));
        assert_ne!(g("Ops EU"), g("OpsEU"), "a space is not nothing");
        let set: HashSet<GroupName> = [g("Team"), g("TEAM"), g(" team  ")].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert_eq!(g(" Ops  (EU)").to_string(), " Ops  (EU)", "the text as written");
        assert_eq!(format!("{:?}", g("Ops \"EU\"")), format!("{:?}", "Ops \"EU\""));
    }

    #[test]
    fn folds_lower_cased_trimmed_with_runs_of_spaces_as_one() {
        assert_eq!(fold("  Domain   Admins "), "domain admins");
        assert_eq!(fold(""), "");
        assert_eq!(g("A  B").folded(), "a b");
    }
}

//! Entries to a snapshot, without I/O: which group entry each configured name means, which nesting mode is
//! in force, and each configured group's effective members (through [`super::nesting`]). The same entries and
//! names always give the same snapshot, so every rule here is table-tested without a server.

use super::model::{Entries, nesting_mode};
use super::nesting::Expansion;
use super::{Coverage, GroupOutcome, Nesting, Settings, Snapshot};
use crate::group_name::GroupName;

/// Each configured group's outcome from what was read, in the configured order. A group whose entries could
/// not all be read is in error, never short of members.
pub fn resolve(entries: &Entries, s: &Settings, groups: &[GroupName]) -> Snapshot {
    let outcomes = match outcomes(entries, s, groups) {
        Ok(outcomes) => outcomes,
        Err(e) => groups.iter().map(|name| GroupOutcome { name: name.to_string(), result: Err(e.clone()) }).collect(),
    };
    Snapshot {
        groups: outcomes,
        users_seen: entries.users_seen(),
        searches: entries.searches,
        served_by: entries.served_by.clone(),
        coverage: Coverage::Full,
    }
}

/// The outcomes, or the error that fails every group.
fn outcomes(entries: &Entries, s: &Settings, groups: &[GroupName]) -> Result<Vec<GroupOutcome>, super::Error> {
    if let Some(e) = &entries.failure {
        return Err(e.clone());
    }
    let nesting = nesting_mode(s.nesting, entries.active_directory, &entries.served_by)?;
    let expansion = Expansion {
        index: &entries.users,
        known: &entries.groups,
        neither: &entries.neither,
        failed: &entries.failed,
        max_depth: s.max_nesting_depth,
        url: &entries.served_by,
    };
    let matched = entries.match_names(s, groups);
    let outcomes = groups.iter().zip(matched).map(|(name, key)| {
        let result = key.and_then(|key| match entries.in_chain.get(&key) {
            Some(found) if nesting == Nesting::InChain => {
                found.clone().and_then(|members| expansion.resolve_in_chain(&key, members))
            }
            _ => expansion.resolve(name.as_str(), &key, nesting == Nesting::Recursive),
        });
        GroupOutcome { name: name.to_string(), result }
    });
    Ok(outcomes.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldap::Error;
    use crate::ldap::model::tests::{URL, entries, key, record, settings, users};

    fn members(snapshot: &Snapshot, n: usize) -> Vec<&str> {
        let group = snapshot.groups[n].result.as_ref().expect("enumerated");
        group.members.iter().map(|m| m.username.as_str()).collect()
    }

    fn names(names: &[&str]) -> Vec<GroupName> {
        names.iter().map(|n| GroupName::new(n)).collect()
    }

    #[test]
    fn groups_resolve_in_the_configured_order_by_the_mode_in_force() {
        let read =
            || entries(users(&["a", "b", "c"]), vec![record("Top", &[0], &["Inner"]), record("Inner", &[1], &[])]);
        let configured = names(&["Inner", "Top"]);
        let snapshot = resolve(&read(), &settings(Nesting::Recursive), &configured);
        assert_eq!((snapshot.groups[0].name.as_str(), snapshot.groups[1].name.as_str()), ("Inner", "Top"));
        assert_eq!((members(&snapshot, 0), members(&snapshot, 1)), (vec!["b"], vec!["a", "b"]));
        assert_eq!((snapshot.users_seen, snapshot.coverage), (3, Coverage::Full));
        // Nesting off: the member group is skipped.
        let snapshot = resolve(&read(), &settings(Nesting::Off), &configured);
        assert_eq!(members(&snapshot, 1), ["a"]);
        // Auto on a server that is not Active Directory walks the levels.
        let mut not_ad = read();
        not_ad.active_directory = Some(false);
        assert_eq!(members(&resolve(&not_ad, &settings(Nesting::Auto), &configured), 1), ["a", "b"]);
        // Auto on Active Directory takes the in-chain search's answer.
        let mut ad = read();
        ad.active_directory = Some(true);
        ad.in_chain.insert(key("Top"), Ok((vec![0, 2], Vec::new())));
        ad.in_chain.insert(key("Inner"), Ok((vec![1], Vec::new())));
        assert_eq!(members(&resolve(&ad, &settings(Nesting::Auto), &configured), 1), ["a", "c"]);
    }

    #[test]
    fn a_failure_of_the_whole_read_fails_every_group_and_one_of_a_group_fails_that_group() {
        let broken = Error::Search { url: URL.into(), operation: "the users search".into(), reason: "reset".into() };
        let read = Entries::failed(URL.into(), 1, broken.clone());
        let snapshot = resolve(&read, &settings(Nesting::Recursive), &names(&["A", "B"]));
        assert!(snapshot.groups.iter().all(|g| g.result.as_ref().err() == Some(&broken)));
        // In-chain configured on a server that is not Active Directory: no group can be read.
        let mut not_ad = entries(users(&["a"]), vec![record("A", &[0], &[])]);
        not_ad.active_directory = Some(false);
        let snapshot = resolve(&not_ad, &settings(Nesting::InChain), &names(&["A"]));
        assert!(snapshot.groups[0].result.is_err());
        // A failed in-chain search fails its group alone.
        let mut ad = entries(users(&["a"]), vec![record("A", &[0], &[]), record("B", &[0], &[])]);
        ad.active_directory = Some(true);
        ad.in_chain.insert(key("A"), Err(broken.clone()));
        ad.in_chain.insert(key("B"), Ok((vec![0], Vec::new())));
        let snapshot = resolve(&ad, &settings(Nesting::InChain), &names(&["A", "B"]));
        assert_eq!(snapshot.groups[0].result.as_ref().err(), Some(&broken));
        assert_eq!(members(&snapshot, 1), ["a"]);
    }
}

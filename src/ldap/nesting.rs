//! Nested groups, resolved without I/O: given the users read, the group entries read (the configured groups
//! and every group reached below them) and the member DNs that turned out to be neither or failed to read,
//! each configured group's effective members. The reads are `search`'s; this module only walks what they
//! found, so every nesting rule (cycles, depth cap, dangling members, collisions) is tested without a server.

// Keys are DNs and usernames from this run's own reads: a fast non-cryptographic hasher (FxHash) is enough;
// a directory author crafting colliding values could at worst slow one run down.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::Arc;

use super::dn::DnKey;
use super::model::{GroupRecord, UserIndex};
use super::{Collision, Error, Group, Member, Source};

/// What the reads found, for resolving configured groups.
pub(super) struct Expansion<'a> {
    pub index: &'a UserIndex,
    /// Group entries by normalised DN.
    pub known: &'a HashMap<DnKey, GroupRecord>,
    /// Member DNs that are neither users nor groups (dangling, deleted, foreign, filtered out).
    pub neither: &'a HashSet<DnKey>,
    /// Member DNs whose read failed: a group reaching one cannot be enumerated.
    pub failed: &'a HashMap<DnKey, Error>,
    /// `ldap.max_nesting_depth`.
    pub max_depth: usize,
    /// The server read, for errors.
    pub url: &'a str,
}

impl Expansion<'_> {
    /// A group's members from an IN_CHAIN search; its direct members give the one source.
    /// `disabled`: the disabled accounts the search found (indexes into `disabled_users`).
    pub fn resolve_in_chain(
        &self,
        root: &DnKey,
        (members, mut disabled): (Vec<u32>, Vec<u32>),
    ) -> Result<Group, Error> {
        let (known, index) = (self.known, self.index);
        let top = known.get(root).expect("a found group is known");
        if let Some(e) = &top.error {
            return Err(e.clone());
        }
        // A sanity check: the transitive search must find at least the group's direct user members.
        let found: HashSet<u32> = members.iter().copied().collect();
        if let Some(&missing) = top.users.iter().find(|n| !found.contains(n)) {
            return Err(Error::Search {
                url: self.url.to_string(),
                operation: format!("the in-chain member search of {}", top.dn),
                reason: format!("it does not return the direct member {}", index.users[missing as usize].dn).into(),
            });
        }
        let source = Source {
            name: top.name.clone(),
            dn: top.dn.clone(),
            direct_members: top.users.iter().map(|&n| index.users[n as usize].clone()).collect(),
            disabled_members: top.disabled.len(),
            unusable_members: top.unusable.len() + self.multi_valued_in(&top.users),
        };
        disabled.extend(&top.disabled);
        let unreadable = top.unusable.clone();
        Ok(self.group_of(top, members, vec![source], (unreadable, disabled)))
    }

    /// How many of `users` have several names: an import by their group's name would bring them in.
    fn multi_valued_in(&self, users: &[u32]) -> usize {
        if self.index.multi_valued.is_empty() {
            return 0;
        }
        users.iter().filter(|n| self.index.multi_valued.contains_key(n)).count()
    }

    /// Builds the group from member indexes: sorted, each once, collisions set apart.
    fn group_of(
        &self,
        top: &GroupRecord,
        mut members: Vec<u32>,
        mut sources: Vec<Source>,
        (unreadable, mut disabled): (Vec<String>, Vec<u32>),
    ) -> Group {
        let index = self.index;
        members.sort_unstable();
        members.dedup();
        let mut found_collisions: Vec<Collision> = Vec::new();
        let mut out: Vec<Arc<Member>> = Vec::with_capacity(members.len());
        for n in members {
            let u = &index.users[n as usize];
            if let Some((names, entry)) = index.multi_valued.get(&n) {
                for name in names {
                    if !found_collisions.iter().any(|c| &c.username == name) {
                        let dns = index.collisions.get(name).cloned().unwrap_or_else(|| vec![u.dn.to_string()]);
                        let multi_valued = Some(entry.clone());
                        found_collisions.push(Collision { username: name.clone(), dns, multi_valued });
                    }
                }
                continue;
            }
            if let Some(dns) = index.collisions.get(&u.username) {
                if !found_collisions.iter().any(|c| c.username == u.username) {
                    let dns = dns.clone();
                    found_collisions.push(Collision { username: u.username.clone(), dns, multi_valued: None });
                }
                continue;
            }
            out.push(u.clone());
        }
        out.sort_by(|a, b| a.username.cmp(&b.username));
        let members: Arc<[Arc<Member>]> = out.into();
        // A group without nesting, duplicates or collisions has exactly its direct members as effective
        // members: one list serves both (a million memberships are then held once, not twice).
        if let [root] = sources.as_mut_slice()
            && found_collisions.is_empty()
            && root.direct_members.len() == members.len()
        {
            root.direct_members = members.clone();
        }
        disabled.sort_unstable();
        disabled.dedup();
        let mut disabled_accounts: Vec<Arc<Member>> =
            disabled.iter().map(|&n| index.disabled_users[n as usize].clone()).collect();
        disabled_accounts.sort_by(|a, b| a.username.cmp(&b.username));
        Group {
            name: top.name.clone(),
            dn: top.dn.clone(),
            members,
            sources,
            collisions: found_collisions,
            skipped_members: unreadable.len(),
            unreadable,
            disabled_members: disabled.len(),
            disabled: disabled_accounts,
        }
    }

    /// A configured group's effective members, walking its member groups level by level (cycle-safe,
    /// capped at `max_depth`). With `recursive` off, member groups are skipped like any non-user member.
    pub fn resolve(&self, name: &str, root: &DnKey, recursive: bool) -> Result<Group, Error> {
        let (known, neither, failed) = (self.known, self.neither, self.failed);
        let users = &self.index.users;
        let top = known.get(root).expect("a found group is known");
        let mut members: Vec<u32> = Vec::new();
        let mut sources = Vec::new();
        let mut not_followed_count = 0usize;
        let mut unreadable: Vec<String> = Vec::new();
        let mut disabled: Vec<u32> = Vec::new();
        let (mut dangling, mut not_followed): (Vec<&String>, Vec<&String>) = (Vec::new(), Vec::new());
        let mut visited: HashSet<&DnKey> = std::iter::once(root).collect();
        let mut level: Vec<&GroupRecord> = vec![top];
        let mut depth = 0usize;
        while !level.is_empty() {
            let mut next = Vec::new();
            for group in level {
                if let Some(e) = &group.error {
                    return Err(e.clone());
                }
                members.extend(&group.users);
                disabled.extend(&group.disabled);
                // Refused entries count among the skipped members, as dangling ones do.
                unreadable.extend(group.unusable.iter().cloned());
                sources.push(Source {
                    name: group.name.clone(),
                    dn: group.dn.clone(),
                    direct_members: group.users.iter().map(|&n| users[n as usize].clone()).collect(),
                    disabled_members: group.disabled.len(),
                    unusable_members: group.unusable.len() + self.multi_valued_in(&group.users),
                });
                for (key, raw) in &group.others {
                    if !recursive {
                        not_followed_count += 1;
                        not_followed.push(raw);
                        continue;
                    }
                    if let Some(e) = failed.get(key) {
                        return Err(e.clone());
                    }
                    if let Some(g) = known.get(key) {
                        if visited.insert(key) {
                            next.push(g);
                        }
                    } else if neither.contains(key) {
                        unreadable.push(raw.clone());
                        dangling.push(raw);
                    } else {
                        return Err(Error::TooDeep { name: name.to_string(), depth: self.max_depth });
                    }
                }
            }
            if !next.is_empty() {
                depth += 1;
                if depth > self.max_depth {
                    return Err(Error::TooDeep { name: name.to_string(), depth: self.max_depth });
                }
            }
            level = next;
        }
        // One event per group and reason, however many members: 200,000 dangling references must not write
        // 200,000 lines a run.
        log_skipped(name, &not_followed, "not a user; nested groups are off", tracing::Level::INFO);
        log_skipped(name, &dangling, "neither a user nor a group", tracing::Level::WARN);
        let mut group = self.group_of(top, members, sources, (unreadable, disabled));
        group.skipped_members += not_followed_count;
        Ok(group)
    }
}

/// Member values logged per skipped-member event.
const SAMPLE: usize = 5;

/// One `member skipped` event for a group's members skipped for one reason: the count, the first, a sample.
fn log_skipped(group: &str, skipped: &[&String], reason: &str, level: tracing::Level) {
    let Some(first) = skipped.first() else {
        return;
    };
    let sample: Vec<&str> = skipped.iter().take(SAMPLE).map(|s| s.as_str()).collect();
    let count = skipped.len();
    if level == tracing::Level::WARN {
        tracing::warn!(group, count, member = %first, sample = ?sample, reason, "member skipped");
    } else {
        tracing::info!(group, count, member = %first, sample = ?sample, reason, "member skipped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldap::model::ByRawDn;
    use crate::username::Username;

    const URL: &str = "ldap://test";

    fn member(name: &str) -> Arc<Member> {
        Arc::new(Member { username: Username::new(name).unwrap(), dn: format!("uid={name},ou=people,dc=x").into() })
    }

    /// Users `names`, in order; index n is `names[n]`. `collide` adds a second entry for that username.
    fn index(names: &[&str], collide: Option<&str>) -> UserIndex {
        let users: Vec<Arc<Member>> = names.iter().map(|n| member(n)).collect();
        let mut collisions = HashMap::default();
        if let Some(c) = collide {
            collisions
                .insert(Username::new(c).unwrap(), vec![format!("uid={c},ou=people,dc=x"), "uid=other,dc=x".into()]);
        }
        UserIndex {
            by_raw_dn: {
                let mut t = ByRawDn::default();
                (0..users.len() as u32).for_each(|n| t.insert(&users, n));
                t
            },
            users,
            // Never resumed from.
            by_name: Default::default(),
            by_key: std::sync::OnceLock::new(),
            collisions,
            multi_valued: HashMap::default(),
            disabled: HashMap::default(),
            disabled_users: Vec::new(),
            unusable: HashSet::default(),
            skipped: 0,
            examples: Vec::new(),
        }
    }

    fn key(name: &str) -> DnKey {
        DnKey::new(&format!("cn={name},ou=groups,dc=x"))
    }

    /// A group entry with user members (indexes) and member groups (names).
    fn record(name: &str, users: &[u32], groups: &[&str]) -> (DnKey, GroupRecord) {
        let others = groups.iter().map(|g| (key(g), format!("cn={g},ou=groups,dc=x"))).collect();
        let dn = format!("cn={name},ou=groups,dc=x");
        (
            key(name),
            GroupRecord {
                name: name.into(),
                matched: Vec::new(),
                dn,
                users: users.to_vec(),
                others,
                disabled: Vec::new(),
                unusable: Vec::new(),
                error: None,
            },
        )
    }

    struct World {
        index: UserIndex,
        known: HashMap<DnKey, GroupRecord>,
        neither: HashSet<DnKey>,
        failed: HashMap<DnKey, Error>,
    }

    impl World {
        fn new(index: UserIndex, records: Vec<(DnKey, GroupRecord)>) -> World {
            World {
                index,
                known: records.into_iter().collect(),
                neither: HashSet::default(),
                failed: HashMap::default(),
            }
        }

        fn expansion(&self, max_depth: usize) -> Expansion<'_> {
            Expansion {
                index: &self.index,
                known: &self.known,
                neither: &self.neither,
                failed: &self.failed,
                max_depth,
                url: URL,
            }
        }

        fn resolve(&self, name: &str, max_depth: usize) -> Result<Group, Error> {
            self.expansion(max_depth).resolve(name, &key(name), true)
        }
    }

    fn usernames(g: &Group) -> Vec<&str> {
        g.members.iter().map(|m| m.username.as_str()).collect()
    }

    #[test]
    fn nested_members_count_once_sorted_with_every_source_listed() {
        let w = World::new(
            index(&["carol", "alice", "bob"], None),
            vec![record("Team", &[1, 0], &["Inner"]), record("Inner", &[2, 1], &[])],
        );
        let g = w.resolve("Team", 10).unwrap();
        assert_eq!(usernames(&g), ["alice", "bob", "carol"]);
        let sources: Vec<(&str, usize)> = g.sources.iter().map(|s| (s.name.as_str(), s.direct_members.len())).collect();
        assert_eq!(sources, [("Team", 2), ("Inner", 2)]);
    }

    #[test]
    fn disabled_accounts_are_kept_by_name_once_over_every_level() {
        let mut index = index(&["a"], None);
        index.disabled_users = vec![member("zed"), member("dis")];
        let (mut team, mut inner) = (record("Team", &[0], &["Inner"]), record("Inner", &[], &[]));
        (team.1.disabled, inner.1.disabled) = (vec![0], vec![1, 0]);
        let w = World::new(index, vec![team, inner]);
        let g = w.resolve("Team", 10).unwrap();
        assert_eq!(usernames(&g), ["a"]);
        let disabled: Vec<&str> = g.disabled.iter().map(|m| m.username.as_str()).collect();
        assert_eq!((disabled, g.disabled_members), (vec!["dis", "zed"], 2));
        assert_eq!(g.sources.iter().map(|s| s.disabled_members).collect::<Vec<_>>(), [1, 2]);
        // In chain: the search's disabled accounts and the group's own direct ones.
        let g = w.expansion(10).resolve_in_chain(&key("Team"), (vec![0], vec![1])).unwrap();
        assert_eq!(g.disabled.iter().map(|m| m.username.as_str()).collect::<Vec<_>>(), ["dis", "zed"]);
    }

    #[test]
    fn a_flat_group_holds_its_members_once_for_both_lists() {
        let w = World::new(index(&["b", "a"], None), vec![record("Flat", &[0, 1], &[]), record("Dup", &[0, 0], &[])]);
        let flat = w.resolve("Flat", 10).unwrap();
        assert!(Arc::ptr_eq(&flat.members, &flat.sources[0].direct_members), "one list");
        assert_eq!(usernames(&flat), ["a", "b"]);
        let dup = w.resolve("Dup", 10).unwrap();
        assert!(!Arc::ptr_eq(&dup.members, &dup.sources[0].direct_members), "a duplicate value: two lists");
        assert_eq!((dup.members.len(), dup.sources[0].direct_members.len()), (1, 2));
    }

    #[test]
    fn cycles_end_and_each_group_is_read_once() {
        let w = World::new(index(&["a", "b"], None), vec![record("A", &[0], &["B"]), record("B", &[1], &["A"])]);
        let g = w.resolve("A", 10).unwrap();
        assert_eq!(usernames(&g), ["a", "b"]);
        assert_eq!(g.sources.len(), 2);
    }

    #[test]
    fn nesting_deeper_than_the_cap_is_an_error_not_a_short_list() {
        let w = World::new(
            index(&["a", "b", "c"], None),
            vec![record("L0", &[0], &["L1"]), record("L1", &[1], &["L2"]), record("L2", &[2], &[])],
        );
        assert_eq!(usernames(&w.resolve("L0", 2).unwrap()), ["a", "b", "c"]);
        assert_eq!(w.resolve("L0", 1).unwrap_err(), Error::TooDeep { name: "L0".into(), depth: 1 });
        // A member group that was never read (the reads stopped at the cap) is too deep as well.
        let w = World::new(index(&["a"], None), vec![record("L0", &[0], &["Unread"])]);
        assert!(matches!(w.resolve("L0", 5), Err(Error::TooDeep { .. })));
    }

    #[test]
    fn dangling_members_are_skipped_and_failed_reads_fail_the_group() {
        let mut w = World::new(index(&["a"], None), vec![record("G", &[0], &["Gone", "Broken"])]);
        w.neither.insert(key("Gone"));
        let broken = Error::Search { url: URL.into(), operation: "reading member".into(), reason: "reset".into() };
        w.failed.insert(key("Broken"), broken.clone());
        assert_eq!(w.resolve("G", 10).unwrap_err(), broken, "a member that could not be read is never read as none");
        w.failed.clear();
        w.neither.insert(key("Broken"));
        let g = w.resolve("G", 10).unwrap();
        assert_eq!((usernames(&g), g.skipped_members), (vec!["a"], 2));
    }

    #[test]
    fn with_nesting_off_member_groups_are_skipped() {
        let w = World::new(index(&["a", "b"], None), vec![record("G", &[0], &["Inner"]), record("Inner", &[1], &[])]);
        let g = w.expansion(10).resolve("G", &key("G"), false).unwrap();
        assert_eq!((usernames(&g), g.skipped_members, g.sources.len()), (vec!["a"], 1, 1));
    }

    #[test]
    fn an_incomplete_member_list_fails_the_group() {
        let (k, mut r) = record("G", &[0], &[]);
        let e = Error::Search { url: URL.into(), operation: "range".into(), reason: "a range was skipped".into() };
        r.error = Some(e.clone());
        let w = World::new(index(&["a"], None), vec![(k, r)]);
        assert_eq!(w.resolve("G", 10).unwrap_err(), e);
    }

    #[test]
    fn colliding_usernames_are_set_apart() {
        let w = World::new(index(&["a", "dup"], Some("dup")), vec![record("G", &[0, 1], &[])]);
        let g = w.resolve("G", 10).unwrap();
        assert_eq!(usernames(&g), ["a"]);
        assert_eq!(g.collisions.len(), 1);
        assert_eq!(g.collisions[0].username.as_str(), "dup");
    }

    #[test]
    fn a_user_with_several_names_is_set_apart_under_each_and_keeps_its_group_from_an_import_by_name() {
        // "a" (index 0) holds the names "a" and "a2"; a second entry also named "a2" (index 2) collides with it.
        let mut idx = index(&["a", "b", "a2"], None);
        let names = vec![Username::new("a").unwrap(), Username::new("a2").unwrap()];
        let entry = crate::ldap::MultiValued { dn: idx.users[0].dn.to_string(), values: vec!["a".into(), "a2".into()] };
        idx.multi_valued.insert(0, (names, entry.clone()));
        idx.collisions
            .insert(Username::new("a2").unwrap(), vec![idx.users[0].dn.to_string(), idx.users[2].dn.to_string()]);
        let w = World::new(idx, vec![record("G", &[0, 1], &[]), record("H", &[1], &[])]);
        let g = w.resolve("G", 10).unwrap();
        assert_eq!(usernames(&g), ["b"], "under neither name");
        let set_apart: Vec<(&str, usize, Option<&crate::ldap::MultiValued>)> =
            g.collisions.iter().map(|c| (c.username.as_str(), c.dns.len(), c.multi_valued.as_ref())).collect();
        assert_eq!(set_apart, [("a", 1, Some(&entry)), ("a2", 2, Some(&entry))]);
        assert_eq!(g.sources[0].unusable_members, 1, "CloudShell's import by the group's name would take it in");
        assert_eq!(g.skipped_members, 0, "a member all the same, not a skipped one");
        let in_chain = w.expansion(10).resolve_in_chain(&key("G"), (vec![0, 1], Vec::new())).unwrap();
        assert_eq!((usernames(&in_chain), in_chain.sources[0].unusable_members), (vec!["b"], 1));
        let h = w.resolve("H", 10).unwrap();
        assert_eq!((h.collisions.len(), h.sources[0].unusable_members), (0, 0), "a group without it");
    }

    #[test]
    fn in_chain_results_must_hold_every_direct_member() {
        let w = World::new(index(&["a", "b", "c"], None), vec![record("G", &[0, 1], &[])]);
        let g = w.expansion(10).resolve_in_chain(&key("G"), (vec![2, 1, 0, 1], Vec::new())).unwrap();
        assert_eq!(usernames(&g), ["a", "b", "c"]);
        assert_eq!(g.sources.len(), 1, "the in-chain search names no nested group");
        let e = w.expansion(10).resolve_in_chain(&key("G"), (vec![0], Vec::new())).unwrap_err();
        assert!(e.to_string().contains("does not return the direct member uid=b"), "{e}");
    }
}

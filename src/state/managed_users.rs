//! The managed users in memory: their records in one vector, found by username through a table of positions.
//!
//! A map of username to record held each record beside a second copy of its username in every slot, and a
//! quarter of its slots empty: 131,072 slots of 152 bytes (20 MB) for 100,000 users, the largest thing a full
//! read with a state directory holds. Here the records are packed (the username is the record's own) and the
//! table holds four bytes a slot: 100,000 users take their records' 9.6 MB and 0.7 MB of table.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::ManagedUser;
use crate::username::Username;

/// Every managed user, by username (as usernames compare: folded). Iterates in no particular order.
#[derive(Clone, Default)]
pub struct ManagedUsers {
    /// Each user once; a record's key is its own `username`.
    records: Vec<ManagedUser>,
    /// The position in `records` of each, by the hash of its folded username.
    index: HashTable<u32>,
}

/// The hash of a username, as the table keys it. FxHash: the names come from the directory and the state (a
/// directory author crafting colliding names could at worst slow one run down).
fn hash(username: &Username) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(username.folded())
}

impl ManagedUsers {
    pub fn new() -> ManagedUsers {
        ManagedUsers::default()
    }

    /// Room for `count` users without growing.
    pub fn with_capacity(count: usize) -> ManagedUsers {
        ManagedUsers { records: Vec::with_capacity(count), index: HashTable::with_capacity(count) }
    }

    fn position(&self, username: &Username) -> Option<usize> {
        let records = &self.records;
        self.index.find(hash(username), |&n| records[n as usize].username == *username).map(|&n| n as usize)
    }

    pub fn get(&self, username: &Username) -> Option<&ManagedUser> {
        self.position(username).map(|n| &self.records[n])
    }

    /// The record, to change in place. Its `username` may be rewritten only to a name that compares equal.
    pub fn get_mut(&mut self, username: &Username) -> Option<&mut ManagedUser> {
        self.position(username).map(|n| &mut self.records[n])
    }

    pub fn contains_key(&self, username: &Username) -> bool {
        self.position(username).is_some()
    }

    /// Adds `user` under its username, or replaces the record of that name (returned).
    pub fn insert(&mut self, user: ManagedUser) -> Option<ManagedUser> {
        if let Some(n) = self.position(&user.username) {
            return Some(std::mem::replace(&mut self.records[n], user));
        }
        if self.records.len() == self.records.capacity() {
            // By an eighth, not by doubling: a run adding a few new hires to 100,000 users must not hold a
            // second vector of twice the size while it copies.
            self.records.reserve_exact((self.records.len() / 8).max(16));
        }
        let records = &self.records;
        let n = u32::try_from(records.len()).expect("fewer than 4 billion managed users");
        self.index.insert_unique(hash(&user.username), n, |&m| hash(&records[m as usize].username));
        self.records.push(user);
        None
    }

    /// The record of `username`, made by `make` (a record under that name) and added when there is none.
    pub fn get_or_insert_with(&mut self, username: &Username, make: impl FnOnce() -> ManagedUser) -> &mut ManagedUser {
        let n = match self.position(username) {
            Some(n) => n,
            None => {
                let user = make();
                let key = user.username.clone();
                self.insert(user);
                self.position(&key).expect("the record just added")
            }
        };
        &mut self.records[n]
    }

    /// Removes the record of `username`, returning it.
    pub fn remove(&mut self, username: &Username) -> Option<ManagedUser> {
        let records = &self.records;
        let entry = self.index.find_entry(hash(username), |&n| records[n as usize].username == *username).ok()?;
        let (n, _) = entry.remove();
        let last = self.records.len() - 1;
        let removed = self.records.swap_remove(n as usize);
        if (n as usize) < last {
            // The last record moved into the removed one's place.
            let moved = hash(&self.records[n as usize].username);
            let slot = self.index.find_mut(moved, |&m| m as usize == last).expect("every record is indexed");
            *slot = n;
        }
        Some(removed)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Each user with its username.
    pub fn iter(&self) -> impl Iterator<Item = (&Username, &ManagedUser)> {
        self.records.iter().map(|user| (&user.username, user))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Username> {
        self.records.iter().map(|user| &user.username)
    }

    pub fn values(&self) -> impl Iterator<Item = &ManagedUser> {
        self.records.iter()
    }
}

impl std::ops::Index<&Username> for ManagedUsers {
    type Output = ManagedUser;
    fn index(&self, username: &Username) -> &ManagedUser {
        self.get(username).expect("a managed user of that name")
    }
}

/// The same users with the same records, in whatever order.
impl PartialEq for ManagedUsers {
    fn eq(&self, other: &ManagedUsers) -> bool {
        self.len() == other.len() && self.values().all(|user| other.get(&user.username) == Some(user))
    }
}

impl Eq for ManagedUsers {}

impl std::fmt::Debug for ManagedUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// From records: each under its own username (the key given is the same name).
impl FromIterator<(Username, ManagedUser)> for ManagedUsers {
    fn from_iter<I: IntoIterator<Item = (Username, ManagedUser)>>(iter: I) -> ManagedUsers {
        let mut users = ManagedUsers::default();
        for (_, user) in iter {
            users.insert(user);
        }
        users
    }
}

impl IntoIterator for ManagedUsers {
    type Item = (Username, ManagedUser);
    type IntoIter = std::iter::Map<std::vec::IntoIter<ManagedUser>, fn(ManagedUser) -> (Username, ManagedUser)>;
    fn into_iter(self) -> Self::IntoIter {
        self.records.into_iter().map(|user| (user.username.clone(), user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> ManagedUser {
        ManagedUser::new(Username::new(name).unwrap(), "t")
    }

    fn key(name: &str) -> Username {
        Username::new(name).unwrap()
    }

    #[test]
    fn users_are_found_as_usernames_compare_and_replaced_not_repeated() {
        let mut users = ManagedUsers::default();
        assert_eq!(users.insert(user("Alice")), None);
        assert_eq!(users.insert(user("bob")), None);
        let mut again = user("ALICE");
        again.leaver_runs = 3;
        assert_eq!(users.insert(again).map(|old| old.username.to_string()), Some("Alice".to_string()));
        assert_eq!(users.len(), 2);
        assert_eq!((users[&key("alice")].username.as_str(), users[&key("alice")].leaver_runs), ("ALICE", 3));
        assert!(users.contains_key(&key("BOB")) && !users.contains_key(&key("carol")));
        users.get_mut(&key("Bob")).unwrap().deactivated = true;
        assert!(users[&key("bob")].deactivated);
    }

    #[test]
    fn a_record_is_made_only_when_there_is_none() {
        let mut users: ManagedUsers = ["a", "b"].iter().map(|n| (key(n), user(n))).collect();
        users.get_or_insert_with(&key("A"), || panic!("a is there")).leaver_runs = 3;
        assert_eq!(users[&key("a")].leaver_runs, 3);
        users.get_or_insert_with(&key("c"), || user("C")).leaver_runs = 1;
        assert_eq!((users.len(), users[&key("c")].leaver_runs, users[&key("c")].username.as_str()), (3, 1, "C"));
        assert_eq!(users[&key("b")].leaver_runs, 0, "the others untouched");
    }

    #[test]
    fn a_removal_leaves_every_other_user_found() {
        // Every position removed in turn, from a table grown past its first capacity.
        let names: Vec<String> = (0..40).map(|n| format!("user{n}")).collect();
        for removed in &names {
            let mut users: ManagedUsers = names.iter().map(|n| (key(n), user(n))).collect();
            assert_eq!(users.remove(&key(removed)).map(|u| u.username.to_string()), Some(removed.clone()));
            assert_eq!(users.remove(&key(removed)), None);
            assert_eq!(users.len(), names.len() - 1);
            for name in names.iter().filter(|n| *n != removed) {
                assert_eq!(users.get(&key(name)).map(|u| u.username.as_str()), Some(name.as_str()), "{removed}");
            }
            assert!(users.get(&key(removed)).is_none());
        }
    }

    #[test]
    fn equal_whatever_the_order_and_unequal_on_any_field() {
        let a: ManagedUsers = ["a", "b", "c"].iter().map(|n| (key(n), user(n))).collect();
        let b: ManagedUsers = ["c", "a", "b"].iter().map(|n| (key(n), user(n))).collect();
        assert_eq!(a, b);
        let mut c = b.clone();
        c.get_mut(&key("b")).unwrap().id = Some(7);
        assert_ne!(a, c);
        let mut d = b.clone();
        d.remove(&key("c"));
        d.insert(user("d"));
        assert_ne!(a, d);
        let sorted = |u: &ManagedUsers| {
            let mut names: Vec<_> =
                u.clone().into_iter().map(|(k, v)| (k.to_string(), v.username.to_string())).collect();
            names.sort();
            names
        };
        assert_eq!(sorted(&a), [("a", "a"), ("b", "b"), ("c", "c")].map(|(k, v)| (k.to_string(), v.to_string())));
    }

    #[test]
    fn the_vector_grows_by_an_eighth_once_full() {
        let mut users = ManagedUsers::with_capacity(160);
        (0..160).for_each(|n| _ = users.insert(user(&format!("u{n}"))));
        assert_eq!(users.records.capacity(), 160);
        users.insert(user("one more"));
        assert_eq!(users.records.capacity(), 180, "160 + 160 / 8, not 320");
    }
}

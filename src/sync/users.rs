//! CloudShell's users for a run: listed in full, or, in the daemon's change runs, the list the last run that
//! ended `ok` left, brought up to date one user at a time.
//!
//! A kept list is trusted only for what this program itself knows: the users the last run sent a change for
//! (activation, group membership) are read again by id before it is used, and the members the plan finds
//! missing and the imports' answers do not name are looked up by name after the imports. What someone changes
//! in CloudShell by hand (a user deleted, taken out of a group) is seen at the next full read, which lists every
//! user again.
//! Where more users would be read one by one than a full list has pages, the list is read in full instead.
//! After the imports, the users they created are known from CloudShell's answers, which carry their records:
//! only the members still not in the list are read again.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use rustc_hash::FxHashMap;

use crate::cloudshell::{self, Client, User};
use crate::sync::changes::KeptUsers;
use crate::username::{SharedNames, Username};

/// CloudShell's users as this run knows them.
pub struct Users {
    pub list: Vec<User>,
    /// Whether `list` is the last run's, brought up to date (`false`: listed in full by this run).
    pub kept: bool,
    /// The users read one by one so far.
    pub lookups: usize,
}

impl Users {
    pub fn listed(list: Vec<User>) -> Users {
        Users { list, kept: false, lookups: 0 }
    }
}

/// Whether reading `lookups` users one by one costs more requests than listing `users` users in full.
fn list_instead(lookups: usize, users: usize) -> bool {
    lookups > users / cloudshell::PAGE_LIMIT + 1
}

/// The run's users: listed in full (their names shared with the directory read's through `names`, let go once
/// listed), or `kept` with the users in `kept.stale` and `also` (ids, for example those of changes whose outcome
/// is not yet known) read again.
pub async fn read(
    client: &Client,
    kept: Option<KeptUsers>,
    also: &[i64],
    concurrency: usize,
    names: Option<Arc<SharedNames>>,
) -> Result<Users, cloudshell::Error> {
    let Some(KeptUsers { users, mut stale }) = kept else {
        return Ok(Users::listed(client.list_users_sharing(names.as_deref()).await?));
    };
    stale.extend_from_slice(also);
    stale.sort_unstable();
    stale.dedup();
    if list_instead(stale.len(), users.len()) {
        return Ok(Users::listed(client.list_users_sharing(names.as_deref()).await?));
    }
    drop(names); // a kept list shares nothing
    let mut users = Users { list: users, kept: true, lookups: 0 };
    refresh(client, &mut users, stale, concurrency).await?;
    Ok(users)
}

/// Reads users `ids` again (`GET /api/v1/users/{id}`, `concurrency` at a time) into `users`: each replaces its
/// record, and one CloudShell no longer has leaves the list.
async fn refresh(
    client: &Client,
    users: &mut Users,
    ids: Vec<i64>,
    concurrency: usize,
) -> Result<(), cloudshell::Error> {
    users.lookups += ids.len();
    let read: Vec<(i64, Option<User>)> = futures_util::stream::iter(ids)
        .map(|id| async move { client.get_user(id).await.map(|u| (id, u)) })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let gone: rustc_hash::FxHashSet<i64> = read.iter().filter(|(_, u)| u.is_none()).map(|(id, _)| *id).collect();
    if !gone.is_empty() {
        users.list.retain(|u| !u.id.is_some_and(|id| gone.contains(&id)));
    }
    merge(&mut users.list, read.into_iter().filter_map(|(_, u)| u).collect());
    Ok(())
}

/// Looks up `names` by name in a kept list (nothing for a listed one), or lists every user again when that is
/// cheaper. Answers how many of them CloudShell has.
pub async fn look_up(
    client: &Client,
    users: &mut Users,
    names: Vec<Username>,
    concurrency: usize,
) -> Result<usize, cloudshell::Error> {
    if !users.kept {
        return Ok(0);
    }
    find(client, users, names, concurrency).await
}

/// Looks `names` up by name (`concurrency` at a time) into `users`, or lists every user again when that costs
/// fewer requests. Answers how many of them CloudShell has.
pub async fn find(
    client: &Client,
    users: &mut Users,
    names: Vec<Username>,
    concurrency: usize,
) -> Result<usize, cloudshell::Error> {
    if names.is_empty() {
        return Ok(0);
    }
    if list_instead(users.lookups + names.len(), users.list.len()) {
        *users = Users::listed(client.list_users().await?);
        let wanted: rustc_hash::FxHashSet<&str> = names.iter().map(Username::folded).collect();
        return Ok(users
            .list
            .iter()
            .filter(|u| u.username.as_ref().is_some_and(|n| wanted.contains(n.folded())))
            .count());
    }
    users.lookups += names.len();
    let found: Vec<Option<User>> = futures_util::stream::iter(names)
        .map(|name| async move { client.find_user(name.as_str()).await })
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    let found: Vec<User> = found.into_iter().flatten().collect();
    let count = found.len();
    merge(&mut users.list, found);
    Ok(count)
}

/// Puts `records` CloudShell answered with in this run (the users its imports created) into `users`, the last
/// of two with one id; one without an id or a name is left out, so that the user is read again.
pub fn add(users: &mut Users, mut records: Vec<User>) {
    let mut seen = rustc_hash::FxHashSet::default();
    records.reverse();
    records.retain(|u| u.username.is_some() && u.id.is_some_and(|id| seen.insert(id)));
    records.reverse();
    merge(&mut users.list, records);
}

/// Those of `names` that no user in `users` has.
pub fn not_listed(users: &Users, names: Vec<Username>) -> Vec<Username> {
    if names.is_empty() {
        return names;
    }
    let mut listed = vec![false; names.len()];
    let at: FxHashMap<&str, usize> = names.iter().enumerate().map(|(n, name)| (name.folded(), n)).collect();
    for name in users.list.iter().filter_map(|u| u.username.as_ref()) {
        if let Some(&n) = at.get(name.folded()) {
            listed[n] = true;
        }
    }
    names.into_iter().zip(listed).filter(|(_, listed)| !listed).map(|(name, _)| name).collect()
}

/// Reads again by id, in a kept list, the users of `names` that it holds (nothing for a listed one): before a
/// change read deactivates or removes any of them, what CloudShell says of them now (an admin, a local user,
/// gone) decides, not what it said at the last full read. A user CloudShell no longer has leaves the list.
pub async fn read_again<'a>(
    client: &Client,
    users: &mut Users,
    names: impl Iterator<Item = &'a Username>,
    concurrency: usize,
) -> Result<(), cloudshell::Error> {
    if !users.kept {
        return Ok(());
    }
    let wanted: rustc_hash::FxHashSet<&str> = names.map(Username::folded).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = users
        .list
        .iter()
        .filter(|u| u.username.as_ref().is_some_and(|n| wanted.contains(n.folded())))
        .filter_map(|u| u.id)
        .collect();
    refresh(client, users, ids, concurrency).await
}

/// Puts `fresh` into `list`: in place of the record with the same id, else of the one with the same name,
/// else at the end. One pass over `list`, indexing only the few fresh records (a kept list is 100,000 long).
fn merge(list: &mut Vec<User>, fresh: Vec<User>) {
    if fresh.is_empty() {
        return;
    }
    let by_id: FxHashMap<i64, usize> = fresh.iter().enumerate().filter_map(|(n, u)| Some((u.id?, n))).collect();
    let by_name: FxHashMap<&str, usize> =
        fresh.iter().enumerate().filter_map(|(n, u)| Some((u.username.as_ref()?.folded(), n))).collect();
    // Where each fresh record goes: the list's record with its id, else the one with its name.
    let (mut by_id_at, mut by_name_at) = (vec![None; fresh.len()], vec![None; fresh.len()]);
    for (at, u) in list.iter().enumerate() {
        if let Some(&n) = u.id.as_ref().and_then(|id| by_id.get(id)) {
            by_id_at[n] = Some(at);
        }
        if let Some(&n) = u.username.as_ref().and_then(|name| by_name.get(name.folded())) {
            by_name_at[n] = Some(at);
        }
    }
    let places: Vec<Option<usize>> = by_id_at.into_iter().zip(by_name_at).map(|(id, name)| id.or(name)).collect();
    // Room made once, and by at least the room for new hires: grown by doubling a push at a time, a kept list
    // of 100,000 users was copied whole into one of twice its size for a day of new hires.
    let added = places.iter().filter(|at| at.is_none()).count();
    if list.capacity() - list.len() < added {
        list.reserve_exact(added.max(crate::room_for_new_hires(list.len())));
    }
    for (user, at) in fresh.into_iter().zip(places) {
        match at {
            Some(at) => list[at] = user,
            None => list.push(user),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, name: &str, active: bool) -> User {
        User {
            id: Some(id),
            username: Username::new(name),
            is_active: Some(active),
            is_admin: Some(false),
            domain_name: None,
            group_ids: None,
        }
    }

    /// A kept list with no room left grows by a sixty-fourth for a few new users, not to twice its size (a
    /// copy of 100,000 users, held beside them); the control: with room enough, it does not grow at all.
    #[test]
    fn a_full_list_grows_by_a_sixty_fourth_for_a_few_new_users() {
        let mut list: Vec<User> = (0..6_400).map(|n| user(n, &format!("u{n}"), true)).collect();
        list.shrink_to_fit();
        merge(&mut list, vec![user(10_000, "new1", true), user(10_001, "new2", true), user(5, "u5", false)]);
        assert_eq!(list.len(), 6_402);
        assert_eq!(list.capacity(), 6_500, "grown by 100, not doubled");
        merge(&mut list, vec![user(10_002, "new3", true)]);
        assert_eq!(list.capacity(), 6_500, "the control: room enough, no growth");
    }

    #[test]
    fn a_fresh_record_replaces_the_one_with_its_id_or_name_else_is_added() {
        let mut list = vec![user(1, "ann", true), user(2, "bob", true)];
        merge(&mut list, vec![user(1, "ann", false), user(7, "BOB", true), user(3, "cy", true)]);
        let seen: Vec<(i64, &str, bool)> =
            list.iter().map(|u| (u.id.unwrap(), u.username.as_ref().unwrap().as_str(), u.is_active.unwrap())).collect();
        assert_eq!(seen, [(1, "ann", false), (7, "BOB", true), (3, "cy", true)]);
    }

    #[test]
    fn records_an_import_answered_with_are_added_and_only_the_others_are_left_to_read() {
        let mut users = Users::listed(vec![user(1, "ann", true)]);
        let no_id = User { id: None, ..user(0, "dan", true) };
        add(&mut users, vec![user(2, "Bob", true), no_id]);
        let names = ["ANN", "bob", "cy", "dan"].map(|n| Username::new(n).unwrap()).to_vec();
        let left: Vec<String> = not_listed(&users, names).iter().map(ToString::to_string).collect();
        assert_eq!(left, ["cy", "dan"], "a record without an id is read again");
        assert_eq!(users.list.len(), 2);
        // Two answers naming one new user: one record, the later.
        add(&mut users, vec![user(3, "cy", true), user(3, "cy", false)]);
        assert_eq!(users.list.len(), 3);
        assert_eq!(users.list[2].is_active, Some(false));
    }

    #[test]
    fn reading_more_users_one_by_one_than_a_list_has_pages_lists_them_instead() {
        assert!(!list_instead(0, 0));
        assert!(!list_instead(1, 0), "one lookup costs what a one-page list does");
        assert!(list_instead(2, 0));
        assert!(!list_instead(401, 100_000));
        assert!(list_instead(402, 100_000));
    }
}

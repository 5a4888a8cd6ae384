//! The daily budgets: how many deactivations (`sync.leavers.max_per_day`, `max_percent_per_day`) and removals
//! from CloudShell groups (`sync.max_removals_per_day`) any 24 hours may hold, so that a departure spread over
//! several runs, each under its per-run limit, is still held.
//!
//! What was done is this program's own record: the audit trail in `state.db`, read through the run's
//! [`Journal`] (`count_last_day`: the calls that took effect in the last 24 hours, and those whose outcome is not
//! known yet). Deactivations by the leaver step and by the disabled-account step share one budget; the step
//! that runs second counts the first one's deactivations of the same run. Without a state directory there is
//! no record, and only the per-run limits hold.
//!
//! The decisions here are pure ([`deactivation_limit`], [`held`], [`managed_active`]); the plans that hold
//! (`leavers`, `disabled`, `membership`) call them, all-or-nothing per run like the per-run limits. [`left`]
//! reads what is left of each budget at the end of a run, for the report and the status file.

// Keys are usernames from this run's own reads: FxHash (a million memberships hashed a run) is enough.
use rustc_hash::FxHashSet as HashSet;

use crate::cloudshell;
use crate::config::{Config, LeaverAction, LeaverPolicy};
use crate::report::{Budget, Budgets};
use crate::state::db::Action;
use crate::state::{Changes, Managed};
use crate::sync::journal::Journal;
use crate::sync::plan::Plan;
use crate::username::Username;

/// A daily budget in force: its limit and the key that sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyLimit {
    pub limit: usize,
    /// The key, as written in its table (`max_per_day`, `max_percent_per_day`, `max_removals_per_day`).
    pub key: &'static str,
}

/// Why a run's changes are held by a daily budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyHeld {
    /// Changes this run would make.
    pub planned: usize,
    /// Changes made in the last 24 hours.
    pub last_24h: usize,
    pub limit: usize,
    pub key: &'static str,
}

/// The deactivation budget for `active` managed users active in CloudShell now: the lower of `max_per_day`
/// and `max_percent_per_day` percent of them (rounded down), with the key that sets it.
pub fn deactivation_limit(policy: &LeaverPolicy, active: usize) -> DailyLimit {
    let percent = active.saturating_mul(usize::from(policy.max_percent_per_day)) / 100;
    if percent < policy.max_per_day {
        DailyLimit { limit: percent, key: "max_percent_per_day" }
    } else {
        DailyLimit { limit: policy.max_per_day, key: "max_per_day" }
    }
}

/// The removal budget.
pub fn removal_limit(max_removals_per_day: usize) -> DailyLimit {
    DailyLimit { limit: max_removals_per_day, key: "max_removals_per_day" }
}

/// Whether `planned` changes on top of `last_24h` take the last 24 hours past `daily`: then all of them are
/// held. A run with nothing to do is never held, whatever the count.
pub fn held(planned: usize, last_24h: usize, daily: DailyLimit) -> Option<DailyHeld> {
    (planned > 0 && last_24h.saturating_add(planned) > daily.limit).then_some(DailyHeld {
        planned,
        last_24h,
        limit: daily.limit,
        key: daily.key,
    })
}

/// The managed users active in CloudShell now, the percentage's denominator: the users of `managed` (not
/// deactivated by this program, this run's deactivations included) and `members` (the effective members seen
/// in this run, whom this run makes managed) whose CloudShell user is active. Each username once.
pub fn managed_active(
    managed: &Managed,
    changes: &Changes,
    members: &HashSet<&Username>,
    users: &[cloudshell::User],
) -> usize {
    let deactivated: HashSet<&Username> = managed
        .users
        .iter()
        .filter(|(k, _)| !changes.contains_key(k))
        .chain(changes.iter())
        .filter(|(_, e)| e.deactivated)
        .map(|(k, _)| k)
        .collect();
    let mut counted: HashSet<&Username> = HashSet::with_capacity_and_hasher(users.len(), Default::default());
    users
        .iter()
        .filter(|u| u.is_active == Some(true))
        .filter_map(|u| u.username.as_ref())
        .filter(|name| {
            (managed.users.contains_key(name) || changes.contains_key(name) || members.contains(name))
                && !deactivated.contains(name)
        })
        .filter(|name| counted.insert(name))
        .count()
}

/// What is left of each daily budget after the run, for the report: deactivations when a step deactivates
/// (`action = "deactivate"`, or the disabled-account step), removals with `remove_from_groups`. `None`
/// without a state directory (no record) or when neither applies. A count that cannot be read is logged and
/// left out.
pub fn left(
    config: &Config,
    journal: &Journal,
    deactivating: Option<(&Managed, &HashSet<&Username>)>,
    users: &[cloudshell::User],
) -> Option<Budgets> {
    let active = deactivating.map(|(managed, members)| managed_active(managed, &Changes::new(), members, users));
    left_known(config, journal, active)
}

/// [`left`], with the managed users active in CloudShell already counted (`None`: no step deactivates).
pub fn left_known(config: &Config, journal: &Journal, managed_active: Option<usize>) -> Option<Budgets> {
    let count = |action: Action| {
        journal
            .count_last_day(action)
            .inspect_err(|e| tracing::error!(error = %e, action = action.as_str(), "daily budget unreadable"))
            .ok()
    };
    let deactivations = managed_active.and_then(|active| {
        let daily = deactivation_limit(&config.sync.leavers, active);
        let used = count(Action::Deactivated)?;
        Some(budget(used, daily, "sync.leavers", Some(active)))
    });
    let removals = if config.sync.remove_from_groups && !config.sync.mappings.is_empty() {
        count(Action::RemovedFromGroup)
            .map(|used| budget(used, removal_limit(config.sync.max_removals_per_day), "sync", None))
    } else {
        None
    };
    (deactivations.is_some() || removals.is_some()).then_some(Budgets { deactivations, removals })
}

fn budget(used: usize, daily: DailyLimit, table: &str, managed_active: Option<usize>) -> Budget {
    Budget {
        last_24h: used,
        limit: daily.limit,
        left: daily.limit.saturating_sub(used),
        by: format!("{table}.{}", daily.key),
        managed_active,
    }
}

/// The effective members of every configured group read in this run.
pub fn members(plan: &Plan) -> HashSet<&Username> {
    // Sized once: a hundred thousand members must not rehash their way up.
    let mut members = HashSet::with_capacity_and_hasher(plan.distinct.len(), Default::default());
    members.extend(plan.distinct.iter().map(|m| &m.username));
    members
}

/// Whether a run's steps may deactivate: the leaver step with `action = "deactivate"`, or the disabled-account
/// step.
pub fn deactivates(config: &Config, disabled_step: bool) -> bool {
    disabled_step || config.sync.leavers.action == LeaverAction::Deactivate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_per_day: usize, max_percent_per_day: u8) -> LeaverPolicy {
        LeaverPolicy { max_per_day, max_percent_per_day, ..LeaverPolicy::for_tests(LeaverAction::Deactivate, &[]) }
    }

    fn user(id: i64, name: &str, active: bool) -> cloudshell::User {
        cloudshell::User {
            id: Some(id),
            username: Username::new(name),
            is_active: Some(active),
            is_admin: Some(false),
            domain_name: Some("EXAMPLE".into()),
            group_ids: None,
        }
    }

    #[test]
    fn the_deactivation_limit_is_the_lower_of_the_count_and_the_percentage_rounded_down() {
        assert_eq!(deactivation_limit(&policy(100, 20), 1000), DailyLimit { limit: 100, key: "max_per_day" });
        assert_eq!(deactivation_limit(&policy(100, 20), 499), DailyLimit { limit: 99, key: "max_percent_per_day" });
        assert_eq!(deactivation_limit(&policy(100, 20), 500), DailyLimit { limit: 100, key: "max_per_day" });
        assert_eq!(deactivation_limit(&policy(100, 20), 4).limit, 0, "20 % of 4 is 0.8: nobody");
        assert_eq!(deactivation_limit(&policy(0, 100), 50), DailyLimit { limit: 0, key: "max_per_day" });
    }

    #[test]
    fn a_run_is_held_when_it_would_take_the_last_24_hours_past_the_limit_and_never_with_nothing_to_do() {
        let daily = DailyLimit { limit: 10, key: "max_per_day" };
        assert_eq!(held(3, 7, daily), None, "exactly the limit is allowed");
        assert_eq!(held(4, 7, daily), Some(DailyHeld { planned: 4, last_24h: 7, limit: 10, key: "max_per_day" }));
        assert_eq!(held(11, 0, daily).map(|h| h.planned), Some(11), "one run alone");
        assert_eq!(held(0, 50, daily), None, "nothing planned: nothing to hold");
        assert_eq!(held(1, usize::MAX, daily).map(|h| h.last_24h), Some(usize::MAX), "no overflow");
    }

    #[test]
    fn the_denominator_is_the_managed_users_and_members_active_in_cloudshell_and_not_deactivated() {
        let mut managed = Managed::default();
        for name in ["alice", "bob", "carol", "dora"] {
            managed.seen(&Username::new(name).unwrap(), None, "t");
        }
        managed.users.get_mut(&Username::new("dora").unwrap()).unwrap().deactivated = true; // earlier this run
        let users = [
            user(1, "Alice", true),
            user(2, "bob", false),
            user(3, "carol", true),
            user(4, "dora", true),
            user(5, "erin", true),
            user(6, "handmade", true),
        ];
        let erin = Username::new("erin").unwrap();
        let members = HashSet::from_iter([&erin]);
        assert_eq!(
            managed_active(&managed, &Changes::new(), &members, &users),
            3,
            "alice, carol and erin: bob is inactive"
        );
        assert_eq!(managed_active(&managed, &Changes::new(), &HashSet::default(), &users), 2);
    }
}

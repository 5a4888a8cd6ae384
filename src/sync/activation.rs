//! Deactivating and reactivating CloudShell users, shared by the leaver step (`super::leave`) and the
//! disabled-account step (`super::disabled`): the one rule for who is never touched ([`protection`]). Who to
//! change is each step's own pure decision.

use crate::cloudshell;
use crate::config::LeaverPolicy;

/// A CloudShell user to deactivate or reactivate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub username: String,
    pub id: i64,
}

/// Why `user` must be left alone, if so: an administrator, a local user (see [`cloudshell::User::is_local`]),
/// or a match of `sync.leavers.protect`, in that order; the reason is the one the report and the logs give.
/// `username` is the name as the directory writes it, which the patterns are matched against; `protect` is
/// `None` where the patterns do not apply (removals from CloudShell groups, which touch no account).
pub fn protection(user: &cloudshell::User, username: &str, protect: Option<&LeaverPolicy>) -> Option<&'static str> {
    if user.is_admin {
        Some("an administrator")
    } else if user.is_local() {
        Some("a local user")
    } else if protect.is_some_and(|p| p.protects(username)) {
        Some("sync.leavers.protect")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LeaverAction;

    fn policy(protect: &[&str]) -> LeaverPolicy {
        let mut set = globset::GlobSetBuilder::new();
        for p in protect {
            set.add(globset::GlobBuilder::new(p).case_insensitive(true).build().unwrap());
        }
        LeaverPolicy {
            action: LeaverAction::Deactivate,
            grace_runs: 1,
            max_per_run: 0,
            max_percent: 0,
            protect_patterns: protect.iter().map(|p| p.to_string()).collect(),
            protect: set.build().unwrap(),
            reactivate: true,
        }
    }

    fn user(name: &str, admin: bool, domain: Option<&str>) -> cloudshell::User {
        cloudshell::User {
            id: Some(1),
            username: name.into(),
            is_active: true,
            is_admin: admin,
            domain_name: domain.map(Into::into),
            group_ids: None,
        }
    }

    #[test]
    fn admins_then_local_users_then_protect_matches_are_left_alone() {
        let pol = policy(&["svc-*"]);
        for (user, protect, expected) in [
            (user("alice", false, Some("EXAMPLE")), Some(&pol), None),
            (user("svc-a", true, None), Some(&pol), Some("an administrator")),
            (user("svc-a", false, Some(" ")), Some(&pol), Some("a local user")),
            (user("SVC-a", false, Some("EXAMPLE")), Some(&pol), Some("sync.leavers.protect")),
            (user("svc-a", false, Some("EXAMPLE")), None, None),
            (user("boss", true, Some("EXAMPLE")), None, Some("an administrator")),
        ] {
            assert_eq!(protection(&user, &user.username, protect), expected, "{user:?}");
        }
    }
}

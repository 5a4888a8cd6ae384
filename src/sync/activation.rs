//! Deactivating and reactivating CloudShell users, shared by the leaver step (`super::leave`) and the
//! disabled-account step (`super::disabled`): the one rule for who is never touched ([`protection`]), the one
//! routine that changes users' `IsActive` ([`activate`]), and the one rule for the step's status after it
//! ([`Activation::status`]). Who to change is each step's own pure decision; what a change means for the
//! managed users is each step's own record.

use tokio_util::sync::CancellationToken;

use crate::cloudshell::{self, Client, SetActive};
use crate::config::LeaverPolicy;
use crate::report::{Failure, GroupStatus};
use crate::state::db::{self, Intent, Outcome, Settlement};
use crate::sync::journal::Journal;
use crate::username::Username;

/// A CloudShell user to deactivate or reactivate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub username: Username,
    pub id: i64,
}

/// Why `user` must be left alone, if so: an administrator, a user whose `IsAdmin` or `IsActive` CloudShell did
/// not say (missing or not a boolean: what the program would change rests on what it could not read), a local
/// user (see [`cloudshell::User::is_local`]), or a match of `sync.leavers.protect`, in that order; the reason is
/// the one the report and the logs give.
/// `username` is the name as the directory writes it, which the patterns are matched against; `protect` is
/// `None` where the patterns do not apply (removals from CloudShell groups, which touch no account).
pub fn protection(user: &cloudshell::User, username: &str, protect: Option<&LeaverPolicy>) -> Option<&'static str> {
    if user.is_admin == Some(true) {
        Some("an administrator")
    } else if user.is_admin.is_none() {
        Some(IS_ADMIN_UNKNOWN)
    } else if user.is_active.is_none() {
        Some(IS_ACTIVE_UNKNOWN)
    } else if user.is_local() {
        Some("a local user")
    } else if protect.is_some_and(|p| p.protects(username)) {
        Some("sync.leavers.protect")
    } else {
        None
    }
}

/// Why a user is left alone whose `IsAdmin` CloudShell did not say.
pub const IS_ADMIN_UNKNOWN: &str = "IsAdmin unknown in CloudShell";
/// Why a user is left alone whose `IsActive` CloudShell did not say.
pub const IS_ACTIVE_UNKNOWN: &str = "IsActive unknown in CloudShell";
/// Why a user found already inactive when about to be deactivated is left so, and not recorded as deactivated
/// by this program (an administrator's decision, which this program must not undo later).
pub const ALREADY_INACTIVE: &str = "already inactive: not deactivated by this program";

/// Why a user this program deactivated, entitled again, is not reactivated: the name is another CloudShell
/// account now (deleted and created again, perhaps deactivated on purpose by an administrator).
pub const ANOTHER_ACCOUNT: &str = "another CloudShell account than the one this program deactivated (a new id)";
/// ... or the id this program deactivated was never recorded, so that the account cannot be told apart.
pub const NO_ID_RECORDED: &str = "the CloudShell id this program deactivated is not recorded";

/// What to do about a user this program deactivated who is entitled again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Returning {
    /// Active already (by whoever): the record of the deactivation ends.
    Active,
    /// The same account, inactive: reactivate it (this id).
    Reactivate(i64),
    /// Not the account this program deactivated: left alone, and the record of the deactivation ends (it was
    /// of another account); why, for the report.
    Another(&'static str),
    /// Left alone this run, the record kept: why (what CloudShell did not say).
    Unknown(&'static str),
}

/// [`Returning`] for `user` as CloudShell lists it now, `recorded` the id this program deactivated. Only that
/// same id is ever reactivated.
pub fn returning(user: &cloudshell::User, recorded: Option<i64>) -> Returning {
    if user.is_active == Some(true) {
        return Returning::Active;
    }
    let Some(id) = user.id else { return Returning::Unknown("Id unknown in CloudShell") };
    match recorded {
        None => return Returning::Another(NO_ID_RECORDED),
        Some(then) if then != id => return Returning::Another(ANOTHER_ACCOUNT),
        Some(_) => {}
    }
    match (user.is_admin, user.is_active) {
        (None, _) => Returning::Unknown(IS_ADMIN_UNKNOWN),
        (_, None) => Returning::Unknown(IS_ACTIVE_UNKNOWN),
        _ => Returning::Reactivate(id),
    }
}

/// Why a step changes users: logged as `reason` with each change, and recorded in the audit trail.
pub struct Reasons<'a> {
    pub deactivate: &'static str,
    pub reactivate: &'static str,
    /// Why this user is changed (made active when `true`), in words, for the audit trail.
    pub audit: &'a (dyn Fn(&Target, bool) -> String + Sync),
    /// The deactivations are of accounts disabled in the directory (recorded so, for the step that undoes them).
    pub disabled_in_directory: bool,
}

/// What became of a step's changes.
#[derive(Debug, Default)]
pub struct Activation {
    /// Made inactive, in the order asked.
    pub deactivated: Vec<Target>,
    /// Made active again, in the order asked.
    pub reactivated: Vec<Target>,
    /// Left as they were, with why: read already inactive when about to be deactivated (not recorded as
    /// deactivated by this program), or read with no `IsActive`.
    pub left_alone: Vec<(Target, &'static str)>,
    /// The changes that failed, with the reason for the report.
    pub failures: Vec<Failure>,
    /// Asked to stop before every change was tried.
    pub stopped: bool,
}

impl Activation {
    /// The step's status after its changes, given its status before them (`ok`, or `held` when its
    /// deactivations were held and only reactivations were tried):
    /// - `skipped` when the run was asked to stop before every change was tried;
    /// - else, with failures and an `ok` step: `failed` when none of its changes took effect, `partial` when
    ///   some did (a user gone from CloudShell counts as neither), the rule of a group's line in the report
    ///   (`GroupReport::enumerated`, `MembershipReport::settle`);
    /// - else the status before.
    ///
    /// A step whose changes to the managed users could not be saved is then `failed` whatever this says
    /// ([`super::ledger::Ledger::save`]).
    pub fn status(&self, before: GroupStatus) -> GroupStatus {
        if self.stopped {
            GroupStatus::Skipped
        } else if self.failures.is_empty() || before != GroupStatus::Ok {
            before
        } else if self.deactivated.is_empty() && self.reactivated.is_empty() {
            GroupStatus::Failed
        } else {
            GroupStatus::Partial
        }
    }

    /// The users each change took effect for, each with whether it is now active.
    pub fn changed(&self) -> impl Iterator<Item = (&Target, bool)> {
        let deactivated = self.deactivated.iter().map(|t| (t, false));
        deactivated.chain(self.reactivated.iter().map(|t| (t, true)))
    }

    /// The usernames of `targets`, for the report.
    pub fn usernames(targets: &[Target]) -> Vec<String> {
        targets.iter().map(|t| t.username.to_string()).collect()
    }
}

/// Deactivates `deactivate`, then reactivates `reactivate`, one call after the other (read-modify-write),
/// logging each outcome with `reasons`. Checks `stop` before each call and makes no more once it is set.
///
/// With a `journal`, each call is recorded as intended before it is sent (a call whose intent cannot be
/// recorded is not sent) and its outcome after; an outcome not known (the answer lost) is left for the next
/// run to read back.
pub async fn activate(
    client: &Client,
    deactivate: &[Target],
    reactivate: &[Target],
    reasons: &Reasons<'_>,
    journal: Option<&Journal>,
    stop: &CancellationToken,
) -> Activation {
    let mut done = Activation::default();
    for (targets, active) in [(deactivate, false), (reactivate, true)] {
        for t in targets {
            if stop.is_cancelled() {
                done.stopped = true;
                return done;
            }
            match change_recorded(client, t, active, reasons, journal).await {
                Change::Done if active => done.reactivated.push(t.clone()),
                Change::Done => done.deactivated.push(t.clone()),
                Change::LeftAlone(why) => done.left_alone.push((t.clone(), why)),
                Change::Gone => {}
                Change::Failed { reason, .. } => done.failures.push(Failure { username: t.username.clone(), reason }),
            }
        }
    }
    done
}

/// What became of one activation change.
enum Change {
    Done,
    /// Read already so when about to be deactivated, or with no `IsActive`: nothing sent, with why.
    LeftAlone(&'static str),
    /// The user is no longer in CloudShell.
    Gone,
    Failed {
        /// For the report.
        reason: String,
        /// The answer was lost: it may have taken effect.
        unknown: bool,
    },
}

/// [`change_active`], recorded in `journal` (when given): the intent before the call, the outcome after.
async fn change_recorded(
    client: &Client,
    t: &Target,
    active: bool,
    reasons: &Reasons<'_>,
    journal: Option<&Journal>,
) -> Change {
    let reason = if active { reasons.reactivate } else { reasons.deactivate };
    let Some(journal) = journal else {
        return change_active(client, t, active, reason).await;
    };
    let change = if active {
        db::Change::Reactivate
    } else {
        db::Change::Deactivate { disabled_in_directory: reasons.disabled_in_directory }
    };
    let intent =
        Intent { change, username: t.username.clone(), cloudshell_id: t.id, reason: (reasons.audit)(t, active) };
    let id = match journal.intend(std::slice::from_ref(&intent)) {
        Ok(ids) => ids.first().copied().unwrap_or_default(),
        Err(e) => {
            tracing::error!(username = %t.username, error = %e, "change not sent: its intent could not be recorded");
            let reason = format!("not sent: its intent could not be recorded: {e}");
            return Change::Failed { reason, unknown: false };
        }
    };
    let mut change = change_active(client, t, active, reason).await;
    let (outcome, result) = match &mut change {
        Change::Done => (Outcome::Done, "ok".to_string()),
        Change::LeftAlone(why) => (Outcome::LeftAlone, format!("left alone: {why}")),
        Change::Gone => (Outcome::Gone, "no longer in CloudShell".to_string()),
        Change::Failed { reason, unknown: true } => {
            reason.push_str("; the next run reads back whether it took effect");
            (Outcome::Unknown, String::new())
        }
        Change::Failed { reason, unknown: false } => (Outcome::Failed, format!("failed: {reason}")),
    };
    // A failure is logged; the intent then stays, and the next run reads the outcome back.
    let _ = journal.settle(&[Settlement { id, intent: &intent, outcome, result }]);
    change
}

/// Sets one user active or inactive (read-modify-write), logging the outcome with `reason`. A user read
/// already inactive is left so and not taken for this program's deactivation; one read already active is
/// what a reactivation wants (done, so the record of this program's deactivation ends).
async fn change_active(client: &Client, t: &Target, active: bool, reason: &'static str) -> Change {
    match client.set_active(t.id, active).await {
        Ok(SetActive::Changed) if active => {
            tracing::info!(username = %t.username, reason, "user reactivated");
            Change::Done
        }
        Ok(SetActive::Changed) => {
            tracing::info!(username = %t.username, reason, "user deactivated");
            Change::Done
        }
        Ok(SetActive::Already) if active => {
            tracing::info!(username = %t.username, reason, "user already active");
            Change::Done
        }
        Ok(SetActive::Already) => {
            tracing::info!(username = %t.username, reason = ALREADY_INACTIVE, "user left alone");
            Change::LeftAlone(ALREADY_INACTIVE)
        }
        Ok(SetActive::Unknown) => {
            tracing::warn!(username = %t.username, reason = IS_ACTIVE_UNKNOWN, "user left alone");
            Change::LeftAlone(IS_ACTIVE_UNKNOWN)
        }
        Ok(SetActive::Gone) => {
            tracing::info!(username = %t.username, "user no longer in CloudShell");
            Change::Gone
        }
        Err(e) if active => {
            tracing::warn!(username = %t.username, error = %e, "user reactivation failed");
            Change::Failed { reason: format!("reactivation failed: {e}"), unknown: e.may_have_taken_effect() }
        }
        Err(e) => {
            tracing::warn!(username = %t.username, error = %e, "user deactivation failed");
            Change::Failed { reason: format!("deactivation failed: {e}"), unknown: e.may_have_taken_effect() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LeaverAction;

    fn policy(protect: &[&str]) -> LeaverPolicy {
        LeaverPolicy::for_tests(LeaverAction::Deactivate, protect)
    }

    fn user(name: &str, admin: bool, domain: Option<&str>) -> cloudshell::User {
        cloudshell::User {
            id: Some(1),
            username: Username::new(name),
            is_active: Some(true),
            is_admin: Some(admin),
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
            (cloudshell::User { is_admin: None, ..user("a", false, Some("EXAMPLE")) }, None, Some(IS_ADMIN_UNKNOWN)),
            (cloudshell::User { is_active: None, ..user("a", false, Some("EXAMPLE")) }, None, Some(IS_ACTIVE_UNKNOWN)),
            (cloudshell::User { is_admin: None, ..user("a", true, None) }, None, Some(IS_ADMIN_UNKNOWN)),
        ] {
            let name = user.username.as_ref().map_or("", Username::as_str);
            assert_eq!(protection(&user, name, protect), expected, "{user:?}");
        }
    }

    #[test]
    fn only_the_same_account_known_to_be_inactive_is_reactivated() {
        let inactive =
            |id: i64| cloudshell::User { id: Some(id), is_active: Some(false), ..user("a", false, Some("X")) };
        for (user, recorded, expected) in [
            (inactive(7), Some(7), Returning::Reactivate(7)),
            (user("a", false, Some("X")), Some(7), Returning::Active),
            (inactive(8), Some(7), Returning::Another(ANOTHER_ACCOUNT)),
            (inactive(7), None, Returning::Another(NO_ID_RECORDED)),
            (cloudshell::User { is_active: None, ..inactive(7) }, Some(7), Returning::Unknown(IS_ACTIVE_UNKNOWN)),
            (cloudshell::User { is_admin: None, ..inactive(7) }, Some(7), Returning::Unknown(IS_ADMIN_UNKNOWN)),
            (cloudshell::User { id: None, ..inactive(7) }, Some(7), Returning::Unknown("Id unknown in CloudShell")),
        ] {
            assert_eq!(returning(&user, recorded), expected, "{user:?} {recorded:?}");
        }
    }

    #[test]
    fn a_step_fails_when_no_change_took_effect_and_is_partial_when_some_did() {
        use GroupStatus::{Failed, Held, Ok, Partial, Skipped};
        let u = |name: &str| Username::new(name).unwrap();
        let t = |name: &str| Target { username: u(name), id: 1 };
        let failure = || vec![Failure { username: u("x"), reason: "deactivation failed: 503".into() }];
        let outcome = |deactivated: Vec<Target>, reactivated: Vec<Target>, failures, stopped| Activation {
            deactivated,
            reactivated,
            left_alone: Vec::new(),
            failures,
            stopped,
        };
        for (done, before, expected) in [
            (outcome(vec![], vec![], vec![], false), Ok, Ok),
            (outcome(vec![t("a")], vec![], vec![], false), Ok, Ok),
            (outcome(vec![], vec![], failure(), false), Ok, Failed),
            (outcome(vec![t("a")], vec![], failure(), false), Ok, Partial),
            (outcome(vec![], vec![t("a")], failure(), false), Ok, Partial),
            (outcome(vec![], vec![], failure(), false), Held, Held),
            (outcome(vec![], vec![], vec![], false), Held, Held),
            (outcome(vec![t("a")], vec![], failure(), true), Ok, Skipped),
            (outcome(vec![], vec![], vec![], true), Held, Skipped),
        ] {
            assert_eq!(done.status(before), expected, "{done:?} after {before:?}");
        }
    }

    /// A call whose intent cannot be recorded is never sent: the listener standing in for CloudShell is never
    /// connected to. The control: the same call without a journal is sent.
    #[tokio::test]
    async fn a_change_whose_intent_cannot_be_recorded_is_not_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let client = Client::new(cloudshell::Settings::for_tests(&url)).unwrap();
        // A dry run's state: read only, so no intent can be written.
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open_read_only(dir.path(), "r").unwrap();
        let audit = |_: &Target, _: bool| "left".to_string();
        let reasons = Reasons { deactivate: "left", reactivate: "back", audit: &audit, disabled_in_directory: false };
        let bob = [Target { username: Username::new("bob").unwrap(), id: 7 }];
        let stop = CancellationToken::new();

        let done = activate(&client, &bob, &[], &reasons, Some(&journal), &stop).await;
        assert!(done.deactivated.is_empty());
        assert!(done.failures[0].reason.starts_with("not sent: its intent could not be recorded"), "{done:?}");
        assert!(listener.accept().is_err(), "nothing was sent");

        let done = activate(&client, &bob, &[], &reasons, None, &stop).await;
        assert!(!done.failures[0].reason.starts_with("not sent"), "{done:?}");
        assert!(listener.accept().is_ok(), "without a journal the call is made");
    }
}

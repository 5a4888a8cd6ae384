//! The leaver step of a run: loads the managed users, asks [`super::leavers::plan`] who left, deactivates
//! (or only reports) them, reactivates those who came back, and saves the managed users. It acts only on a
//! complete run; an unreadable state file fails this step alone (nothing deactivated), never the imports.

use std::collections::HashSet;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::cloudshell::{self, Client};
use crate::config::{LeaverAction, LeaverPolicy};
use crate::report::{Failure, GroupStatus, LeaverLine, LeaversReport};
use crate::state;
use crate::sync::activation::Target;
use crate::sync::leavers::{self, Seen, Standing};
use crate::sync::plan::{GroupPlan, Plan};
use crate::username::Username;

/// What the step needs of the run.
pub struct Run<'a> {
    pub plan: &'a Plan,
    /// CloudShell's users after this run's imports.
    pub users: &'a [cloudshell::User],
    /// `Err(why)` when the run is not complete: the step is skipped.
    pub complete: Result<(), String>,
    pub state_directory: Option<&'a Path>,
    pub dry_run: bool,
    pub stop: &'a CancellationToken,
}

/// Whether a run that got as far as the imports is complete: every configured group enumerated and not
/// held, and nothing interrupted.
pub fn completeness(plan: &Plan, interrupted: bool) -> Result<(), String> {
    if interrupted {
        return Err("the run was asked to stop".into());
    }
    let incomplete: Vec<&str> = plan
        .groups
        .iter()
        .filter(|g| !matches!(g, GroupPlan::Ready(r) if r.shrink.is_none()))
        .map(|g| g.name())
        .collect();
    match incomplete.as_slice() {
        [] => Ok(()),
        names => Err(format!("not a complete run: {} could not be used (failed or held)", quote(names))),
    }
}

fn quote(names: &[&str]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// Runs the step; `None` with `action = "ignore"`.
pub async fn leaver_step(client: &Client, policy: &LeaverPolicy, run: Run<'_>) -> Option<LeaversReport> {
    if policy.action == LeaverAction::Ignore {
        return None;
    }
    let mut report = LeaversReport::new(policy.action.as_str());
    let skip = |report: &mut LeaversReport, why: String| {
        tracing::info!(reason = %why, "leaver step skipped");
        report.skipped = Some(why);
    };
    let Some(dir) = run.state_directory else {
        skip(&mut report, "no state directory: managed users cannot be tracked".into());
        return Some(report);
    };
    if let Err(why) = run.complete {
        skip(&mut report, format!("{why}; nobody is a leaver in an incomplete run"));
        return Some(report);
    }
    let managed = match state::load_managed(dir) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "state file unreadable");
            report.status = GroupStatus::Failed;
            report.error = Some(format!("leaver step failed, nobody deactivated: {e}"));
            return Some(report);
        }
    };
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let (members, ambiguous) = seen(run.plan);
    let seen = Seen { members, ambiguous, users: run.users, now: &now };
    let planned = leavers::plan(&managed, &seen, policy);
    report.managed = planned.next.users.len();
    for l in &planned.leavers {
        tracing::info!(username = %l.username, runs = l.runs, standing = l.standing.as_str(), "leaver found");
        let reason = match l.standing {
            Standing::Protected(why) => Some(why),
            _ => None,
        };
        report.leavers.push(LeaverLine {
            username: l.username.clone(),
            standing: l.standing.as_str(),
            reason,
            runs: l.runs,
            since: l.since.clone(),
        });
        if l.standing == Standing::Candidate {
            report.candidates.push(l.username.clone());
        }
    }
    if let Some(held) = &planned.held {
        let why = format!("{} to deactivate, more than sync.leavers.{} allows ({})", held.planned, held.by, held.limit);
        if policy.action == LeaverAction::Deactivate {
            tracing::warn!(planned = held.planned, limit = held.limit, by = held.by, "deactivations held");
            report.held = true;
            report.held_by = Some(why);
            report.status = GroupStatus::Held;
        } else {
            // `report` writes nothing, so nothing is held; say what `deactivate` would do.
            report.held_by = Some(format!("with action = \"deactivate\" this would be held: {why}"));
        }
    }
    if run.dry_run {
        if report.status == GroupStatus::Ok && (!planned.deactivate.is_empty() || !planned.reactivate.is_empty()) {
            report.status = GroupStatus::Planned;
        }
        return Some(report);
    }
    let mut next = planned.next;
    if policy.action == LeaverAction::Deactivate {
        for (targets, active) in [(&planned.deactivate, false), (&planned.reactivate, true)] {
            for t in targets {
                if run.stop.is_cancelled() {
                    report.status = GroupStatus::Skipped;
                    break;
                }
                if set(client, t, active, &mut report).await
                    && let Some(entry) = Username::new(&t.username).and_then(|u| next.users.get_mut(u.folded()))
                {
                    entry.deactivated = !active;
                }
            }
        }
    }
    if let Err(e) = state::save_managed(dir, &next) {
        // Deactivations not recorded could not be undone by reactivation: say so loudly.
        tracing::error!(dir = %dir.display(), error = %e, "state file not written");
        report.error = Some(format!("managed users not saved in {}: {e}", dir.display()));
        report.status = GroupStatus::Failed;
    }
    if !report.failures.is_empty() && report.status == GroupStatus::Ok {
        report.status = GroupStatus::Partial;
    }
    Some(report)
}

/// Deactivates or reactivates one user; records the outcome. Says whether it took effect.
async fn set(client: &Client, t: &Target, active: bool, report: &mut LeaversReport) -> bool {
    let reason = if active { "back in the configured groups" } else { "left the configured groups" };
    match change_active(client, t, active, reason).await {
        Change::Done if active => report.reactivated.push(t.username.clone()),
        Change::Done => report.deactivated.push(t.username.clone()),
        Change::Gone => return false,
        Change::Failed(reason) => {
            report.failures.push(Failure { username: t.username.clone(), reason });
            return false;
        }
    }
    true
}

/// What became of one activation change.
pub(super) enum Change {
    Done,
    /// The user is no longer in CloudShell.
    Gone,
    /// The reason, for the report.
    Failed(String),
}

/// Sets one user active or inactive (read-modify-write), logging the outcome with `reason`: the one
/// deactivation path, shared by leavers and disabled accounts.
pub(super) async fn change_active(client: &Client, t: &Target, active: bool, reason: &'static str) -> Change {
    match client.set_active(t.id, active).await {
        Ok(true) if active => {
            tracing::info!(username = %t.username, reason, "user reactivated");
            Change::Done
        }
        Ok(true) => {
            tracing::info!(username = %t.username, reason, "user deactivated");
            Change::Done
        }
        Ok(false) => {
            tracing::info!(username = %t.username, "user no longer in CloudShell");
            Change::Gone
        }
        Err(e) if active => {
            tracing::warn!(username = %t.username, error = %e, "user reactivation failed");
            Change::Failed(format!("reactivation failed: {e}"))
        }
        Err(e) => {
            tracing::warn!(username = %t.username, error = %e, "user deactivation failed");
            Change::Failed(format!("deactivation failed: {e}"))
        }
    }
}

/// The effective members of every configured group, and the usernames left out as ambiguous.
fn seen(plan: &Plan) -> (HashSet<&Username>, HashSet<&Username>) {
    let mut members = HashSet::new();
    let mut ambiguous = HashSet::new();
    for g in &plan.groups {
        if let GroupPlan::Ready(r) = g {
            members.extend(r.group.members.iter().map(|m| &m.username));
            ambiguous.extend(r.collisions.iter().map(|c| &c.username));
        }
    }
    (members, ambiguous)
}

//! One sync cycle: read the directory, list CloudShell's users once, plan, then import group by group.
//!
//! It owns the order of a run and its report; the decision itself is [`plan::plan`] (pure) and the writes
//! are [`apply::apply_group`]. It never writes when the directory could not be read, when the plan is held,
//! or in a dry run.

pub mod apply;
pub mod plan;

use std::collections::HashSet;
use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cloudshell::{CallCounts, Client};
use crate::config::Config;
use crate::report::{Failure, GroupReport, GroupStatus, HeldReport, Report, RunResult, Totals};
use crate::username::Username;
use crate::{ldap, state};
use plan::{GroupPlan, Plan, Policy};

/// A short id that tells runs apart in logs.
fn run_id() -> String {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{:08x}", (nanos as u64 ^ (nanos >> 64) as u64 ^ std::process::id() as u64) & 0xffff_ffff)
}

/// What a run needs besides the configuration.
#[derive(Clone, Default)]
pub struct Context {
    /// Cancelled to ask the run to stop: checked between groups and between calls, never during one.
    pub stop: CancellationToken,
    /// Told about every CloudShell request, for latency metrics.
    pub observer: Option<crate::cloudshell::Observer>,
    /// Where the shrink guard keeps the last good member counts; `None` turns the guard off.
    pub state_directory: Option<std::path::PathBuf>,
}

/// Runs one cycle and reports it. `dry_run` computes and reports the plan and writes nothing.
pub async fn run(config: &Config, dry_run: bool, context: &Context) -> Report {
    let id = run_id();
    let span = tracing::info_span!("run", run_id = %id, dry_run);
    run_in_span(config, dry_run, id, context).instrument(span).await
}

async fn run_in_span(config: &Config, dry_run: bool, run_id: String, context: &Context) -> Report {
    let started = Instant::now();
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut report = Report {
        run_id,
        result: RunResult::Ok,
        dry_run,
        started_at,
        duration_ms: 0,
        directory_ms: 0,
        directory_url: None,
        interrupted: false,
        error: None,
        held: None,
        groups: Vec::new(),
        totals: Totals::default(),
        api_calls: CallCounts::default(),
    };
    tracing::info!(groups = config.sync.groups.len(), "run started");
    let finish = |mut report: Report, client: Option<&Client>| {
        report.duration_ms = started.elapsed().as_millis() as u64;
        if let Some(c) = client {
            report.api_calls = c.calls();
        }
        log_summary(&report);
        report
    };

    // Connect and bind first: an unreachable directory means no call to CloudShell at all.
    let directory_started = Instant::now();
    let connection = match ldap::Connection::open(&config.ldap).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, kind = e.kind(), "directory unavailable");
            report.result = RunResult::Failed;
            report.error = Some(e.to_string());
            return finish(report, None);
        }
    };
    let client = match Client::new(config.cloudshell.clone()) {
        Ok(c) => match &context.observer {
            Some(o) => c.with_observer(o.clone()),
            None => c,
        },
        Err(e) => {
            report.result = RunResult::Failed;
            report.error = Some(e.to_string());
            return finish(report, None);
        }
    };
    // Reading the directory and listing CloudShell's users are independent reads: overlap them.
    let read_directory = async {
        let snapshot = connection.snapshot(&config.sync.groups).await;
        (snapshot, directory_started.elapsed())
    };
    let list_cloudshell = async {
        let mut existing: Vec<Username> = Vec::new();
        client.list_users_with(|u| existing.extend(Username::new(&u.username))).await.map(|()| existing)
    };
    let ((snapshot, directory_time), listed) = tokio::join!(read_directory, list_cloudshell);
    report.directory_ms = directory_time.as_millis() as u64;
    report.directory_url = Some(snapshot.served_by.clone());
    tracing::info!(users = snapshot.users_seen, searches = snapshot.searches, url = %snapshot.served_by, "directory read");
    let failed_groups = snapshot.groups.iter().filter(|g| g.result.is_err()).count();
    if failed_groups == snapshot.groups.len() {
        // Nothing could be read: no write.
        report.result = RunResult::Failed;
        report.error = Some("no configured group could be enumerated".into());
        report.groups = snapshot
            .groups
            .iter()
            .filter_map(|g| g.result.as_ref().err().map(|e| failed_group_report(&g.name, e)))
            .collect();
        for g in &snapshot.groups {
            if let Err(e) = &g.result {
                tracing::error!(group = %g.name, error = %e, kind = e.kind(), "group enumeration failed");
            }
        }
        return finish(report, Some(&client));
    }
    let existing = match listed {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "cloudshell unavailable");
            report.result = RunResult::Failed;
            report.error = Some(e.to_string());
            return finish(report, Some(&client));
        }
    };
    tracing::info!(users = existing.len(), "cloudshell users listed");
    let mut counts = match &context.state_directory {
        None => {
            tracing::info!("shrink guard off: no state directory");
            None
        }
        Some(dir) => match state::load(dir) {
            Ok(c) => Some(c),
            Err(e) => {
                // An unreadable state must not silently disable the guard: hold everything.
                tracing::error!(error = %e, "state file unreadable");
                report.result = RunResult::Failed;
                report.error = Some(e);
                return finish(report, Some(&client));
            }
        },
    };
    let policy = Policy {
        max_imports_per_run: config.sync.max_imports_per_run,
        max_shrink_percent: config.sync.max_shrink_percent,
        last_good: counts.as_ref().map(state::Counts::by_group).unwrap_or_default(),
    };
    let plan = plan::plan(snapshot, &existing, policy);
    drop(existing);
    log_plan(&plan, config.sync.max_shrink_percent);

    if let Some(held) = plan.held {
        tracing::warn!(planned = held.planned, limit = held.limit, "import limit exceeded, writes held");
        report.result = RunResult::Held;
        report.held = Some(HeldReport { planned: held.planned, limit: held.limit });
        report.groups = plan.groups.iter().map(|g| group_report(g, None, GroupStatus::Held)).collect();
        report.totals = totals(&plan, &report.groups);
        return finish(report, Some(&client));
    }

    for g in &plan.groups {
        let applied = match g {
            GroupPlan::Ready(ready) if ready.needs_import() && !dry_run => {
                if context.stop.is_cancelled() {
                    report.interrupted = true;
                    tracing::warn!(group = %ready.name, "group skipped, the run was asked to stop");
                    report.groups.push(group_report(g, None, GroupStatus::Skipped));
                    continue;
                }
                let span = tracing::info_span!("group", run_id = %report.run_id, group = %ready.name);
                let applied =
                    apply::apply_group(&client, ready, config.sync.concurrency, &context.stop).instrument(span).await;
                if applied.not_attempted > 0 {
                    report.interrupted = true;
                }
                Some(applied)
            }
            _ => None,
        };
        let status = if dry_run { GroupStatus::Planned } else { GroupStatus::Ok };
        report.groups.push(group_report(g, applied, status));
    }
    report.totals = totals(&plan, &report.groups);
    let any_failed = report.interrupted
        || report
            .groups
            .iter()
            .any(|g| matches!(g.status, GroupStatus::Failed | GroupStatus::Partial | GroupStatus::Skipped));
    let any_held = report.groups.iter().any(|g| g.status == GroupStatus::Held);
    report.result = if any_held {
        RunResult::Held
    } else if any_failed {
        RunResult::Partial
    } else {
        RunResult::Ok
    };
    if let (Some(counts), Some(dir), false) = (counts.as_mut(), &context.state_directory, dry_run) {
        // Only counts the guard accepted become the new reference.
        for g in &plan.groups {
            if let GroupPlan::Ready(r) = g
                && r.shrink.is_none()
            {
                counts.record(&r.name, r.group.members.len());
            }
        }
        if let Err(e) = state::save(dir, counts) {
            tracing::warn!(dir = %dir.display(), error = %e, "state file not written");
        }
    }
    finish(report, Some(&client))
}

fn failed_group_report(name: &str, e: &ldap::Error) -> GroupReport {
    GroupReport {
        name: name.to_string(),
        status: GroupStatus::Failed,
        members: 0,
        missing: 0,
        imported: 0,
        failed: 0,
        error: Some(e.to_string()),
        error_kind: Some(e.kind()),
        planned: Vec::new(),
        imported_users: Vec::new(),
        failures: Vec::new(),
    }
}

/// A group's report line. `status` is the status of a group that went well (ok, planned or held).
fn group_report(g: &GroupPlan, applied: Option<apply::Applied>, status: GroupStatus) -> GroupReport {
    let ready = match g {
        GroupPlan::Failed { name, error } => return failed_group_report(name, error),
        GroupPlan::Ready(r) => r,
    };
    if let Some(shrink) = ready.shrink {
        return GroupReport {
            error: Some(format!(
                "membership shrank from {} to {} members, more than sync.max_shrink_percent allows: held (if the \
                 directory is right, delete the state file {} to accept it)",
                shrink.previous,
                shrink.now,
                state::FILE_NAME
            )),
            error_kind: Some("shrink_guard"),
            status: GroupStatus::Held,
            name: ready.name.clone(),
            members: ready.group.members.len(),
            missing: ready.missing.len(),
            imported: 0,
            failed: 0,
            planned: Vec::new(),
            imported_users: Vec::new(),
            failures: Vec::new(),
        };
    }
    let mut failures: Vec<Failure> = ready
        .collisions
        .iter()
        .map(|c| Failure {
            username: c.username.to_string(),
            reason: format!(
                "username is ambiguous in the directory: {} entries fold to it ({})",
                c.dns.len(),
                c.dns.join("; ")
            ),
        })
        .collect();
    let applied = applied.unwrap_or_default();
    failures.extend(applied.failures);
    let imported_users: Vec<String> = applied.imported.iter().map(|u| u.to_string()).collect();
    let status = if applied.not_attempted > 0 {
        GroupStatus::Skipped
    } else if failures.is_empty() {
        status
    } else if imported_users.is_empty() && !ready.to_import.is_empty() && status == GroupStatus::Ok {
        GroupStatus::Failed
    } else {
        GroupStatus::Partial
    };
    GroupReport {
        name: ready.name.clone(),
        status,
        members: ready.group.members.len(),
        missing: ready.missing.len(),
        imported: imported_users.len(),
        failed: failures.len(),
        error: None,
        error_kind: None,
        planned: ready.to_import.iter().map(|m| m.username.to_string()).collect(),
        imported_users,
        failures,
    }
}

fn totals(plan: &Plan, groups: &[GroupReport]) -> Totals {
    let mut members: HashSet<&Username> = HashSet::new();
    let mut missing: HashSet<&Username> = HashSet::new();
    for g in &plan.groups {
        if let GroupPlan::Ready(r) = g {
            members.extend(r.group.members.iter().map(|m| &m.username));
            missing.extend(r.missing.iter().map(|m| &m.username));
        }
    }
    Totals {
        members: members.len(),
        missing: missing.len(),
        imported: groups.iter().map(|g| g.imported).sum(),
        failed: groups.iter().map(|g| g.failed).sum(),
    }
}

fn log_plan(plan: &Plan, max_shrink_percent: u8) {
    for g in &plan.groups {
        match g {
            GroupPlan::Failed { name, error } => {
                tracing::error!(group = %name, error = %error, kind = error.kind(), "group enumeration failed")
            }
            GroupPlan::Ready(r) if r.shrink.is_some() => {
                let shrink = r.shrink.expect("matched");
                tracing::warn!(
                    group = %r.name,
                    previous = shrink.previous,
                    members = shrink.now,
                    max_shrink_percent,
                    "group membership shrank, writes held"
                );
            }
            GroupPlan::Ready(r) => {
                for c in &r.collisions {
                    tracing::warn!(group = %r.name, username = %c.username, dns = ?c.dns, "username collision");
                }
                if r.needs_import() {
                    tracing::info!(group = %r.name, members = r.group.members.len(), missing = r.missing.len(), to_import = r.to_import.len(), "group planned");
                } else {
                    tracing::info!(group = %r.name, members = r.group.members.len(), "group up to date");
                }
            }
        }
    }
}

fn log_summary(r: &Report) {
    let result = format!("{:?}", r.result).to_lowercase();
    tracing::info!(
        result = %result,
        groups = r.groups.len(),
        members = r.totals.members,
        missing = r.totals.missing,
        imported = r.totals.imported,
        failed = r.totals.failed,
        import_group_calls = r.api_calls.import_group,
        import_user_calls = r.api_calls.import_user,
        duration_ms = r.duration_ms,
        "run finished"
    );
}

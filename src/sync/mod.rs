//! One sync cycle: read the directory, list CloudShell's users once, plan, then import group by group.
//!
//! This module owns only the order of a run. The decision is [`plan::plan`] (pure), the writes are
//! [`apply::apply_group`], and the report's assembly rules are in [`crate::report`]. It never writes when the
//! directory could not be read, when the plan is held, or in a dry run.

pub mod activation;
pub mod apply;
pub mod budget;
pub mod changes;
pub mod confirm;
pub mod disabled;
pub mod journal;
pub mod leave;
pub mod leavers;
pub mod ledger;
pub mod membership;
pub mod place;
pub mod plan;
pub mod rematch;
pub mod unresolved;
pub mod users;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use tracing::Instrument;

use crate::cloudshell::{CallKind, Client, Observer};
use crate::config::{Config, DisabledAccounts, LeaverAction};
use crate::group_name::GroupName;
use crate::report::{Failure, GroupReport, GroupStatus, HeldReport, Imports, Report};
use crate::stop::Stops;
use crate::username::Username;
use crate::{ldap, state};
use journal::Journal;
use plan::{GroupPlan, Plan, Policy};

/// A short id that tells runs apart in logs.
pub(crate) fn run_id() -> String {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{:08x}", (nanos as u64 ^ (nanos >> 64) as u64 ^ std::process::id() as u64) & 0xffff_ffff)
}

/// What a run needs besides the configuration.
#[derive(Clone, Default)]
pub struct Context {
    /// The stop requests. Whichever is made, the run still ends the normal way, reporting and saving what it
    /// knows; nothing has been written when the reads are given up.
    pub stops: Stops,
    /// Told about every CloudShell request, for latency metrics.
    pub observer: Option<Observer>,
    /// Where the shrink guard keeps the last good member counts; `None` turns the guard off.
    pub state_directory: Option<PathBuf>,
    /// The managed users kept between runs (the daemon's; `None` for a one-shot run).
    pub kept: Option<std::sync::Arc<journal::KeptDatabase>>,
    /// The directory model kept between runs for change reads (the daemon's; `None`: every read is full).
    pub changes: Option<std::sync::Arc<changes::ChangeReads>>,
    /// What started the daemon's run (for the report); `None` for a one-shot run.
    pub trigger: Option<&'static str>,
}

/// [`run`], with a panic (a bug) turned into the report of a failed run, so that it is still recorded.
pub async fn run_caught(config: &Config, dry_run: bool, context: &Context) -> Report {
    caught(dry_run, run(config, dry_run, context)).await
}

/// `run`'s report, or a failed run's report naming the panic that ended it.
pub async fn caught(dry_run: bool, run: impl std::future::Future<Output = Report>) -> Report {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(report) => report,
        Err(panic) => panicked(dry_run, panic.as_ref()),
    }
}

/// The report of a run that panicked: failed, with the panic's message.
pub fn panicked(dry_run: bool, panic: &(dyn std::any::Any + Send)) -> Report {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    let mut report = Report::new(run_id(), dry_run);
    tracing::error!(panic = %message, "run ended by an internal error");
    report.fail(format!("the run ended on an internal error (a bug, please report it): {message}"));
    report
}

/// Runs one cycle and reports it. `dry_run` computes and reports the plan and writes nothing.
pub async fn run(config: &Config, dry_run: bool, context: &Context) -> Report {
    let mut report = Report::new(run_id(), dry_run);
    report.trigger = context.trigger;
    let span = tracing::info_span!("run", run_id = %report.run_id, dry_run);
    let started = Instant::now();
    // The run's own stop request: the caller's, or the deadline's.
    let own = Context { stops: context.stops.child(), ..context.clone() };
    let stop = own.stops.stop.clone();
    let timeout = config.sync.run_timeout;
    let deadline = async {
        tokio::time::sleep(timeout).await;
        tracing::warn!(run_timeout = %humantime::format_duration(timeout), "run deadline reached (sync.run_timeout), stopping as if asked");
        stop.cancel();
        std::future::pending::<std::convert::Infallible>().await
    };
    let run = run_in_span(config, report, &own).instrument(span.clone());
    let (mut report, client) = tokio::select! {
        done = run => done,
        never = deadline.instrument(span.clone()) => match never {},
    };
    report.run_timeout_reached = stop.is_cancelled() && !context.stops.stop.is_cancelled();
    if let Some(c) = client {
        report.api_calls = c.calls();
    }
    if let Some(changes) = context.changes.as_ref().filter(|c| !c.is_one_shot()) {
        // The model read in this run is kept only when every write of the run went through.
        changes.settle(&report);
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    span.in_scope(|| report.log_summary());
    report
}

/// The run itself; returns the report and the client (for its call counts), if one was made.
async fn run_in_span(config: &Config, mut report: Report, context: &Context) -> (Report, Option<Client>) {
    tracing::info!(groups = config.sync.groups.len(), "run started");
    // The state first: a database this run cannot use means no read and no write anywhere.
    let owner = state::db::Owner::of(config);
    let mut journal = match open_journal(&owner, context, &report) {
        Ok(j) => j,
        Err(e) => {
            report.fail(e);
            return (report, None);
        }
    };
    if let (Some(journal), Some(dir)) = (&journal, &context.state_directory)
        && let Err(e) = check_owner(journal, dir, &owner, &mut report)
    {
        report.fail(e);
        return (report, None);
    }
    // A one-shot run takes the directory model the last one stored, if there is one to use.
    if let (Some(changes), Some(journal)) = (&context.changes, journal.as_mut())
        && changes.restore(config, journal)
    {
        journal.mark_as_left();
    }
    // Connect and bind first: an unreachable directory means no call to CloudShell at all.
    let Some(connection) = connect(config, context, &mut report).await else {
        return (report, None);
    };
    let client = match Client::new(config.cloudshell.clone()) {
        Ok(c) => c.with_observer(context.observer.clone()).with_stops(context.stops.clone()),
        Err(e) => {
            report.fail(e);
            return (report, None);
        }
    };
    let _ = run_connected(config, context, connection, &client, journal.as_ref(), &mut report).await;
    if let Some(journal) = journal {
        if !report.dry_run {
            keep_history(&journal, config, &report);
        }
        if let Some(changes) = context.changes.as_ref().filter(|c| c.is_one_shot()) {
            // The model is stored as the run's last write, only for a run that ended ok (see `run`).
            report.api_calls = client.calls();
            changes.settle(&report);
            changes.store(config, &journal);
        }
        report.state_ms = journal.spent_ms();
        if let (Some(kept), Some(dir), false) = (&context.kept, &context.state_directory, report.dry_run) {
            let started = Instant::now();
            journal.keep(dir, kept);
            report.state_ms += started.elapsed().as_millis() as u64;
        }
    }
    (report, Some(client))
}

/// Records the run's imports, additions and holds in the audit trail (its destructive calls were recorded as
/// they were made), then prunes the rows older than `monitor.history_retention`. A failure is logged: the
/// writes themselves are done and reported.
fn keep_history(journal: &Journal, config: &Config, report: &Report) {
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    if let Err(e) = journal.record(&crate::audit::rows(report, &now)) {
        tracing::error!(error = %e, "audit trail not written");
    }
    let Some(before) = config.monitor.prune_before(chrono::Utc::now()) else { return };
    match journal.prune(&before) {
        Ok(0) => {}
        Ok(pruned) => tracing::info!(pruned, before = %before, "audit trail pruned"),
        Err(e) => tracing::error!(error = %e, "audit trail not pruned"),
    }
}

/// The run's state (`None` without a state directory): read-only in a dry run. A run that writes first proves
/// that the state directory takes writes: a read-only or full state directory would otherwise turn the shrink
/// guard off silently.
fn open_journal(owner: &state::db::Owner, context: &Context, report: &Report) -> Result<Option<Journal>, state::Error> {
    let Some(dir) = &context.state_directory else {
        tracing::info!("shrink guard off: no state directory");
        return Ok(None);
    };
    let opened = if report.dry_run {
        Journal::open_read_only(dir, &report.run_id).map_err(state::Error::from)
    } else {
        state::check_writable(dir).inspect_err(|e| tracing::error!(error = %e, "state directory unwritable"))?;
        match &context.kept {
            Some(kept) => Journal::open_kept(dir, owner, &report.run_id, kept),
            None => Journal::open(dir, owner, &report.run_id),
        }
        .map_err(state::Error::from)
    };
    opened.map(Some).inspect_err(|e| tracing::error!(error = %e, "state file unreadable"))
}

/// Whose state this is. Another configuration's is refused (each would take the other's users for leavers); a
/// change to how users are identified is recorded in the report (`identity_changed`), which holds every
/// deactivation and removal of the run. `current` is the owner this run's configuration makes.
fn check_owner(
    journal: &Journal,
    dir: &std::path::Path,
    current: &state::db::Owner,
    report: &mut Report,
) -> Result<(), String> {
    let recorded = match journal.owner() {
        Ok(Some(recorded)) => recorded,
        Ok(None) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    if recorded.other_configuration(current) {
        let (was, is) = (&recorded.config_path, &current.config_path);
        tracing::error!(recorded = %was, current = %is, "state owned by another configuration");
        return Err(format!(
            "the state directory {} belongs to the configuration {was}, not {is}: two configurations must not share \
             one (each would take the other's users for leavers); give this one its own [monitor] \
             state_directory, or, if {was} was moved to {is}, accept it with: cloudshell-ldap-sync \
             accept-identity --config {}",
            dir.display(),
            crate::cli::shell_word(is)
        ));
    }
    let changes: Vec<String> = recorded.identity_changes(current).iter().map(ToString::to_string).collect();
    if !changes.is_empty() {
        tracing::warn!(settings = ?changes, "identity changed");
        report.identity_changed = changes;
    }
    Ok(())
}

/// The order of a run once the directory is bound. Each step hands the next its input or ends the run
/// (`None`), its reason already in the report.
async fn run_connected(
    config: &Config,
    context: &Context,
    connection: ldap::Connection<'_>,
    client: &Client,
    journal: Option<&Journal>,
    report: &mut Report,
) -> Option<()> {
    let Reads { snapshot, mut users, groups, done } =
        match read(config, context, connection, client, journal, report).await? {
            Reading::Reads(reads) => reads,
            Reading::Nothing(last, users) => {
                nothing_to_do(config, context, journal, *last, users, report);
                return Some(());
            }
        };
    if let (Some(journal), false) = (journal, report.dry_run)
        && let Err(e) = journal::settle_pending(journal, client, &users.list).await
    {
        report.fail(format!("the outcomes of an earlier run's calls could not be recorded: {e}"));
        return None;
    }
    let counts = load_state(journal, report)?;
    let last_good = counts.as_ref().map(state::Counts::by_group).unwrap_or_default();
    let policy = || Policy::new(&config.sync, last_good.clone(), disabled_accounts(config, context));
    let meta = (snapshot.users_seen, snapshot.searches, snapshot.served_by.clone());
    let mut plan = plan::plan(snapshot, &users.list, policy());
    if users.kept && plan.missing > 0 && plan.held.is_some() {
        // A kept list may not know users created since (by an administrator, or at a first login). An import
        // finds them (a group import leaves an existing user alone, a user import answers 409), and whoever
        // its answers do not account for is looked up after it (`users_after_imports`); they are looked up
        // first only where the plan's count decides: a run the import limit would hold. (A dry run reads
        // changes with no kept list.)
        match users::look_up(client, &mut users, plan.missing_names(), config.sync.concurrency).await {
            Ok(0) if users.kept => {}
            Ok(_) => plan = plan::plan(plan.into_snapshot(meta), &users.list, policy()),
            Err(e) => {
                tracing::error!(error = %e, "cloudshell unavailable");
                report.fail(e);
                return None;
            }
        }
        note_users(report, &users);
    }
    log_plan(&plan, config.sync.max_shrink_percent);
    if let Some(held) = plan.held {
        tracing::warn!(planned = held.planned, limit = held.limit, "import limit exceeded, writes held");
        report.held = Some(HeldReport::per_run(held.planned, held.limit));
        report.groups = plan.groups.iter().map(|g| group_report(g, Imports::default(), GroupStatus::Held)).collect();
        report.memberships =
            place::held(&config.sync, "every write held: more planned imports than sync.max_imports_per_run");
        report.finish(plan.members, plan.missing);
        return Some(());
    }
    let created = apply_plan(config, client, &plan, context, report).await;
    let after = After { plan: &plan, journal, users, created, groups };
    after_imports(config, client, after, context, report).await;
    report.finish(plan.members, plan.missing);
    report.after_reads_ms = done.elapsed().as_millis() as u64;
    save_state(journal, counts.as_ref(), &plan, report);
    Some(())
}

/// Connects and binds, unless the run is asked to stop first.
async fn connect<'a>(config: &'a Config, context: &Context, report: &mut Report) -> Option<ldap::Connection<'a>> {
    let opened = tokio::select! {
        biased;
        _ = context.stops.stop.cancelled() => {
            stopped_reading(report);
            return None;
        }
        opened = ldap::Connection::open(&config.ldap) => opened,
    };
    opened
        .map_err(|e| {
            tracing::error!(error = %e, kind = e.kind(), "directory unavailable");
            report.fail(e);
        })
        .ok()
}

/// What the reads found: what to plan from, or nothing new after a run that left nothing to do.
enum Reading {
    Reads(Reads),
    /// That run's report, and CloudShell's users as it left them.
    Nothing(Box<Report>, users::Users),
}

/// What the reads found.
struct Reads {
    snapshot: ldap::Snapshot,
    users: users::Users,
    groups: Option<Result<Vec<crate::cloudshell::Group>, crate::cloudshell::Error>>,
    /// When they ended.
    done: Instant,
}

/// How CloudShell's users are read in a run that has a kept list (`begun`'s): the kept list, with the users of
/// unknown outcomes to read again, and whether the run may end at once if the directory read finds no change.
/// No kept list when the state was written by another process since the daemon's last run (a one-shot `sync`
/// may have changed CloudShell) or its intents cannot be read.
struct Listing {
    kept: Option<changes::KeptUsers>,
    unsettled: Vec<i64>,
    quiet: bool,
}

impl Listing {
    fn new(begun: &mut changes::Begun, journal: Option<&Journal>) -> Listing {
        let as_left = journal.is_some_and(Journal::as_left);
        let kept = begun.take_users().filter(|_| as_left);
        // The users of changes whose outcome is not known yet are read again, for settling them.
        let unsettled = match (&kept, journal) {
            (Some(_), Some(journal)) => journal.unsettled_users(),
            _ => Ok(None),
        };
        let Ok(unsettled) = unsettled else { return Listing { kept: None, unsettled: Vec::new(), quiet: false } };
        // The last run left nothing to do, and CloudShell and the state are as it left them: if nothing changed
        // in the directory either, nothing is to do.
        let quiet = begun.settled() && kept.as_ref().is_some_and(|k| k.stale.is_empty()) && unsettled.is_none();
        Listing { kept, unsettled: unsettled.unwrap_or_default(), quiet }
    }
}

/// The directory and CloudShell's users (and groups, with mappings), read side by side. `None` when the run
/// was asked to stop, no configured group could be enumerated, or CloudShell could not be listed: nothing is
/// written then. In a change read, CloudShell's users are the list the last run left, brought up to date
/// ([`users::read`]); a full read lists them all. A run that may end at once ([`Reading::Nothing`]) lists
/// CloudShell's groups only once the directory read found something.
async fn read(
    config: &Config,
    context: &Context,
    connection: ldap::Connection<'_>,
    client: &Client,
    journal: Option<&Journal>,
    report: &mut Report,
) -> Option<Reading> {
    let directory_started = Instant::now();
    let mut begun = changes::begin(config, context.changes.as_deref(), journal.is_some_and(Journal::replaced));
    let Listing { kept, unsettled, quiet } = Listing::new(&mut begun, journal);
    let concurrency = config.sync.concurrency;
    // A full read: the directory's users and CloudShell's hold one copy of each name they share; the table goes
    // when both have read their users (before the groups are resolved). A change read reads few users: none.
    let names = begun.in_full().then(|| std::sync::Arc::new(crate::username::SharedNames::default()));
    let connection = match &names {
        Some(names) => connection.sharing(std::sync::Arc::clone(names)),
        None => connection,
    };
    // Independent reads: overlap them.
    // Read (I/O), then resolve (pure): the entries are what the directory said; the snapshot is what they mean
    // for the configured groups, with what it covers.
    let read_directory = async {
        let read = changes::read(config, context.changes.as_deref(), begun, connection, quiet).await;
        (read.found, directory_started.elapsed(), read.report)
    };
    let mapped = !config.sync.mappings.is_empty();
    let list_groups = async { if mapped && !quiet { Some(client.list_groups().await) } else { None } };
    let reads = async {
        let (directory, mut listed, mut groups) =
            tokio::join!(read_directory, users::read(client, kept, &unsettled, concurrency, names), list_groups);
        // A change read that fell back to a full one lists every user too.
        if directory.2.mode == "full" && listed.as_ref().is_ok_and(|u| u.kept) {
            listed = users::read(client, None, &[], concurrency, None).await;
        }
        if mapped && quiet && matches!(directory.0, changes::Found::Snapshot(_)) {
            groups = Some(client.list_groups().await);
        }
        (directory, listed, groups)
    };
    // Nothing has been written yet: a stop request gives the reads up at once.
    let ((found, directory_time, read_report), listed, groups) = tokio::select! {
        biased;
        _ = context.stops.stop.cancelled() => {
            stopped_reading(report);
            return None;
        }
        done = reads => done,
    };
    let done = Instant::now();
    report.directory_ms = directory_time.as_millis() as u64;
    let snapshot = match found {
        changes::Found::Snapshot(snapshot) => snapshot,
        changes::Found::Nothing(last) => {
            tracing::info!(mode = read_report.mode, reason = %read_report.reason, "directory read");
            report.read = Some(read_report);
            return listed_users(listed, report).map(|users| Reading::Nothing(last, users));
        }
    };
    log_read(&snapshot, &read_report);
    report.directory_url = Some(snapshot.served_by.clone());
    report.read = Some(read_report);
    if snapshot.groups.iter().all(|g| g.result.is_err()) {
        // Nothing could be read: no write.
        report.fail("no configured group could be enumerated");
        for g in &snapshot.groups {
            if let Err(e) = &g.result {
                tracing::error!(group = %g.name, error = %e, kind = e.kind(), "group enumeration failed");
                report.groups.push(GroupReport::enumeration_failed(&g.name, e));
            }
        }
        return None;
    }
    let users = listed_users(listed, report)?;
    Some(Reading::Reads(Reads { snapshot, users, groups, done }))
}

/// The `directory read` event.
fn log_read(snapshot: &ldap::Snapshot, read: &crate::report::ReadReport) {
    tracing::info!(
        users = snapshot.users_seen,
        searches = snapshot.searches,
        url = %snapshot.served_by,
        mode = read.mode,
        method = read.method,
        model = read.model,
        reason = %read.reason,
        changed_users = read.changed_users,
        changed_groups = read.changed_groups,
        resolved_groups = read.resolved_groups,
        "directory read"
    );
}

/// CloudShell's users as read, logged and noted in the report; `None` (the run fails) when they could not be.
fn listed_users(listed: Result<users::Users, crate::cloudshell::Error>, report: &mut Report) -> Option<users::Users> {
    let users = match listed {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "cloudshell unavailable");
            report.fail(e);
            return None;
        }
    };
    if users.kept {
        tracing::info!(users = users.list.len(), read_again = users.lookups, "cloudshell users kept from the last run");
    } else {
        tracing::info!(users = users.list.len(), "cloudshell users listed");
    }
    note_users(report, &users);
    Some(users)
}

/// A run that read no change after a run that left nothing to do: it decides what that run decided, so its
/// report is that run's outcome (the groups, memberships, leavers and disabled accounts as they stand, with
/// nothing written), the daily budgets counted again, and CloudShell's users kept for the next run as they
/// are. Nothing is called in CloudShell.
fn nothing_to_do(
    config: &Config,
    context: &Context,
    journal: Option<&Journal>,
    last: Report,
    users: users::Users,
    report: &mut Report,
) {
    report.directory_url = last.directory_url;
    report.groups = last.groups;
    report.memberships = last.memberships;
    report.leavers = last.leavers;
    report.disabled_accounts = last.disabled_accounts;
    report.inactive_members = last.inactive_members;
    let managed_active = last.budgets.as_ref().and_then(|b| b.deactivations.as_ref()).and_then(|d| d.managed_active);
    report.budgets = journal.and_then(|journal| budget::left_known(config, journal, managed_active));
    note_users(report, &users);
    if let Some(changes) = &context.changes {
        changes.keep_users(users.list, Vec::new());
    }
    report.finish(last.totals.members, last.totals.missing);
}

/// Says in the report how CloudShell's users were read.
fn note_users(report: &mut Report, users: &users::Users) {
    if let Some(read) = report.read.as_mut() {
        read.cloudshell_users = if users.kept { "kept" } else { "listed" };
        read.cloudshell_lookups = users.lookups;
    }
}

/// The shrink guard's counts (`None` without a state directory: the guard is off). `None` (the run fails) when
/// they cannot be read: an unreadable state must not silently disable the guard.
fn load_state(journal: Option<&Journal>, report: &mut Report) -> Option<Option<state::Counts>> {
    let Some(journal) = journal else { return Some(None) };
    match journal.load_counts() {
        Ok(c) => Some(Some(c)),
        Err(e) => {
            tracing::error!(error = %e, "state file unreadable");
            report.fail(e);
            None
        }
    }
}

/// Saves the shrink guard's counts after a run that wrote (not a dry run).
fn save_state(journal: Option<&Journal>, counts: Option<&state::Counts>, plan: &Plan, report: &mut Report) {
    if let (Some(before), Some(journal), false) = (counts, journal, report.dry_run)
        && let Err(e) = save_counts(journal, before, plan)
    {
        // The guard would compare the next run against stale counts, or none: fail rather than say ok.
        tracing::error!(error = %e, "state file not written");
        report.fail(format!("the shrink guard's counts were not saved: {e}"));
    }
}

/// The report of a run stopped before its reads ended: nothing was written.
fn stopped_reading(report: &mut Report) {
    tracing::warn!("run stopped during the reads, nothing written");
    report.interrupted = true;
    report.fail("the run was asked to stop while reading the directory and CloudShell; nothing was written");
}

/// What the steps after the imports take from the run.
struct After<'a> {
    plan: &'a Plan,
    journal: Option<&'a Journal>,
    users: users::Users,
    /// CloudShell's records of the users this run's imports created, from its answers.
    created: Vec<crate::cloudshell::User>,
    groups: Option<Result<Vec<crate::cloudshell::Group>, crate::cloudshell::Error>>,
}

/// The steps after the imports: CloudShell group membership (with mappings), disabled accounts and users who
/// left. The last two share one reading of the managed users, written once after both, and one time.
async fn after_imports(config: &Config, client: &Client, after: After<'_>, context: &Context, report: &mut Report) {
    let After { plan, journal, users, created, groups } = after;
    let leaver_step = config.sync.leavers.action != LeaverAction::Ignore && journal.is_some();
    let disabled_step = disabled_accounts(config, context) == DisabledAccounts::ImportThenDeactivate;
    // The users no answer named are read only for placing the new users in groups, managing them, or keeping
    // the list for change runs.
    let read = groups.is_some() || leaver_step || disabled_step || users.kept || context.changes.is_some();
    let users = users_after_imports(config, client, (users, created), plan, read && !report.dry_run).await;
    let (kept_users, departures) = users_and_departures(config, client, context, plan, users).await;
    note_users(report, &kept_users);
    let users = &kept_users.list;
    let by_name = leavers::UsersByName::new(users); // for the disabled-account and leaver steps
    let identity_held = identity_held(report);
    let mut ledger = journal.map(|journal| ledger::Ledger::load_sharing(journal, &plan.distinct));
    // The groups seen nested before, read once for finding the unresolved members and for adding the new ones.
    let known = known_groups(journal);
    let unresolved = find_unresolved(ledger.as_ref(), &known, plan, report);
    let unresolved_groups: HashSet<GroupName> = unresolved.iter().map(|u| GroupName::new(&u.group)).collect();
    // Read again, at most once, when a step is about to deactivate or remove somebody.
    let confirm = confirm::Confirmation::new(&config.ldap, &config.sync.groups, &context.stops.stop);
    // The members' usernames, for the steps that need a state (leavers, disabled accounts, budgets).
    let members = if journal.is_some() { budget::members(plan) } else { Default::default() };
    if let Some(groups) = groups {
        let run = place::Run {
            dry_run: report.dry_run,
            journal,
            stop: &context.stops.stop,
            unresolved: &unresolved_groups,
            removals_held_by: identity_held.as_deref(),
            departures: departures.as_ref().map(|d| &d.groups),
            confirm: &confirm,
        };
        place_step(config, client, plan, (place::Reads { users, groups }, run), report).await;
    }
    // Complete: every group read whole and used, nothing interrupted, nothing unresolved, users identified as
    // the state's records were made.
    let complete = |interrupted: bool| {
        leave::completeness(plan, interrupted).and_then(|()| match (&identity_held, unresolved.len()) {
            (Some(why), _) => Err(why.clone()),
            (None, 0) => Ok(()),
            (None, n) => Err(format!("{n} members of configured groups are unresolved (see unresolved)")),
        })
    };
    // A change read is complete for the leavers it reported; the steps that act on any absence, or on what
    // the whole directory holds, wait for a full read.
    let full = |interrupted: bool| complete(interrupted).is_ok() && plan.coverage.is_full();
    if let (Some(ledger), true, false) = (ledger.as_mut(), full(report.interrupted), report.dry_run) {
        rematch_if_accepted(ledger, plan, users, report);
    }
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    if disabled_step {
        let run = disabled::Run {
            plan,
            users: &by_name,
            complete: full(report.interrupted),
            dry_run: report.dry_run,
            stop: &context.stops.stop,
            now: &now,
            confirm: &confirm,
            members: &members,
        };
        disabled_accounts_step(config, client, ledger.as_mut(), identity_held.as_deref(), run, report).await;
    }
    let run = leave::Run {
        plan,
        users: &by_name,
        complete: complete(report.interrupted),
        dry_run: report.dry_run,
        stop: &context.stops.stop,
        now: &now,
        reported: departures.as_ref().map(|d| &d.leavers),
        confirm: &confirm,
        members: &members,
    };
    let leaver_ledger = ledger.as_mut().filter(|_| leaver_step);
    report.leavers = leave::leaver_step(client, &config.sync.leavers, leaver_ledger, run).await;
    report.second_read_ms = confirm.took_ms();
    if let Some(Ok(managed)) = ledger.as_ref().map(ledger::Ledger::users) {
        report.inactive_members = inactive_members(plan, users, managed);
    }
    if let (Some(ledger), false) = (ledger.as_mut(), report.dry_run) {
        record_dns_and_save(ledger, plan, report);
    }
    if let Some(journal) = journal {
        let deactivates = budget::deactivates(config, disabled_step);
        let deactivating = ledger.as_ref().filter(|_| deactivates).map(|l| (l, &members));
        report.budgets = budgets_left(config, journal, deactivating, users);
    }
    if let (Some(journal), true, false) = (journal, full(report.interrupted), report.dry_run) {
        remember_nested_groups(journal, &known, plan);
    }
    if let Some(ledger) = ledger {
        ledger.keep();
    }
    if let (Some(changes), false) = (&context.changes, report.dry_run) {
        changes.keep_users(kept_users.list, client.touched());
    }
}

/// Places the members in the mapped CloudShell groups ([`place::place_members`]) and reports it.
async fn place_step(
    config: &Config,
    client: &Client,
    plan: &Plan,
    (reads, run): (place::Reads<'_>, place::Run<'_>),
    report: &mut Report,
) {
    let placed = place::place_members(client, &config.sync, plan, reads, run).await;
    report.interrupted |= placed.groups.iter().any(|m| m.status == GroupStatus::Skipped);
    (report.memberships, report.removals_held) = (placed.groups, placed.removals_held);
}

/// The groups seen nested before (none without a state, or when it cannot be read: logged).
fn known_groups(journal: Option<&Journal>) -> HashSet<String> {
    journal
        .map(Journal::known_groups)
        .transpose()
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "state file unreadable");
            None
        })
        .unwrap_or_default()
}

/// What is left of the daily budgets after the run; the deactivations' percentage counted on the managed users of
/// the ledger and the members (given when the run deactivates).
fn budgets_left(
    config: &Config,
    journal: &Journal,
    deactivating: Option<(&ledger::Ledger<'_>, &rustc_hash::FxHashSet<&Username>)>,
    users: &[crate::cloudshell::User],
) -> Option<crate::report::Budgets> {
    let managed = deactivating.and_then(|(l, members)| Some((l.users().ok()?, members)));
    budget::left(config, journal, managed, users)
}

/// In a change read, the departures it reported, the only absences that count there (leavers, removals), with
/// their users read again by id from a kept list ([`users::read_again`]). When they cannot be read again, or nothing tracks them, no
/// departure counts in this run: nobody leaves or is removed on a record this run did not read.
async fn users_and_departures(
    config: &Config,
    client: &Client,
    context: &Context,
    plan: &Plan,
    mut users: users::Users,
) -> (users::Users, Option<changes::Departures>) {
    let mapped: Vec<GroupName> = config.sync.mappings.iter().map(|m| m.directory_group.clone()).collect();
    let departures = match &context.changes {
        Some(changes) => changes.track_members(plan, &mapped),
        None => (!plan.coverage.is_full()).then(changes::Departures::default),
    };
    let Some(departures) = departures else { return (users, None) };
    let named = departures.leavers.iter().chain(departures.groups.values().flatten());
    match users::read_again(client, &mut users, named, config.sync.concurrency).await {
        Ok(()) => (users, Some(departures)),
        Err(e) => {
            tracing::warn!(error = %e, "users who left could not be read again: no leaver and no removal this run");
            (users, Some(changes::Departures::default()))
        }
    }
}

/// The disabled-accounts step (`import_then_deactivate`), in the report: held as a whole while the identity
/// change is not accepted (`identity_held`), skipped without a state.
async fn disabled_accounts_step(
    config: &Config,
    client: &Client,
    ledger: Option<&mut ledger::Ledger<'_>>,
    identity_held: Option<&str>,
    run: disabled::Run<'_>,
    report: &mut Report,
) {
    let Some(ledger) = ledger else { return };
    if let Some(why) = identity_held {
        let mut held = crate::report::DisabledReport::new(DisabledAccounts::ImportThenDeactivate.as_str());
        (held.status, held.held_by) = (GroupStatus::Held, Some(why.to_string()));
        report.disabled_accounts = Some(held);
        return;
    }
    let limit = config.sync.max_disabled_deactivations_per_run;
    let step = disabled::disabled_step(client, &config.sync.leavers, limit, ledger, run).await;
    report.interrupted |= step.status == GroupStatus::Skipped;
    report.disabled_accounts = Some(step);
}

/// Why every deactivation and removal of the run is held: the configuration identifies users differently from
/// the one that made the state database (`None`: it does not).
fn identity_held(report: &Report) -> Option<String> {
    (!report.identity_changed.is_empty()).then(|| {
        format!(
            "the configuration identifies users differently from the one that made the state database ({}): every \
             deactivation and removal is held until the change is accepted with: cloudshell-ldap-sync \
             accept-identity",
            report.identity_changed.join("; ")
        )
    })
}

/// Records the DNs the members were read under for the managed users whose record differs, then writes every
/// managed user this run changed.
fn record_dns_and_save(ledger: &mut ledger::Ledger<'_>, plan: &Plan, report: &mut Report) {
    let dns = ledger.users().map(|managed| unresolved::dns_to_record(managed, plan)).unwrap_or_default();
    if !dns.is_empty() {
        let keys: Vec<Username> = dns.iter().map(|(username, _)| username.clone()).collect();
        ledger.amend_users(ledger::Keeper::Directory, &keys, |managed| unresolved::record_dns(managed, dns));
    }
    ledger.save(report);
}

/// Effective members of configured groups whose CloudShell user is inactive although this program did not
/// deactivate it: they have no access. An administrator may have meant it; another host running this program
/// with other groups (unsupported) deactivates them as its leavers, and this says so loudly every run.
fn inactive_members(plan: &Plan, users: &[crate::cloudshell::User], managed: &state::Managed) -> Vec<String> {
    let inactive: HashSet<&Username> =
        users.iter().filter(|u| u.is_active == Some(false)).filter_map(|u| u.username.as_ref()).collect();
    if inactive.is_empty() {
        return Vec::new();
    }
    let mut found: Vec<String> = plan
        .distinct
        .iter()
        .filter(|m| inactive.contains(&m.username))
        .filter(|m| !managed.users.get(&m.username).is_some_and(|u| u.deactivated))
        .map(|m| m.username.to_string())
        .collect();
    found.sort_by_cached_key(|u| u.to_lowercase());
    found.dedup();
    if let Some(first) = found.first() {
        let sample: Vec<&str> = found.iter().take(5).map(String::as_str).collect();
        tracing::warn!(count = found.len(), username = %first, sample = ?sample, "members inactive in cloudshell, not deactivated by this program");
    }
    found
}

/// The unresolved members of this run's groups (`unresolved::find`), in the report (each group's line partial)
/// and the logs. None without a state (nothing was known before).
fn find_unresolved(
    ledger: Option<&ledger::Ledger<'_>>,
    known: &HashSet<String>,
    plan: &Plan,
    report: &mut Report,
) -> Vec<unresolved::Unresolved> {
    let Some(Ok(managed)) = ledger.map(ledger::Ledger::users) else {
        return Vec::new();
    };
    let found = unresolved::find(plan, managed, known);
    for (n, u) in found.iter().enumerate() {
        // A bound on the lines: the report names them all.
        if n < 100 {
            let username = u.username.as_ref().map(Username::as_str);
            tracing::warn!(group = %u.group, dn = %u.dn, username, reason = u.reason, "member unresolved");
        }
        report.unresolved.push(crate::report::UnresolvedLine {
            group: u.group.clone(),
            dn: u.dn.clone(),
            username: u.username.as_ref().map(ToString::to_string),
            reason: u.reason,
        });
    }
    if found.len() > 100 {
        tracing::warn!(count = found.len() - 100, "member unresolved (more, not logged one by one)");
    }
    for line in report.groups.iter_mut() {
        let n = found.iter().filter(|u| u.group == line.name).count();
        if n > 0 && matches!(line.status, GroupStatus::Ok | GroupStatus::Planned) {
            line.status = GroupStatus::Partial;
            line.error.get_or_insert_with(|| {
                format!(
                    "{n} members this program knew cannot be read now (see unresolved): nobody is a leaver or \
                     removed on this group's account"
                )
            });
        }
    }
    found
}

/// After an accepted identity change, the first complete run matches the managed users again
/// (`rematch::rematch`), in the report.
fn rematch_if_accepted(
    ledger: &mut ledger::Ledger<'_>,
    plan: &Plan,
    users: &[crate::cloudshell::User],
    report: &mut Report,
) {
    match ledger.journal().rematch_pending() {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => return tracing::error!(error = %e, "state file unreadable"),
    }
    let Ok(managed) = ledger.users() else { return };
    let matched = rematch::rematch(managed, plan, users);
    for (was, now) in &matched.renamed {
        tracing::info!(was = %was, now = %now, "managed user matched again");
    }
    for gone in &matched.dropped {
        tracing::warn!(username = %gone, "managed user no longer managed after the identity change");
    }
    report.rematch = Some(crate::report::RematchReport {
        renamed: matched.renamed.iter().map(|(was, now)| format!("{was} -> {now}")).collect(),
        no_longer_managed: matched.dropped.iter().map(ToString::to_string).collect(),
    });
    let next = matched.next;
    ledger.amend(ledger::Keeper::Rematch, |managed| {
        *managed = next;
        true
    });
}

/// Records the groups seen nested in configured groups that were not known, so that one hidden later is
/// told from one removed.
fn remember_nested_groups(journal: &Journal, known: &HashSet<String>, plan: &Plan) {
    let new: Vec<(String, String)> =
        unresolved::nested_groups(plan).into_iter().filter(|(key, _)| !known.contains(key)).collect();
    if let Err(e) = journal.add_known_groups(&new) {
        tracing::error!(error = %e, "state file not written");
    }
}

/// `sync.disabled_accounts` in force for this run: as configured, else by whether there is a state directory.
fn disabled_accounts(config: &Config, context: &Context) -> DisabledAccounts {
    config.sync.disabled_accounts(context.state_directory.is_some())
}

/// CloudShell's users after the imports: with the records CloudShell answered the imports with (`created`),
/// always (the list is complete with them, for this run's steps and for the next change run, which starts from
/// it); then, with `read` and when this run imported anyone, the members the plan found missing that are still
/// not in it (found existing, an answer lost, a failure) read again, one by one or, when there are more of them
/// than the list has pages, by listing every user. A read that fails keeps the list as it is
/// (logged): users imported now and not in it are then placed and managed from the next run on.
async fn users_after_imports(
    config: &Config,
    client: &Client,
    (mut users, created): (users::Users, Vec<crate::cloudshell::User>),
    plan: &Plan,
    read: bool,
) -> users::Users {
    users::add(&mut users, created);
    let calls = client.calls();
    if !read || calls.get(CallKind::ImportGroup) + calls.get(CallKind::ImportUser) == 0 {
        return users;
    }
    let unknown = users::not_listed(&users, plan.missing_names());
    let read = users::find(client, &mut users, unknown, config.sync.concurrency).await.map(drop);
    if let Err(e) = read {
        tracing::warn!(error = %e, "user list after the imports unreadable; users imported now are handled next run");
    }
    users
}

/// Carries the plan out group by group (nothing in a dry run), adding each group's report line. Stops
/// starting groups once the run is asked to stop. Answers CloudShell's records of the users the imports created.
async fn apply_plan(
    config: &Config,
    client: &Client,
    plan: &Plan,
    context: &Context,
    report: &mut Report,
) -> Vec<crate::cloudshell::User> {
    let (dry_run, mut records) = (report.dry_run, Vec::new());
    for g in &plan.groups {
        let mut imports = match g {
            GroupPlan::Ready(ready) if ready.needs_import() && !dry_run => {
                if context.stops.stop.is_cancelled() {
                    report.interrupted = true;
                    tracing::warn!(group = %ready.name, "group skipped, the run was asked to stop");
                    report.groups.push(group_report(g, Imports::default(), GroupStatus::Skipped));
                    continue;
                }
                let span = tracing::info_span!("group", run_id = %report.run_id, group = %ready.name);
                let imports = apply::apply_group(client, ready, config.sync.concurrency, &context.stops.stop)
                    .instrument(span)
                    .await;
                report.interrupted |= imports.not_attempted > 0;
                imports
            }
            _ => Imports::default(),
        };
        let status = if dry_run { GroupStatus::Planned } else { GroupStatus::Ok };
        records.append(&mut imports.records);
        report.groups.push(group_report(g, imports, status));
    }
    records
}

/// Records the counts the guard accepted as the new reference (a held group keeps its old one). Only a
/// full read's counts become a reference.
fn save_counts(journal: &Journal, before: &state::Counts, plan: &Plan) -> Result<(), state::db::Error> {
    if !plan.coverage.is_full() {
        return Ok(());
    }
    let mut after = before.clone();
    for g in &plan.groups {
        if let GroupPlan::Ready(r) = g
            && r.shrink.is_none()
        {
            after.record(&r.name, r.group.members.len());
        }
    }
    journal.save_counts(before, &after)
}

/// A group's report line. `status` is the status of a group that went well (ok, planned, held or skipped).
fn group_report(g: &GroupPlan, imports: Imports, status: GroupStatus) -> GroupReport {
    let ready = match g {
        GroupPlan::Failed { name, error } => return GroupReport::enumeration_failed(name, error),
        GroupPlan::Ready(r) => r,
    };
    let (members, missing) = (ready.group.members.len(), ready.missing.len());
    if let Some(shrink) = ready.shrink {
        return GroupReport::shrank(&ready.name, shrink.previous, members, missing);
    }
    let collisions = ready.collisions.iter().map(Failure::from).collect();
    let planned = ready.to_import.iter().map(|m| m.username.to_string()).collect();
    GroupReport::enumerated(&ready.name, (members, missing), planned, collisions, imports, status)
}

fn log_plan(plan: &Plan, max_shrink_percent: u8) {
    for g in &plan.groups {
        match g {
            GroupPlan::Failed { name, error } => {
                tracing::error!(group = %name, error = %error, kind = error.kind(), "group enumeration failed")
            }
            GroupPlan::Ready(r) => {
                if let Some(shrink) = r.shrink {
                    tracing::warn!(group = %r.name, previous = shrink.previous, members = shrink.now, max_shrink_percent, "group membership shrank, writes held");
                    continue;
                }
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

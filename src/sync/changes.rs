//! How a run reads the directory: in full, or only what changed since the last run.
//!
//! The daemon keeps the directory model its last full read built (`ldap::changes::kept`, read by OpenLDAP's content
//! sync, Active Directory's DirSync or `uSNChanged`, or `modifyTimestamp` searches) and, between full reads, applies to
//! it what changed and resolves it as a full read would. A `modifyTimestamp` read cannot see an entry deleted: its
//! departures are none, and the leavers and removals wait for the next full read. A full read happens on the daemon's
//! first run, after a run that did not end `ok`, when `sync.full_sync_every` has passed, after a reload that changed
//! the configuration or `state.db` deleted or replaced, whenever the model cannot answer (the server is behind its own
//! answers, a member it cannot compare) or the change read fails. A full read that `full_sync_every` made due verifies
//! the model kept rather than reading it whole again ([`ldap::Connection::read_keeping`]: brought up to date by a
//! change read, kept when it resolves as the full read did). A one-shot `sync` with a state directory keeps the same
//! model in `state.db` ([`stored`]: taken as the run starts, stored as its last write when it ends `ok`); without one,
//! or in a dry run, it reads in full. A change read's snapshot covers the configured groups as a full read would, but
//! its coverage is [`Coverage::Changes`]: its leavers and its removals from CloudShell groups are only the departures
//! the change reads reported ([`ChangeReads::track_members`]), and the shrink guard's reference is left to the next
//! full read.
//!
//! The model built by a run is kept for the next only when that run ended `ok` ([`ChangeReads::settle`]): the
//! watermark never moves past a run whose writes did not all go through.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::Config;
use crate::group_name::GroupName;
use crate::ldap::changes::kept::Kept;
use crate::ldap::{self, ChangeDetection, Coverage, Member, Snapshot};
use crate::report::{ReadReport, Report};
use crate::sync::plan::{GroupPlan, Plan};
use crate::username::Username;

mod stored;

/// How long a model is verified by full reads before one reads it whole again, whatever they find: a difference
/// in what no full read compares (a group no configured group reaches) lasts no longer than this.
pub const READ_WHOLE_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Whether a model last read whole this long ago (`None`: longer than can be told) is read whole again at the
/// next full read rather than verified.
fn read_whole_due(since_whole: Option<std::time::Duration>) -> bool {
    since_whole.is_none_or(|since| since >= READ_WHOLE_EVERY)
}

/// When the model a full read at `full_at` keeps was last read whole: then, when it was read whole beside the
/// full read; `earlier` (when the model it verified was read whole), when it was verified. Verifying it does not
/// move the day after which it is read whole again ([`READ_WHOLE_EVERY`]).
fn read_whole_at(made: ldap::ModelMade, earlier: At, full_at: At) -> At {
    match made {
        ldap::ModelMade::Verified => earlier,
        ldap::ModelMade::Built => full_at,
    }
}

/// The daemon's change-read state, from one run to the next.
#[derive(Debug, Default)]
pub struct ChangeReads {
    /// The model kept from the last run that ended `ok`.
    kept: Mutex<Option<Model>>,
    /// The model this run read or built, kept if it ends `ok`.
    pending: Mutex<Option<Model>>,
    /// Why change reads are not available, as last logged: logged again only when it changes.
    unavailable: Mutex<Option<String>>,
    /// Moved on by [`ChangeReads::forget_run`]; `began` is its value when the current run began.
    generation: std::sync::atomic::AtomicU64,
    began: std::sync::atomic::AtomicU64,
    /// A one-shot run's: the model is stored in `state.db` between runs ([`ChangeReads::one_shot`]).
    one_shot: Option<stored::OneShot>,
}

#[derive(Debug)]
struct Model {
    kept: Kept,
    /// When the full read the model was built from (or last verified by) began.
    full_at: At,
    /// When the full read that last read the model whole began: a model is verified by full reads only within
    /// [`READ_WHOLE_EVERY`] of it. `None`: not known (a stored time that does not parse, lies ahead of the
    /// clock, or lies further back than this process can count): the next full read reads it whole.
    whole_at: Option<At>,
    /// CloudShell's users as the run that kept the model left them.
    users: Option<KeptUsers>,
    /// The effective members (folded usernames) seen since the full read the model was built from, that read
    /// included: a managed user among them who is no longer a member left in a change the reads reported.
    members: FxHashSet<Box<str>>,
    /// The same for each mapped directory group.
    groups: FxHashMap<GroupName, FxHashSet<Box<str>>>,
    /// The report of the run that kept the model, when it left nothing to do
    /// ([`Report::left_nothing_to_do`]): a run that reads no change after it decides the same again.
    outcome: Option<Box<Report>>,
    /// This run read no change and ended with the last run's outcome: the entries, CloudShell's users and the
    /// members seen are as the model was taken (a one-shot run then stores them without encoding them again).
    unchanged: bool,
    /// The fingerprint of the configuration the model was read with ([`Config::fingerprint`]): under another
    /// configuration, the members seen and the last outcome mean something else (a group dropped from `groups`
    /// would make its members departures no directory change reported), so the next run reads in full.
    configuration: String,
}

impl Model {
    /// The model a full read keeps: the members seen are filled in by [`ChangeReads::track_members`], and
    /// CloudShell's users by [`ChangeReads::keep_users`].
    fn of_full_read(kept: Kept, full_at: At, whole_at: Option<At>, configuration: &str) -> Model {
        Model {
            kept,
            full_at,
            whole_at,
            users: None,
            members: FxHashSet::default(),
            groups: FxHashMap::default(),
            outcome: None,
            unchanged: false,
            configuration: configuration.to_string(),
        }
    }
}

/// A moment by two clocks, this process's monotonic one and the wall clock. How long ago it was is the longer of the
/// two: the monotonic clock stops while the host is suspended or a virtual machine paused, and the wall clock may
/// be set back. The longer errs toward a full read, which `full_sync_every` (at most 30 days: within Active
/// Directory's tombstone lifetime) and [`READ_WHOLE_EVERY`] promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct At {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl At {
    pub fn now() -> At {
        At { instant: Instant::now(), wall: SystemTime::now() }
    }

    pub fn elapsed(&self) -> std::time::Duration {
        let by_wall = SystemTime::now().duration_since(self.wall).unwrap_or_default();
        self.instant.elapsed().max(by_wall)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ChangeReads {
    /// Keeps the model this run read for the next run when the run ended `ok` (else the next run reads in
    /// full), with the run's report when it left nothing to do.
    pub fn settle(&self, report: &Report) {
        use std::sync::atomic::Ordering::SeqCst;
        let ok = report.result == crate::report::RunResult::Ok && !report.dry_run;
        let mut pending = lock(&self.pending).take().filter(|_| ok);
        // A reload during the run: what it decided, and CloudShell's users, rest on the old configuration.
        let same = self.generation.load(SeqCst) == self.began.load(SeqCst);
        if let Some(model) = pending.as_mut() {
            model.outcome = (same && report.left_nothing_to_do()).then(|| Box::new(report.clone()));
            if !same {
                model.users = None;
            }
        }
        *lock(&self.kept) = pending;
    }

    /// Marks the start of a run with the configuration in force now: a reload from here on
    /// ([`ChangeReads::forget_run`]) is one during the run. The daemon calls it as it starts the run, on the
    /// same task that reloads.
    pub fn run_begins(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.began.store(self.generation.load(SeqCst), SeqCst);
    }

    /// Forgets what the last run decided and CloudShell's users as it left them (the configuration was
    /// reloaded: either may rest on a setting that changed, `cloudshell.url` say, even one the directory model
    /// does not depend on). A run going on now keeps neither. The next run decides again, whatever it reads,
    /// and lists CloudShell's users.
    pub fn forget_run(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(model) = lock(&self.kept).as_mut() {
            model.outcome = None;
            model.users = None;
        }
    }

    /// Logs why change reads are not used, once for each reason.
    fn unavailable(&self, why: &str, method: ChangeDetection) {
        let mut last = lock(&self.unavailable);
        if last.as_deref() == Some(why) {
            return;
        }
        if method.is_explicit() {
            let method = method.as_str();
            tracing::error!(reason = %why, "change reads unavailable, every run reads in full (ldap.change_detection = \"{method}\")");
        } else {
            tracing::info!(reason = %why, "change reads unavailable, every run reads in full");
        }
        *last = Some(why.to_string());
    }
}

/// The departures the change reads reported since the last full read ([`ChangeReads::track_members`]).
#[derive(Debug, Default)]
pub struct Departures {
    /// Members of some configured group seen since then who are members of none now.
    pub leavers: FxHashSet<Username>,
    /// By mapped directory group: its members seen since then who are not members now.
    pub groups: FxHashMap<GroupName, FxHashSet<Username>>,
}

/// The tracked groups of `plan` that were read, with their members.
fn ready<'a>(plan: &'a Plan, tracked: &'a [GroupName]) -> impl Iterator<Item = (GroupName, &'a [Arc<Member>])> + 'a {
    plan.groups.iter().filter_map(move |g| match g {
        GroupPlan::Ready(r) => {
            let name = GroupName::new(&r.name);
            tracked.contains(&name).then_some((name, &r.group.members[..]))
        }
        GroupPlan::Failed { .. } => None,
    })
}

/// The names in `seen` missing from `now` (each name once: the run's distinct members, or a group's), which
/// are then added to `seen`.
fn departed<'a>(
    seen: &mut FxHashSet<Box<str>>,
    now: impl Iterator<Item = &'a Arc<Member>> + Clone,
) -> FxHashSet<Username> {
    let mut members = 0;
    for m in now.clone() {
        members += 1;
        if !seen.contains(m.username.folded()) {
            seen.insert(Box::from(m.username.folded()));
        }
    }
    debug_assert_eq!(members, now.clone().map(|m| m.username.folded()).collect::<FxHashSet<_>>().len());
    // As many names seen as members now (each once): every name seen is a member now, nobody departed.
    if seen.len() == members {
        return FxHashSet::default();
    }
    let mut present: FxHashSet<&str> = FxHashSet::with_capacity_and_hasher(members, Default::default());
    present.extend(now.map(|m| m.username.folded()));
    seen.iter().filter(|m| !present.contains(&***m)).filter_map(|m| Username::new(m)).collect()
}

/// CloudShell's users as the last run that ended `ok` left them, for a change run to use rather than listing
/// them all again.
#[derive(Debug)]
pub struct KeptUsers {
    pub users: Vec<crate::cloudshell::User>,
    /// The ids of the users that run sent a change for: read again before the list is used.
    pub stale: Vec<i64>,
}

/// How a run will read the directory, decided before the reads start.
#[derive(Debug)]
pub struct Begun {
    start: Start,
}

#[derive(Debug)]
enum Start {
    /// A one-shot run without a state directory, or a dry run: in full.
    OneShot,
    /// In full, building no model: `ldap.change_detection = "off"`, or `sync.full_sync_every = "0s"`.
    NoModel(&'static str),
    /// In full, for this reason; with the model kept from the last full read when `sync.full_sync_every` is
    /// what made it due, for the full read to verify rather than read whole again
    /// ([`ldap::Connection::read_keeping`]).
    Full(String, Option<(Box<Kept>, At)>),
    /// The changes since the model kept.
    Changes(Box<Model>),
}

impl Begun {
    /// CloudShell's users as the last run left them, when this run reads only what changed and the last run
    /// kept them.
    pub fn take_users(&mut self) -> Option<KeptUsers> {
        match &mut self.start {
            Start::Changes(model) => model.users.take(),
            _ => None,
        }
    }

    /// Whether this run reads the directory in full from the start (it may still fall back to a full read
    /// when it reads changes).
    pub fn in_full(&self) -> bool {
        !matches!(&self.start, Start::Changes(_))
    }

    /// Whether the last run left nothing to do ([`Report::left_nothing_to_do`]): then, if this run reads no
    /// change, it ends with that run's outcome ([`Found::Nothing`]).
    pub fn settled(&self) -> bool {
        matches!(&self.start, Start::Changes(model) if model.outcome.is_some())
    }
}

impl ChangeReads {
    /// Records this run's effective members with the model it read (over all configured groups, and in each
    /// of `tracked`: the mapped directory groups), and answers, in a change read, which members seen since the
    /// last full read are no longer members: the departures the change reads reported, the only ones that may
    /// make leavers or removals between full reads. `None` after a full read (any absence counts).
    pub fn track_members(&self, plan: &Plan, tracked: &[GroupName]) -> Option<Departures> {
        let mut pending = lock(&self.pending);
        let full = plan.coverage.is_full();
        // A change read always has its model; without one, no departure is known.
        let Some(model) = pending.as_mut() else { return (!full).then(Departures::default) };
        if !full && !model.kept.source().sees_departures() {
            // `modifyTimestamp` reads do not see an entry deleted or moved away: no departure is certain.
            return Some(Departures::default());
        }
        let folded = |m: &Arc<Member>| -> Box<str> { Box::from(m.username.folded()) };
        if full {
            model.members = plan.distinct.iter().map(folded).collect();
            model.groups =
                ready(plan, tracked).map(|(name, members)| (name, members.iter().map(folded).collect())).collect();
            return None;
        }
        let leavers = departed(&mut model.members, plan.distinct.iter());
        let mut groups = FxHashMap::default();
        for (name, members) in ready(plan, tracked) {
            let seen = model.groups.entry(name.clone()).or_default();
            groups.insert(name, departed(seen, members.iter()));
        }
        Some(Departures { leavers, groups })
    }

    /// Keeps CloudShell's users as this run leaves them, with the model this run read (if any), for the next
    /// run; they are kept only when the run ends `ok`.
    pub fn keep_users(&self, users: Vec<crate::cloudshell::User>, stale: Vec<i64>) {
        if let Some(model) = lock(&self.pending).as_mut() {
            model.users = Some(KeptUsers { users, stale });
        }
    }
}

/// Decides how this run reads the directory (`changes` is the daemon's or the one-shot run's state; `None`: a
/// run that keeps no model): the changes since the model kept, when there is one and a full read is not due.
/// `state_replaced`: the state database the last run left is gone or replaced ([`Journal::replaced`]), so what the
/// kept model's members seen rest on went with it: a full read, the model read whole.
///
/// [`Journal::replaced`]: crate::sync::journal::Journal::replaced
pub fn begin(config: &Config, changes: Option<&ChangeReads>, state_replaced: bool) -> Begun {
    let Some(state) = changes else { return Begun { start: Start::OneShot } };
    // Whatever an earlier run left pending (one that panicked) is not this run's.
    lock(&state.pending).take();
    let taken = lock(&state.kept).take();
    let every = config.sync.full_sync_every;
    if config.ldap.change_detection == ChangeDetection::Off {
        return Begun { start: Start::NoModel("ldap.change_detection = \"off\"") };
    }
    if every.is_zero() {
        // Every run reads in full: a model would never be read.
        return Begun { start: Start::NoModel("sync.full_sync_every = \"0s\": every run reads in full") };
    }
    let why_not = || match &state.one_shot {
        Some(one_shot) => lock(&one_shot.why_not).clone().unwrap_or_else(|| "no directory model stored".into()),
        None => "no directory model kept: the daemon's first run, or the last run did not end ok".into(),
    };
    let start = match taken {
        _ if state_replaced => Start::Full("state.db was deleted or replaced since the last run".into(), None),
        None => Start::Full(why_not(), None),
        // Read whole, not verified: what the model was read for may have changed.
        Some(model) if model.configuration != config.fingerprint => {
            Start::Full("the configuration changed since the last run (reloaded)".into(), None)
        }
        Some(model) if model.full_at.elapsed() >= every => {
            let why = format!(
                "sync.full_sync_every ({}) has passed since the last full read",
                humantime::format_duration(every)
            );
            // Verified only where the method names every entry gone (a `modifyTimestamp` model keeps an entry
            // deleted since, which a comparison with the full read need not show), and read whole at least every
            // READ_WHOLE_EVERY: what the comparison cannot see (a group no configured group reaches) goes with it.
            let verify =
                !read_whole_due(model.whole_at.map(|at| at.elapsed())) && model.kept.source().sees_departures();
            let earlier = model.whole_at.filter(|_| verify);
            Start::Full(why, earlier.map(|whole_at| (Box::new(model.kept), whole_at)))
        }
        Some(model) => Start::Changes(Box::new(Model { unchanged: false, ..model })),
    };
    if !matches!(start, Start::Changes(_)) {
        // A full read stores its model anew: the bytes taken (13 MB at 100,000 users) would be held for nothing.
        state.let_taken_go();
    }
    Begun { start }
}

/// What a run read of the directory, and how.
pub struct Read {
    pub found: Found,
    pub report: ReadReport,
}

/// What a read found.
pub enum Found {
    /// The configured groups, resolved, with the read's coverage.
    Snapshot(Snapshot),
    /// Nothing changed since the last run, which left nothing to do: its report.
    Nothing(Box<Report>),
}

/// Reads the directory for the configured groups as [`begin`] decided: the changes since the daemon's last
/// run, else (or when the change read fails) in full.
/// With `quiet`, a change read that finds nothing changed after a run that left nothing to do ends there.
pub async fn read(
    config: &Config,
    changes: Option<&ChangeReads>,
    begun: Begun,
    connection: ldap::Connection<'_>,
    quiet: bool,
) -> Read {
    let groups = &config.sync.groups;
    let method = config.ldap.change_detection;
    let plain = |reason: &str| ReadReport { resolved_groups: groups.len(), ..ReadReport::full(reason) };
    let full = |entries: &ldap::Entries| ldap::resolve(entries, &config.ldap, groups);
    let (state, start) = match (changes, begun.start) {
        (None, _) | (_, Start::OneShot) => {
            let found = Found::Snapshot(full(&connection.read(groups).await));
            return Read {
                found,
                report: plain("a one-shot run without a state directory, or a dry run, reads in full"),
            };
        }
        (Some(_), Start::NoModel(reason)) => {
            let found = Found::Snapshot(full(&connection.read(groups).await));
            return Read { found, report: plain(reason) };
        }
        (Some(state), start) => (state, start),
    };
    let mut connection = connection;
    let (reason, earlier) = match start {
        Start::OneShot | Start::NoModel(_) => unreachable!("answered above"),
        Start::Full(reason, earlier) => (reason, earlier),
        Start::Changes(mut model) => match connection.read_changes(&mut model.kept, groups, quiet).await {
            Ok((resolved, read)) => {
                let mut report = ReadReport {
                    mode: "changes",
                    method: Some(model.kept.source().method()),
                    reason: "the changes since the last run".to_string(),
                    changed_users: read.users.changed + read.users.gone,
                    changed_groups: read.groups.changed + read.groups.gone,
                    ..plain("")
                };
                let found = match (resolved, model.outcome.clone()) {
                    (Some(resolved), _) => {
                        report.resolved_groups = resolved.resolved;
                        Found::Snapshot(Snapshot { coverage: Coverage::Changes, ..resolved.snapshot })
                    }
                    (None, Some(outcome)) => {
                        report.reason = "nothing changed since the last run, which left nothing to do".into();
                        report.resolved_groups = 0;
                        model.unchanged = true;
                        Found::Nothing(outcome)
                    }
                    (None, None) => unreachable!("entries are left out only for a run with the last outcome"),
                };
                *lock(&state.pending) = Some(*model);
                return Read { found, report };
            }
            Err((back, why)) => {
                tracing::warn!(reason = %why, "change read not usable, reading in full");
                connection = back;
                (why, None)
            }
        },
    };
    let full_at = At::now();
    let (earlier, whole_at) = match earlier {
        Some((kept, whole_at)) => (Some(*kept), whole_at),
        None => (None, full_at),
    };
    let (snapshot, built) = connection.read_keeping(groups, earlier).await;
    let (method, model) = match built {
        Ok((kept, made)) => {
            let whole_at = Some(read_whole_at(made, whole_at, full_at));
            let source = kept.source();
            *lock(&state.pending) = Some(Model::of_full_read(kept, full_at, whole_at, &config.fingerprint));
            *lock(&state.unavailable) = None;
            (Some(source.method()), Some(made.as_str()))
        }
        Err(why) => {
            state.unavailable(&why, method);
            (None, None)
        }
    };
    Read { found: Found::Snapshot(snapshot), report: ReadReport { method, model, ..plain(&reason) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<Arc<Member>> {
        let member =
            |n: &&str| Arc::new(Member { username: Username::new(n).unwrap(), dn: format!("uid={n},dc=x").into() });
        names.iter().map(member).collect()
    }

    fn names(set: &FxHashSet<Username>) -> Vec<String> {
        let mut names: Vec<String> = set.iter().map(|u| u.folded().to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_name_seen_and_no_longer_a_member_departed_and_a_new_member_is_seen_from_then_on() {
        let mut seen: FxHashSet<Box<str>> = FxHashSet::default();
        assert!(departed(&mut seen, members(&["ann", "Bob"]).iter()).is_empty(), "the first members");
        // The control: Bob is seen and no longer a member.
        assert_eq!(names(&departed(&mut seen, members(&["ann", "cat"]).iter())), ["bob"]);
        // Every name seen is a member (cat, new last time, included): nobody departed; dan is seen from now on.
        assert!(departed(&mut seen, members(&["ann", "BOB", "cat", "dan"]).iter()).is_empty());
        assert_eq!(names(&departed(&mut seen, members(&["ann", "bob", "cat"]).iter())), ["dan"]);
    }

    fn config(change_detection: &str) -> Config {
        crate::config::for_tests(&format!("change_detection = \"{change_detection}\""), "full_sync_every = \"1s\"\n")
    }

    /// A full read that `full_sync_every` made due is handed the model to verify only while the model was read
    /// whole within READ_WHOLE_EVERY, and only for a method that names every entry gone; the controls: the model
    /// read whole just now is handed over, and a model kept that is not due is read by its changes. Both times are
    /// counted by the longer of two clocks: due by the wall clock alone (the monotonic clock stopped while the host
    /// was suspended) is due.
    #[test]
    fn a_full_read_verifies_the_model_only_within_a_day_of_reading_it_whole_and_never_a_timestamp_model() {
        use crate::ldap::changes::kept::Source;
        use std::time::Duration;
        let ago = |monotonic: Duration, wall: Duration| At {
            instant: Instant::now().checked_sub(monotonic).expect("2 s of uptime"),
            wall: SystemTime::now() - wall,
        };
        let (now, long_ago) = (At::now(), ago(Duration::from_secs(2), Duration::from_secs(2)));
        let begun = |method: &str, source: Source, full_at: At, whole_at: Option<At>| {
            let config = config(method);
            let state = ChangeReads::default();
            let kept = Kept::new(&config.ldap).reading_by(source);
            *lock(&state.kept) = Some(Model::of_full_read(kept, full_at, whole_at, &config.fingerprint));
            match begin(&config, Some(&state), false).start {
                Start::Full(why, earlier) => {
                    assert!(why.contains("full_sync_every"), "{why}");
                    Some(earlier.is_some())
                }
                Start::Changes(_) => None,
                _ => panic!("neither a full read nor a change read"),
            }
        };
        let syncrepl = ("syncrepl", Source::ContentSync);
        assert_eq!(begun(syncrepl.0, syncrepl.1, long_ago, Some(now)), Some(true), "the control");
        assert_eq!(begun(syncrepl.0, syncrepl.1, long_ago, None), Some(false), "not read whole within a day");
        assert_eq!(begun(syncrepl.0, syncrepl.1, now, None), None, "not due: a change read");
        let stamps = Source::ModifyTimestamp { margin: Duration::from_secs(300) };
        assert_eq!(begun("modify_timestamp", stamps, long_ago, Some(now)), Some(false));
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(
            [Some(hours(23)), Some(hours(24)), Some(hours(25)), None].map(read_whole_due),
            [false, true, true, true]
        );
        // By the wall clock alone: the host suspended since the full read (2 s, full_sync_every being 1 s), and
        // since the model was read whole (25 h).
        let suspended = ago(Duration::ZERO, Duration::from_secs(2));
        assert_eq!(begun(syncrepl.0, syncrepl.1, suspended, Some(now)), Some(true), "due by the wall clock");
        let whole_suspended = ago(Duration::ZERO, hours(25));
        assert_eq!(begun(syncrepl.0, syncrepl.1, long_ago, Some(whole_suspended)), Some(false), "read whole again");
        // A model verified keeps the time it was read whole; one read whole beside the full read takes the full
        // read's (the control).
        let earlier = ago(Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(read_whole_at(ldap::ModelMade::Verified, earlier, now), earlier);
        assert_eq!(read_whole_at(ldap::ModelMade::Built, earlier, now), now);
    }
}

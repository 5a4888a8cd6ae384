//! The run report: what a sync run found and did, as JSON (`sync --json`, its fields promised in
//! `docs/interface.md`) and as text for a person. It holds names and counts, never a secret.
//!
//! It also owns the assembly rules: how one group's outcome becomes its report line and status, and how the
//! groups' statuses make the run's result. Every string an operator sees (result, status, error kind) comes
//! from an explicit `as_str()`, never from `Debug`, so renaming a variant cannot change what alerts match.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::cloudshell::{CallCounts, CallKind};
use crate::exit;
use crate::group_name::GroupName;
use crate::ldap;
use crate::logging::Escaped;
use crate::username::Username;

/// The outcome of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "&'static str")]
pub enum RunResult {
    /// Every group enumerated and every needed import succeeded (or, dry, was planned).
    Ok,
    /// Some groups or users failed; the rest were synced.
    Partial,
    /// The run could not proceed; nothing was written.
    Failed,
    /// A safety limit stopped every write.
    Held,
}

impl RunResult {
    /// Every result, for tests that pin the interface strings.
    pub const ALL: [RunResult; 4] = [RunResult::Ok, RunResult::Partial, RunResult::Failed, RunResult::Held];

    /// The name in reports, the status file, metrics labels and `/healthz`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Partial => "partial",
            RunResult::Failed => "failed",
            RunResult::Held => "held",
        }
    }

    /// The process exit code for this result.
    pub fn exit_code(self) -> u8 {
        match self {
            RunResult::Ok => exit::OK,
            RunResult::Partial => exit::PARTIAL,
            RunResult::Failed => exit::FATAL,
            RunResult::Held => exit::HELD,
        }
    }

    /// The result of a run that got as far as its steps, from their statuses: held wins over partial,
    /// partial over ok. A run that was interrupted is partial at least.
    fn from_statuses(statuses: impl IntoIterator<Item = GroupStatus>, interrupted: bool) -> RunResult {
        let (mut held, mut partial) = (false, interrupted);
        for s in statuses {
            held |= s == GroupStatus::Held;
            partial |= matches!(s, GroupStatus::Failed | GroupStatus::Partial | GroupStatus::Skipped);
        }
        if held {
            RunResult::Held
        } else if partial {
            RunResult::Partial
        } else {
            RunResult::Ok
        }
    }
}

impl From<RunResult> for &'static str {
    fn from(r: RunResult) -> &'static str {
        r.as_str()
    }
}

/// One group's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum GroupStatus {
    /// Nothing was missing, or everything missing was imported.
    Ok,
    /// Dry run: imports planned.
    Planned,
    /// Some members could not be imported.
    Partial,
    /// The group could not be enumerated (or nothing could be imported).
    Failed,
    /// Writes were held by a safety limit.
    Held,
    /// The run was asked to stop before this group's imports were all attempted.
    Skipped,
}

impl GroupStatus {
    /// Every status, for tests that pin the interface strings.
    pub const ALL: [GroupStatus; 6] = [
        GroupStatus::Ok,
        GroupStatus::Planned,
        GroupStatus::Partial,
        GroupStatus::Failed,
        GroupStatus::Held,
        GroupStatus::Skipped,
    ];

    /// The name in reports and the status file.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupStatus::Ok => "ok",
            GroupStatus::Planned => "planned",
            GroupStatus::Partial => "partial",
            GroupStatus::Failed => "failed",
            GroupStatus::Held => "held",
            GroupStatus::Skipped => "skipped",
        }
    }
}

impl TryFrom<String> for GroupStatus {
    type Error = String;

    fn try_from(text: String) -> Result<GroupStatus, String> {
        GroupStatus::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| format!("no group status {text:?}"))
    }
}

impl From<GroupStatus> for &'static str {
    fn from(s: GroupStatus) -> &'static str {
        s.as_str()
    }
}

/// A text the report names by a `&'static str` (an error kind, a reason, a mode), read back from a stored report
/// (the outcome a one-shot run keeps for the next: `sync::changes`): each distinct text is allocated once for
/// the life of the process, so reading the same report again allocates nothing.
fn intern(text: String) -> &'static str {
    static TEXTS: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut texts = TEXTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = texts.get(text.as_str()) {
        return known;
    }
    let text: &'static str = Box::leak(text.into_boxed_str());
    texts.insert(text);
    text
}

/// `&'static str`, as a stored report's fields name it: serde borrows a field written `&str` from its input, which
/// a report read back from `state.db` cannot lend for `'static`; under this name it calls [`interned`] instead.
type Text = &'static str;

fn interned<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<&'static str, D::Error> {
    String::deserialize(deserializer).map(intern)
}

fn interned_option<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<&'static str>, D::Error> {
    Option::<String>::deserialize(deserializer).map(|t| t.map(intern))
}

/// The `error_kind` of a group held by the shrink guard.
pub const SHRINK_GUARD: &str = "shrink_guard";

/// Why a deactivation or removal is left alone when the second read of the directory before it
/// (`sync::confirm`) does not confirm it: the `reason` of its `left_alone` line.
pub mod second_read {
    /// A leaver the second read finds in a configured group.
    pub const MEMBER_AGAIN: &str =
        "a member again when the directory was read again before deactivating: the next run decides";
    /// A disabled account the second read does not find disabled in a configured group.
    pub const NOT_DISABLED: &str = "not disabled in a configured group when the directory was read again before deactivating: the next run decides";
    /// A removal from a CloudShell group whose user the second read finds in a directory group mapped to it.
    pub const MEMBER_AGAIN_IN_GROUP: &str = "a member of a mapped directory group again when the directory was read again before removing: the next run decides";
    /// A removal from a CloudShell group fed by a directory group the second read could not read.
    pub const NOT_READ_AGAIN: &str =
        "a mapped directory group could not be read again before removing: the next run decides";

    /// Whether a `left_alone` line's reason is one of these: the next run decides again.
    pub fn unconfirmed(reason: &str) -> bool {
        [MEMBER_AGAIN, NOT_DISABLED, MEMBER_AGAIN_IN_GROUP, NOT_READ_AGAIN].contains(&reason)
    }

    /// The `left_alone` lines of what a second read did not confirm.
    pub fn lines(left_alone: &[super::ProtectedLine]) -> impl Iterator<Item = &super::ProtectedLine> {
        left_alone.iter().filter(|l| unconfirmed(l.reason))
    }
}

/// A user that could not be imported, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub username: Username,
    pub reason: String,
}

impl From<&ldap::Collision> for Failure {
    fn from(c: &ldap::Collision) -> Failure {
        let reason = match &c.multi_valued {
            None => format!(
                "username is ambiguous in the directory: {} entries fold to it ({})",
                c.dns.len(),
                c.dns.join("; ")
            ),
            // The values are quoted: they are the directory's text, and one may be the reason it is odd.
            Some(entry) => {
                let values: Vec<String> = entry.values.iter().map(|v| format!("{v:?}")).collect();
                let others: Vec<&str> = c.dns.iter().map(String::as_str).filter(|dn| *dn != entry.dn).collect();
                let also = match others.as_slice() {
                    [] => String::new(),
                    others => format!("; also the username of {}", others.join("; ")),
                };
                format!(
                    "username is ambiguous in the directory: the username attribute of {} holds {} values ({}){also}",
                    entry.dn,
                    values.len(),
                    values.join(", ")
                )
            }
        };
        Failure { username: c.username.clone(), reason }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupReport {
    pub name: String,
    pub status: GroupStatus,
    /// Effective members in the directory.
    pub members: usize,
    /// Members missing in CloudShell before the run.
    pub missing: usize,
    pub imported: usize,
    /// Members an import found already there (created by someone else since the listing): not imported.
    pub already_present: usize,
    pub failed: usize,
    /// Why the group failed as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "interned_option")]
    pub error_kind: Option<Text>,
    /// Users this group imports (planned, in a dry run).
    pub planned: Vec<String>,
    pub imported_users: Vec<String>,
    pub failures: Vec<Failure>,
}

/// What an enumerated group's imports came to (nothing, for a group that needed none or a dry run).
#[derive(Debug, Default)]
pub struct Imports {
    pub imported: Vec<Username>,
    /// Users an import found existing (409): created by someone else since the listing, not by this run.
    pub already_present: Vec<Username>,
    pub failures: Vec<Failure>,
    /// Members not attempted because the run was asked to stop.
    pub not_attempted: usize,
    /// CloudShell's records of the users its answers named (an import's `Users`, which may name users the plan
    /// did not ask for; the members found by the listing that settled a lost answer): how the run knows their
    /// ids without listing every user again.
    pub records: Vec<crate::cloudshell::User>,
}

impl GroupReport {
    /// A group that could not be enumerated.
    pub fn enumeration_failed(name: &str, e: &ldap::Error) -> GroupReport {
        GroupReport {
            name: name.to_string(),
            status: GroupStatus::Failed,
            members: 0,
            missing: 0,
            imported: 0,
            already_present: 0,
            failed: 0,
            error: Some(e.to_string()),
            error_kind: Some(e.kind()),
            planned: Vec::new(),
            imported_users: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// A group the shrink guard held: `previous` members at the last good run, `members` now.
    pub fn shrank(name: &str, previous: usize, members: usize, missing: usize) -> GroupReport {
        GroupReport {
            error: Some(format!(
                "membership shrank from {previous} to {members} members, more than sync.max_shrink_percent allows: \
                 held (if the directory is right, accept it with: cloudshell-ldap-sync accept-shrink {})",
                crate::cli::shell_word(name)
            )),
            error_kind: Some(SHRINK_GUARD),
            status: GroupStatus::Held,
            name: name.to_string(),
            members,
            missing,
            imported: 0,
            already_present: 0,
            failed: 0,
            planned: Vec::new(),
            imported_users: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// An enumerated group. `status` is what it is when all went well (ok, planned or held); failures
    /// (`pre_failures`, such as ambiguous usernames, then the imports') make it partial or failed.
    pub fn enumerated(
        name: &str,
        counts: (usize, usize),
        planned: Vec<String>,
        pre_failures: Vec<Failure>,
        imports: Imports,
        status: GroupStatus,
    ) -> GroupReport {
        let (members, missing) = counts;
        let mut failures = pre_failures;
        failures.extend(imports.failures);
        let imported_users: Vec<String> = imports.imported.iter().map(|u| u.to_string()).collect();
        let status = if imports.not_attempted > 0 {
            GroupStatus::Skipped
        } else if failures.is_empty() {
            status
        } else if imported_users.is_empty()
            && imports.already_present.is_empty()
            && !planned.is_empty()
            && status == GroupStatus::Ok
        {
            GroupStatus::Failed
        } else {
            GroupStatus::Partial
        };
        GroupReport {
            name: name.to_string(),
            status,
            members,
            missing,
            imported: imported_users.len(),
            already_present: imports.already_present.len(),
            failed: failures.len(),
            error: None,
            error_kind: None,
            planned,
            imported_users,
            failures,
        }
    }
}

/// What one CloudShell group's membership changes came to.
#[derive(Debug, Default)]
pub struct Placed {
    pub added: Vec<Username>,
    pub removed: Vec<Username>,
    pub failures: Vec<Failure>,
    /// Changes not attempted because the run was asked to stop.
    pub not_attempted: usize,
}

/// One mapped CloudShell group's line: what it lacked, what was done, what failed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembershipReport {
    /// The CloudShell group, as configured.
    pub name: String,
    pub status: GroupStatus,
    /// Its CloudShell id, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// The directory groups mapped to it.
    pub fed_by: Vec<String>,
    /// Its members after the run (before it, in a dry run).
    pub members: usize,
    pub added: usize,
    pub removed: usize,
    pub failed: usize,
    /// Why the group could not be changed at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why nobody is removed from it in this run although `sync.remove_from_groups` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additions_only: Option<String>,
    /// Users to add and to remove (planned, in a dry run).
    pub planned_add: Vec<String>,
    pub planned_remove: Vec<String>,
    /// Removals held by `sync.max_removals_per_run`.
    pub held_removals: Vec<String>,
    /// Removals not sent because the directory, read again just before them, shows the user in a directory
    /// group mapped to this CloudShell group (`sync::confirm`), with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_alone: Vec<ProtectedLine>,
    pub added_users: Vec<String>,
    pub removed_users: Vec<String>,
    pub failures: Vec<Failure>,
}

impl MembershipReport {
    /// A mapped CloudShell group's line before anything is known of it: ok, nothing planned.
    pub fn new(name: &str, id: Option<i64>, fed_by: &[GroupName], members: usize) -> MembershipReport {
        MembershipReport {
            name: name.to_string(),
            status: GroupStatus::Ok,
            id,
            fed_by: fed_by.iter().map(GroupName::to_string).collect(),
            members,
            added: 0,
            removed: 0,
            failed: 0,
            error: None,
            additions_only: None,
            planned_add: Vec::new(),
            planned_remove: Vec::new(),
            held_removals: Vec::new(),
            left_alone: Vec::new(),
            added_users: Vec::new(),
            removed_users: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// The group could not be changed at all (missing, or its members unreadable).
    pub fn failed(mut self, error: String) -> MembershipReport {
        self.status = GroupStatus::Failed;
        self.error = Some(error);
        self
    }

    /// Settles the line with what was done: `None` in a dry run. The planned lists must be set already.
    pub fn settle(mut self, placed: Option<Placed>) -> MembershipReport {
        let dry = placed.is_none();
        let placed = placed.unwrap_or_default();
        let (added, removed) = (placed.added.len(), placed.removed.len());
        self.status = if placed.not_attempted > 0 {
            GroupStatus::Skipped
        } else if !placed.failures.is_empty() && added + removed == 0 {
            GroupStatus::Failed
        } else if !placed.failures.is_empty() {
            GroupStatus::Partial
        } else if !self.held_removals.is_empty() {
            GroupStatus::Held
        } else if dry && !(self.planned_add.is_empty() && self.planned_remove.is_empty()) {
            GroupStatus::Planned
        } else {
            GroupStatus::Ok
        };
        self.members = (self.members + added).saturating_sub(removed);
        self.added = added;
        self.removed = removed;
        self.failed = placed.failures.len();
        self.added_users = placed.added.iter().map(|u| u.to_string()).collect();
        self.removed_users = placed.removed.iter().map(|u| u.to_string()).collect();
        self.failures = placed.failures;
        self
    }
}

/// Where a leaver stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Standing {
    /// Within `grace_runs`: nothing yet.
    Waiting,
    /// To be deactivated (or, with `action = "report"`, would be).
    Candidate,
    /// Never deactivated: an admin, a `protect` match, or a local user (the leaver says which).
    Protected,
    /// Already inactive in CloudShell.
    Inactive,
    /// No longer in CloudShell.
    Gone,
}

impl Standing {
    /// Every standing, for the metrics (one gauge each) and the tests that pin the interface strings.
    pub const ALL: [Standing; 5] =
        [Standing::Waiting, Standing::Candidate, Standing::Protected, Standing::Inactive, Standing::Gone];

    /// The name in reports and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Waiting => "waiting",
            Standing::Candidate => "candidate",
            Standing::Protected => "protected",
            Standing::Inactive => "inactive",
            Standing::Gone => "gone",
        }
    }
}

impl TryFrom<String> for Standing {
    type Error = String;

    fn try_from(text: String) -> Result<Standing, String> {
        Standing::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| format!("no standing {text:?}"))
    }
}

impl From<Standing> for &'static str {
    fn from(s: Standing) -> &'static str {
        s.as_str()
    }
}

/// One leaver in the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaverLine {
    pub username: String,
    /// `waiting`, `candidate`, `protected`, `inactive` or `gone`.
    pub standing: Standing,
    /// Why a protected leaver is never deactivated.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "interned_option")]
    pub reason: Option<Text>,
    /// Consecutive complete runs as a leaver, this one included.
    pub runs: u32,
    /// When the streak began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// The leaver step: who left, what was done.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaversReport {
    /// `report` or `deactivate`.
    #[serde(deserialize_with = "interned")]
    pub action: Text,
    pub status: GroupStatus,
    /// Managed users after this run.
    pub managed: usize,
    /// Leavers past their grace and not protected: deactivated, or (held, `report`, dry run) would be.
    pub candidates: Vec<String>,
    pub deactivated: Vec<String>,
    pub reactivated: Vec<String>,
    /// Every deactivation was held by `max_per_run` or `max_percent`.
    pub held: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    /// Why the step did nothing this run (not a complete run, no state directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Why the step failed (the state file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub leavers: Vec<LeaverLine>,
    /// Users this step would have changed and left alone, with why: found already inactive when about to be
    /// deactivated (not taken for this program's), or back but another CloudShell account, or with a flag
    /// CloudShell did not say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_alone: Vec<ProtectedLine>,
    /// In a change read: managed users absent from every configured group whose departure no change read
    /// reported (gone before the last full read, and not acted on there); the next full read decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for_full_read: Vec<String>,
    pub failures: Vec<Failure>,
}

impl LeaversReport {
    pub fn new(action: &'static str) -> LeaversReport {
        LeaversReport {
            action,
            status: GroupStatus::Ok,
            managed: 0,
            candidates: Vec::new(),
            deactivated: Vec::new(),
            reactivated: Vec::new(),
            held: false,
            held_by: None,
            skipped: None,
            error: None,
            leavers: Vec::new(),
            left_alone: Vec::new(),
            waiting_for_full_read: Vec::new(),
            failures: Vec::new(),
        }
    }
}

/// A user left alone on purpose.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProtectedLine {
    pub username: String,
    /// `an administrator`, `a local user`, `sync.leavers.protect`, a flag CloudShell did not say, ...
    #[serde(deserialize_with = "interned")]
    pub reason: Text,
}

/// The disabled-accounts step (`sync.disabled_accounts = "import_then_deactivate"`): directory accounts
/// marked disabled, deactivated in CloudShell after the group imports, and reactivated when enabled again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DisabledReport {
    /// `import_then_deactivate`.
    #[serde(deserialize_with = "interned")]
    pub mode: Text,
    pub status: GroupStatus,
    /// Deactivated this run for being disabled in the directory.
    pub deactivated: Vec<String>,
    /// Reactivated this run: enabled again in the directory after this program deactivated them.
    pub reactivated: Vec<String>,
    /// Dry run: who would be deactivated (active in CloudShell now, or created by a planned group import).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<String>,
    /// Disabled accounts left active: an administrator, a local user, `sync.leavers.protect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected: Vec<ProtectedLine>,
    /// As the leaver step's `left_alone`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_alone: Vec<ProtectedLine>,
    /// Every deactivation was held by `sync.max_disabled_deactivations_per_run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    /// Why the step failed (the state file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub failures: Vec<Failure>,
}

impl DisabledReport {
    pub fn new(mode: &'static str) -> DisabledReport {
        DisabledReport {
            mode,
            status: GroupStatus::Ok,
            deactivated: Vec::new(),
            reactivated: Vec::new(),
            planned: Vec::new(),
            protected: Vec::new(),
            left_alone: Vec::new(),
            held_by: None,
            error: None,
            failures: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Totals {
    pub members: usize,
    pub missing: usize,
    pub imported: usize,
    pub failed: usize,
    /// Accounts deactivated for being disabled in the directory (apart from leavers).
    pub disabled_deactivated: usize,
}

/// How the directory was read in a run (`read` in the report).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReadReport {
    /// `full` or `changes`.
    pub mode: &'static str,
    /// The change-read method the daemon uses (`syncrepl`), when it has one.
    pub method: Option<&'static str>,
    /// In a full read that keeps a model for change reads: `built` (read whole beside the full read) or
    /// `verified` (the model kept from the last full read, brought up to date by a change read, resolved as
    /// this full read did).
    pub model: Option<&'static str>,
    /// Why this mode: why a full read, or that the changes since the last run were read.
    pub reason: String,
    /// In a change read: the user and group entries changed, added or gone since the last run.
    pub changed_users: usize,
    pub changed_groups: usize,
    /// How CloudShell's users were read: `listed` (every user, paged) or `kept` (the list the last run left,
    /// with the users it changed and the members it found missing read again, one by one).
    pub cloudshell_users: &'static str,
    /// The users read one by one (by id or by name) for a `kept` list.
    pub cloudshell_lookups: usize,
    /// The configured groups resolved from what was read: every one in a full read; in a change read, those
    /// a change may touch (the others keep the last run's outcome).
    pub resolved_groups: usize,
}

impl ReadReport {
    /// A full read, for this reason, with CloudShell's users listed.
    pub fn full(reason: &str) -> ReadReport {
        ReadReport {
            mode: "full",
            method: None,
            model: None,
            reason: reason.to_string(),
            changed_users: 0,
            changed_groups: 0,
            cloudshell_users: "listed",
            cloudshell_lookups: 0,
            resolved_groups: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct HeldReport {
    pub planned: usize,
    pub limit: usize,
    /// The key that held, when not the per-run one (`sync.max_removals_per_day`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<&'static str>,
    /// With a daily budget: the changes made in the last 24 hours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_24h: Option<usize>,
}

impl HeldReport {
    /// Held by a per-run limit.
    pub fn per_run(planned: usize, limit: usize) -> HeldReport {
        HeldReport { planned, limit, by: None, last_24h: None }
    }
}

/// What is left of one daily budget after the run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Budget {
    /// Changes made in the last 24 hours, this run's included (by the audit trail).
    pub last_24h: usize,
    /// The budget in force: the lower of the daily keys.
    pub limit: usize,
    /// `limit - last_24h`, or 0.
    pub left: usize,
    /// The key that sets `limit`, in full (`sync.leavers.max_per_day`).
    pub by: String,
    /// Deactivations: the managed users active in CloudShell now, `max_percent_per_day`'s denominator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_active: Option<usize>,
}

/// The daily budgets after the run (absent without a state directory, which holds the record they count).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Budgets {
    /// Deactivations, leavers and disabled accounts (when a step deactivates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivations: Option<Budget>,
    /// Removals from CloudShell groups (with `sync.remove_from_groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removals: Option<Budget>,
}

impl Budgets {
    /// One line for a person: `deactivations 3 of 10 left (...); removals ...`.
    pub fn to_text(&self) -> String {
        let line = |what: &str, b: &Budget| {
            let denominator =
                b.managed_active.map(|n| format!(", {n} managed users active in CloudShell")).unwrap_or_default();
            format!("{what} {} of {} left ({} in the last 24 h; {}{denominator})", b.left, b.limit, b.last_24h, b.by)
        };
        let parts: Vec<String> = [
            self.deactivations.as_ref().map(|b| line("deactivations", b)),
            self.removals.as_ref().map(|b| line("removals from CloudShell groups", b)),
        ]
        .into_iter()
        .flatten()
        .collect();
        parts.join("; ")
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub run_id: String,
    pub result: RunResult,
    pub dry_run: bool,
    pub started_at: String,
    pub duration_ms: u64,
    /// Time spent reading the directory.
    pub directory_ms: u64,
    /// Time from the end of the reads (directory and CloudShell) to the end of the run: planning, any
    /// writes, and the report. In a run that changes nothing, what the plan and the report cost.
    pub after_reads_ms: u64,
    /// Time spent reading and writing the state database (opening it included).
    pub state_ms: u64,
    /// Time spent reading the directory a second time before the first deactivation or removal
    /// (`sync::confirm`); absent when the run made no second read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_read_ms: Option<u64>,
    /// The directory server that served the run (of `ldap.url`'s list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory_url: Option<String>,
    /// How the directory was read: in full, or the changes since the last run (absent when it was not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadReport>,
    /// What started the daemon's run: `start`, `schedule`, `signal` (SIGUSR1) or `watch` (a change the
    /// directory announced); absent in a one-shot run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<&'static str>,
    /// The run was asked to stop (SIGTERM) and some imports were not attempted.
    pub interrupted: bool,
    /// The run was stopped by `sync.run_timeout` rather than by a signal.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub run_timeout_reached: bool,
    /// Why the run could not proceed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldReport>,
    pub groups: Vec<GroupReport>,
    /// One entry per mapped CloudShell group (absent without `[[sync.mapping]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub memberships: Vec<MembershipReport>,
    /// Set when planned removals exceeded `sync.max_removals_per_run`: every removal was held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removals_held: Option<HeldReport>,
    /// The leaver step (absent with `sync.leavers.action = "ignore"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leavers: Option<LeaversReport>,
    /// The disabled-accounts step (absent with `sync.disabled_accounts = "per_user"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_accounts: Option<DisabledReport>,
    /// How the configuration identifies users differently from the one that made the state database, one line
    /// per setting: every deactivation and removal is held until the change is accepted (`accept-identity`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identity_changed: Vec<String>,
    /// Members of configured groups this program knew that the directory does not show now (see
    /// `sync::unresolved`): never leavers, never removed; the run is partial.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<UnresolvedLine>,
    /// The managed users matched again after an accepted identity change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rematch: Option<RematchReport>,
    /// Effective members of configured groups whose CloudShell user is inactive, not deactivated by this
    /// program (an administrator's doing, or another host's run): they have no access.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inactive_members: Vec<String>,
    /// What is left of the daily budgets (absent without a state directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Budgets>,
    pub totals: Totals,
    pub api_calls: CallCounts,
}

/// An unresolved member, for the report.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct UnresolvedLine {
    pub group: String,
    pub dn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub reason: &'static str,
}

/// The managed users matched again after an accepted identity change.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RematchReport {
    /// Records now under another username, as `was -> now`.
    pub renamed: Vec<String>,
    /// Records matched to no member: no longer managed, never deactivated.
    pub no_longer_managed: Vec<String>,
}

impl Report {
    /// The report of a run that has just started: ok until something says otherwise.
    pub fn new(run_id: String, dry_run: bool) -> Report {
        Report {
            run_id,
            result: RunResult::Ok,
            dry_run,
            started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            duration_ms: 0,
            directory_ms: 0,
            after_reads_ms: 0,
            state_ms: 0,
            second_read_ms: None,
            directory_url: None,
            read: None,
            trigger: None,
            interrupted: false,
            run_timeout_reached: false,
            error: None,
            held: None,
            groups: Vec::new(),
            memberships: Vec::new(),
            removals_held: None,
            leavers: None,
            disabled_accounts: None,
            identity_changed: Vec::new(),
            unresolved: Vec::new(),
            rematch: None,
            inactive_members: Vec::new(),
            budgets: None,
            totals: Totals::default(),
            api_calls: CallCounts::default(),
        }
    }

    /// Marks the run as one that could not proceed.
    pub fn fail(&mut self, error: impl ToString) {
        self.result = RunResult::Failed;
        self.error = Some(error.to_string());
    }

    /// Settles the totals and the result from the sections, once the run's steps are done. `members` and
    /// `missing` are distinct users over all groups (the plan knows them; the group lines would count a user
    /// in two groups twice); the rest are sums over the lines. The result: a run that failed stays failed,
    /// a run whose imports were all held is held, and otherwise the worst status of the directory groups,
    /// the CloudShell groups, the leaver step and the disabled-accounts step decides (held over partial,
    /// partial over ok; an interrupted run is partial at least).
    pub fn finish(&mut self, members: usize, missing: usize) {
        self.totals = Totals {
            members,
            missing,
            imported: self.groups.iter().map(|g| g.imported).sum(),
            failed: self.groups.iter().map(|g| g.failed).sum(),
            disabled_deactivated: self.disabled_accounts.as_ref().map_or(0, |d| d.deactivated.len()),
        };
        self.result = if self.error.is_some() {
            RunResult::Failed
        } else if self.held.is_some() {
            RunResult::Held
        } else {
            RunResult::from_statuses(self.statuses(), self.interrupted)
        };
    }

    /// The status of every section that has one.
    fn statuses(&self) -> impl Iterator<Item = GroupStatus> + '_ {
        let groups = self.groups.iter().map(|g| g.status);
        let memberships = self.memberships.iter().map(|m| m.status);
        let leavers = self.leavers.as_ref().map(|l| l.status);
        let disabled = self.disabled_accounts.as_ref().map(|d| d.status);
        let identity = (!self.identity_changed.is_empty()).then_some(GroupStatus::Held);
        let unresolved = (!self.unresolved.is_empty()).then_some(GroupStatus::Partial);
        groups.chain(memberships).chain(leavers).chain(disabled).chain(identity).chain(unresolved)
    }

    /// Whether this run, as it ended, left nothing for a later run to do while nothing changes: it ended `ok`
    /// and wrote nothing, no member is missing, and nothing waits or is held (no leaver within its grace or
    /// held, no planned or held membership change, no disabled account planned, nothing unresolved). A run
    /// with nothing new to read after it would decide the same again (see `sync::changes`).
    pub fn left_nothing_to_do(&self) -> bool {
        use crate::cloudshell::CallKind;
        let writes: u64 = CallKind::ALL.into_iter().filter(|k| k.is_write()).map(|k| self.api_calls.get(k)).sum();
        // A candidate under `action = "report"` stays one, run after run: nothing waits on it.
        let settled_leavers = self.leavers.as_ref().is_none_or(|l| {
            let reported_only = l.action == crate::config::LeaverAction::Report.as_str();
            !l.held
                && (l.candidates.is_empty() || reported_only)
                && l.error.is_none()
                && l.leavers.iter().all(|line| match line.standing {
                    Standing::Waiting => false,
                    Standing::Candidate => reported_only,
                    Standing::Protected | Standing::Inactive | Standing::Gone => true,
                })
        });
        let settled_memberships = self.memberships.iter().all(|m| {
            m.status == GroupStatus::Ok
                && m.planned_add.is_empty()
                && m.planned_remove.is_empty()
                && m.held_removals.is_empty()
                && second_read::lines(&m.left_alone).next().is_none()
        });
        let settled_disabled = self.disabled_accounts.as_ref().is_none_or(|d| {
            d.planned.is_empty()
                && d.held_by.is_none()
                && d.error.is_none()
                && second_read::lines(&d.left_alone).next().is_none()
        });
        self.result == RunResult::Ok
            && !self.dry_run
            && !self.interrupted
            && writes == 0
            && self.totals.missing == 0
            && self.held.is_none()
            && self.removals_held.is_none()
            && self.identity_changed.is_empty()
            && self.unresolved.is_empty()
            && self.rematch.is_none()
            && settled_leavers
            && settled_memberships
            && settled_disabled
    }

    /// Logs the run's summary event (`run finished`).
    pub fn log_summary(&self) {
        tracing::info!(
            result = self.result.as_str(),
            groups = self.groups.len(),
            members = self.totals.members,
            missing = self.totals.missing,
            imported = self.totals.imported,
            failed = self.totals.failed,
            disabled_deactivated = self.totals.disabled_deactivated,
            import_group_calls = self.api_calls.get(CallKind::ImportGroup),
            import_user_calls = self.api_calls.get(CallKind::ImportUser),
            added_to_groups = self.memberships.iter().map(|m| m.added).sum::<usize>(),
            removed_from_groups = self.memberships.iter().map(|m| m.removed).sum::<usize>(),
            duration_ms = self.duration_ms,
            directory_ms = self.directory_ms,
            read = self.read.as_ref().map(|r| r.mode),
            trigger = self.trigger,
            cloudshell_users = self.read.as_ref().map(|r| r.cloudshell_users),
            cloudshell_lookups = self.read.as_ref().map(|r| r.cloudshell_lookups),
            after_reads_ms = self.after_reads_ms,
            state_ms = self.state_ms,
            second_read_ms = self.second_read_ms,
            "run finished"
        );
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }

    /// The report for a person: one line per group, then the totals. Text from peers (errors, reasons) has
    /// its control characters escaped, as in the logs.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mode = if self.dry_run { " (dry run: nothing written)" } else { "" };
        let _ = writeln!(out, "run {}: {} (exit {}){mode}", self.run_id, self.result.as_str(), self.result.exit_code());
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  error: {}", Escaped(e));
        }
        if let Some(h) = &self.held {
            let _ = writeln!(
                out,
                "  held: {} imports planned, more than sync.max_imports_per_run = {}; nothing was written",
                h.planned, h.limit
            );
        }
        for g in &self.groups {
            write_section(&mut out, g, self.dry_run);
        }
        if let Some(h) = &self.removals_held {
            let _ = match (h.by, h.last_24h) {
                (Some(key), Some(last_24h)) => writeln!(
                    out,
                    "  removals held: {} planned, with {last_24h} in the last 24 hours more than {key} = {}; nobody \
                     was removed",
                    h.planned, h.limit
                ),
                _ => writeln!(
                    out,
                    "  removals held: {} planned, more than sync.max_removals_per_run = {}; nobody was removed",
                    h.planned, h.limit
                ),
            };
        }
        for m in &self.memberships {
            write_section(&mut out, m, self.dry_run);
        }
        if let Some(l) = &self.leavers {
            write_section(&mut out, l, self.dry_run);
        }
        if let Some(d) = &self.disabled_accounts {
            write_section(&mut out, d, self.dry_run);
        }
        if let Some(b) = &self.budgets {
            let _ = writeln!(out, "  daily budgets: {}", b.to_text());
        }
        let t = &self.totals;
        let _ = writeln!(
            out,
            "  total: members {}  missing {}  imported {}  failed {}  (group imports {}, user imports {}, {} ms)",
            t.members,
            t.missing,
            t.imported,
            t.failed,
            self.api_calls.get(CallKind::ImportGroup),
            self.api_calls.get(CallKind::ImportUser),
            self.duration_ms
        );
        out
    }
}

/// One section of the text report (a directory group, a CloudShell group, the leavers, the disabled
/// accounts): its line, then the notes and failures under it. One shape, so that the sections read alike.
trait TextSection {
    /// The section's line, without its indent.
    fn headline(&self) -> String;
    /// The lines under it, before the failures: errors, reasons, and (in a dry run) what would be done.
    fn notes(&self, dry_run: bool) -> Vec<String>;
    fn failures(&self) -> &[Failure];
}

fn write_section(out: &mut String, section: &impl TextSection, dry_run: bool) {
    let _ = writeln!(out, "  {}", section.headline());
    for note in section.notes(dry_run) {
        let _ = writeln!(out, "      {note}");
    }
    write_failures(out, section.failures());
}

/// The note `label: names...`, when there are names to show and `shown` says to.
fn names_note(shown: bool, label: &str, names: &[String]) -> Option<String> {
    (shown && !names.is_empty()).then(|| format!("{label}: {}", preview(names)))
}

impl TextSection for GroupReport {
    fn headline(&self) -> String {
        format!(
            "{:<30} {:<8} members {:>6}  missing {:>5}  imported {:>5}  failed {:>5}",
            format!("{:?}", self.name),
            self.status.as_str(),
            self.members,
            self.missing,
            self.imported,
            self.failed
        )
    }

    fn notes(&self, dry_run: bool) -> Vec<String> {
        let error = self.error.as_ref().map(|e| format!("error: {}", Escaped(e)));
        [error, names_note(dry_run, "would import", &self.planned)].into_iter().flatten().collect()
    }

    fn failures(&self) -> &[Failure] {
        &self.failures
    }
}

impl TextSection for MembershipReport {
    fn headline(&self) -> String {
        format!(
            "cloudshell group {:<13} {:<8} members {:>6}  added {:>5}  removed {:>5}  failed {:>5}",
            format!("{:?}", self.name),
            self.status.as_str(),
            self.members,
            self.added,
            self.removed,
            self.failed
        )
    }

    fn notes(&self, dry_run: bool) -> Vec<String> {
        [
            self.error.as_ref().map(|e| format!("error: {}", Escaped(e))),
            self.additions_only.as_ref().map(|why| format!("additions only: {why}")),
            names_note(dry_run, "would add", &self.planned_add),
            names_note(dry_run, "would remove", &self.planned_remove),
            names_note(true, "removals held", &self.held_removals),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn failures(&self) -> &[Failure] {
        &self.failures
    }
}

impl TextSection for LeaversReport {
    fn headline(&self) -> String {
        format!(
            "leavers ({}) {:<8} managed {:>6}  leavers {:>5}  deactivated {:>3}  reactivated {:>3}  failed {:>3}",
            self.action,
            self.status.as_str(),
            self.managed,
            self.leavers.len(),
            self.deactivated.len(),
            self.reactivated.len(),
            self.failures.len()
        )
    }

    fn notes(&self, _dry_run: bool) -> Vec<String> {
        let mut notes: Vec<String> =
            [&self.skipped, &self.error].into_iter().flatten().map(|why| Escaped(why).to_string()).collect();
        notes.extend(self.held_by.as_ref().map(|by| format!("held: {by}; nobody was deactivated")));
        notes.extend(self.leavers.iter().take(20).map(|leaver| {
            let since = leaver.since.as_deref().unwrap_or("-");
            let why = leaver.reason.map(|r| format!(" ({r})")).unwrap_or_default();
            let standing = leaver.standing.as_str();
            format!("{} {standing}{why}: a leaver for {} run(s), since {since}", leaver.username, leaver.runs)
        }));
        if self.leavers.len() > 20 {
            notes.push(format!("... and {} more leavers", self.leavers.len() - 20));
        }
        notes.extend(left_alone_notes(&self.left_alone));
        notes
    }

    fn failures(&self) -> &[Failure] {
        &self.failures
    }
}

impl TextSection for DisabledReport {
    fn headline(&self) -> String {
        format!(
            "disabled accounts ({}) {:<8} deactivated {:>3}  reactivated {:>3}  protected {:>3}  failed {:>3}",
            self.mode,
            self.status.as_str(),
            self.deactivated.len(),
            self.reactivated.len(),
            self.protected.len(),
            self.failures.len()
        )
    }

    fn notes(&self, dry_run: bool) -> Vec<String> {
        let mut notes: Vec<String> =
            [&self.held_by, &self.error].into_iter().flatten().map(|why| Escaped(why).to_string()).collect();
        notes.extend(names_note(dry_run, "would deactivate", &self.planned));
        notes.extend(left_alone_notes(&self.left_alone));
        notes
    }

    fn failures(&self) -> &[Failure] {
        &self.failures
    }
}

/// The first 20 users left alone, one each with why, and how many more.
fn left_alone_notes(left: &[ProtectedLine]) -> Vec<String> {
    let mut notes: Vec<String> =
        left.iter().take(20).map(|l| format!("{} left alone: {}", l.username, l.reason)).collect();
    if left.len() > 20 {
        notes.push(format!("... and {} more left alone", left.len() - 20));
    }
    notes
}

/// The first 20 failures of a line, one each, and how many more.
fn write_failures(out: &mut String, failures: &[Failure]) {
    for f in failures.iter().take(20) {
        let _ = writeln!(out, "      failed {}: {}", f.username, Escaped(&f.reason));
    }
    if failures.len() > 20 {
        let _ = writeln!(out, "      ... and {} more failures", failures.len() - 20);
    }
}

fn preview(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(10).map(String::as_str).collect();
    if names.len() > 10 { format!("{}, ... ({} in all)", shown.join(", "), names.len()) } else { shown.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a run that ended `ok` with nothing missing, waiting, planned or held left nothing to do; the
    /// control: the plain `ok` run did.
    #[test]
    fn a_run_left_nothing_to_do_only_when_nothing_waits_or_is_planned() {
        let ok = || {
            let mut r = Report::new("r".into(), false);
            r.leavers = Some(LeaversReport::new("deactivate"));
            r.finish(3, 0);
            r
        };
        assert!(ok().left_nothing_to_do());
        let waiting =
            LeaverLine { username: "bob".into(), standing: Standing::Waiting, reason: None, runs: 1, since: None };
        let protected = LeaverLine { standing: Standing::Protected, ..waiting.clone() };
        let mut r = ok();
        r.leavers.as_mut().unwrap().leavers.push(protected);
        assert!(r.left_nothing_to_do(), "a protected leaver stays as it is");
        r.leavers.as_mut().unwrap().leavers.push(waiting);
        assert!(!r.left_nothing_to_do(), "a leaver within its grace");
        let mut r = ok();
        let candidate =
            LeaverLine { username: "bob".into(), standing: Standing::Candidate, reason: None, runs: 1, since: None };
        r.leavers.as_mut().unwrap().leavers.push(candidate);
        r.leavers.as_mut().unwrap().candidates.push("bob".into());
        assert!(!r.left_nothing_to_do(), "a leaver to deactivate (here: not deactivated)");
        r.leavers.as_mut().unwrap().action = "report";
        assert!(r.left_nothing_to_do(), "a leaver only reported stays so");
        let mut r = ok();
        r.finish(3, 1);
        assert!(!r.left_nothing_to_do(), "a member missing");
        let mut r = ok();
        let mut m = MembershipReport::new("Lab", Some(1), &[], 0);
        m.held_removals = vec!["bob".into()];
        r.memberships.push(m);
        assert!(!r.left_nothing_to_do(), "a removal held");
        let mut r = ok();
        r.disabled_accounts =
            Some(DisabledReport { planned: vec!["x".into()], ..DisabledReport::new("import_then_deactivate") });
        assert!(!r.left_nothing_to_do(), "a disabled account planned");
        assert!(!Report::new("r".into(), true).left_nothing_to_do(), "a dry run");
        // What a second read did not confirm is decided again by the next run; a user left alone for good (here
        // another CloudShell account under the name) is settled.
        let line = |reason| ProtectedLine { username: "bob".into(), reason };
        let disabled = |reason| {
            let mut r = ok();
            let d = DisabledReport { left_alone: vec![line(reason)], ..DisabledReport::new("import_then_deactivate") };
            r.disabled_accounts = Some(d);
            r
        };
        assert!(disabled("another CloudShell account").left_nothing_to_do(), "the control");
        assert!(!disabled(second_read::NOT_DISABLED).left_nothing_to_do(), "a deactivation not confirmed");
        let mut r = ok();
        let mut m = MembershipReport::new("Lab", Some(1), &[], 0);
        m.left_alone = vec![line(second_read::MEMBER_AGAIN_IN_GROUP)];
        r.memberships.push(m);
        assert!(!r.left_nothing_to_do(), "a removal not confirmed");
    }

    #[test]
    fn an_ambiguous_username_says_why_naming_the_entries_or_the_values() {
        let name = Username::new("a2").unwrap();
        let dns = vec!["uid=a,dc=x".to_string(), "uid=b,dc=x".to_string()];
        let two = ldap::Collision { username: name.clone(), dns: dns.clone(), multi_valued: None };
        assert_eq!(
            Failure::from(&two).reason,
            "username is ambiguous in the directory: 2 entries fold to it (uid=a,dc=x; uid=b,dc=x)"
        );
        let entry = ldap::MultiValued { dn: "uid=a,dc=x".into(), values: vec!["a".into(), "a2".into()] };
        let several = ldap::Collision { username: name, dns, multi_valued: Some(entry) };
        assert_eq!(
            Failure::from(&several).reason,
            "username is ambiguous in the directory: the username attribute of uid=a,dc=x holds 2 values (\"a\", \
             \"a2\"); also the username of uid=b,dc=x"
        );
    }

    /// Operators alert on these strings: a rename must be deliberate, and break this test.
    #[test]
    fn interface_strings_are_pinned() {
        let results: Vec<&str> = RunResult::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(results, ["ok", "partial", "failed", "held"]);
        let statuses: Vec<&str> = GroupStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(statuses, ["ok", "planned", "partial", "failed", "held", "skipped"]);
        for r in RunResult::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        for s in GroupStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let standings: Vec<&str> = Standing::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(standings, ["waiting", "candidate", "protected", "inactive", "gone"]);
        for s in Standing::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let exits: Vec<u8> = RunResult::ALL.iter().map(|r| r.exit_code()).collect();
        assert_eq!(exits, [0, 3, 1, 4]);
        assert_eq!((exit::CONFIG, exit::BUSY), (2, 5), "the codes no result maps to");
        assert_eq!(SHRINK_GUARD, "shrink_guard");
    }

    #[test]
    fn a_leaver_line_carries_its_standing_and_writes_it_by_name() {
        let line = LeaverLine {
            username: "root".into(),
            standing: Standing::Protected,
            reason: Some("an administrator"),
            runs: 2,
            since: None,
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"username":"root","standing":"protected","reason":"an administrator","runs":2}"#
        );
    }

    fn line(status: GroupStatus) -> GroupReport {
        GroupReport::enumerated("g", (1, 0), vec![], vec![], Imports::default(), status)
    }

    #[test]
    fn the_run_result_follows_the_worst_group() {
        use GroupStatus as S;
        for (statuses, interrupted, expected) in [
            (vec![], false, RunResult::Ok),
            (vec![S::Ok, S::Planned], false, RunResult::Ok),
            (vec![S::Ok], true, RunResult::Partial),
            (vec![S::Ok, S::Partial], false, RunResult::Partial),
            (vec![S::Failed], false, RunResult::Partial),
            (vec![S::Skipped], false, RunResult::Partial),
            (vec![S::Failed, S::Held], false, RunResult::Held),
        ] {
            let mut report = Report::new("r".into(), false);
            report.groups = statuses.iter().map(|&s| line(s)).collect();
            report.interrupted = interrupted;
            report.finish(1, 0);
            assert_eq!(report.result, expected, "{statuses:?} {interrupted}");
        }
    }

    #[test]
    fn a_finished_report_takes_every_section_into_its_result_and_totals() {
        let finished = |edit: &dyn Fn(&mut Report)| {
            let mut report = Report::new("r".into(), false);
            report.groups = vec![line(GroupStatus::Ok)];
            edit(&mut report);
            report.finish(7, 3);
            report
        };
        assert_eq!(finished(&|_| {}).result, RunResult::Ok);
        let held_membership = |r: &mut Report| {
            let mut m = MembershipReport::new("Lab", Some(1), &[], 0);
            m.status = GroupStatus::Held;
            r.memberships = vec![m];
        };
        assert_eq!(finished(&held_membership).result, RunResult::Held, "a CloudShell group counts");
        let failed_leavers = |r: &mut Report| {
            r.leavers = Some(LeaversReport { status: GroupStatus::Failed, ..LeaversReport::new("deactivate") })
        };
        assert_eq!(finished(&failed_leavers).result, RunResult::Partial, "the leaver step counts");
        let skipped_disabled = |r: &mut Report| {
            let disabled =
                DisabledReport { status: GroupStatus::Skipped, ..DisabledReport::new("import_then_deactivate") };
            r.disabled_accounts = Some(disabled);
        };
        assert_eq!(finished(&skipped_disabled).result, RunResult::Partial, "the disabled-accounts step counts");
        let held_imports = |r: &mut Report| r.held = Some(HeldReport::per_run(9, 5));
        assert_eq!(finished(&held_imports).result, RunResult::Held, "every import held");
        assert_eq!(finished(&|r| r.fail("boom")).result, RunResult::Failed, "a failed run stays failed");

        let report = finished(&|r| {
            r.groups = vec![
                GroupReport { imported: 2, failed: 1, ..line(GroupStatus::Ok) },
                GroupReport { imported: 3, ..line(GroupStatus::Ok) },
            ];
            r.disabled_accounts =
                Some(DisabledReport { deactivated: vec!["x".into()], ..DisabledReport::new("import_then_deactivate") });
        });
        let t = report.totals;
        assert_eq!((t.members, t.missing, t.imported, t.failed, t.disabled_deactivated), (7, 3, 5, 1, 1));
    }

    #[test]
    fn a_group_line_takes_its_status_from_its_failures() {
        let alice = Username::new("alice").unwrap();
        let failure = || Failure { username: Username::new("bob").unwrap(), reason: "refused".into() };
        let planned = || vec!["alice".to_string(), "bob".to_string()];
        let imports = |imported: Vec<Username>, failures: Vec<Failure>, not_attempted| Imports {
            imported,
            failures,
            not_attempted,
            ..Default::default()
        };
        let g = GroupReport::enumerated(
            "g",
            (2, 2),
            planned(),
            vec![],
            imports(vec![], vec![failure()], 0),
            GroupStatus::Ok,
        );
        assert_eq!((g.status, g.failed, g.imported), (GroupStatus::Failed, 1, 0), "nothing imported: failed");
        let g = GroupReport::enumerated(
            "g",
            (2, 2),
            planned(),
            vec![],
            imports(vec![alice.clone()], vec![failure()], 0),
            GroupStatus::Ok,
        );
        assert_eq!((g.status, g.imported_users.as_slice()), (GroupStatus::Partial, &["alice".to_string()][..]));
        let g =
            GroupReport::enumerated("g", (2, 2), planned(), vec![], imports(vec![alice], vec![], 1), GroupStatus::Ok);
        assert_eq!(g.status, GroupStatus::Skipped, "interrupted");
        let g = GroupReport::enumerated("g", (2, 0), vec![], vec![failure()], Imports::default(), GroupStatus::Ok);
        assert_eq!(g.status, GroupStatus::Partial, "a collision alone makes the group partial");
        let g = GroupReport::enumerated("g", (2, 2), planned(), vec![], Imports::default(), GroupStatus::Planned);
        assert_eq!((g.status, g.planned.len()), (GroupStatus::Planned, 2));
    }

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn failures(n: usize) -> Vec<Failure> {
        (1..=n)
            .map(|i| Failure { username: Username::new(&format!("f{i}")).unwrap(), reason: format!("refused\n{i}") })
            .collect()
    }

    /// A leaver step with every line its text shows: reasons, a hold, more leavers than are listed.
    fn full_leavers() -> LeaversReport {
        let mut l = LeaversReport::new("deactivate");
        l.status = GroupStatus::Held;
        l.managed = 30;
        l.skipped = Some("not a complete run".into());
        l.error = Some("users.json\x1b unreadable".into());
        l.held_by = Some("max_per_run = 1".into());
        l.deactivated = names("d", 2);
        l.reactivated = names("re", 1);
        l.leavers = (1..=21)
            .map(|i| LeaverLine {
                username: format!("l{i}"),
                standing: if i == 1 { Standing::Protected } else { Standing::Waiting },
                reason: (i == 1).then_some("an administrator"),
                runs: i,
                since: (i > 1).then(|| "2026-01-01T00:00:00Z".to_string()),
            })
            .collect();
        l.failures = failures(2);
        l
    }

    /// A report with every section and every optional line of each: the text a person reads, pinned.
    fn full_report(dry_run: bool) -> Report {
        let mut r = Report::new("run-1".into(), dry_run);
        r.result = RunResult::Partial;
        r.duration_ms = 1234;
        r.error = Some("counts not saved\tsomewhere".into());
        r.held = Some(HeldReport::per_run(9, 5));
        let mut broken =
            GroupReport::enumerated("Ops", (3, 2), names("o", 2), failures(21), Imports::default(), GroupStatus::Ok);
        broken.error = Some("search failed\x07".into());
        r.groups = vec![
            GroupReport::enumerated(
                "Engineering",
                (40, 12),
                names("e", 12),
                vec![],
                Imports::default(),
                GroupStatus::Planned,
            ),
            broken,
        ];
        r.removals_held = Some(HeldReport::per_run(7, 3));
        let mut m = MembershipReport::new("Lab Users", Some(4), &[GroupName::new("Engineering")], 10);
        m.planned_add = names("a", 2);
        m.planned_remove = names("r", 11);
        m.held_removals = names("h", 1);
        m.additions_only = Some("a mapped group failed".into());
        let mut m = m.settle(Some(Placed {
            added: vec![Username::new("a1").unwrap()],
            failures: failures(1),
            ..Default::default()
        }));
        m.error = Some("gone\r".into());
        r.memberships = vec![m, MembershipReport::new("Nowhere", None, &[], 0).failed("missing".into())];
        r.leavers = Some(full_leavers());
        let mut d = DisabledReport::new("import_then_deactivate");
        d.status = GroupStatus::Planned;
        d.deactivated = names("x", 1);
        d.reactivated = names("y", 2);
        d.planned = names("p", 3);
        d.protected = vec![ProtectedLine { username: "root".into(), reason: "an administrator" }];
        d.held_by = Some("held by max_disabled_deactivations_per_run".into());
        d.error = Some("state\u{85}file".into());
        d.failures = failures(1);
        r.disabled_accounts = Some(d);
        r.totals = Totals { members: 43, missing: 14, imported: 1, failed: 22, disabled_deactivated: 1 };
        r
    }

    #[test]
    fn users_left_alone_are_listed_with_why_in_both_steps_and_only_when_there_are_some() {
        let alone = |n: usize| -> Vec<ProtectedLine> {
            (0..n).map(|i| ProtectedLine { username: format!("u{i}"), reason: "already inactive" }).collect()
        };
        let mut l = LeaversReport::new("deactivate");
        assert!(!l.notes(false).iter().any(|n| n.contains("left alone")));
        assert!(serde_json::to_value(&l).unwrap().get("left_alone").is_none(), "absent when empty");
        l.left_alone = alone(21);
        let notes = l.notes(false);
        assert_eq!(notes.first().map(String::as_str), Some("u0 left alone: already inactive"));
        assert_eq!(notes.last().map(String::as_str), Some("... and 1 more left alone"));
        assert_eq!(serde_json::to_value(&l).unwrap()["left_alone"][0]["reason"], "already inactive");
        let mut d = DisabledReport::new("import_then_deactivate");
        d.left_alone = alone(1);
        assert_eq!(d.notes(false), ["u0 left alone: already inactive"]);
    }

    #[test]
    fn the_report_shows_a_daily_removal_hold_by_its_key_and_the_budgets_left() {
        let mut r = Report::new("run-2".into(), false);
        r.removals_held =
            Some(HeldReport { by: Some("sync.max_removals_per_day"), last_24h: Some(8), ..HeldReport::per_run(3, 10) });
        r.budgets = Some(Budgets {
            deactivations: Some(Budget {
                last_24h: 2,
                limit: 4,
                left: 2,
                by: "sync.leavers.max_percent_per_day".into(),
                managed_active: Some(20),
            }),
            removals: Some(Budget {
                last_24h: 8,
                limit: 10,
                left: 2,
                by: "sync.max_removals_per_day".into(),
                managed_active: None,
            }),
        });
        let text = r.to_text();
        assert!(
            text.contains(
                "  removals held: 3 planned, with 8 in the last 24 hours more than sync.max_removals_per_day = 10; \
                 nobody was removed\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  daily budgets: deactivations 2 of 4 left (2 in the last 24 h; sync.leavers.max_percent_per_day, 20 \
                 managed users active in CloudShell); removals from CloudShell groups 2 of 10 left (8 in the last 24 h; \
                 sync.max_removals_per_day)\n"
            ),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            json["removals_held"],
            serde_json::json!({"planned": 3, "limit": 10, "by": "sync.max_removals_per_day", "last_24h": 8})
        );
        assert_eq!(json["budgets"]["removals"]["left"], 2);
        let per_run: serde_json::Value = serde_json::to_value(HeldReport::per_run(7, 3)).unwrap();
        assert_eq!(per_run, serde_json::json!({"planned": 7, "limit": 3}), "the per-run hold as before");
    }

    #[test]
    fn the_text_report_shows_every_section() {
        let failed = |n: u32| -> String { (1..=n).map(|i| format!("      failed f{i}: refused\\n{i}\n")).collect() };
        let leavers: String = (2..=20)
            .map(|i| format!("      l{i} waiting: a leaver for {i} run(s), since 2026-01-01T00:00:00Z\n"))
            .collect();
        let expected = [
            r#"run run-1: partial (exit 3) (dry run: nothing written)
  error: counts not saved\tsomewhere
  held: 9 imports planned, more than sync.max_imports_per_run = 5; nothing was written
  "Engineering"                  planned  members     40  missing    12  imported     0  failed     0
      would import: e1, e2, e3, e4, e5, e6, e7, e8, e9, e10, ... (12 in all)
  "Ops"                          failed   members      3  missing     2  imported     0  failed    21
      error: search failed\u{7}
      would import: o1, o2
"#,
            &failed(20),
            r#"      ... and 1 more failures
  removals held: 7 planned, more than sync.max_removals_per_run = 3; nobody was removed
  cloudshell group "Lab Users"   partial  members     11  added     1  removed     0  failed     1
      error: gone\r
      additions only: a mapped group failed
      would add: a1, a2
      would remove: r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, ... (11 in all)
      removals held: h1
"#,
            &failed(1),
            r#"  cloudshell group "Nowhere"     failed   members      0  added     0  removed     0  failed     0
      error: missing
  leavers (deactivate) held     managed     30  leavers    21  deactivated   2  reactivated   1  failed   2
      not a complete run
      users.json\u{1b} unreadable
      held: max_per_run = 1; nobody was deactivated
      l1 protected (an administrator): a leaver for 1 run(s), since -
"#,
            &leavers,
            "      ... and 1 more leavers\n",
            &failed(2),
            r#"  disabled accounts (import_then_deactivate) planned  deactivated   1  reactivated   2  protected   1  failed   1
      held by max_disabled_deactivations_per_run
      state\u{85}file
      would deactivate: p1, p2, p3
"#,
            &failed(1),
            "  total: members 43  missing 14  imported 1  failed 22  (group imports 0, user imports 0, 1234 ms)\n",
        ]
        .concat();
        assert_eq!(full_report(true).to_text(), expected);
        let applied: String = expected
            .replace(" (dry run: nothing written)", "")
            .lines()
            .filter(|l| !l.trim_start().starts_with("would "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(full_report(false).to_text(), applied, "without a dry run, no plans");
    }

    #[test]
    fn users_someone_else_created_are_already_present_not_imported() {
        let bob = Username::new("bob").unwrap();
        let imports = Imports { already_present: vec![bob], ..Default::default() };
        let g = GroupReport::enumerated("g", (1, 1), vec!["bob".into()], vec![], imports, GroupStatus::Ok);
        assert_eq!((g.status, g.imported, g.already_present), (GroupStatus::Ok, 0, 1));
    }
}

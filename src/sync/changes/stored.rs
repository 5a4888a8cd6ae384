//! The directory model a one-shot `sync` keeps in `state.db`, so that it too reads only what changed between
//! full reads (the daemon keeps the same [`Model`] in memory).
//!
//! A run takes the stored model as it starts ([`ChangeReads::restore`]): it reads it and deletes its head in one
//! transaction. It stores its own as its last write, only when it ended `ok` ([`ChangeReads::store`]). So a
//! run that fails, is held, crashes or is killed leaves no model, and the next run reads in full, as in the
//! daemon. `state.db`'s triggers delete the head whenever any other table is written, by any process (a daemon, an
//! `accept-*` command, `sqlite3` by hand): a stored model always stands for the state as the run that stored it
//! left it, which is what lets a run trust CloudShell's users and the outcome kept with it.
//!
//! What is stored: the kept model ([`Kept::to_stored`]); when its full read began (for `sync.full_sync_every`);
//! CloudShell's users as the run left them; the members seen since that full read (the departures a change
//! read may act on); and the run's outcome when it left nothing to do. It is stored with the program's version
//! and a fingerprint of the configuration. Another version, any change to the configuration, or a model that
//! does not decode means a full read, and the report says why.

use std::time::{Instant, SystemTime};

use arcstr::ArcStr;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::{ChangeReads, KeptUsers, Model, lock};
use crate::config::Config;
use crate::group_name::GroupName;
use crate::ldap::changes::kept::Kept;
use crate::ldap::changes::kept::{decode, encode_into};
use crate::report::{Budgets, DisabledReport, GroupReport, LeaversReport, MembershipReport, Report};
use crate::state::db::{StoredModel, Taken};
use crate::sync::journal::Journal;
use crate::username::Username;

/// What stored a model: a model stored by any other build is not read (its layout may differ).
const PROGRAM: &str = concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"), ", model format 5");

/// A one-shot run's hold on the stored model.
#[derive(Debug, Default)]
pub(super) struct OneShot {
    /// The model as taken this run: its body parts are not written again when unchanged.
    taken: std::sync::Mutex<Option<StoredModel>>,
    /// Why no stored model is used this run, for the report.
    pub(super) why_not: std::sync::Mutex<Option<String>>,
}

#[derive(Serialize, Deserialize)]
struct Head {
    kept: Vec<u8>,
    /// [`KeptUsers::stale`], when CloudShell's users are kept.
    stale: Option<Vec<i64>>,
    /// The run's outcome, when it left nothing to do (JSON: the report's types skip empty fields).
    outcome: Option<String>,
    /// When the full read that last read the model whole began (RFC 3339): `Model::whole_at`; empty when that
    /// is not known.
    whole_read_at: String,
}

#[derive(Serialize, Deserialize)]
struct CloudShellPart {
    users: Option<Vec<StoredUser>>,
    members: Vec<Box<str>>,
    groups: Vec<(String, Vec<Box<str>>)>,
}

/// [`CloudShellPart`] as it is written: borrowing what the model holds rather than copying it (100,000 users
/// and as many member names). The same layout.
#[derive(Serialize)]
struct CloudShellPartRef<'a> {
    users: Option<Vec<StoredUserRef<'a>>>,
    members: Vec<&'a str>,
    groups: Vec<(&'a str, Vec<&'a str>)>,
}

/// [`StoredUser`] as it is written, borrowing the user's parts.
#[derive(Serialize)]
struct StoredUserRef<'a> {
    id: Option<i64>,
    username: Option<&'a Username>,
    is_active: Option<bool>,
    is_admin: Option<bool>,
    domain_name: Option<&'a str>,
    group_ids: Option<&'a [i64]>,
}

impl<'a> StoredUserRef<'a> {
    fn of(u: &'a crate::cloudshell::User) -> StoredUserRef<'a> {
        StoredUserRef {
            id: u.id,
            username: u.username.as_ref(),
            is_active: u.is_active,
            is_admin: u.is_admin,
            domain_name: u.domain_name.as_deref(),
            group_ids: u.group_ids.as_deref(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredUser {
    id: Option<i64>,
    username: Option<Username>,
    is_active: Option<bool>,
    is_admin: Option<bool>,
    domain_name: Option<String>,
    group_ids: Option<Box<[i64]>>,
}

/// What a run that left nothing to do replays when nothing changed (`sync::nothing_to_do`).
#[derive(Serialize, Deserialize)]
struct Outcome {
    directory_url: Option<String>,
    groups: Vec<GroupReport>,
    memberships: Vec<MembershipReport>,
    leavers: Option<LeaversReport>,
    disabled_accounts: Option<DisabledReport>,
    inactive_members: Vec<String>,
    budgets: Option<Budgets>,
    members: usize,
    missing: usize,
}

impl Outcome {
    fn of(r: &Report) -> Outcome {
        Outcome {
            directory_url: r.directory_url.clone(),
            groups: r.groups.clone(),
            memberships: r.memberships.clone(),
            leavers: r.leavers.clone(),
            disabled_accounts: r.disabled_accounts.clone(),
            inactive_members: r.inactive_members.clone(),
            budgets: r.budgets.clone(),
            members: r.totals.members,
            missing: r.totals.missing,
        }
    }

    fn report(self) -> Report {
        let mut r = Report::new("stored".into(), false);
        r.directory_url = self.directory_url;
        r.groups = self.groups;
        r.memberships = self.memberships;
        r.leavers = self.leavers;
        r.disabled_accounts = self.disabled_accounts;
        r.inactive_members = self.inactive_members;
        r.budgets = self.budgets;
        (r.totals.members, r.totals.missing) = (self.members, self.missing);
        r
    }
}

impl ChangeReads {
    /// The change-read state of a one-shot run that keeps its model in the state directory's `state.db`.
    pub fn one_shot() -> ChangeReads {
        ChangeReads { one_shot: Some(OneShot::default()), ..ChangeReads::default() }
    }

    /// Whether this is a one-shot run's ([`ChangeReads::one_shot`]).
    pub fn is_one_shot(&self) -> bool {
        self.one_shot.is_some()
    }

    /// Takes the model the last run stored, if it can be used: then it is this run's, as the daemon's kept
    /// model is (the run reads the changes since, unless a full read is due). Else the reason is kept for the
    /// report. Whether a model was taken.
    pub fn restore(&self, config: &Config, journal: &Journal) -> bool {
        let Some(one_shot) = &self.one_shot else { return false };
        let why = match journal.take_kept_model() {
            Err(e) => format!("the directory model stored in state.db could not be read: {e}"),
            Ok(Taken::None) => "no directory model stored in state.db: the first run that keeps one, or the last \
                                run did not end ok, or the state was written since"
                .into(),
            Ok(Taken::Unusable(why)) => format!("the directory model in state.db cannot be used ({why})"),
            Ok(Taken::Model(stored)) if stored.program != PROGRAM => {
                format!("the directory model in state.db was stored by {}, not {PROGRAM}", stored.program)
            }
            Ok(Taken::Model(stored)) if stored.configuration != config.fingerprint => {
                "the configuration changed since the directory model in state.db was stored".into()
            }
            Ok(Taken::Model(stored)) => match model(&stored) {
                Ok(model) => {
                    *lock(&self.kept) = Some(model);
                    *lock(&one_shot.taken) = Some(stored);
                    return true;
                }
                Err(e) => format!("the directory model in state.db cannot be used ({e})"),
            },
        };
        tracing::info!(reason = %why, "no stored directory model");
        *lock(&one_shot.why_not) = Some(why);
        false
    }

    /// Lets the stored model taken this run go, for a run that reads in full: its model's parts are then
    /// written whole rather than compared with the ones taken (at 100,000 users, about 17 MB more written to
    /// `state.db` once per `full_sync_every`, against 13 MB held through the run).
    pub(super) fn let_taken_go(&self) {
        if let Some(one_shot) = &self.one_shot {
            lock(&one_shot.taken).take();
        }
    }

    /// Stores the model this run keeps ([`ChangeReads::settle`] first): for a run that ended `ok`, its model;
    /// else none, and the one stored is deleted. A failure is logged: the next run then reads in full.
    pub fn store(&self, config: &Config, journal: &Journal) {
        let Some(one_shot) = &self.one_shot else { return };
        let taken = lock(&one_shot.taken).take();
        let mut kept = lock(&self.kept);
        if kept.is_some() && journal.written_by_others() {
            // What this run kept may not match what was written (a managed user, an intent): the next run reads
            // in full.
            tracing::warn!("state.db was written by another process during the run: no directory model stored");
            *kept = None;
        }
        let stored = match kept.as_mut() {
            Some(m) => {
                // The last resolve is not stored, and the run is over: its outcomes (a member list for each
                // configured group) go before the parts are encoded.
                m.kept.forget_resolve();
                store_model(journal, m, config, taken.as_ref())
            }
            None => journal.store_kept_model(None, None),
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, "directory model not stored; the next run reads in full");
            let _ = journal.store_kept_model(None, None);
        }
    }
}

/// Stores the model, each body part encoded as it is written (`state::db::Part`). When the run changed neither the
/// entries nor CloudShell's users ([`Model::unchanged`]), the body parts are those `taken`, not encoded again (at
/// 100,000 users that is most of a quiet run's time).
fn store_model(
    journal: &Journal,
    m: &Model,
    config: &Config,
    taken: Option<&StoredModel>,
) -> Result<(), crate::state::db::Error> {
    use crate::state::db::{ModelToStore, Part};
    let outcome = m.outcome.as_ref().map(|r| serde_json::to_string(&Outcome::of(r)).expect("a report serialises"));
    let whole_read_at = m.whole_at.map(rfc3339_of).unwrap_or_default();
    let stale = m.users.as_ref().map(|u| u.stale.clone());
    let head = Head { kept: m.kept.stored_head(), stale, outcome, whole_read_at };
    let head = postcard::to_allocvec(&head).expect("the head encodes");
    let (program, configuration) = (PROGRAM.to_string(), config.fingerprint.clone());
    let full_read_at = rfc3339_of(m.full_at);
    if let Some(taken) = taken.filter(|_| m.unchanged) {
        let (directory, cloudshell) = (Part::Bytes(&taken.directory), Part::Bytes(&taken.cloudshell));
        let model = ModelToStore { program, configuration, full_read_at, head, directory, cloudshell };
        return journal.store_kept_model_parts(&model, Some(taken));
    }
    let mut groups: Vec<(&str, Vec<&str>)> =
        m.groups.iter().map(|(name, members)| (name.as_str(), sorted(members))).collect();
    groups.sort_unstable();
    let users = m.users.as_ref().map(|u| u.users.iter().map(StoredUserRef::of).collect());
    let cloudshell = CloudShellPartRef { users, members: sorted(&m.members), groups };
    let body = m.kept.body_to_store();
    let directory = |to: &mut dyn std::io::Write| body.write_to(to);
    let cloudshell = |to: &mut dyn std::io::Write| encode_into(&cloudshell, to);
    let (directory, cloudshell) = (Part::Encoded(&directory), Part::Encoded(&cloudshell));
    let model = ModelToStore { program, configuration, full_read_at, head, directory, cloudshell };
    journal.store_kept_model_parts(&model, taken)
}

/// A moment, as the time of day it was (RFC 3339).
fn rfc3339_of(at: super::At) -> String {
    humantime::format_rfc3339_millis(at.wall).to_string()
}

/// A time of day stored (RFC 3339), as a moment of this process; `what` names it in an error.
fn moment_of(stored: &str, what: &str) -> Result<super::At, String> {
    let wall = humantime::parse_rfc3339(stored).map_err(|e| format!("{what}'s time: {e}"))?;
    let ago = SystemTime::now()
        .duration_since(wall)
        .map_err(|_| format!("{what} began at {stored}, later than now: the clock was set back"))?;
    let instant = Instant::now().checked_sub(ago).ok_or_else(|| format!("{what} began too long ago"))?;
    Ok(super::At { instant, wall })
}

/// The names of `set`, in order.
fn sorted(set: &FxHashSet<Box<str>>) -> Vec<&str> {
    let mut all: Vec<&str> = set.iter().map(|name| &**name).collect();
    all.sort_unstable();
    all
}

/// The model stored, or why it cannot be used.
fn model(stored: &StoredModel) -> Result<Model, String> {
    let saved = humantime::parse_rfc3339(&stored.saved_at).map_err(|e| format!("its time: {e}"))?;
    if SystemTime::now() < saved {
        return Err(format!("it was stored at {}, later than now: the clock was set back", stored.saved_at));
    }
    let head: Head = decode(&stored.head).map_err(|e| format!("its head: {e}"))?;
    let kept = Kept::from_stored_parts(&head.kept, &stored.directory)?;
    let part: CloudShellPart = decode(&stored.cloudshell).map_err(|e| format!("CloudShell's users: {e}"))?;
    let full_at = moment_of(&stored.full_read_at, "its full read")?;
    // Not known (not parsed, ahead of the clock, or too far back to count): the next full read reads it whole.
    let whole_at = moment_of(&head.whole_read_at, "the full read that read it whole").ok();
    let outcome = match head.outcome {
        None => None,
        Some(json) => {
            let outcome: Outcome = serde_json::from_str(&json).map_err(|e| format!("the last run's outcome: {e}"))?;
            Some(Box::new(outcome.report()))
        }
    };
    let mut domains: Vec<ArcStr> = Vec::new();
    let users = match (part.users, head.stale) {
        (Some(users), Some(stale)) => {
            Some(KeptUsers { users: users.into_iter().map(|u| u.user(&mut domains)).collect(), stale })
        }
        _ => None,
    };
    let set = |names: Vec<Box<str>>| names.into_iter().collect::<FxHashSet<Box<str>>>();
    let groups: FxHashMap<GroupName, FxHashSet<Box<str>>> =
        part.groups.into_iter().map(|(name, members)| (GroupName::new(&name), set(members))).collect();
    let configuration = stored.configuration.clone();
    let members = set(part.members);
    Ok(Model { kept, full_at, whole_at, users, members, groups, outcome, unchanged: false, configuration })
}

impl StoredUser {
    /// The user, its domain's name shared with the other users of the domain (as a listing shares it).
    fn user(self, domains: &mut Vec<ArcStr>) -> crate::cloudshell::User {
        let domain_name = self.domain_name.map(|d| crate::cloudshell::shared_domain(domains, d));
        crate::cloudshell::User {
            id: self.id,
            username: self.username,
            is_active: self.is_active,
            is_admin: self.is_admin,
            domain_name,
            group_ids: self.group_ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of CloudShell's part and the head, pinned as the kept model's is (`kept::stored`): a change
    /// must bump the model format in [`PROGRAM`] (swapped `is_active` and `is_admin`, say, would otherwise read a
    /// stored model wrongly), then pin the new bytes here.
    #[test]
    fn the_stored_layout_is_pinned() {
        let user = crate::cloudshell::User {
            id: Some(7),
            username: Username::new("Alice"),
            is_active: Some(true),
            is_admin: Some(false),
            domain_name: Some("corp".into()),
            group_ids: Some(Box::new([3])),
        };
        let part =
            CloudShellPartRef { users: Some(vec![StoredUserRef::of(&user)]), members: vec!["alice"], groups: vec![] };
        let head = Head {
            kept: vec![1],
            stale: Some(vec![2]),
            outcome: Some("{}".into()),
            whole_read_at: "2026-12-04T00:00:00Z".into(),
        };
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let part = postcard::to_allocvec(&part).unwrap();
        let encoded = (hex(&part), hex(&postcard::to_allocvec(&head).unwrap()));
        let pinned = (
            "0101010e0105416c696365010101000104636f72700101060105616c69636500",
            "010101010401027b7d14323032362d31322d30345430303a30303a30305a",
        );
        assert_eq!(encoded, (pinned.0.to_string(), pinned.1.to_string()));
        // Written borrowing, read back whole.
        let read: CloudShellPart = decode(&part).unwrap();
        let read_user = read.users.unwrap().pop().unwrap().user(&mut Vec::new());
        assert_eq!((read_user, read.members.as_slice()), (user, ["alice".into()].as_slice()));
        assert!(PROGRAM.ends_with(", model format 5"), "{PROGRAM}");
    }
}

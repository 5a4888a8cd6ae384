//! Carrying a plan out for one group: import the group by name (when the plan says so), work out who is
//! still missing, import the nested groups the plan finds worth it, then import the rest one by one with
//! bounded concurrency. What to do is the plan's; this module makes the calls and records each outcome.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::cloudshell::{Client, GroupImport, UserImport};
use crate::report::{Failure, Imports};
use crate::sync::plan::ReadyGroup;
use crate::username::Username;

/// Imports `group`'s missing members. Never fails as a whole: every failure is recorded per user.
/// `stop` is checked between calls, never during one: once it is cancelled no new call starts, and calls in
/// flight finish.
pub async fn apply_group(client: &Client, group: &ReadyGroup, concurrency: usize, stop: &CancellationToken) -> Imports {
    let mut progress = Progress {
        group: group.name.as_str(),
        still: group.to_import.iter().map(|m| m.username.clone()).collect(),
        applied: Imports::default(),
    };
    import_by_name(client, group, stop, &mut progress).await;
    import_nested(client, group, stop, &mut progress).await;
    import_one_by_one(client, concurrency, stop, &mut progress).await;
    progress.applied
}

/// Who is still to import, and what was done so far.
struct Progress<'a> {
    group: &'a str,
    still: BTreeSet<Username>,
    applied: Imports,
}

impl Progress<'_> {
    /// Takes the users a call created (or a listing shows) off the list, as imported `via` that call, and
    /// keeps CloudShell's record of each (of one the plan did not ask for too: it exists now all the same).
    fn take_created(&mut self, created: Vec<crate::cloudshell::User>, via: &str) {
        for user in created {
            if let Some(username) = &user.username
                && self.still.remove(username)
            {
                tracing::info!(group = self.group, username = %username, via, "user imported");
                self.applied.imported.push(username.clone());
            }
            self.applied.records.push(user);
        }
    }
}

/// 1. The group itself. CloudShell imports direct members only, may refuse a large group, and may answer 202
///    with error entries; whatever it did not create stays to import. A lost answer is settled by listing.
async fn import_by_name(client: &Client, group: &ReadyGroup, stop: &CancellationToken, progress: &mut Progress<'_>) {
    let name = progress.group;
    let mut uncertain = false;
    let root = group.group.sources.first();
    if !group.by_name && root.is_some_and(|s| s.disabled_members > 0 && s.unusable_members == 0) {
        tracing::info!(
            group = name,
            disabled = root.map_or(0, |s| s.disabled_members),
            "group holds disabled accounts, importing its members one by one"
        );
    } else if !group.by_name {
        tracing::info!(
            group = name,
            refused = root.map_or(0, |s| s.unusable_members),
            "group holds entries that cannot be imported, importing its members one by one"
        );
    } else {
        match client.import_group(name).await {
            Ok(GroupImport::Done { created, failures }) => {
                tracing::info!(group = name, created = created.len(), failures = failures.len(), "group imported");
                progress.take_created(created, "group");
                for f in failures {
                    tracing::warn!(group = name, username = f.name.as_deref().unwrap_or("-"), message = %f.message, "group import reported a failure");
                }
            }
            Ok(GroupImport::Refused { message }) => {
                tracing::warn!(group = name, message = %message, fallback = progress.still.len(), "group import refused")
            }
            Ok(GroupImport::NotFound { message }) => {
                tracing::warn!(group = name, message = %message, fallback = progress.still.len(), "group import not found")
            }
            Err(e) => {
                // The import may have happened before the answer was lost: look before importing again.
                tracing::warn!(group = name, error = %e, "group import failed");
                uncertain = true;
            }
        }
    }
    if uncertain && !progress.still.is_empty() && !stop.is_cancelled() {
        match client.list_users().await {
            Ok(listed) => {
                let still = &progress.still;
                let present = listed.into_iter().filter(|u| u.username.as_ref().is_some_and(|n| still.contains(n)));
                progress.take_created(present.collect(), "group (verified)")
            }
            Err(e) => {
                tracing::warn!(group = name, error = %e, "user listing after a failed group import failed")
            }
        }
    }
}

/// 2. Nested groups, by their own names, where one call covers several members still missing.
async fn import_nested(client: &Client, group: &ReadyGroup, stop: &CancellationToken, progress: &mut Progress<'_>) {
    let name = progress.group;
    for source in group.group.sources.iter().skip(1) {
        if stop.is_cancelled() {
            break;
        }
        // Whether it is worth it depends on what the calls before it created: asked afresh each time.
        if !crate::sync::plan::nested_worth_importing(source, &progress.still, group.imports_disabled) {
            continue;
        }
        match client.import_group(&source.name).await {
            Ok(GroupImport::Done { created, .. }) => {
                tracing::info!(group = name, nested_group = %source.name, created = created.len(), "nested group imported");
                progress.take_created(created, "nested group");
            }
            Ok(other) => {
                tracing::warn!(group = name, nested_group = %source.name, outcome = ?other, "nested group import refused")
            }
            Err(e) => {
                tracing::warn!(group = name, nested_group = %source.name, error = %e, "nested group import failed")
            }
        }
    }
}

/// 3. Everyone else, one by one, with bounded concurrency. A 409 means the user is there: success.
async fn import_one_by_one(client: &Client, concurrency: usize, stop: &CancellationToken, progress: &mut Progress<'_>) {
    let (name, applied) = (progress.group, &mut progress.applied);
    let still = std::mem::take(&mut progress.still);
    let planned = still.len();
    let mut results: Vec<(Username, Result<UserImport, crate::cloudshell::Error>)> = futures_util::stream::iter(still)
        .take_while(|_| std::future::ready(!stop.is_cancelled()))
        .map(|username| async move {
            let outcome = client.import_user(username.as_str()).await;
            (username, outcome)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    applied.not_attempted = planned - results.len();
    if applied.not_attempted > 0 {
        tracing::warn!(group = name, not_attempted = applied.not_attempted, "group import interrupted");
    }
    for (username, outcome) in results {
        let reason = match outcome {
            Ok(UserImport::Created(record)) => {
                tracing::info!(group = name, username = %username, via = "user", "user imported");
                applied.imported.push(username);
                applied.records.push(record);
                continue;
            }
            Ok(UserImport::PresentAfterLostAnswer) => {
                tracing::info!(group = name, username = %username, via = "user", "user imported");
                applied.imported.push(username);
                continue;
            }
            Ok(UserImport::AlreadyExists) => {
                // Created by someone else since the listing (an administrator, another process): not ours.
                tracing::info!(group = name, username = %username, via = "user", "user already present");
                applied.already_present.push(username);
                continue;
            }
            Ok(UserImport::NotFound { message }) => {
                format!("CloudShell's directory has no such user: {message}")
            }
            Ok(UserImport::Refused { message }) => {
                format!("CloudShell refused the import: {message}")
            }
            Err(e) => e.to_string(),
        };
        tracing::warn!(group = name, username = %username, reason = %reason, "user import failed");
        applied.failures.push(Failure { username, reason });
    }
}

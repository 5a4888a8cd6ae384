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
    let name = group.name.as_str();
    let mut still: BTreeSet<Username> = group.to_import.iter().map(|m| m.username.clone()).collect();
    let mut applied = Imports::default();
    let mut take_created = |still: &mut BTreeSet<Username>, created: &[crate::cloudshell::User], via: &str| {
        for user in created {
            if let Some(username) = Username::new(&user.username)
                && still.remove(&username)
            {
                tracing::info!(group = name, username = %username, via, "user imported");
                applied.imported.push(username);
            }
        }
    };

    // 1. The group itself. CloudShell imports direct members only, may refuse a large group, and may answer
    //    202 with error entries; whatever it did not create stays in `still`.
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
                take_created(&mut still, &created, "group");
                for f in failures {
                    tracing::warn!(group = name, username = f.name.as_deref().unwrap_or("-"), message = %f.message, "group import reported a failure");
                }
            }
            Ok(GroupImport::Refused { message }) => {
                tracing::warn!(group = name, message = %message, fallback = still.len(), "group import refused")
            }
            Ok(GroupImport::NotFound { message }) => {
                tracing::warn!(group = name, message = %message, fallback = still.len(), "group import not found")
            }
            Err(e) => {
                // The import may have happened before the answer was lost: look before importing again.
                tracing::warn!(group = name, error = %e, "group import failed");
                uncertain = true;
            }
        }
    }
    if uncertain && !still.is_empty() && !stop.is_cancelled() {
        match client.list_users().await {
            Ok(users) => {
                let present: Vec<crate::cloudshell::User> = users;
                take_created(&mut still, &present, "group (verified)");
            }
            Err(e) => {
                tracing::warn!(group = name, error = %e, "user listing after a failed group import failed")
            }
        }
    }

    // 2. Nested groups, by their own names, where one call covers several members still missing.
    for source in group.group.sources.iter().skip(1) {
        if stop.is_cancelled() {
            break;
        }
        // Whether it is worth it depends on what the calls before it created: asked afresh each time.
        if !crate::sync::plan::nested_worth_importing(source, &still, group.imports_disabled) {
            continue;
        }
        match client.import_group(&source.name).await {
            Ok(GroupImport::Done { created, .. }) => {
                tracing::info!(group = name, nested_group = %source.name, created = created.len(), "nested group imported");
                take_created(&mut still, &created, "nested group");
            }
            Ok(other) => {
                tracing::warn!(group = name, nested_group = %source.name, outcome = ?other, "nested group import refused")
            }
            Err(e) => {
                tracing::warn!(group = name, nested_group = %source.name, error = %e, "nested group import failed")
            }
        }
    }

    // 3. Everyone else, one by one. A 409 means the user is there: success.
    let planned = still.len();
    let results: Vec<(Username, Result<UserImport, crate::cloudshell::Error>)> = futures_util::stream::iter(still)
        .take_while(|_| std::future::ready(!stop.is_cancelled()))
        .map(|username| async move {
            let outcome = client.import_user(username.as_str()).await;
            (username, outcome)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut results = results;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    applied.not_attempted = planned - results.len();
    if applied.not_attempted > 0 {
        tracing::warn!(group = name, not_attempted = applied.not_attempted, "group import interrupted");
    }
    for (username, outcome) in results {
        let reason = match outcome {
            Ok(UserImport::Created(_) | UserImport::PresentAfterLostAnswer) => {
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
        applied.failures.push(Failure { username: username.to_string(), reason });
    }
    applied
}

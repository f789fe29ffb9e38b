//! `AddSecret` and `Describe`: store (or, with `replace`, overwrite) one secret and save
//! the vault before answering, so an acknowledged secret is on disk. Replacing a secret,
//! or adding one a policy rule guards, needs a human (see `human_for_write`); a new,
//! unguarded name does not.

use jitc_protocol::kinds::EventKind;
use jitc_protocol::names::{MAX_DESCRIPTION_LEN, MAX_VALUE_LEN};
use jitc_protocol::{AddSecret, AddSecrets, Response};

use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::error::{Refusal, Reply};
use crate::vault::Inserted;

/// Refuses a description that is not one line of bounded length.
fn check_description(d: Option<&str>) -> Result<(), Refusal> {
    if let Some(d) = d
        && (d.len() > MAX_DESCRIPTION_LEN || d.chars().any(char::is_control))
    {
        return Err(Refusal::bad_input(format!(
            "the description must be one line of at most {MAX_DESCRIPTION_LEN} bytes"
        )));
    }
    Ok(())
}

/// Refuses what no secret may be, before anything else happens; then makes every record
/// of this request show the new value — wherever the requester's command lines hold it
/// (`printf v | jitc add NAME` run by `bash -c '…'`) — concealed.
fn check_new(
    session: &mut Session,
    name: &str,
    value: &jitc_protocol::SecretBytes,
    description: Option<&str>,
) -> Result<(), Refusal> {
    super::check_name(name)?;
    if value.is_empty() {
        return Err(Refusal::bad_input(format!(
            "the value of '{name}' is empty; nothing was stored"
        )));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(Refusal::bad_input(format!(
            "the value of '{name}' is over {} KiB; store a path to the file instead",
            MAX_VALUE_LEN / 1024
        )));
    }
    check_description(description)?;
    let mut forms = crate::vault::screen::forms(value.expose());
    if forms.is_empty() {
        forms.push(zeroize::Zeroizing::new(value.expose().to_vec()));
    }
    let list: Vec<crate::audit::Concealed<'_>> =
        forms.iter().map(|f| (name, f.as_slice())).collect();
    session.conceal(&list, crate::audit::Reach::Known);
    Ok(())
}

/// Whether adding `name` needs a human: a policy rule guards it — or the policy cannot
/// be read, which guards everything.
fn guards(policy: &Result<std::sync::Arc<crate::policy::Policy>, Refusal>, name: &str) -> bool {
    policy.as_ref().map_or(true, |p| p.guarding(name).is_some())
}

pub async fn apply(agent: &Agent, session: &mut Session, mut add: AddSecret) -> Reply {
    check_new(session, &add.name, &add.value, add.description.as_deref())?;
    let exists = agent
        .unlocked()
        .await?
        .as_ref()
        .ok_or_else(Refusal::locked)?
        .contains(&add.name);
    if exists && !add.replace {
        return Err(Refusal::from_vault(
            agent.vault_file(),
            crate::vault::VaultError::Exists(add.name),
        ));
    }
    let guarded = guards(&agent.policy(), &add.name);
    let event = if exists {
        EventKind::SecretReplaced
    } else {
        EventKind::SecretAdded
    };
    let peer = if exists || guarded {
        let action = if exists {
            format!("replacing the value of '{}'", add.name)
        } else {
            format!("adding '{}' (a policy rule guards it)", add.name)
        };
        let write = super::Write {
            action,
            secrets: vec![add.name.clone()],
            failed: event,
        };
        match super::human_for_write(agent, session, write, add.passphrase.take()).await? {
            Ok(peer) => peer,
            Err(ask) => return Ok(ask),
        }
    } else {
        session.peer_json()
    };
    let mut slot = agent.unlocked().await?;
    let Some(vault) = slot.as_mut() else {
        return Err(Refusal::locked());
    };
    // Asked a human meanwhile: the name may have come or gone.
    if vault.contains(&add.name) != exists {
        return Err(Refusal::new(
            jitc_protocol::ErrorCode::Failure,
            format!(
                "'{}' was added or removed while this waited; run the command again",
                add.name
            ),
        ));
    }
    // On record before it takes effect.
    agent
        .audit()
        .record(Event {
            // Not whether it is a canary: the log is there for anything running as the
            // user to read, and a canary must look like any secret.
            secrets: vec![add.name.clone()],
            ..Event::new(event).peer(peer)
        })
        .await?;
    let undo = vault.undo_point(&add.name);
    let inserted = vault
        .insert(
            &add.name,
            &add.value,
            add.description,
            add.replace,
            add.canary,
        )
        .map_err(|e| Refusal::from_vault(agent.vault_file(), e))
        .inspect_err(|e| agent.record_not_done(event, &add.name, &e.message))?;
    if let Err(e) = agent.save(vault).await {
        vault.undo(undo);
        agent.record_not_done(event, &add.name, &e.message);
        return Err(e);
    }
    let what = match inserted {
        Inserted::Added => "secret added",
        Inserted::Replaced => "secret replaced",
    };
    tracing::info!(name = %add.name, "{what}");
    Ok(Response::Done)
}

/// Most entries in one `AddSecrets`: the work per entry runs on the agent's one async
/// thread, so a batch must stay short; `jitc import` sends larger files in several.
pub const MAX_BATCH: usize = 8192;

/// `AddSecrets` (`jitc import`): every entry checked as `AddSecret` checks it, one human
/// check for the whole batch where any entry needs one (a replaced or guarded name) —
/// the passphrase unless the policy lets every such name be changed by approval — then
/// all stored and the vault saved once: all or none.
pub async fn batch(agent: &Agent, session: &mut Session, mut req: AddSecrets) -> Reply {
    if req.entries.is_empty() || req.entries.len() > MAX_BATCH {
        return Err(Refusal::bad_input(format!(
            "a batch adds 1 to {MAX_BATCH} secrets"
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(req.entries.len());
    for e in &req.entries {
        check_new(session, &e.name, &e.value, e.description.as_deref())?;
        if !seen.insert(e.name.as_str()) {
            return Err(Refusal::bad_input(format!("'{}' comes twice", e.name)));
        }
    }
    let existing: Vec<bool> = {
        let slot = agent.unlocked().await?;
        let vault = slot.as_ref().ok_or_else(Refusal::locked)?;
        req.entries
            .iter()
            .map(|e| vault.contains(&e.name))
            .collect()
    };
    let names = |replaced: bool| -> Vec<String> {
        req.entries
            .iter()
            .zip(&existing)
            .filter(|(_, x)| **x == replaced)
            .map(|(e, _)| e.name.clone())
            .collect()
    };
    let (added, replaced) = (names(false), names(true));
    if let Some(name) = replaced.first().filter(|_| !req.replace) {
        return Err(Refusal::from_vault(
            agent.vault_file(),
            crate::vault::VaultError::Exists(name.clone()),
        ));
    }
    let policy = agent.policy();
    let guarded: Vec<String> = added
        .iter()
        .filter(|n| guards(&policy, n))
        .cloned()
        .collect();
    let peer = if replaced.is_empty() && guarded.is_empty() {
        session.peer_json()
    } else {
        let write = super::Write {
            action: format!(
                "adding {} secrets at once ({} replaced, {} new guarded by a policy rule)",
                req.entries.len(),
                replaced.len(),
                guarded.len()
            ),
            secrets: replaced.iter().chain(&guarded).cloned().collect(),
            failed: if replaced.is_empty() {
                EventKind::SecretAdded
            } else {
                EventKind::SecretReplaced
            },
        };
        match super::human_for_write(agent, session, write, req.passphrase.take()).await? {
            Ok(peer) => peer,
            Err(ask) => return Ok(ask),
        }
    };
    let mut slot = agent.unlocked().await?;
    let Some(vault) = slot.as_mut() else {
        return Err(Refusal::locked());
    };
    if req
        .entries
        .iter()
        .zip(&existing)
        .any(|(e, x)| vault.contains(&e.name) != *x)
    {
        return Err(Refusal::new(
            jitc_protocol::ErrorCode::Failure,
            "a secret of this batch was added or removed while it waited; nothing was stored; run the command again",
        ));
    }
    // On record before it takes effect: one record for the added, one for the replaced;
    // whatever fails after the first of them is recorded as not done, for every name.
    let records = [
        (EventKind::SecretAdded, added),
        (EventKind::SecretReplaced, replaced),
    ];
    let not_done = |why: &str| {
        for (kind, secrets) in &records {
            if !secrets.is_empty() {
                agent.record_not_done_all(*kind, secrets, why);
            }
        }
    };
    for (kind, secrets) in &records {
        if secrets.is_empty() {
            continue;
        }
        let recorded = agent
            .audit()
            .record(Event {
                secrets: secrets.clone(),
                ..Event::new(*kind).peer(peer.clone())
            })
            .await;
        if let Err(e) = recorded {
            not_done("the audit record could not be written");
            return Err(e);
        }
    }
    let entries = req
        .entries
        .iter()
        .map(|e| (e.name.as_str(), &e.value, e.description.clone()));
    store_all(agent, vault, entries, req.replace)
        .await
        .inspect_err(|r| not_done(&r.message))?;
    tracing::info!(count = req.entries.len(), "secrets added in one batch");
    drop(slot);
    // A batch leaves thousands of freed temporaries scattered through the heap, which
    // make every later allocation slower (a listing of 100,000 took 5x as long).
    tokio::task::spawn_blocking(crate::hardening::release_freed_memory);
    Ok(Response::Done)
}

/// Stores every `(name, value, description)` — replacing an existing one only where
/// `replace` — and saves the vault once. All or none: on any failure every entry is
/// undone and the refusal returned; the caller records it as not done.
pub(super) async fn store_all<'a>(
    agent: &Agent,
    vault: &mut crate::vault::Vault,
    entries: impl Iterator<Item = (&'a str, &'a jitc_protocol::SecretBytes, Option<String>)>,
    replace: bool,
) -> Result<(), Refusal> {
    let mut undo = Vec::new();
    for (name, value, description) in entries {
        undo.push(vault.undo_point(name));
        if let Err(err) = vault.insert(name, value, description, replace, false) {
            undo.into_iter().rev().for_each(|u| vault.undo(u));
            return Err(Refusal::from_vault(agent.vault_file(), err));
        }
    }
    if let Err(err) = agent.save(vault).await {
        undo.into_iter().rev().for_each(|u| vault.undo(u));
        return Err(err);
    }
    Ok(())
}

/// Sets or clears a secret's description; the value stays as it is (so no human is
/// needed: nothing a command receives changes).
pub async fn describe(
    agent: &Agent,
    session: &mut Session,
    name: &str,
    description: Option<String>,
) -> Reply {
    super::check_name(name)?;
    check_description(description.as_deref())?;
    let mut slot = agent.unlocked().await?;
    let vault = slot.as_mut().ok_or_else(Refusal::locked)?;
    if !vault.contains(name) {
        return Err(Refusal::from_vault(
            agent.vault_file(),
            crate::vault::VaultError::NoSuchSecret(name.to_owned()),
        ));
    }
    agent
        .audit()
        .record(Event {
            secrets: vec![name.to_owned()],
            reason: Some("description changed".into()),
            ..Event::new(EventKind::SecretDescribed).peer(session.peer_json())
        })
        .await?;
    let undo = vault.undo_point(name);
    vault
        .describe(name, description)
        .map_err(|e| Refusal::from_vault(agent.vault_file(), e))?;
    if let Err(e) = agent.save(vault).await {
        vault.undo(undo);
        agent.record_not_done(EventKind::SecretDescribed, name, &e.message);
        return Err(e);
    }
    Ok(Response::Done)
}

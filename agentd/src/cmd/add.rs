//! `AddSecret`: store (or, with `replace`, overwrite) one secret and save the vault
//! before answering, so an acknowledged secret is on disk.

use jitc_protocol::names::{MAX_DESCRIPTION_LEN, MAX_VALUE_LEN};
use jitc_protocol::{AddSecret, Response};

use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::error::{Refusal, Reply};
use crate::vault::Inserted;

pub async fn apply(agent: &Agent, session: &mut Session, add: AddSecret) -> Reply {
    super::check_name(&add.name)?;
    if add.value.is_empty() {
        return Err(Refusal::bad_input("the value is empty; nothing was stored"));
    }
    if add.value.len() > MAX_VALUE_LEN {
        return Err(Refusal::bad_input(format!(
            "the value is over {} KiB; store a path to the file instead",
            MAX_VALUE_LEN / 1024
        )));
    }
    if let Some(d) = &add.description
        && (d.len() > MAX_DESCRIPTION_LEN || d.chars().any(char::is_control))
    {
        return Err(Refusal::bad_input(format!(
            "the description must be one line of at most {MAX_DESCRIPTION_LEN} bytes"
        )));
    }
    let mut slot = agent.unlocked().await?;
    let Some(vault) = slot.as_mut() else {
        return Err(Refusal::locked());
    };
    let exists = vault.contains(&add.name);
    if exists && !add.replace {
        return Err(Refusal::from_vault(
            &agent.vault_file,
            crate::vault::VaultError::Exists(add.name),
        ));
    }
    // On record before it takes effect.
    let event = if exists {
        "secret_replaced"
    } else {
        "secret_added"
    };
    agent
        .audit
        .record(Event {
            secrets: vec![add.name.clone()],
            reason: add.canary.then(|| "canary".to_owned()),
            ..Event::new(event).peer(session.peer_json())
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
        .map_err(|e| Refusal::from_vault(&agent.vault_file, e))
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

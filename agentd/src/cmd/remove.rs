//! `RemoveSecret`: delete one secret and save the vault before answering. A human must
//! stand behind it (see `human_for_write`).

use jitc_protocol::kinds::EventKind;
use jitc_protocol::{Response, SecretBytes};

use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::error::{Refusal, Reply};
use crate::vault::VaultError;

pub async fn apply(
    agent: &Agent,
    session: &mut Session,
    name: &str,
    passphrase: Option<SecretBytes>,
) -> Reply {
    super::check_name(name)?;
    let known = agent
        .unlocked()
        .await?
        .as_ref()
        .ok_or_else(Refusal::locked)?
        .contains(name);
    if !known {
        return Err(Refusal::from_vault(
            agent.vault_file(),
            VaultError::NoSuchSecret(name.to_owned()),
        ));
    }
    let write = super::Write {
        action: format!("removing '{name}'"),
        secrets: vec![name.to_owned()],
        failed: EventKind::SecretRemoved,
    };
    let peer = match super::human_for_write(agent, session, write, passphrase).await? {
        Ok(peer) => peer,
        Err(ask) => return Ok(ask),
    };
    let mut slot = agent.unlocked().await?;
    let Some(vault) = slot.as_mut() else {
        return Err(Refusal::locked());
    };
    if !vault.contains(name) {
        return Err(Refusal::from_vault(
            agent.vault_file(),
            VaultError::NoSuchSecret(name.to_owned()),
        ));
    }
    // On record before it takes effect.
    agent
        .audit()
        .record(Event {
            secrets: vec![name.to_owned()],
            ..Event::new(EventKind::SecretRemoved).peer(peer)
        })
        .await?;
    let undo = vault.undo_point(name);
    vault
        .remove(name)
        .map_err(|e| Refusal::from_vault(agent.vault_file(), e))
        .inspect_err(|e| agent.record_not_done(EventKind::SecretRemoved, name, &e.message))?;
    if let Err(e) = agent.save(vault).await {
        vault.undo(undo);
        agent.record_not_done(EventKind::SecretRemoved, name, &e.message);
        return Err(e);
    }
    tracing::info!(name, "secret removed");
    Ok(Response::Done)
}

//! `Rename`: give a secret another name (its value sealed again under the new one). A
//! human must stand behind it, as for removal: a rename can move a secret out from
//! under the rule that guards it.

use jitc_protocol::kinds::EventKind;
use jitc_protocol::{Response, SecretBytes};

use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::error::{Refusal, Reply};
use crate::vault::VaultError;

pub async fn apply(
    agent: &Agent,
    session: &mut Session,
    from: &str,
    to: &str,
    passphrase: Option<SecretBytes>,
) -> Reply {
    super::check_name(from)?;
    super::check_name(to)?;
    {
        let slot = agent.unlocked().await?;
        let vault = slot.as_ref().ok_or_else(Refusal::locked)?;
        if !vault.contains(from) {
            return Err(Refusal::from_vault(
                agent.vault_file(),
                VaultError::NoSuchSecret(from.to_owned()),
            ));
        }
        if vault.contains(to) {
            return Err(Refusal::from_vault(
                agent.vault_file(),
                VaultError::Exists(to.to_owned()),
            ));
        }
    }
    let write = super::Write {
        action: format!("renaming '{from}' to '{to}'"),
        secrets: vec![from.to_owned()],
        failed: EventKind::SecretRenamed,
    };
    let peer = match super::human_for_write(agent, session, write, passphrase).await? {
        Ok(peer) => peer,
        Err(ask) => return Ok(ask),
    };
    let mut slot = agent.unlocked().await?;
    let vault = slot.as_mut().ok_or_else(Refusal::locked)?;
    agent
        .audit()
        .record(Event {
            secrets: vec![from.to_owned(), to.to_owned()],
            reason: Some(format!("renamed '{from}' to '{to}'")),
            ..Event::new(EventKind::SecretRenamed).peer(peer)
        })
        .await?;
    let undo = (vault.undo_point(from), vault.undo_point(to));
    if let Err(e) = vault.rename(from, to) {
        let e = Refusal::from_vault(agent.vault_file(), e);
        agent.record_not_done(EventKind::SecretRenamed, from, &e.message);
        return Err(e);
    }
    if let Err(e) = agent.save(vault).await {
        vault.undo(undo.1);
        vault.undo(undo.0);
        agent.record_not_done(EventKind::SecretRenamed, from, &e.message);
        return Err(e);
    }
    tracing::info!(from, to, "secret renamed");
    Ok(Response::Done)
}

//! `RemoveSecret`: delete one secret and save the vault before answering.

use jitc_protocol::Response;

use crate::agent::Agent;
use crate::error::{Refusal, Reply};

pub async fn apply(agent: &Agent, name: &str) -> Reply {
    super::check_name(name)?;
    let mut slot = agent.unlocked().await?;
    let Some(vault) = slot.as_mut() else {
        return Err(Refusal::locked());
    };
    let undo = vault.undo_point(name);
    vault
        .remove(name)
        .map_err(|e| Refusal::from_vault(&agent.vault_file, e))?;
    if let Err(e) = agent.save(vault).await {
        vault.undo(undo);
        return Err(e);
    }
    tracing::info!(name, "secret removed");
    Ok(Response::Done)
}

//! `ListSecrets`: names and metadata, never values.

use jitc_protocol::Response;

use crate::agent::Agent;
use crate::error::{Refusal, Reply};

pub async fn apply(agent: &Agent) -> Reply {
    let slot = agent.unlocked().await?;
    let vault = slot.as_ref().ok_or_else(Refusal::locked)?;
    Ok(Response::Secrets(vault.list()))
}

//! `ListSecrets`: names and metadata, never values — a page at a time, so a vault of any
//! size lists (a page is well inside a frame).

use jitc_protocol::Response;

use crate::agent::Agent;
use crate::error::{Refusal, Reply};

pub async fn apply(agent: &Agent, after: &str) -> Reply {
    let slot = agent.unlocked().await?;
    let vault = slot.as_ref().ok_or_else(Refusal::locked)?;
    let (items, more) = vault.list_page(after, super::leases::PAGE_BYTES);
    Ok(Response::Secrets { items, more })
}

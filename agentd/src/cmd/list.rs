//! `ListSecrets`: names and metadata, never values — a page at a time, so a vault of any
//! size lists (a page is well inside a frame).

use zeroize::Zeroizing;

use crate::agent::Agent;
use crate::error::Refusal;

/// The page's frame, cut from the listing the vault keeps encoded.
pub async fn apply(agent: &Agent, after: &str) -> Result<Zeroizing<Vec<u8>>, Refusal> {
    let slot = agent.unlocked().await?;
    let vault = slot.as_ref().ok_or_else(Refusal::locked)?;
    vault
        .list_page_frame(after, super::leases::PAGE_BYTES)
        .map_err(|e| Refusal::internal(&format!("encoding a page of secrets ({e})")))
}

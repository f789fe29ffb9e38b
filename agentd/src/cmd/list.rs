//! `ListSecrets`: names and metadata, never values — a page at a time, so a vault of any
//! size lists (a page is well inside a frame).

use jitc_protocol::{SecretsPage, encode_frame};
use zeroize::Zeroizing;

use crate::agent::Agent;
use crate::error::Refusal;

/// The page's frame, encoded from the vault's own names and descriptions (copying
/// each of 100,000 names made a listing 5x slower).
pub async fn apply(agent: &Agent, after: &str) -> Result<Zeroizing<Vec<u8>>, Refusal> {
    let slot = agent.unlocked().await?;
    let vault = slot.as_ref().ok_or_else(Refusal::locked)?;
    let (items, more) = vault.list_page(after, super::leases::PAGE_BYTES);
    encode_frame(&SecretsPage {
        items: &items,
        more,
    })
    .map_err(|e| Refusal::internal(&format!("encoding a page of secrets ({e})")))
}

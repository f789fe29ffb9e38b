//! Stage 6, `open`: the values, opened again after a human was asked (they may have
//! changed meanwhile).

use jitc_protocol::{LeaseRequest, LeasedValue};

use super::*;
use crate::agent::Agent;
use crate::audit::Event;
use crate::error::Refusal;

/// Opens the values after a human was asked, and checks the request again: a value
/// may have been replaced (or a secret removed) meanwhile.
pub(super) async fn open(
    agent: &Agent,
    req: &LeaseRequest,
    base: &Event,
    judged: &Judged,
) -> Result<Vec<LeasedValue>, Denial> {
    let slot = agent.unlocked().await.map_err(|r| Denial::plain(r, base))?;
    let vault = slot
        .as_ref()
        .ok_or_else(|| Denial::plain(agent.locked_refusal(), base))?;
    let mut values = Vec::with_capacity(req.secrets.len());
    for name in req
        .secrets
        .iter()
        .filter(|n| !jitc_protocol::names::is_backend_ref(n))
    {
        match vault.open_value(name) {
            Ok(value) => values.push(LeasedValue {
                name: name.clone(),
                value,
            }),
            Err(e) => {
                let unknown = matches!(e, crate::vault::VaultError::NoSuchSecret(_));
                let refusal = Refusal::from_vault(agent.vault_file(), e);
                return Err(if unknown {
                    Denial::new(refusal, base, UNKNOWN_NAME)
                } else {
                    Denial::plain(refusal, base)
                });
            }
        }
    }
    let found = vault.screen(&request_hay(req));
    check_request_strings(vault, req, &found).map_err(|r| Denial::plain(r, base))?;
    check_masking(&values, judged.decision.masking_required).map_err(|r| Denial::plain(r, base))?;
    drop(slot);
    Ok(values)
}

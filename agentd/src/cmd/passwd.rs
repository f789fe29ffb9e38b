//! `Passwd`: change the vault passphrase. The vault key stays; it is wrapped anew under
//! the new passphrase (fresh salt, same KDF costs) and the vault saved, so the old
//! passphrase stops working at once. Both passphrases are concealed in every record.

use jitc_protocol::kinds::EventKind;
use jitc_protocol::{Response, SecretBytes};

use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::error::{Refusal, Reply};

pub async fn apply(
    agent: &Agent,
    session: &mut Session,
    old: SecretBytes,
    new: SecretBytes,
) -> Reply {
    super::check_passphrase(&new)?;
    // Every record of it hides both passphrases.
    let failed = Event::new(EventKind::PasswdFailed);
    let peer =
        super::confirm_passphrase_hiding(agent, session, old, failed, &[new.expose()]).await?;
    let check = {
        let slot = agent.unlocked().await?;
        slot.as_ref()
            .ok_or_else(Refusal::locked)?
            .passphrase_check()
    };
    // Argon2 is slow on purpose: off the runtime.
    let kek = tokio::task::spawn_blocking(move || check.derive_new(new.expose()))
        .await
        .map_err(|_| Refusal::internal("deriving the new key"))?
        .map_err(|e| Refusal::from_vault(agent.vault_file(), e))?;
    let mut slot = agent.unlocked().await?;
    let vault = slot.as_mut().ok_or_else(Refusal::locked)?;
    let change = vault
        .rewrapped(kek)
        .map_err(|e| Refusal::from_vault(agent.vault_file(), e))?;
    agent
        .audit()
        .record(Event::new(EventKind::PassphraseChanged).peer(peer))
        .await?;
    let previous = vault.set_passphrase(change);
    if let Err(e) = agent.save(vault).await {
        vault.set_passphrase(previous);
        agent.audit().record_later(Event {
            decision: Some("failed"),
            ..Event::new(EventKind::PassphraseChanged).reason(format!("not done: {}", e.message))
        });
        return Err(e);
    }
    tracing::info!("vault passphrase changed");
    Ok(Response::Done)
}

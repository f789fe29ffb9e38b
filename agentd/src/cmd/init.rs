//! `Init`: create a new vault, refusing to overwrite one; it is left unlocked.

use jitc_protocol::kinds::EventKind;
use jitc_protocol::{ErrorCode, KdfParams, Response, SecretBytes};

use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::error::{Refusal, Reply};
use crate::vault::Vault;

pub async fn apply(
    agent: &Agent,
    session: &mut Session,
    passphrase: SecretBytes,
    kdf: KdfParams,
) -> Reply {
    if let Some(why) = kdf.check() {
        return Err(Refusal::bad_input(why));
    }
    super::check_passphrase(&passphrase)?;
    let gate = agent.passphrase_gate().await;
    let mut slot = agent.vault_slot().await;
    // A vault moved away while unlocked is not replaced under the user's nose: they
    // would go on adding secrets to a vault whose passphrase someone else chose.
    if slot.is_some() {
        return Err(Refusal::new(
            ErrorCode::Failure,
            format!(
                "a vault is unlocked (and its file is no longer at {}); put it back, or lock it with 'jitc lock' first",
                agent.vault_file().path().display()
            ),
        ));
    }
    if agent.vault_file().exists() {
        return Err(Refusal::new(
            ErrorCode::Failure,
            format!(
                "a vault already exists at {}; unlock it with 'jitc unlock', or move it away to start over",
                agent.vault_file().path().display()
            ),
        ));
    }
    // What an earlier vault leaves behind, looked at before this one leaves its own.
    let traces = earlier_vault_traces(agent);
    // Every record of this carries the requester with the new passphrase concealed
    // (only once it is clear a vault will be made: a refused init marks nothing).
    let peer = agent.hiding_passphrases(session, &[passphrase.expose()]);
    // The gate goes with the work (see `unlock`).
    let (created, _gate) =
        tokio::task::spawn_blocking(move || (Vault::create(passphrase.expose(), kdf), gate))
            .await
            .map_err(|_| Refusal::internal("creating the vault"))?;
    let mut vault = created.map_err(|e| Refusal::from_vault(agent.vault_file(), e))?;
    // The gateway's CA, made with the vault (its key sealed in it).
    let (cert, key) =
        crate::gateway::ca::generate().map_err(|e| Refusal::new(ErrorCode::Failure, e))?;
    vault
        .set_gateway_ca(cert, &key)
        .map_err(|e| Refusal::from_vault(agent.vault_file(), e))?;
    // On record before it takes effect, but not keyed yet: if the vault never reaches
    // the disk, no line may carry a tag made with its key (nothing could check it).
    // The next keyed line seals it.
    agent.audit().set_key(None);
    agent
        .audit()
        .record(Event::new(EventKind::Init).peer(peer.clone()))
        .await?;
    // Nothing of an earlier vault's chain is a checkpoint for this one.
    agent.audit().forget_checkpoint();
    if let Err(e) = agent.save(&mut vault).await {
        agent.audit().record_later(Event {
            decision: Some("failed"),
            ..Event::new(EventKind::Init)
                .peer(peer.clone())
                .reason(e.message.clone())
        });
        return Err(e);
    }
    // Lines keyed by an earlier vault could never be checked with this one's key: that
    // log (ending with the line above) is moved aside and a new chain begins.
    let moved = agent.audit().new_chain().await.map_err(|e| {
        Refusal::new(
            e.code,
            format!(
                "the vault was created, but the log of the earlier one could not be moved aside ({}); move {}* aside yourself, then run 'jitc unlock'",
                e.message,
                agent.audit().path().display()
            ),
        )
    })?;
    let mut traces = traces;
    if let Some(dir) = moved {
        agent
            .audit()
            .record(
                Event::new(EventKind::Init)
                    .peer(peer.clone())
                    .reason(format!(
                        "a new vault: the log written under the earlier one was moved to {}",
                        dir.display()
                    )),
            )
            .await?;
        traces.insert(0, format!("its log, now moved to {}", dir.display()));
    }
    // The user may not know: a vault they did not create would take their next
    // secrets, under a passphrase someone else chose.
    if !traces.is_empty() {
        agent.raise(
            agent.detector().vault_replaced(&traces),
            Event::default().peer(peer.clone()),
        );
    }
    agent.audit().set_key(Some(vault.key()));
    tracing::info!(
        vault = %agent.vault_file().path().display(),
        kdf_memory_mib = kdf.memory_mib,
        kdf_iterations = kdf.iterations,
        "vault created"
    );
    if let Err(e) = agent.install(&mut slot, vault) {
        agent.audit().set_key(None);
        return Err(e);
    }
    Ok(Response::Done)
}

/// What says a vault was here before (none of it is there on a first `init`): its
/// backup generation, the audit checkpoint it kept, rotated or moved-aside logs. A
/// same-user process can remove them all; the README says what that leaves.
fn earlier_vault_traces(agent: &Agent) -> Vec<String> {
    let mut traces = Vec::new();
    let backup = agent.vault_file().backup_path();
    if backup.exists() {
        traces.push(format!("its backup {}", backup.display()));
    }
    let journal = agent.vault_file().journal_path();
    if journal.exists() {
        traces.push(format!("its journal {}", journal.display()));
    }
    let sidecar = agent.audit().sidecar_path();
    if sidecar.exists() {
        traces.push(format!("its audit checkpoint {}", sidecar.display()));
    }
    let log = agent.audit().path();
    if let (Some(dir), Some(name)) = (log.parent(), log.file_name()) {
        let name = name.to_string_lossy();
        let earlier = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{name}.")) && !n.ends_with(".checkpoint"))
            .count();
        if earlier > 0 {
            traces.push(format!(
                "{earlier} earlier log file{} beside {}",
                if earlier == 1 { "" } else { "s" },
                log.display()
            ));
        }
    }
    traces
}

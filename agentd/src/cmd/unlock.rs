//! `Unlock`: derive the key from the passphrase and open the vault. Wrong passphrases
//! are answered slowly (see `Agent::wrong_passphrase`), one attempt at a time. The
//! passphrase — right or wrong — is concealed wherever a record carries the
//! requester's command lines.

use jitc_protocol::kinds::EventKind;
use jitc_protocol::{AuditReport, Response, SecretBytes};

use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::audit::chain::{Tag, derive_key};
use crate::audit::sidecar::{self, Found};
use crate::audit::verify::verify_files;
use crate::error::{Refusal, Reply};
use crate::vault::{Vault, VaultError};

pub async fn apply(agent: &Agent, session: &mut Session, passphrase: SecretBytes) -> Reply {
    super::check_passphrase(&passphrase)?;
    let gate = agent.passphrase_gate().await;
    if agent.vault_slot().await.is_some() {
        agent.idle().touch();
        return Ok(Response::Done);
    }
    let file = agent.vault_file().clone();
    let stamp = agent.vault_file().stamp();
    let (bytes, journal) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::vault::FileError>((file.read()?, file.read_journal()?))
    })
    .await
    .map_err(|_| Refusal::internal("reading the vault"))?
    .map_err(Refusal::from_file)?;
    let bytes = bytes.ok_or_else(|| Refusal::no_vault(agent.vault_file()))?;
    // The gate goes with the work: a client that hangs up mid-Argon2 does not free it
    // for the next attempt while this one still runs (nor pile up Argon2's memory).
    let file = agent.vault_file().clone();
    let (opened, passphrase, gate) = tokio::task::spawn_blocking(move || {
        let v = Vault::open_with_journal(
            &bytes,
            journal.as_deref().map(|j| &j[..]),
            passphrase.expose(),
        )
        .map(|(mut v, found)| {
            let (settled, said) = settle_journal(&file, &found);
            if !settled {
                v.compact_next();
            }
            (v, said)
        });
        (v, passphrase, gate)
    })
    .await
    .map_err(|_| Refusal::internal("opening the vault"))?;
    let peer = agent.hiding_passphrases(session, &[passphrase.expose()]);
    drop(passphrase);
    match opened {
        Ok((vault, journal_said)) => {
            agent.screen_session(session, Some(&vault));
            let peer = session.peer_json();
            tracing::info!(
                secrets = vault.len(),
                memory_locked = vault.memory_locked(),
                "vault unlocked"
            );
            // The log as the agent found it, against the checkpoints the vault and the
            // sidecar kept — before anything new is appended to it.
            let problem = check_log(agent, &vault).await;
            // Held from the record to the install, so a `lock` cannot slip in between
            // and leave the chain keyed for a vault that is not there (or the reverse).
            let mut slot = agent.vault_slot().await;
            if slot.is_some() {
                return Ok(Response::Done);
            }
            // On record before it takes effect: no audit, no unlock.
            agent
                .audit()
                .record_opening(
                    vault.key(),
                    Event::new(EventKind::Unlock).peer(peer.clone()),
                )
                .await?;
            agent.remember_policy(vault.bookkeeping().policy);
            if let Err(e) = agent.install(&mut slot, vault) {
                agent.audit().set_key(None);
                return Err(e);
            }
            agent.set_vault_stamp(stamp);
            // A policy in force now is remembered at once (see `persist_bookkeeping`).
            let _ = agent.policy();
            if let Some(vault) = slot.as_mut() {
                agent.persist_bookkeeping(vault).await;
            }
            let journal_key = slot
                .as_ref()
                .map(|v| crate::backend::journal::key_from(v.key()));
            drop(slot);
            drop(gate);
            // Opening leaves the file's bytes, the decrypted body and its decoding freed
            // among the live map (tens of MB at 100,000 secrets): back to the kernel.
            tokio::task::spawn_blocking(crate::hardening::release_freed_memory);
            agent.audit().set_tampered(problem.clone());
            // What an earlier run left in the backends, revoked now that it can log in.
            if let Some(key) = journal_key {
                crate::backend::recover(agent, &key);
            }
            if let Some(said) = journal_said {
                agent.raise(
                    agent.detector().journal_tail(&said),
                    Event::default().peer(peer.clone()),
                );
            }
            if let Some(problem) = problem {
                agent.raise(
                    agent.detector().tampered(&problem),
                    Event::default().peer(peer),
                );
            }
            Ok(Response::Done)
        }
        Err(VaultError::WrongPassphrase) => {
            let failed = Event::new(EventKind::UnlockFailed).peer(peer);
            Err(agent.wrong_passphrase(gate, failed).await)
        }
        Err(e) => {
            tracing::error!(error = %e, "unlock failed");
            Err(Refusal::from_vault(agent.vault_file(), e))
        }
    }
}

/// Leaves the journal as the vault now reads it: a stale one removed (its changes are
/// in the snapshot, or the snapshot was put back from its backup), a record a crash cut
/// short cut off, so the next record follows the last whole one — and bytes no crash
/// explains kept aside first, with what to tell the user. False if cutting failed: the
/// next save then writes a snapshot instead of appending after the damage.
fn settle_journal(
    file: &crate::vault::VaultFile,
    found: &crate::vault::JournalFound,
) -> (bool, Option<String>) {
    if found.stale {
        tracing::info!(journal = %file.journal_path().display(), "removing a journal that does not continue the vault's snapshot");
        file.remove_journal();
        return (true, None);
    }
    if found.dropped == 0 {
        return (true, None);
    }
    let mut said = None;
    if found.unexplained {
        let what = format!(
            "the vault's journal ended in {} bytes that are no record a crash cuts short (a power cut that wrote the end of the last save but not its head, or the file was changed): the vault opened without them, and any change they held",
            found.dropped
        );
        let kept = file.keep_journal_tail(found.valid_len);
        let text = match &kept {
            Ok(path) => format!("{what}; they are kept in {}", path.display()),
            Err(e) => format!(
                "{what}; they could not be kept ({e}) and stay in {} until the next save",
                file.journal_path().display()
            ),
        };
        tracing::error!("{text}");
        if kept.is_err() {
            // Not cut: the next save writes a snapshot, and the bytes stay until then.
            return (false, Some(text));
        }
        said = Some(text);
    } else {
        tracing::warn!(
            journal = %file.journal_path().display(),
            bytes = found.dropped,
            "the journal ends in a record cut short (a crash while saving); it was never acknowledged and is dropped"
        );
    }
    if let Err(e) = file.truncate_journal(found.valid_len) {
        tracing::warn!(error = %e, "cannot cut the journal back; the next save writes a snapshot");
        return (false, said);
    }
    (true, said)
}

/// The checkpoints the log must reach: the vault's (saved at every save and lock) and
/// the sidecar's (written after every decision), or why the sidecar cannot be trusted.
pub fn checkpoints(agent: &Agent, vault: &Vault) -> (Vec<(u64, Tag)>, Option<String>) {
    let key = derive_key(vault.key());
    let mut out: Vec<(u64, Tag)> = vault
        .audit_checkpoint()
        .map(|c| (c.seq, c.tag))
        .into_iter()
        .collect();
    let path = agent.audit().sidecar_path();
    let problem = match sidecar::read(&path, &key) {
        Found::At(seq, tag) => {
            out.push((seq, tag));
            None
        }
        Found::Missing if vault.bookkeeping().audit_sidecar => Some(format!(
            "{} is missing (it was kept beside the log; removing it hides where the log really ended)",
            path.display()
        )),
        Found::Missing => None,
        Found::Invalid => Some(format!(
            "{} does not verify (edited, or written for another vault)",
            path.display()
        )),
    };
    (out, problem)
}

/// Checks the newest audit file against the checkpoints, so a log cut short or
/// rewritten while the agent was down is reported at the next unlock, not only when
/// someone runs `jitc audit verify`. The problem, if any.
async fn check_log(agent: &Agent, vault: &Vault) -> Option<String> {
    let (checkpoints, sidecar_problem) = checkpoints(agent, vault);
    if checkpoints.is_empty() {
        return sidecar_problem;
    }
    let key = derive_key(vault.key());
    let newest = agent.audit().open_files(true);
    let report =
        tokio::task::spawn_blocking(move || verify_files(newest, &key, &checkpoints, None));
    let problem = match report.await {
        Ok(AuditReport { problem, .. }) => problem,
        Err(_) => None,
    };
    problem.or(sidecar_problem)
}

//! One module per request kind, each with an `apply` that turns a request into a reply.

pub mod add;
pub mod approve;
pub mod audit;
pub mod explain;
pub mod import;
pub mod init;
pub mod lease;
pub mod leases;
pub mod list;
pub mod lock;
pub mod passwd;
pub mod remove;
pub mod rename;
pub mod requested;
pub mod sandbox;
pub mod status;
pub mod unlock;

use jitc_protocol::{Response, Scope, SecretBytes};

use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::error::Refusal;
use crate::policy::Approval;
use crate::vault::VaultError;

/// Longest passphrase accepted; Argon2 would take more, but nobody types more.
const MAX_PASSPHRASE_LEN: usize = 4096;

/// Refuses an empty or absurd passphrase before any expensive work.
fn check_passphrase(passphrase: &SecretBytes) -> Result<(), Refusal> {
    if passphrase.is_empty() {
        return Err(Refusal::bad_input("the passphrase is empty; type one"));
    }
    if passphrase.len() > MAX_PASSPHRASE_LEN {
        return Err(Refusal::bad_input(format!(
            "the passphrase is longer than {MAX_PASSPHRASE_LEN} bytes; choose a shorter one"
        )));
    }
    Ok(())
}

/// Refuses a name a lease may not ask for: a secret name that breaks the rules, or a
/// backend reference that is malformed or not written canonically.
fn check_lease_name(name: &str) -> Result<(), Refusal> {
    jitc_protocol::names::check_lease_name(name).map_err(|why| {
        Refusal::bad_input(format!(
            "invalid secret name or reference '{}': it {why}",
            name.escape_debug()
        ))
    })
}

/// Refuses a secret name that breaks the naming rules, saying which.
fn check_name(name: &str) -> Result<(), Refusal> {
    jitc_protocol::names::check_secret_name(name).map_err(|why| {
        Refusal::bad_input(format!(
            "invalid secret name '{}': it {why}",
            name.escape_debug()
        ))
    })
}

/// Proves a human is at the keyboard for an act an agent must not do on its own
/// (approving a request, accepting the audit log as it is, changing a secret): the
/// vault passphrase, checked against the unlocked vault. A wrong one is slowed down like
/// `unlock` (the gate held to the end), recorded as `failed` (the passphrase tried
/// concealed in the requester's command lines) and counted toward the
/// `wrong_passphrases` anomaly. On success, the peer as records should carry it (the
/// passphrase concealed).
async fn confirm_passphrase(
    agent: &Agent,
    session: &mut Session,
    passphrase: SecretBytes,
    failed: Event,
) -> Result<crate::audit::PeerJson, Refusal> {
    confirm_passphrase_hiding(agent, session, passphrase, failed, &[]).await
}

/// `confirm_passphrase`, with `also` (another passphrase the request carries)
/// concealed in every record too.
async fn confirm_passphrase_hiding(
    agent: &Agent,
    session: &mut Session,
    passphrase: SecretBytes,
    failed: Event,
    also: &[&[u8]],
) -> Result<crate::audit::PeerJson, Refusal> {
    check_passphrase(&passphrase)?;
    let gate = agent.passphrase_gate().await;
    let check = {
        let slot = agent.unlocked().await?;
        slot.as_ref()
            .ok_or_else(Refusal::locked)?
            .passphrase_check()
    };
    // The gate goes with the work (see `unlock`).
    let (unwrapped, passphrase, gate) = tokio::task::spawn_blocking(move || {
        let r = check.unwrap_key(passphrase.expose());
        (r, passphrase, gate)
    })
    .await
    .map_err(|_| Refusal::internal("checking the passphrase"))?;
    let mut hidden: Vec<&[u8]> = vec![passphrase.expose()];
    hidden.extend_from_slice(also);
    let peer = agent.hiding_passphrases(session, &hidden);
    drop(passphrase);
    let key = match unwrapped {
        Ok(k) => k,
        Err(VaultError::WrongPassphrase) => {
            return Err(agent.wrong_passphrase(gate, failed.peer(peer)).await);
        }
        Err(e) => return Err(Refusal::from_vault(agent.vault_file(), e)),
    };
    let same_vault = agent
        .vault_slot()
        .await
        .as_ref()
        .is_some_and(|v| v.has_key(&key));
    if !same_vault {
        return Err(agent.locked_refusal());
    }
    agent.reset_failures();
    Ok(peer)
}

/// A write that needs a human: what it is (in words, for prompts and records) and the
/// secrets it touches that need one.
pub(crate) struct Write {
    pub action: String,
    pub secrets: Vec<String>,
    /// The record kind a wrong passphrase is written as.
    pub failed: jitc_protocol::kinds::EventKind,
}

/// What a human approving a change to the vault is shown (`secrets` and who asks:
/// the chain, its sandbox or profile), and the processes none of whose descendants may
/// approve it.
fn write_scope(
    session: &mut Session,
    policy: &crate::policy::Policy,
    secrets: Vec<String>,
) -> (Scope, Vec<u32>) {
    let chain = session.chain();
    let profile = match &session.sandbox {
        Some(s) => Some((s.profile().to_owned(), 0)),
        None => policy.profile_for(&chain),
    };
    let mut requesters = vec![session.peer.pid];
    if let Some(anchor) = profile.as_ref().and_then(|(_, i)| chain.get(*i)) {
        requesters.push(anchor.pid);
    }
    let scope = Scope {
        secrets,
        task: None,
        command: String::new(),
        argv: Vec::new(),
        pid: session.peer.pid,
        chain: session.shown_chain().to_vec(),
        profile: profile.map(|(p, _)| p),
        sandbox: session.sandbox_id(),
        warnings: Vec::new(),
    };
    (scope, requesters)
}

/// Makes sure a human stands behind a write to an existing or guarded secret: the vault
/// passphrase in the request — or, where the policy asks approval for that secret, the
/// approval flow (`jitc approve` or the approver). Without either, `Ok(Err(answer))`:
/// the answer asks the client for the passphrase. `Ok(Ok(peer))`: go ahead (the peer as
/// records carry it, a passphrase concealed).
async fn human_for_write(
    agent: &Agent,
    session: &mut Session,
    write: Write,
    passphrase: Option<SecretBytes>,
) -> Result<Result<crate::audit::PeerJson, Response>, Refusal> {
    if let Some(p) = passphrase {
        let failed = Event {
            secrets: write.secrets.clone(),
            ..Event::new(write.failed)
        };
        return confirm_passphrase(agent, session, p, failed).await.map(Ok);
    }
    // The approval flow only where the policy lets every one of the secrets be changed
    // that way: one that needs the passphrase makes the whole write need it (a requester
    // must not slip it behind a name whose rule only asks for a click).
    let policy = agent.policy().ok();
    let flow = policy.as_ref().is_some_and(|p| {
        !write.secrets.is_empty()
            && write
                .secrets
                .iter()
                .all(|s| p.write_approval(s) != Approval::Never)
    });
    let Some(policy) = policy.filter(|_| flow) else {
        return Ok(Err(Response::NeedsPassphrase(format!(
            "{} needs the vault passphrase",
            write.action
        ))));
    };
    let (scope, requesters) = write_scope(session, &policy, write.secrets.clone());
    let base = Event {
        secrets: write.secrets,
        profile: scope.profile.clone(),
        ..Event::default().peer(session.peer_json())
    }
    .reason(write.action.clone());
    crate::approval::ask(
        agent,
        session,
        crate::approval::Ask {
            action: write.action,
            scope,
            requesters,
            defaults: &policy.defaults,
            base: &base,
        },
    )
    .await?;
    Ok(Ok(session.peer_json()))
}

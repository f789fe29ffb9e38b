//! `ImportSecrets`: new secrets from a plaintext file (the MCP server's
//! `import_env_file`), stored all or none after a human approves. Always asked, whoever
//! asks and whatever the policy: a requester must not fill the vault with names it then
//! leases as if the user had chosen them. Never replaces a name.

use jitc_protocol::display::visible;
use jitc_protocol::kinds::EventKind;
use jitc_protocol::names::MAX_VALUE_LEN;
use jitc_protocol::{ErrorCode, ImportSecrets, Response};

use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::error::{Refusal, Reply};

/// Most secrets one import stores.
const MAX_ENTRIES: usize = 256;
/// Longest file name shown.
const MAX_FILE: usize = 512;

pub async fn apply(agent: &Agent, session: &mut Session, req: ImportSecrets) -> Reply {
    if req.entries.is_empty() || req.entries.len() > MAX_ENTRIES {
        return Err(Refusal::bad_input(format!(
            "an import stores 1 to {MAX_ENTRIES} secrets"
        )));
    }
    if req.file.len() > MAX_FILE || req.file.chars().any(char::is_control) {
        return Err(Refusal::bad_input(format!(
            "the file name must be one line of at most {MAX_FILE} bytes"
        )));
    }
    let mut names: Vec<String> = Vec::with_capacity(req.entries.len());
    for e in &req.entries {
        super::check_name(&e.name)?;
        if e.value.expose().is_empty() || e.value.expose().len() > MAX_VALUE_LEN {
            return Err(Refusal::bad_input(format!(
                "the value for '{}' is empty or over {MAX_VALUE_LEN} bytes",
                e.name
            )));
        }
        if names.contains(&e.name) {
            return Err(Refusal::bad_input(format!("'{}' comes twice", e.name)));
        }
        names.push(e.name.clone());
    }
    clash(agent, &names).await?;
    let policy = agent.policy()?;
    let action = format!(
        "import {} new {} from {} into the vault",
        names.len(),
        if names.len() == 1 {
            "secret"
        } else {
            "secrets"
        },
        visible(&req.file)
    );
    let (scope, requesters) = super::write_scope(session, &policy, names.clone());
    // Records name the secrets, not the file (the requester's text).
    let base = Event {
        secrets: names.clone(),
        profile: scope.profile.clone(),
        ..Event::default().peer(session.peer_json())
    }
    .reason(format!("import of {} new secrets from a file", names.len()));
    crate::approval::ask(
        agent,
        session,
        crate::approval::Ask {
            action,
            scope,
            requesters,
            defaults: &policy.defaults,
            base: &base,
        },
    )
    .await?;
    let mut slot = agent.unlocked().await?;
    let Some(vault) = slot.as_mut() else {
        return Err(Refusal::locked());
    };
    if let Some(n) = names.iter().find(|n| vault.contains(n)) {
        return Err(Refusal::new(
            ErrorCode::Failure,
            format!("'{n}' was added while this waited; nothing was imported"),
        ));
    }
    agent
        .audit()
        .record(Event {
            reason: Some("imported from a file, approved".into()),
            ..Event::new(EventKind::SecretAdded).merge(&base)
        })
        .await?;
    let description = format!("imported from {}", visible(&req.file));
    let entries = req
        .entries
        .iter()
        .map(|e| (e.name.as_str(), &e.value, Some(description.clone())));
    // Not done, like the record above, for every name: nothing was stored.
    super::add::store_all(agent, vault, entries, false)
        .await
        .inspect_err(|r| agent.record_not_done_all(EventKind::SecretAdded, &names, &r.message))?;
    tracing::info!(count = names.len(), "secrets imported");
    Ok(Response::Done)
}

/// Refuses names the vault holds already (an import never replaces).
async fn clash(agent: &Agent, names: &[String]) -> Result<(), Refusal> {
    let slot = agent.unlocked().await?;
    let Some(vault) = slot.as_ref() else {
        return Err(Refusal::locked());
    };
    let taken: Vec<&str> = names
        .iter()
        .filter(|n| vault.contains(n))
        .map(String::as_str)
        .collect();
    if taken.is_empty() {
        return Ok(());
    }
    Err(Refusal::new(
        ErrorCode::Failure,
        format!(
            "{} {} in the vault already, and an import never replaces: nothing was imported; choose another prefix",
            taken.join(", "),
            if taken.len() == 1 { "is" } else { "are" }
        ),
    ))
}

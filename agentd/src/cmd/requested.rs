//! `RequestSecret` and `ListRequested`: a secret a program needs and the vault does not
//! hold, kept for the user to add. A name and a line of text, never a value; listed
//! until the vault holds the name.

use jitc_protocol::kinds::EventKind;
use jitc_protocol::{Response, SecretWanted};

use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::error::{Refusal, Reply};

/// Most requests kept at once (the oldest go first).
const MAX_WANTED: usize = 64;
/// Longest description kept.
const MAX_DESCRIPTION: usize = 256;

pub async fn request(agent: &Agent, session: &mut Session, mut wanted: SecretWanted) -> Reply {
    super::check_name(&wanted.name)?;
    if let Some(d) = &wanted.description
        && (d.len() > MAX_DESCRIPTION || d.chars().any(char::is_control))
    {
        return Err(Refusal::bad_input(format!(
            "the description must be one line of at most {MAX_DESCRIPTION} bytes"
        )));
    }
    if agent
        .vault_slot()
        .await
        .as_ref()
        .is_some_and(|v| v.contains(&wanted.name))
    {
        return Err(Refusal::new(
            jitc_protocol::ErrorCode::Failure,
            format!("the vault holds '{}' already; use it", wanted.name),
        ));
    }
    wanted.requested = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // The description is the requester's text: shown to the user in listings, kept out
    // of the log (a value could hide in it).
    agent.audit().record_later(Event {
        secrets: vec![wanted.name.clone()],
        reason: Some(format!(
            "asked for '{}', which the vault does not hold; add it with 'jitc add {}'",
            wanted.name, wanted.name
        )),
        ..Event::new(EventKind::SecretRequested).peer(session.peer_json())
    });
    agent.want(wanted, MAX_WANTED);
    Ok(Response::Done)
}

pub async fn list(agent: &Agent) -> Reply {
    let slot = agent.vault_slot().await;
    let mut wanted = agent.wanted();
    if let Some(v) = slot.as_ref() {
        wanted.retain(|w| !v.contains(&w.name));
    }
    Ok(Response::Requested(wanted))
}

//! `Lock`: wipe the key and every value from memory and end every lease.

use jitc_protocol::Response;

use crate::agent::Agent;
use crate::error::Reply;

pub async fn apply(agent: &Agent) -> Reply {
    agent.lock("the vault was locked").await;
    Ok(Response::Done)
}

//! `jitc exec`: lease the secrets, inject them into the command's environment, run it,
//! forward signals, stop it if the lease ends, and release the lease when it exits.

pub mod command;
pub mod spawn;
pub mod supervise;

use std::path::PathBuf;
use std::time::Duration;

use jitc_protocol::{CommandLine, LeaseRequest};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::client::{Client, LeaseReply};
use crate::error::{Error, Result};
use crate::refs::Binding;
pub use command::Program;
use spawn::ChildEnv;

/// Everything `jitc exec` needs, parsed and checked before the agent is asked.
#[derive(Debug)]
pub struct Plan {
    pub bindings: Vec<Binding>,
    pub program: Program,
    pub cwd: PathBuf,
    pub task: Option<String>,
    pub ttl: Option<Duration>,
    pub masking: bool,
}

impl Plan {
    pub fn lease_request(&self) -> LeaseRequest {
        let mut secrets: Vec<String> = Vec::new();
        for b in &self.bindings {
            if !secrets.contains(&b.secret) {
                secrets.push(b.secret.clone());
            }
        }
        LeaseRequest {
            secrets,
            command: CommandLine {
                path: self.program.path.to_string_lossy().into_owned(),
                argv: self
                    .program
                    .argv
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
                cwd: self.cwd.to_string_lossy().into_owned(),
            },
            task: self.task.clone(),
            ttl_ms: self
                .ttl
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            masking: self.masking,
        }
    }
}

/// Runs the plan under a lease from `client`; returns the exit code for `jitc` (the
/// child's, or 128+N if it died of signal N).
pub fn run(plan: Plan, client: &mut Client) -> Result<u8> {
    // Block the signals we handle before the child exists, so none is missed; the child
    // gets an empty mask (see spawn).
    let handled = spawn::handled_signals();
    handled
        .thread_block()
        .map_err(|e| Error::failure(format!("cannot set up signal handling ({e})")))?;
    let signals = SignalFd::with_flags(&handled, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Error::failure(format!("cannot set up signal handling ({e})")))?;

    client.send(&jitc_protocol::Request::Lease(plan.lease_request()))?;
    let grant = loop {
        if let Some(code) = supervise::wait_for_reply(client, &signals)? {
            return Ok(code);
        }
        match client.lease_reply()? {
            LeaseReply::Granted(g) => break g,
            LeaseReply::Waiting(w) => crate::error::note(&match w.approver {
                Some(a) => format!(
                    "waiting for approval from {a} — or run 'jitc approve {}' in your terminal",
                    w.id
                ),
                None => format!(
                    "waiting for approval — run 'jitc approve {}' in your terminal",
                    w.id
                ),
            }),
        }
    };
    let lease = grant.lease;
    let child = {
        let overridden: Vec<&str> = plan.bindings.iter().map(|b| b.var.as_str()).collect();
        let mut env = ChildEnv::inherit(&overridden);
        for b in &plan.bindings {
            let value = grant
                .values
                .iter()
                .find(|v| v.name == b.secret)
                .ok_or(Error::Unexpected("a leased value is missing"))?;
            env.set(&b.var, &b.secret, value.value.expose())?;
        }
        drop(grant);
        spawn::spawn(&plan.program, &env)?
    };
    let outcome = supervise::Supervisor {
        child,
        signals: &signals,
        client,
    }
    .run()?;
    if outcome.lease_held {
        // Best effort: closing the connection releases it too.
        let _ = client.release(lease);
    }
    Ok(outcome.code)
}

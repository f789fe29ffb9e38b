//! `jitc mcp`: the MCP server (stdio, rmcp) through which a coding agent uses secrets
//! without ever seeing one. Every tool goes through the agent exactly as the CLI does:
//! commands run as `jitc exec` (same lease, policy, approval, masking and audit), and
//! no result carries a value or a fragment of one. Stdout carries MCP messages only.

mod process;
mod tools;

use crate::error::{Error, Result};

/// Runs the server on stdin/stdout until the client closes stdin; at most `max_runs`
/// commands at once.
pub fn run(max_runs: usize) -> Result<u8> {
    // What a command leaves behind comes to us, to be ended with its call or session.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::failure(format!("cannot start the MCP server ({e})")))?;
    runtime.block_on(tools::serve(max_runs.max(1)))
}

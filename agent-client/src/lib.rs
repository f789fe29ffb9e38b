//! jitc: the client library for the jitc agent (`Client`, starting the agent, running a
//! command under a lease) and, in `main.rs`, the `jitc` command line.

pub mod client;
pub mod error;
pub mod exec;
pub mod home;
pub mod import;
pub mod mask;
pub mod mcp;
pub mod prompt;
pub mod refs;
pub mod sandbox;
pub mod scan;
pub mod start;

pub use client::{Client, Written};
pub use error::{Error, Result};

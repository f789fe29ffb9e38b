//! jitc-agentd: the per-user agent that holds the unlocked vault and grants leases.
//!
//! `run(listener, agent, shutdown)` is the entry point; `main.rs` only resolves settings,
//! hardens the process, binds the socket and calls it.

pub mod agent;
pub mod anomaly;
pub mod approval;
pub mod audit;
pub mod backend;
pub mod clock;
mod cmd;
pub mod config;
pub mod connection;
pub mod error;
pub mod fsperm;
pub mod gateway;
pub mod hardening;
pub mod idle;
pub mod leases;
pub mod locked;
pub mod ns;
pub mod peer;
pub mod policy;
pub mod procs;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod socket;
pub mod vault;

pub use agent::Agent;
pub use config::Config;
pub use server::run;

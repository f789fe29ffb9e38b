//! `jitc lock`: wipe the vault key and values from the agent's memory.

use jitc::Result;
use jitc::start::connect_or_start;

pub fn run() -> Result<u8> {
    connect_or_start()?.lock()?;
    eprintln!("jitc: locked");
    Ok(0)
}

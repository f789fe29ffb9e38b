//! `jitc lock`: wipe the vault key and values from the agent's memory.

use jitc::Result;
use jitc::error::note;
use jitc::start::connect_or_start;

pub fn run() -> Result<u8> {
    connect_or_start()?.lock()?;
    note("locked");
    Ok(0)
}

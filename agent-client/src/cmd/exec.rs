//! `jitc exec`: run a command with leased secrets in its environment.

use jitc::Result;
use jitc::exec;
use jitc::start::connect_or_start;

use super::request::{RequestArgs, plan};

pub fn run(args: RequestArgs) -> Result<u8> {
    let plan = plan(args)?;
    let mut client = connect_or_start()?;
    exec::run(plan, &mut client)
}

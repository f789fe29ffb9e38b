//! `jitc exec`: run a command with leased secrets in its environment.

use jitc::Result;
use jitc::exec;
use jitc::start::connect_or_start;

use super::request::{RequestArgs, plan};

pub fn run(args: RequestArgs) -> Result<u8> {
    let plan = plan(args)?;
    if !plan.leases_anything() {
        // Nothing to lease (as `op run` with no references): just run it.
        return exec::run(plan, None);
    }
    let mut client = connect_or_start()?;
    exec::run(plan, Some(&mut client))
}

//! Stage 1, `intake`: the request's form — names, task, size.

use jitc_protocol::LeaseRequest;

use super::*;
use crate::error::Refusal;

/// A task text that is not one line of at most `MAX_TASK_LEN` bytes.
pub(super) fn bad_task(t: &str) -> bool {
    t.len() > MAX_TASK_LEN || t.chars().any(char::is_control)
}

/// The request's form: at least one well-formed name, a one-line task, a command line
/// of bounded size.
/// The request's form: at least one and at most `MAX_SECRETS` well-formed names, a
/// one-line task, a command line of bounded size. The refusal, and how it is recorded:
/// a malformed name or task may be anything (a value), so its record says only what
/// kind of fault it was.
pub(super) fn intake(req: &LeaseRequest) -> Result<(), (Refusal, String)> {
    let recorded = |r: Refusal, how: &str| (r, how.to_owned());
    if req.secrets.is_empty() {
        return Err(recorded(
            Refusal::bad_input(
                "a lease needs at least one secret; name one with -s NAME or -e VAR=NAME",
            ),
            "malformed request: no secret named",
        ));
    }
    if req.secrets.len() > MAX_SECRETS {
        let why = format!(
            "a lease names at most {MAX_SECRETS} secrets, this one {}; split the command's needs",
            req.secrets.len()
        );
        return Err((Refusal::bad_input(why.clone()), why));
    }
    for name in &req.secrets {
        crate::cmd::check_lease_name(name).map_err(|r| recorded(r, MALFORMED))?;
    }
    if req.task.as_deref().is_some_and(bad_task) {
        return Err(recorded(
            Refusal::bad_input(format!(
                "--task must be one line of at most {MAX_TASK_LEN} bytes"
            )),
            MALFORMED,
        ));
    }
    let size = req.command.path.len()
        + req.command.cwd.len()
        + req.task.as_ref().map_or(0, String::len)
        + req.command.argv.iter().map(|a| a.len() + 1).sum::<usize>();
    if size > MAX_COMMAND_BYTES {
        let why = format!(
            "the command line is {size} bytes; jitc takes at most {} KiB (pass large input on stdin or in a file)",
            MAX_COMMAND_BYTES >> 10
        );
        return Err((Refusal::bad_input(why.clone()), why));
    }
    Ok(())
}

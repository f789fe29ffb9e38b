//! `jitc stop` (and `jitc agent --kill`): stop the agent, as `ssh-agent -k` does. Every
//! lease ends (their commands are stopped), the vault is locked and the socket removed.

use jitc::error::note;
use jitc::{Client, Error, Result};
use jitc_protocol::paths::socket_path;

/// Stops the agent at the socket (never starts one) and waits until it is gone.
pub fn run() -> Result<u8> {
    let path = socket_path();
    let mut client = Client::connect(&path)?;
    let pid = client.welcome().pid;
    client.stop()?;
    // The agent closes every connection as it goes: our end of the socket then reads
    // end-of-file.
    loop {
        match client.recv() {
            Ok(Some(_)) => continue,
            Ok(None) | Err(Error::Transport(_)) => break,
            Err(e) => return Err(e),
        }
    }
    // The socket goes with the process: wait for that, so that what follows finds
    // no agent (and can start a new one at once).
    let agent = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while path.exists()
        && nix::sys::signal::kill(agent, None).is_ok()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    note(&format!(
        "stopped the agent (pid {pid}) on {}",
        path.display()
    ));
    Ok(0)
}

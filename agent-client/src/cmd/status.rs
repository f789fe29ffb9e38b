//! `jitc status`: the agent, the vault, and the leases, for humans or as JSON.

use jitc::Result;
use jitc::start::connect_or_start;
use jitc_protocol::display::{MAX_SHOWN_ARGV, command_line, visible};

use super::plural;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

fn minutes(secs: u64) -> String {
    if secs >= 120 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

pub fn run(args: Args) -> Result<u8> {
    let mut client = connect_or_start()?;
    let s = client.status()?;
    if args.json {
        super::print_json(&s)?;
        return Ok(0);
    }
    let state = if !s.vault_exists {
        "no vault yet; create one with 'jitc init'".to_owned()
    } else if s.locked {
        "locked; run 'jitc unlock'".to_owned()
    } else {
        format!(
            "unlocked, {}; locks after {} idle",
            plural(u64::from(s.secrets.unwrap_or(0)), "secret"),
            minutes(s.idle_lock_secs)
        )
    };
    let policy = match (&s.policy.error, s.policy.exists) {
        (Some(e), _) => format!("BROKEN, every lease is refused: {}", visible(e)),
        (None, true) => visible(&s.policy.path).into_owned(),
        (None, false) => format!("{} (absent: the defaults apply)", visible(&s.policy.path)),
    };
    let mut text = format!(
        "agent    running (pid {}, jitc-agentd {})\nsocket   {}\nvault    {}\nstate    {state}\nleases   {} active, {} waiting for approval\npolicy   {policy}\n",
        s.pid, s.agent_version, s.socket, s.vault, s.leases, s.pending
    );
    if let Some(e) = &s.policy.approver_error {
        text.push_str(&format!("approver FAILING: {}\n", visible(e)));
    }
    if let Some(t) = &s.audit.tampered {
        text.push_str(&format!(
            "audit    DOES NOT VERIFY (found at unlock): {t}; see 'jitc audit verify'\n"
        ));
    }
    text.push_str(&match &s.audit.error {
        Some(e) => format!("audit    FAILING, every lease is refused: {e}\n"),
        None => format!(
            "audit    {} ({})\n",
            visible(&s.audit.path),
            plural(s.audit.last_seq, "record")
        ),
    });
    if !s.locked {
        let mem = if s.memory_locked {
            "vault key in locked memory"
        } else {
            "WARNING: vault key could not be locked in memory (raise RLIMIT_MEMLOCK)"
        };
        text.push_str(&format!("memory   {mem}\n"));
    }
    if s.unlock_failures > 0 {
        text.push_str(&format!(
            "failures {} since the last unlock\n",
            plural(u64::from(s.unlock_failures), "wrong passphrase")
        ));
    }
    if let Some(addr) = &s.gateway {
        text.push_str(&format!(
            "gateway  {} (custody-free credentials: jitc exec --proxy)\n",
            visible(addr)
        ));
    }
    if s.backend_recovered > 0 || !s.backend_unrevoked.is_empty() {
        text.push_str(&format!(
            "backends {} an earlier run left unrevoked (a crash?) revoked at unlock{}\n",
            plural(u64::from(s.backend_recovered), "dynamic secret"),
            if s.backend_unrevoked.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} not yet: see 'jitc audit --event backend_revoke_failed'",
                    s.backend_unrevoked.len()
                )
            }
        ));
    }
    if let Some(id) = s.caller_sandbox {
        text.push_str(&format!(
            "you      inside sandbox {id}: requests from here get its profile\n"
        ));
    }
    for b in &s.sandboxes {
        text.push_str(&format!(
            "sandbox  {} profile '{}', pid {}, since {}: {}\n",
            b.id,
            visible(&b.profile),
            b.pid,
            super::date(b.started),
            command_line(&b.command, MAX_SHOWN_ARGV)
        ));
    }
    super::emit(&text)?;
    Ok(0)
}

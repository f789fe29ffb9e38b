//! `jitc agent`: make sure an agent runs on the socket and print where it is.

use jitc::error::note;
use jitc::start::start_agent;
use jitc::{Client, Error, Result};
use jitc_protocol::paths::socket_path;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  eval \"$(jitc agent)\"          # in ~/.bashrc or ~/.zshrc
  jitc agent --fish | source
  jitc agent --kill             # stop it (as 'ssh-agent -k'; same as 'jitc stop')")]
pub struct Args {
    /// Print a csh/tcsh line instead of a POSIX shell line
    #[arg(long, conflicts_with = "fish")]
    csh: bool,
    /// Print a fish line instead of a POSIX shell line
    #[arg(long)]
    fish: bool,
    /// Stop the running agent instead (as 'ssh-agent -k')
    #[arg(long, short = 'k', conflicts_with_all = ["csh", "fish"])]
    kill: bool,
}

/// Quotes `s` for any of the shells we print for, when it needs quoting at all.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub fn run(args: Args) -> Result<u8> {
    if args.kill {
        return super::stop::run();
    }
    let path = socket_path();
    let client = match Client::connect(&path) {
        Ok(c) => c,
        Err(Error::NotRunning { .. }) => {
            start_agent(&path)?;
            let c = Client::connect(&path)?;
            note(&format!(
                "started the agent (pid {}) on {}",
                c.welcome().pid,
                path.display()
            ));
            c
        }
        Err(e) => return Err(e),
    };
    let sock = quote(&client.path().to_string_lossy());
    let line = if args.csh {
        format!("setenv JITC_SOCK {sock};\n")
    } else if args.fish {
        format!("set -gx JITC_SOCK {sock};\n")
    } else {
        format!("export JITC_SOCK={sock};\n")
    };
    super::emit(&line)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting() {
        assert_eq!(
            quote("/run/user/1000/jitc/agent.sock"),
            "/run/user/1000/jitc/agent.sock"
        );
        assert_eq!(quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(quote("/tmp/it's"), r"'/tmp/it'\''s'");
    }
}

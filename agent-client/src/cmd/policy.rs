//! `jitc policy explain`: which rule decides a request like this one from here, and
//! what would happen; nothing is leased and nobody is asked.

use clap::Subcommand;
use jitc::Result;
use jitc::start::connect_or_start;

use super::request::{RequestArgs, plan};
use jitc_protocol::display::visible;

use super::{chain_text, emit, print_json};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show which rule matches a request and what the agent would do with it; exits 77
    /// when it would be refused, 1 when the vault holds no secret by a name given
    Explain(Box<ExplainArgs>),
    /// The policy file that was in force is gone: accept the defaults (asks for the
    /// vault passphrase)
    Reset(ResetArgs),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  jitc policy reset                 # after policy.toml was removed on purpose
  echo \"$PASSPHRASE\" | jitc policy reset --passphrase-stdin")]
pub struct ResetArgs {
    /// Read the passphrase from the first line of stdin instead of the terminal
    #[arg(long)]
    passphrase_stdin: bool,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  jitc policy explain -s prod/db -- psql
  jitc policy explain --json -e DATABASE_URL=prod/db -- ./migrate.sh")]
pub struct ExplainArgs {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    request: RequestArgs,
}

fn span(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// The exit code an explanation means: 77 refused, 1 a name the vault lacks.
fn outcome_code(e: &jitc_protocol::Explanation) -> u8 {
    if e.refusal.is_some() {
        jitc_protocol::ErrorCode::Refused.exit_code()
    } else if !e.unknown.is_empty() {
        jitc_protocol::ErrorCode::Failure.exit_code()
    } else {
        0
    }
}

pub fn run(command: Command) -> Result<u8> {
    let args = match command {
        Command::Explain(args) => args,
        Command::Reset(args) => {
            let passphrase = if args.passphrase_stdin {
                jitc::prompt::read_stdin_line("the passphrase")?
            } else {
                jitc::prompt::ask_hidden("Vault passphrase to go on with the default policy: ")?
            };
            connect_or_start()?.policy_reset(passphrase)?;
            jitc::error::note(
                "the policy is reset: the defaults apply until a policy file is there again",
            );
            return Ok(0);
        }
    };
    let plan = plan(args.request)?;
    if !plan.leases_anything() {
        return Err(jitc::Error::bad_input(
            "no secrets named; add -s NAME, -e VAR=NAME, --file VAR=NAME or an --env-file with jitc:// values before '--'",
        ));
    }
    let e = connect_or_start()?.explain(plan.lease_request())?;
    let code = outcome_code(&e);
    if args.json {
        print_json(&e)?;
        return Ok(code);
    }
    let policy = match (&e.policy.error, e.policy.exists) {
        (Some(err), _) => format!(
            "{} — BROKEN, every lease is refused: {}",
            visible(&e.policy.path),
            visible(err)
        ),
        (None, true) => visible(&e.policy.path).into_owned(),
        (None, false) => format!("{} (absent: the defaults apply)", visible(&e.policy.path)),
    };
    let mut text = format!(
        "policy    {policy}\nrequester {}\nprofile   {}\nidentity  {}\ncommand   {}\n",
        chain_text(&e.chain),
        visible(e.profile.as_deref().unwrap_or("(none)")),
        visible(&e.identity),
        visible(&e.command)
    );
    for v in &e.verdicts {
        let rule = match v.rule {
            Some(n) => format!("rule {n}: {}", v.rule_text),
            None => "no rule matches: [defaults]".into(),
        };
        text.push_str(&format!("secret    {}  ← {rule}\n", v.secret));
    }
    let outcome = match &e.refusal {
        Some(why) => format!("REFUSED (exit 77): {}", visible(why)),
        None if !e.unknown.is_empty() => format!(
            "FAILS (exit 1): the vault holds no secret named {}; see 'jitc ls'",
            e.unknown
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => {
            let approval = match e.approval.as_str() {
                "never" => "no approval needed".to_owned(),
                "remembered" => "approved earlier for this task (remembered)".to_owned(),
                "once-per-task" => "after approval (once per task)".to_owned(),
                other => format!("after approval ({other})"),
            };
            format!(
                "granted for {} (at most {}), {approval}{}",
                span(e.ttl_secs),
                span(e.max_ttl_secs),
                if e.masking_required {
                    "; masking required"
                } else {
                    ""
                }
            )
        }
    };
    text.push_str(&format!("decision  {outcome}\n"));
    if e.locked {
        text.push_str("note      the vault is locked: whether it holds these names is not known\n");
    }
    emit(&text)?;
    Ok(code)
}

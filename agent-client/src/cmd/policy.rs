//! `jitc policy explain`: which rule decides a request like this one from here, and
//! what would happen; nothing is leased and nobody is asked.

use clap::Subcommand;
use jitc::Result;
use jitc::start::connect_or_start;

use super::request::{RequestArgs, plan};
use super::{chain_text, emit, print_json};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show which rule matches a request and what the agent would do with it
    Explain(ExplainArgs),
}

#[derive(Debug, clap::Args)]
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

pub fn run(command: Command) -> Result<u8> {
    let Command::Explain(args) = command;
    let plan = plan(args.request)?;
    let e = connect_or_start()?.explain(plan.lease_request())?;
    if args.json {
        print_json(&e)?;
        return Ok(0);
    }
    let policy = match (&e.policy.error, e.policy.exists) {
        (Some(err), _) => format!("{} — BROKEN, every lease is refused: {err}", e.policy.path),
        (None, true) => e.policy.path.clone(),
        (None, false) => format!("{} (absent: the defaults apply)", e.policy.path),
    };
    let mut text = format!(
        "policy    {policy}\nrequester {}\nprofile   {}\ncommand   {}\n",
        chain_text(&e.chain),
        e.profile.as_deref().unwrap_or("(none)"),
        e.command
    );
    for v in &e.verdicts {
        let rule = match v.rule {
            Some(n) => format!("rule {n}: {}", v.rule_text),
            None => "no rule matches: [defaults]".into(),
        };
        text.push_str(&format!("secret    {}  ← {rule}\n", v.secret));
    }
    let outcome = match &e.refusal {
        Some(why) => format!("REFUSED (exit 77): {why}"),
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
    emit(&text)?;
    Ok(0)
}

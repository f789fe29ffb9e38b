//! `jitc audit`: the record of every decision, as a table a person reads (or JSON
//! lines), filtered, optionally followed; `jitc audit verify`: is it intact?

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use jitc::start::connect_or_start;
use jitc::{Error, Result};
use serde_json::Value;

use super::emit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print the matching records as JSON lines, as stored
    #[arg(long)]
    json: bool,
    /// Keep printing records as they are written
    #[arg(long, short)]
    follow: bool,
    /// Only records since a time: a duration ago (1h, 30m) or an RFC 3339 time
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Only records about this secret
    #[arg(long, value_name = "NAME")]
    secret: Option<String>,
    /// Only records of this kind (lease_granted, anomaly, …)
    #[arg(long, value_name = "KIND")]
    event: Option<String>,
    /// Only anomalies
    #[arg(long)]
    anomalies: bool,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Check the chain of tags (edits, drops, reorders, insertions, a cut-off tail)
    Verify,
}

struct Filter {
    since: Option<SystemTime>,
    secret: Option<String>,
    event: Option<String>,
}

impl Filter {
    fn keeps(&self, v: &Value) -> bool {
        if let Some(since) = self.since {
            let t = v["time"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
            if t.is_none_or(|t| t < since) {
                return false;
            }
        }
        if let Some(s) = &self.secret
            && !v["secrets"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == s.as_str()))
        {
            return false;
        }
        if let Some(e) = &self.event
            && v["event"] != e.as_str()
        {
            return false;
        }
        true
    }
}

fn parse_since(s: &str) -> Result<SystemTime> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(SystemTime::now() - d);
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        Error::bad_input(format!(
            "bad --since '{}': give a duration (1h, 30m) or a time (2026-11-28T09:00:00Z)",
            s.escape_debug()
        ))
    })
}

/// The log's files, oldest first.
fn files(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..=9)
        .rev()
        .map(|i| {
            let mut p = path.as_os_str().to_owned();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        })
        .filter(|p| p.is_file())
        .collect();
    if path.is_file() {
        out.push(path.to_owned());
    }
    out
}

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One record as a table row.
fn row(v: &Value) -> String {
    let time = v["time"].as_str().unwrap_or("");
    let time = time.get(..19).unwrap_or(time).replace('T', " ");
    let secrets = v["secrets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let command = v["command"].as_str().map(name_of).unwrap_or("");
    let requester = match (v["peer"]["exe"].as_str(), v["peer"]["pid"].as_u64()) {
        (Some(exe), Some(pid)) => {
            let profile = v["profile"]
                .as_str()
                .map(|p| format!(" [{p}]"))
                .unwrap_or_default();
            format!("{} ({pid}){profile}", name_of(exe))
        }
        _ => String::new(),
    };
    let decision = match (v["decision"].as_str(), v["reason"].as_str()) {
        (Some(d), Some(r)) => format!("{d}: {r}"),
        (Some(d), None) => d.to_owned(),
        (None, Some(r)) => r.to_owned(),
        (None, None) => String::new(),
    };
    let lease = v["lease"]
        .as_u64()
        .map(|l| format!("#{l} "))
        .unwrap_or_default();
    format!(
        "{time}  {:<20} {:<24} {:<12} {:<28} {lease}{decision}\n",
        v["event"].as_str().unwrap_or("?"),
        secrets,
        command,
        requester
    )
}

fn show(line: &str, filter: &Filter, json: bool, out: &mut String) {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return;
    };
    if filter.keeps(&v) {
        if json {
            out.push_str(line);
            out.push('\n');
        } else {
            out.push_str(&row(&v));
        }
    }
}

pub fn run(args: Args) -> Result<u8> {
    let mut client = connect_or_start()?;
    if let Some(Action::Verify) = args.action {
        let r = client.audit_verify()?;
        return match r.problem {
            None => {
                let unsealed = if r.unsealed > 0 {
                    format!(
                        "; the last {} written while the vault was locked are sealed at the next unlock",
                        r.unsealed
                    )
                } else {
                    String::new()
                };
                jitc::error::note(&format!(
                    "audit log intact: {} records in {} file(s){unsealed}",
                    r.lines,
                    r.files.len()
                ));
                Ok(0)
            }
            Some(p) => {
                jitc::error::note(&format!("audit log NOT intact: {p}"));
                Ok(1)
            }
        };
    }
    let path = PathBuf::from(client.status()?.audit.path);
    drop(client);
    let filter = Filter {
        since: args.since.as_deref().map(parse_since).transpose()?,
        secret: args.secret,
        event: if args.anomalies {
            Some("anomaly".into())
        } else {
            args.event
        },
    };
    let mut out = String::new();
    if !args.json {
        out.push_str(&format!(
            "{:<19}  {:<20} {:<24} {:<12} {:<28} DECISION\n",
            "TIME", "EVENT", "SECRETS", "COMMAND", "REQUESTER"
        ));
    }
    for f in files(&path) {
        let text = std::fs::read_to_string(&f).map_err(|e| {
            Error::local(
                jitc_protocol::ErrorCode::IoErr,
                format!("cannot read {} ({e})", f.display()),
            )
        })?;
        for line in text.lines() {
            show(line, &filter, args.json, &mut out);
        }
    }
    emit(&out)?;
    if args.follow {
        follow(&path, &filter, args.json)?;
    }
    Ok(0)
}

/// Prints records as they are appended, across rotation, until interrupted.
fn follow(path: &Path, filter: &Filter, json: bool) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;
    let open = || std::fs::File::open(path).ok();
    let mut file = open();
    let mut pos = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map_or(0, |m| m.len());
    let mut ino = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map(|m| m.ino());
    let mut partial = String::new();
    loop {
        // The log has no readiness to wait on from here: look again shortly.
        std::thread::sleep(Duration::from_millis(200));
        let now = std::fs::metadata(path).ok();
        if now.as_ref().map(|m| m.ino()) != ino || now.as_ref().is_some_and(|m| m.len() < pos) {
            // Rotated: the old file's last lines were read; start the new one.
            file = open();
            ino = now.map(|m| m.ino());
            pos = 0;
        }
        let Some(f) = file.as_mut() else { continue };
        if f.seek(SeekFrom::Start(pos)).is_err() {
            continue;
        }
        let mut chunk = String::new();
        if let Ok(n) = f.read_to_string(&mut chunk) {
            pos += n as u64;
        }
        partial.push_str(&chunk);
        let mut out = String::new();
        while let Some(at) = partial.find('\n') {
            let line: String = partial.drain(..=at).collect();
            show(line.trim_end(), filter, json, &mut out);
        }
        if !out.is_empty() {
            emit(&out)?;
        }
    }
}

//! `jitc scan [PATH]`: list plaintext credentials an agent could read; exit 1 if any, so
//! it works as a CI or pre-commit gate. Never prints a value.

use std::path::PathBuf;

use jitc::Result;
use jitc::error::note;
use jitc::scan::shown;

use super::{emit, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory or file to scan [default: the current directory]
    #[arg(value_name = "PATH")]
    path: Option<PathBuf>,
    /// Print JSON instead of `path:line kind` lines
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let path = args.path.unwrap_or_else(|| PathBuf::from("."));
    let report = jitc::scan::scan(&path)?;
    if args.json {
        print_json(&report.findings)?;
    } else {
        let mut text = String::new();
        for f in &report.findings {
            // The kind is made printable where it is built; the path is printed here.
            text.push_str(&format!("{}:{} {}\n", shown(&f.path), f.line, f.kind));
        }
        emit(&text)?;
    }
    let at = shown(&path.display().to_string());
    if report.too_large > 0 || report.unreadable > 0 {
        let mut parts = Vec::new();
        if report.too_large > 0 {
            parts.push(format!(
                "{} over {} MiB",
                super::plural(report.too_large as u64, "file"),
                jitc::scan::MAX_FILE >> 20
            ));
        }
        if let Some((first, why)) = &report.first_unreadable {
            parts.push(format!(
                "{} it could not read (first: {}: {why})",
                report.unreadable,
                shown(first)
            ));
        }
        note(&format!("not scanned: {}", parts.join(", ")));
    }
    if report.findings.is_empty() {
        note(&format!("no plaintext credentials found in {at}"));
        Ok(0)
    } else {
        note(&format!(
            "{} in {at}; move them into the vault ('jitc import FILE' for .env files), or mark a false alarm with 'jitc:ignore' on its line or a {} entry",
            super::plural(report.findings.len() as u64, "plaintext credential"),
            jitc::scan::IGNORE_FILE
        ));
        Ok(1)
    }
}

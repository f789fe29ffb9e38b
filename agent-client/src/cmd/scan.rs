//! `jitc scan [DIR]`: list plaintext credentials an agent could read; exit 1 if any, so
//! it works as a CI or pre-commit check. Never prints a value.

use std::path::PathBuf;

use jitc::{Error, Result};
use jitc_protocol::ErrorCode;

use super::{emit, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The tree to scan [default: the current directory]
    dir: Option<PathBuf>,
    /// Print JSON instead of `path:line kind` lines
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let (dir, found) = jitc::scan::scan_dir(args.dir).map_err(|e| {
        Error::local(
            ErrorCode::IoErr,
            format!("cannot read the tree to scan ({e})"),
        )
    })?;
    if args.json {
        print_json(&found)?;
    } else {
        let mut text = String::new();
        for f in &found {
            text.push_str(&format!("{}:{} {}\n", f.path, f.line, f.kind));
        }
        emit(&text)?;
    }
    if found.is_empty() {
        jitc::error::note(&format!(
            "no plaintext credentials found under {}",
            dir.display()
        ));
        Ok(0)
    } else {
        jitc::error::note(&format!(
            "{} plaintext credential(s) under {}; move them into the vault ('jitc import FILE' for .env files)",
            found.len(),
            dir.display()
        ));
        Ok(1)
    }
}

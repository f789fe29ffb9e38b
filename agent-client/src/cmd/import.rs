//! `jitc import FILE.env`: move a plaintext `.env` into the vault and print the
//! reference file (`KEY=jitc://NAME`) to commit in its place (see `jitc::import`).

use std::path::PathBuf;

use jitc::error::note;
use jitc::import::prepare;
use jitc::start::connect_or_start;
use jitc::{Error, Result};
use jitc_protocol::{AddSecrets, ErrorCode, NewSecret, SecretBytes};
use zeroize::Zeroizing;

use super::emit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The .env file to import (left in place)
    file: PathBuf,
    /// Prefix for the secret names, e.g. "myapp/" stores KEY as myapp/KEY
    #[arg(long, value_name = "P", default_value = "")]
    prefix: String,
    /// Overwrite secrets that exist already
    #[arg(long)]
    replace: bool,
    /// Store every value, also plain settings (numbers, booleans, hosts and ports, URLs
    /// without credentials, NODE_ENV, LOG_LEVEL, *_HOST, *_PORT, …)
    #[arg(long)]
    all: bool,
    /// Read the vault passphrase (needed to replace secrets, or to add ones a policy
    /// rule guards) from the first line of stdin
    #[arg(long)]
    passphrase_stdin: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let prepared = prepare(&args.file, &args.prefix, args.all)?;
    let shown_file = &prepared.shown;
    let to_store: Vec<(&str, &str)> = prepared
        .to_store
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if !to_store.is_empty() {
        store(&args, &to_store)?;
    }
    emit(&prepared.reference)?;
    let kept = &prepared.kept;
    if !kept.is_empty() {
        let mut names = kept.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
        if kept.len() > 8 {
            names.push_str(", …");
        }
        note(&format!(
            "kept {} as written, not in the vault: {names}; add --all to store them too",
            super::plural(kept.len() as u64, "plain setting")
        ));
    }
    if to_store.is_empty() {
        note(&format!(
            "imported nothing from {shown_file}: every value is a plain setting or a reference"
        ));
    } else {
        note(&format!(
            "imported {} from {shown_file}; it still holds {} in plain text: once the reference file works, delete it (shred -u {shown_file})",
            super::plural(to_store.len() as u64, "secret"),
            if to_store.len() == 1 { "it" } else { "them" }
        ));
    }
    Ok(0)
}

/// Stores `(name, value)` pairs: all or, without `--replace`, none if a name exists.
fn store(args: &Args, to_store: &[(&str, &str)]) -> Result<()> {
    let mut client = connect_or_start()?;
    if !args.replace {
        // A set of the vault's names: the file's are looked up in it, not compared with
        // every one (20,000 entries against 100,000 names took 6 s that way).
        let mut existing = std::collections::HashSet::new();
        client.list_pages(|page| {
            existing.extend(page.into_iter().map(|s| s.name));
            Ok(())
        })?;
        let clash: Vec<&str> = to_store
            .iter()
            .filter(|(n, _)| existing.contains(*n))
            .map(|(n, _)| *n)
            .collect();
        if !clash.is_empty() {
            return Err(Error::local(
                ErrorCode::Failure,
                format!(
                    "{} {} already: nothing was imported; add --replace to overwrite, or use --prefix",
                    clash.join(", "),
                    if clash.len() == 1 { "exists" } else { "exist" }
                ),
            ));
        }
    }
    // Asked for once, if a write needs it (replacing, or a name a rule guards).
    let mut passphrase: Option<Zeroizing<Vec<u8>>> = if args.passphrase_stdin {
        Some(Zeroizing::new(
            jitc::prompt::read_stdin_line("the passphrase")?
                .expose()
                .to_vec(),
        ))
    } else {
        None
    };
    // In batches well inside a request's frame: each one write, one save, all or none.
    let description = format!("imported from {}", args.file.display());
    let mut stored = 0usize;
    for chunk in batches(to_store, &description) {
        let batch = |p: Option<&Zeroizing<Vec<u8>>>| AddSecrets {
            entries: chunk
                .iter()
                .map(|(name, value)| NewSecret {
                    name: (*name).to_owned(),
                    value: SecretBytes::from_slice(value.as_bytes()),
                    description: Some(description.clone()),
                })
                .collect(),
            replace: args.replace,
            passphrase: p.map(|p| SecretBytes::from_slice(p)),
        };
        let result = client.add_batch(batch(passphrase.as_ref())).and_then(|w| match w {
            jitc::Written::Done => Ok(()),
            jitc::Written::NeedsPassphrase(what) => {
                if passphrase.is_some() || std::fs::File::open("/dev/tty").is_err() {
                    return Err(Error::local(
                        ErrorCode::Refused,
                        format!(
                            "{what}; run this at your terminal, or give the passphrase on the first line of stdin with --passphrase-stdin"
                        ),
                    ));
                }
                let p = jitc::prompt::ask_hidden(&format!("Vault passphrase ({what}): "))?;
                let p = Zeroizing::new(p.expose().to_vec());
                let again = client.add_batch(batch(Some(&p)));
                passphrase = Some(p);
                match again? {
                    jitc::Written::Done => Ok(()),
                    jitc::Written::NeedsPassphrase(what) => {
                        Err(Error::local(ErrorCode::Refused, what))
                    }
                }
            }
        });
        result.inspect_err(|_| {
            if stored > 0 {
                note(&format!(
                    "{} imported before this failed",
                    plural(stored, "secret was", "secrets were")
                ));
            }
        })?;
        stored += chunk.len();
    }
    Ok(())
}

/// Most bytes of names, values and descriptions in one batch: half a frame.
const BATCH_BYTES: usize = 512 << 10;
/// Most entries in one batch (the agent's `MAX_BATCH`).
const BATCH_ENTRIES: usize = 8192;

/// `entries` cut into batches of at most `BATCH_BYTES` (at least one entry each).
fn batches<'a>(
    entries: &'a [(&'a str, &'a str)],
    description: &str,
) -> Vec<&'a [(&'a str, &'a str)]> {
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, (name, value)) in entries.iter().enumerate() {
        let size = name.len() + value.len() + description.len() + 16;
        if i > start && (used + size > BATCH_BYTES || i - start == BATCH_ENTRIES) {
            out.push(&entries[start..i]);
            (start, used) = (i, 0);
        }
        used += size;
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

/// `n` with the singular or plural phrase.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

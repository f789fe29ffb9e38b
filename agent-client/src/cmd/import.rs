//! `jitc import FILE.env`: move a plaintext `.env` into the vault and print the
//! reference file (`KEY=jitc://NAME`) to commit in its place. Values are never printed.

use std::path::PathBuf;

use jitc::error::note;
use jitc::exec::inject::{EnvEntry, read_env_file};
use jitc::start::connect_or_start;
use jitc::{Error, Result};
use jitc_protocol::names::check_secret_name;
use jitc_protocol::{AddSecret, ErrorCode, SecretBytes};

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
}

/// Where KEY's assignment starts in `text`, and whether its value would be expanded by
/// dotenv (`$` outside single quotes): importing the expansion would silently store
/// something other than what the file says.
fn expands(text: &str, key: &str) -> Option<usize> {
    text.lines().enumerate().find_map(|(i, line)| {
        let l = line.trim_start();
        let l = l.strip_prefix("export ").unwrap_or(l).trim_start();
        let rest = l
            .strip_prefix(key)?
            .trim_start()
            .strip_prefix('=')?
            .trim_start();
        (!rest.starts_with('\'') && rest.contains('$')).then_some(i + 1)
    })
}

pub fn run(args: Args) -> Result<u8> {
    let shown = args.file.display().to_string();
    let entries = read_env_file(&args.file)?;
    let text = std::fs::read_to_string(&args.file).unwrap_or_default();
    let mut to_store: Vec<(String, String)> = Vec::new();
    for (key, entry) in &entries {
        if let EnvEntry::Plain(value) = entry
            && !value.is_empty()
        {
            if let Some(line) = expands(&text, key) {
                return Err(Error::bad_input(format!(
                    "{shown}: line {line} has a '$' that dotenv would expand; put that value in single quotes to import it as written"
                )));
            }
            let name = format!("{}{key}", args.prefix);
            check_secret_name(&name).map_err(|why| {
                Error::bad_input(format!(
                    "secret name '{}' {why}; choose another --prefix",
                    name.escape_debug()
                ))
            })?;
            to_store.push((key.clone(), name));
        }
    }
    let mut client = connect_or_start()?;
    if !args.replace {
        let existing = client.list()?;
        let clash: Vec<&str> = to_store
            .iter()
            .filter(|(_, n)| existing.iter().any(|s| &s.name == n))
            .map(|(_, n)| n.as_str())
            .collect();
        if !clash.is_empty() {
            return Err(Error::local(
                ErrorCode::Failure,
                format!(
                    "{} exist(s) already: nothing was imported; add --replace to overwrite, or use --prefix",
                    clash.join(", ")
                ),
            ));
        }
    }
    let mut stored = 0;
    for (key, name) in &to_store {
        let Some((_, EnvEntry::Plain(value))) = entries.iter().find(|(k, _)| k == key) else {
            continue;
        };
        client
            .add(AddSecret {
                name: name.clone(),
                value: SecretBytes::from_slice(value.as_bytes()),
                description: Some(format!("imported from {shown}")),
                replace: args.replace,
                canary: false,
                passphrase: None,
            })
            .and_then(|w| match w {
                jitc::Written::Done => Ok(()),
                jitc::Written::NeedsPassphrase(what) => Err(Error::local(
                    ErrorCode::Refused,
                    format!("{what}; replace it with 'jitc add --replace {name}'"),
                )),
            })
            .inspect_err(|_| {
                if stored > 0 {
                    note(&format!(
                        "{stored} secret(s) were imported before this failed"
                    ));
                }
            })?;
        stored += 1;
    }
    let mut refs = String::new();
    for (key, entry) in &entries {
        match entry {
            EnvEntry::Secret(name) => refs.push_str(&format!("{key}=jitc://{name}\n")),
            EnvEntry::Plain(v) if v.is_empty() => refs.push_str(&format!("{key}=\n")),
            EnvEntry::Plain(_) => {
                refs.push_str(&format!("{key}=jitc://{}{key}\n", args.prefix));
            }
        }
    }
    emit(&refs)?;
    note(&format!(
        "imported {stored} secret(s) from {shown}; it still holds them in plain text: once the reference file works, delete it (shred -u {shown})"
    ));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::expands;

    #[test]
    fn dollar_detection() {
        let text = "A=plain\nB=pa$word\nC='pa$word'\nexport D=\"x$y\"\n";
        assert_eq!(expands(text, "A"), None);
        assert_eq!(expands(text, "B"), Some(2));
        assert_eq!(expands(text, "C"), None);
        assert_eq!(expands(text, "D"), Some(4));
    }
}

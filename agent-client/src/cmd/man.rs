//! `jitc __man DIR`: jitc(1) and one page per subcommand (`jitc-exec(1)`, …), built from
//! the same definitions `--help` prints. Each command's closing help text (`Examples:`,
//! `Files:`, …) becomes sections of its page, its lines kept as written.

use std::path::Path;

use clap_mangen::Man;
use clap_mangen::roff::{Roff, roman};
use jitc::{Error, Result};

pub fn write_pages(dir: &Path) -> Result<u8> {
    let failed = |e: std::io::Error| {
        Error::failure(format!(
            "cannot write the manual pages to {} ({e})",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let mut cmd = crate::cli().disable_help_subcommand(true);
    cmd.build();
    write_tree(&cmd, dir).map_err(failed)?;
    Ok(0)
}

fn write_tree(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub, dir)?;
    }
    let man = Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut page)?;
    }
    let closing = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut sections = sections(&closing);
    if cmd.get_name() != "jitc" && !sections.iter().any(|(h, _)| h == "SEE ALSO") {
        sections.push(("SEE ALSO".into(), vec!["jitc(1)".into()]));
    }
    let mut roff = Roff::new();
    for (heading, lines) in sections {
        roff.control("SH", [heading.as_str()]).control("nf", []);
        for line in lines {
            roff.text([roman(line)]);
        }
        roff.control("fi", []);
    }
    roff.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    std::fs::write(dir.join(man.get_filename()), page)
}

/// `Examples:\n  a\n  b\n\nSee also: x` → `[("EXAMPLES", ["a", "b"]), ("SEE ALSO", ["x"])]`.
fn sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let heading = (!line.starts_with(' ') && !line.is_empty())
            .then(|| line.split_once(':'))
            .flatten();
        match heading {
            Some((h, rest)) => {
                let body = rest.trim();
                out.push((
                    h.to_uppercase(),
                    (!body.is_empty())
                        .then(|| body.to_owned())
                        .into_iter()
                        .collect(),
                ));
            }
            None if line.trim().is_empty() => {}
            None => match out.last_mut() {
                Some((_, lines)) => lines.push(line.strip_prefix("  ").unwrap_or(line).to_owned()),
                None => out.push(("NOTES".into(), vec![line.to_owned()])),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_help_becomes_sections_with_lines_kept() {
        let s = sections("Examples:\n  jitc a   # b\n  jitc c\n\nSee also: jitc-agentd(1)");
        assert_eq!(
            s,
            vec![
                (
                    "EXAMPLES".into(),
                    vec!["jitc a   # b".into(), "jitc c".into()]
                ),
                ("SEE ALSO".into(), vec!["jitc-agentd(1)".into()]),
            ]
        );
    }
}

//! `jitc ls`: secret names and metadata, never values.

use jitc::Result;
use jitc::error::note;
use jitc::start::connect_or_start;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    /// List the keys under PATH in a team's backend ([backend.NAME] in policy.toml)
    #[arg(long, value_name = "NAME")]
    backend: Option<String>,
    /// With --backend: where to list (e.g. secret/app); a KV v2 mount lists its keys
    #[arg(value_name = "PATH", requires = "backend")]
    path: Option<String>,
}

pub fn run(args: Args) -> Result<u8> {
    keep_freed_memory();
    let mut client = connect_or_start()?;
    if let Some(backend) = &args.backend {
        let path = args.path.as_deref().unwrap_or("secret");
        let keys = client.list_backend(backend, path)?;
        if args.json {
            super::print_json(&keys)?;
            return Ok(0);
        }
        let mut text = String::new();
        for k in &keys {
            text.push_str(&format!(
                "bao://{backend}/{}/{}\n",
                path.trim_end_matches('/'),
                jitc_protocol::display::visible(k)
            ));
        }
        super::emit(&text)?;
        return Ok(0);
    }
    if args.json {
        return json_pages(&mut client);
    }
    // What programs asked for (`request_secret`) and you have not added yet.
    for w in client.requested()? {
        note(&format!(
            "requested: '{}'{} — add it with 'jitc add {}'",
            w.name,
            w.description
                .as_deref()
                .map(|d| format!(" ({})", jitc_protocol::display::visible(d)))
                .unwrap_or_default(),
            w.name
        ));
    }
    // Printed as the pages come: the first page sets the name column's width.
    let mut width: Option<usize> = None;
    let mut text = String::new();
    client.list_pages_ref(|page| {
        text.clear();
        let width = match width {
            Some(w) => w,
            None => {
                let w = page.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
                text.push_str(&format!(
                    "{:w$}  {:20}  {:5}  DESCRIPTION\n",
                    "NAME", "UPDATED", "DECOY"
                ));
                *width.insert(w)
            }
        };
        text.reserve(page.len() * (width + 40));
        // Secrets stored together share their second: format each second once.
        let mut last: Option<(u64, String)> = None;
        let pad = |text: &mut String, s: &str, w: usize| {
            text.push_str(s);
            text.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(s.chars().count()),
            ));
        };
        for s in page {
            let date = match &last {
                Some((t, d)) if *t == s.updated => d,
                _ => &last.insert((s.updated, super::date(s.updated))).1,
            };
            pad(&mut text, s.name, width);
            text.push_str("  ");
            pad(&mut text, date, 20);
            text.push_str("  ");
            pad(&mut text, if s.canary { "yes" } else { "" }, 5);
            text.push_str("  ");
            text.push_str(&jitc_protocol::display::visible(
                s.description.unwrap_or(""),
            ));
            text.push('\n');
        }
        super::emit(&text)
    })?;
    if width.is_none() {
        note("no secrets yet; store one with 'jitc add NAME'");
    }
    Ok(0)
}

/// Keeps what a page frees for the next page, instead of giving it back to the system
/// and taking it again zeroed: a listing of 100,000 secrets otherwise spends a quarter
/// of its time in the kernel clearing fresh pages (`perf`: `clear_page_erms`).
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
    }
}

/// `ls --json`: the same array `serde_json` would print whole, written a page at a
/// time.
fn json_pages(client: &mut jitc::Client) -> Result<u8> {
    let mut first = true;
    client.list_pages(|page| {
        let mut text = String::new();
        for s in &page {
            let item = serde_json::to_string_pretty(s)
                .map_err(|e| jitc::Error::failure(format!("cannot format JSON ({e})")))?;
            text.push_str(if first { "[\n" } else { ",\n" });
            first = false;
            let indented: Vec<String> = item.lines().map(|l| format!("  {l}")).collect();
            text.push_str(&indented.join("\n"));
        }
        super::emit(&text)
    })?;
    super::emit(if first { "[]\n" } else { "\n]\n" })?;
    Ok(0)
}

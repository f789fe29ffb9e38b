//! `jitc scan`: plaintext credentials lying in a tree where a coding agent can read
//! them. Git-ignored files are included on purpose (agents read those too); `.git`,
//! `target` and `node_modules` are skipped. Findings name a file, a line and a kind,
//! never the value.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Files larger than this are not read (credentials live in small files).
const MAX_FILE: u64 = 5 << 20;
const SKIP_DIRS: [&str; 3] = [".git", "target", "node_modules"];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub path: String,
    pub line: usize,
    pub kind: String,
}

/// Every finding under `root`, in path and line order.
pub fn scan(root: &Path) -> std::io::Result<Vec<Finding>> {
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Finding>) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(ft) = e.file_type() else { continue };
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if ft.is_dir() {
            if !SKIP_DIRS.contains(&name.as_str()) {
                // An unreadable directory is skipped, not fatal.
                let _ = walk(root, &path, out);
            }
        } else if ft.is_file() {
            let shown = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if let Some(text) = read_text(&path) {
                out.extend(scan_file(&shown, &path, &text));
            }
        }
    }
    Ok(())
}

/// The file as text, unless it is large or binary.
fn read_text(path: &Path) -> Option<String> {
    let f = fs::File::open(path).ok()?;
    if f.metadata().ok()?.len() > MAX_FILE {
        return None;
    }
    let mut bytes = Vec::new();
    f.take(MAX_FILE).read_to_end(&mut bytes).ok()?;
    if bytes.iter().take(8192).any(|b| *b == 0) {
        return None;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Words that make a variable name look like it holds a credential.
const SECRET_WORDS: [&str; 11] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "API_KEY",
    "APIKEY",
    "ACCESS_KEY",
    "PRIVATE_KEY",
    "CREDENTIAL",
    "AUTH",
    "DSN",
];

fn secret_like_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase().replace('-', "_");
    SECRET_WORDS.iter().any(|w| upper.contains(w))
}

/// Bits per character: random tokens score high, words and placeholders low.
fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether `value` looks like a real credential rather than a placeholder or a
/// reference to one.
fn looks_secret(value: &str) -> bool {
    let v = value.trim();
    if v.len() < 12 || v.starts_with("jitc://") || v.contains("${") || v.starts_with('$') {
        return false;
    }
    let lower = v.to_ascii_lowercase();
    let placeholder = [
        "changeme",
        "change_me",
        "example",
        "your",
        "xxx",
        "<",
        "todo",
        "placeholder",
        "process.env",
        "os.environ",
        "getenv",
    ];
    if placeholder.iter().any(|p| lower.contains(p)) {
        return false;
    }
    entropy(v) >= 3.0
}

/// `NAME = value`, `NAME: value` or `"name": "value"`, with quotes and `export` gone.
fn assignment(line: &str) -> Option<(&str, &str)> {
    let l = line.trim();
    if l.starts_with('#') || l.starts_with("//") {
        return None;
    }
    let l = l.strip_prefix("export ").unwrap_or(l);
    let at = l.find(['=', ':'])?;
    let name = l[..at].trim().trim_matches(|c| c == '"' || c == '\'');
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return None;
    }
    let value = l[at + 1..]
        .trim()
        .trim_end_matches([',', ';'])
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    Some((name, value))
}

fn finding(path: &str, line: usize, kind: impl Into<String>) -> Finding {
    Finding {
        path: path.to_owned(),
        line,
        kind: kind.into(),
    }
}

/// The findings in one file's text.
pub fn scan_file(shown: &str, path: &Path, text: &str) -> Vec<Finding> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = path
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_env = name.starts_with(".env");
    let is_template = [".example", ".sample", ".template", ".dist"]
        .iter()
        .any(|s| name.ends_with(s));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let lower = line.to_ascii_lowercase();
        if line.contains("-----BEGIN") && line.contains("PRIVATE KEY-----") {
            out.push(finding(shown, n, "private key"));
            continue;
        }
        if name == ".npmrc"
            && ["_authtoken=", "_auth=", "_password="]
                .iter()
                .any(|k| lower.contains(k))
        {
            out.push(finding(shown, n, "npm token"));
            continue;
        }
        if name == ".pypirc"
            && assignment(line)
                .is_some_and(|(k, v)| k.eq_ignore_ascii_case("password") && !v.is_empty())
        {
            out.push(finding(shown, n, "pypi password"));
            continue;
        }
        if name == "config.json"
            && (parent == ".docker" || text.contains("\"auths\""))
            && assignment(line)
                .is_some_and(|(k, v)| (k == "auth" || k == "identitytoken") && !v.is_empty())
        {
            out.push(finding(shown, n, "docker registry credentials"));
            continue;
        }
        if let Some((k, v)) = assignment(line)
            && ["aws_secret_access_key", "aws_session_token"]
                .contains(&k.to_ascii_lowercase().as_str())
            && !v.is_empty()
        {
            out.push(finding(shown, n, "aws credentials"));
            continue;
        }
        if let Some(at) = line.find("AKIA")
            && line[at..].len() >= 20
            && line[at + 4..at + 20]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            out.push(finding(shown, n, "aws access key id"));
            continue;
        }
        match assignment(line) {
            Some((_, v))
                if is_env && !is_template && !v.is_empty() && !v.starts_with("jitc://") =>
            {
                out.push(finding(shown, n, "value in an env file"));
            }
            Some((k, v)) if secret_like_name(k) && looks_secret(v) => {
                out.push(finding(shown, n, format!("secret-like assignment to {k}")));
            }
            _ => {}
        }
    }
    out
}

/// For the CLI: the findings under `dir` (the current directory if `None`).
pub fn scan_dir(dir: Option<PathBuf>) -> std::io::Result<(PathBuf, Vec<Finding>)> {
    let dir = dir.unwrap_or_else(|| PathBuf::from("."));
    let found = scan(&dir)?;
    Ok((dir, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(name: &str, text: &str) -> Vec<(usize, String)> {
        scan_file(name, Path::new(name), text)
            .into_iter()
            .map(|f| (f.line, f.kind))
            .collect()
    }

    #[test]
    fn env_files_and_assignments() {
        assert_eq!(
            kinds(
                ".env",
                "# c\nDB=postgres://u:p@h/db\nEMPTY=\nREF=jitc://x\n"
            ),
            [(2, "value in an env file".to_owned())]
        );
        assert!(kinds(".env.example", "PORT=3000\n").is_empty());
        assert_eq!(
            kinds(
                "settings.py",
                "API_KEY = \"sk_live_51HxQ2eZvKYlo2C9aB7fR\"\nDEBUG = True\n"
            ),
            [(1, "secret-like assignment to API_KEY".to_owned())]
        );
        assert!(kinds("settings.py", "API_KEY = os.environ['API_KEY']\n").is_empty());
        assert!(kinds("app.yaml", "password: changeme-please-123\n").is_empty());
        assert!(
            kinds("notes.txt", "PASSWORD=aaaaaaaaaaaaaaaa\n").is_empty(),
            "low entropy"
        );
    }

    #[test]
    fn keys_and_tool_configs() {
        assert_eq!(
            kinds("id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n")[0].1,
            "private key"
        );
        assert_eq!(
            kinds(".npmrc", "//registry.npmjs.org/:_authToken=npm_abc\n")[0].1,
            "npm token"
        );
        assert_eq!(
            kinds(
                ".pypirc",
                "[pypi]\nusername = __token__\npassword = pypi-AgEIcHlw\n"
            ),
            [(3, "pypi password".to_owned())]
        );
        assert_eq!(
            kinds(
                "config.json",
                "{\n \"auths\": {\n  \"ghcr.io\": {\n   \"auth\": \"dXNlcjpwYXNz\"\n  }\n }\n}\n"
            ),
            [(4, "docker registry credentials".to_owned())]
        );
        assert_eq!(
            kinds(
                "credentials",
                "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG\n"
            ),
            [
                (2, "aws access key id".to_owned()),
                (3, "aws credentials".to_owned())
            ]
        );
    }
}

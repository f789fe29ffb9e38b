//! JSON files read as JSON: parsed (by serde_json) before anything is believed, then
//! walked string by string with the key path that leads to each and the line it is on,
//! so a one-line `config.json` is read as well as a pretty-printed one.

use serde::de::IgnoredAny;

use super::values::{
    credential_shape, placeholder, random_looking, real_url_password, reference, secret_like_name,
    url_passwords,
};

/// A step on the way to a value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index,
}

/// The findings in `text` as (line, kind), or `None` if it is not JSON (the caller
/// reads it line by line instead). `dockercfg` is the old `~/.dockercfg`, whose
/// registries sit at the top level rather than under `auths`.
pub fn scan_json(text: &str, dockercfg: bool) -> Option<Vec<(usize, String)>> {
    // serde_json's own parser decides what is JSON (its nesting limit included), so
    // the walk below only ever sees well-formed input.
    serde_json::from_str::<IgnoredAny>(text).ok()?;
    let mut out = Vec::new();
    let walked = walk(text, |path, value, line| {
        if let Some(kind) = finding(path, value, dockercfg) {
            out.push((line, kind));
        }
    });
    walked.then_some(out)
}

/// What a string value at `path` is, if it is a credential.
fn finding(path: &[Step], value: &str, dockercfg: bool) -> Option<String> {
    if let Some(kind) = credential_shape(value, None) {
        return Some(kind.to_owned());
    }
    let key = path.iter().rev().find_map(|s| match s {
        Step::Key(k) => Some(k.as_str()),
        Step::Index => None,
    });
    let n = path.len();
    let registry_entry =
        (n >= 3 && path[n - 3] == Step::Key("auths".into())) || (dockercfg && n == 2);
    if registry_entry
        && key.is_some_and(|k| ["auth", "identitytoken", "registrytoken"].contains(&k))
        && !value.is_empty()
        && !placeholder(value)
        && !reference(value)
    {
        return Some("docker registry credentials".to_owned());
    }
    if url_passwords(value).any(|p| real_url_password(p, false)) {
        return Some("URL with a password".to_owned());
    }
    match key {
        Some(k) if secret_like_name(k) && random_looking(value) => {
            Some(format!("secret-like assignment to {}", super::shown(k)))
        }
        _ => None,
    }
}

/// Deeper JSON than this is not walked (the key path is kept for every level).
const MAX_DEPTH: usize = 128;

/// Calls `visit` with every string value of well-formed JSON `text`, the keys and
/// indices leading to it, and its line; `false` if it nests deeper than `MAX_DEPTH`.
fn walk(text: &str, mut visit: impl FnMut(&[Step], &str, usize)) -> bool {
    let b = text.as_bytes();
    let mut path: Vec<Step> = Vec::new();
    let mut expect_key = false;
    let mut line = 1;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\n' => line += 1,
            b'{' | b'[' if path.len() == MAX_DEPTH => return false,
            b'{' => {
                path.push(Step::Key(String::new()));
                expect_key = true;
            }
            b'[' => {
                path.push(Step::Index);
                expect_key = false;
            }
            b'}' | b']' => {
                path.pop();
                expect_key = false;
            }
            b',' => expect_key = matches!(path.last(), Some(Step::Key(_))),
            b'"' => {
                let end = string_end(b, i);
                // Well-formed JSON: the slice is one string literal, and it decodes.
                let s: String = serde_json::from_str(&text[i..end]).unwrap_or_default();
                if expect_key {
                    if let Some(last) = path.last_mut() {
                        *last = Step::Key(s);
                    }
                    expect_key = false;
                } else {
                    visit(&path, &s, line);
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    true
}

/// The index just past the string literal that opens at `start`.
fn string_end(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_docker_config() {
        let text = r#"{"auths":{"ghcr.io":{"auth":"dXNlcjpzM2NyM3Q="},"quay.io":{}},"credsStore":"desktop"}"#;
        assert_eq!(
            scan_json(text, false),
            Some(vec![(1, "docker registry credentials".to_owned())])
        );
    }

    #[test]
    fn lines_and_keys() {
        let text = "{\n \"name\": \"app\",\n \"integrity\": \"sha512-Zx8Qw2Er5Ty7Ui9Op1As\",\n \"db\": {\"password\": \"Zx8Qw2Er5Ty7Ui9Op1\"},\n \"list\": [\"a\", {\"apiKey\": \"Q9wE2rT5yU8iO1pA3s\"}],\n \"url\": \"mysql://root:Zx8Qw2Er5@db/x\"\n}\n"; // jitc:ignore (a test value)
        assert_eq!(
            scan_json(text, false),
            Some(vec![
                (4, "secret-like assignment to password".to_owned()),
                (5, "secret-like assignment to apiKey".to_owned()),
                (6, "URL with a password".to_owned()),
            ])
        );
    }

    #[test]
    fn not_json_is_none() {
        assert_eq!(scan_json("{ // comment\n}", false), None);
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(scan_json(&deep, false), None, "too deep: read as text");
    }

    #[test]
    fn escapes_are_decoded() {
        let text = r#"{"key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4Zq\n-----END RSA PRIVATE KEY-----\n"}"#; // jitc:ignore (a test value)
        assert_eq!(
            scan_json(text, false),
            Some(vec![(1, "private key".to_owned())])
        );
    }
}

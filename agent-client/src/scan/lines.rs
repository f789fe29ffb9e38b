//! The line-by-line rules of `jitc scan`: strong signals anywhere (a credential's known
//! shape, a private key), the tool files that hold tokens (`.npmrc`, `.pypirc`,
//! `.netrc`, AWS credentials), URLs with a password, and assignments of a random-looking
//! value to a name that says it holds a secret. Source code is read as source code: only
//! a quoted literal is a value there, never a call, a constructor or a variable.

use super::values::{
    credential_shape, placeholder, plain_value, random_looking, real_url_password, reference,
    secret_like_name, url_passwords, wordy,
};

/// How a file's lines are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `.env`, `.env.local`, `.envrc`: every assignment is configuration.
    Env,
    /// A programming language: unquoted right-hand sides are expressions.
    Code,
    /// Anything else: YAML, TOML, INI, properties, shell, prose.
    Config,
}

/// Tool files whose format says which line holds a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    None,
    Npmrc,
    Pypirc,
    Netrc,
}

#[derive(Debug, Clone, Copy)]
pub struct FileKind {
    pub syntax: Syntax,
    pub tool: Tool,
}

const CODE_EXTENSIONS: &[&str] = &[
    "rs", "py", "pyi", "js", "jsx", "mjs", "cjs", "ts", "tsx", "mts", "cts", "go", "java", "kt",
    "kts", "scala", "groovy", "gradle", "rb", "php", "cs", "fs", "vb", "c", "h", "cc", "cpp",
    "cxx", "hpp", "hh", "m", "mm", "swift", "dart", "lua", "pl", "pm", "r", "jl", "ex", "exs",
    "erl", "hs", "ml", "clj", "cljs", "zig", "nim", "v", "sol", "vue", "svelte",
];

impl FileKind {
    /// The kind of a file, from its name.
    pub fn of(name: &str) -> FileKind {
        let lower = name.to_ascii_lowercase();
        let tool = match lower.as_str() {
            ".npmrc" => Tool::Npmrc,
            ".pypirc" => Tool::Pypirc,
            ".netrc" | "_netrc" => Tool::Netrc,
            _ => Tool::None,
        };
        let template = [".example", ".sample", ".template", ".dist", ".tmpl", ".tpl"]
            .iter()
            .any(|s| lower.ends_with(s));
        let syntax = if lower.starts_with(".env") && !template {
            Syntax::Env
        } else if lower
            .rsplit_once('.')
            .is_some_and(|(stem, ext)| !stem.is_empty() && CODE_EXTENSIONS.contains(&ext))
        {
            Syntax::Code
        } else {
            Syntax::Config
        };
        FileKind { syntax, tool }
    }
}

/// The findings in a text file, as (line number, kind).
pub fn scan_text(kind: FileKind, text: &str, out: &mut Vec<(usize, String)>) {
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(k) = line_finding(kind, line, lines.get(i + 1).copied()) {
            out.push((i + 1, k));
        }
    }
}

/// A comment line: what it holds is prose or a commented-out example, so only the
/// strong signals count there.
fn is_comment(line: &str) -> bool {
    let l = line.trim_start();
    ["#", "//", "/*", "* ", "--", ";", "<!--", "%"]
        .iter()
        .any(|c| l.starts_with(c))
        || l == "*"
}

/// The most telling finding on one line, if any.
fn line_finding(kind: FileKind, line: &str, next: Option<&str>) -> Option<String> {
    if let Some(k) = credential_shape(line, next) {
        return Some(k.to_owned());
    }
    if let Some(k) = tool_file(kind.tool, line) {
        return Some(k.to_owned());
    }
    if is_comment(line) {
        return None;
    }
    let strict = kind.syntax == Syntax::Env;
    if url_passwords(line).any(|p| real_url_password(p, strict)) {
        return Some("URL with a password".to_owned());
    }
    let mut assignments = quoted_assignments(line);
    if kind.syntax != Syntax::Code
        && let Some(a) = simple_assignment(line)
    {
        assignments.push(a);
    }
    for (name, value) in assignments {
        let lower = name.to_ascii_lowercase();
        if ["aws_secret_access_key", "aws_session_token"].contains(&lower.as_str())
            && !value.is_empty()
            && !placeholder(value)
            && !reference(value)
        {
            return Some("aws credentials".to_owned());
        }
        let secret_like = if kind.syntax == Syntax::Env {
            env_secret(value)
        } else {
            random_looking(value)
        };
        if secret_like_name(name) && secret_like {
            return Some(format!("secret-like assignment to {}", super::shown(name)));
        }
    }
    None
}

/// In an env file, a variable whose name says secret holds one unless its value is a
/// setting (number, boolean, host, URL without credentials, path), a placeholder or a
/// reference: `DB_PASSWORD=postgres123` is the database's password, weak or not.
fn env_secret(v: &str) -> bool {
    let path = v.starts_with(['/', '.', '~']) && wordy(v);
    v.len() >= 8
        && !v.chars().any(char::is_whitespace)
        && !placeholder(v)
        && !reference(v)
        && !plain_value(v)
        && !path
}

/// `.npmrc` auth lines, `.pypirc` passwords, `.netrc` passwords — unless the value is a
/// reference (`${NPM_TOKEN}`), which is how these files are meant to be committed.
fn tool_file(tool: Tool, line: &str) -> Option<&'static str> {
    let usable = |v: &str| {
        let v = v.trim().trim_matches(['"', '\'']);
        !v.is_empty() && !placeholder(v) && !reference(v)
    };
    match tool {
        Tool::None => None,
        Tool::Npmrc => {
            let lower = line.to_ascii_lowercase();
            ["_authtoken=", "_auth=", "_password="]
                .iter()
                .find_map(|k| lower.find(k).map(|at| at + k.len()))
                .filter(|at| usable(&line[*at..]))
                .map(|_| "npm token")
        }
        Tool::Pypirc => simple_assignment(line)
            .filter(|(k, v)| k.eq_ignore_ascii_case("password") && usable(v))
            .map(|_| "pypi password"),
        Tool::Netrc => {
            let mut words = line.split_whitespace();
            while let Some(w) = words.next() {
                if w == "password" && words.next().is_some_and(usable) {
                    return Some("netrc password");
                }
            }
            None
        }
    }
}

/// Words that may stand before the name in an assignment line.
const LEADING_WORDS: &[&str] = &[
    "export",
    "set",
    "ENV",
    "ARG",
    "let",
    "const",
    "var",
    "local",
    "declare",
    "readonly",
    "static",
    "final",
    "val",
    "pub",
    "public",
    "private",
    "protected",
    "def",
];

/// `NAME = value`, `NAME: value`, `NAME := value` at the start of a line (after a YAML
/// `- `, `export` and the like), with the value as written: the inside of its quotes,
/// or up to a ` #` comment. An unquoted value that reads as code (a call, a path into
/// an object, a reference) is no value.
fn simple_assignment(line: &str) -> Option<(&str, &str)> {
    let mut l = line.trim_start();
    l = l.strip_prefix("- ").unwrap_or(l).trim_start();
    let (name, rest) = loop {
        let (name, rest) = if let Some(q) = l.strip_prefix(['"', '\'']) {
            let end = q.find(['"', '\''])?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = l
                .find(|c: char| !(c.is_ascii_alphanumeric() || "_-.".contains(c)))
                .unwrap_or(l.len());
            (&l[..end], &l[end..])
        };
        if LEADING_WORDS.contains(&name) && rest.starts_with(' ') {
            l = rest.trim_start();
            continue;
        }
        break (name, rest);
    };
    if name.is_empty() {
        return None;
    }
    let rest = rest.trim_start();
    let value = if let Some(r) = rest.strip_prefix(":=") {
        r
    } else if let Some(r) = rest.strip_prefix('=') {
        if r.starts_with(['=', '>', '~']) {
            return None;
        }
        r
    } else if let Some(r) = rest.strip_prefix(':') {
        if r.starts_with(':') {
            return None;
        }
        r
    } else {
        return None;
    }
    .trim_start();
    if let Some((literal, _)) = quoted(value) {
        return Some((name, literal));
    }
    let value = value
        .split(" #")
        .next()
        .unwrap_or("")
        .split("\t#")
        .next()
        .unwrap_or("")
        .trim()
        .trim_end_matches([',', ';'])
        .trim_end();
    (!code_syntax(value)).then_some((name, value))
}

/// Whether an unquoted value is an expression: a call (`BTreeMap::new()`), a path
/// into an object (`settings.secret_key`), an index (`ENV['X']`), a structure, a YAML
/// tag, anchor or block marker.
fn code_syntax(v: &str) -> bool {
    v.contains(['(', ')', '[', ']', '{', '}'])
        || v.contains("::")
        || v.contains("->")
        || v.starts_with(['&', '*', '!', '|', '>', '$', '@', '%', '<'])
        || dotted_identifier(v)
        || v.starts_with("new ")
}

/// `a.b.c` where every part is an identifier: an attribute path, not a literal.
fn dotted_identifier(v: &str) -> bool {
    v.contains('.')
        && v.split('.').all(|p| {
            p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// The inside of the quoted literal `s` starts with (after a string prefix such as
/// `r`, `b`, `f`, `u`, `@`), and what follows it.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let start = s
        .find(['"', '\'', '`'])
        .filter(|at| s[..*at].bytes().all(|b| b"rbfuRBFU@#".contains(&b)) && *at <= 3)?;
    let q = s.as_bytes()[start];
    let body = &s[start + 1..];
    let mut escaped = false;
    for (i, b) in body.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            _ if b == q => return Some((&body[..i], &body[i + 1..])),
            _ => {}
        }
    }
    None
}

/// How far back from a literal the name of what it is assigned to may be.
const NAME_REACH: usize = 128;

/// Every `name OP "literal"` on a line, wherever it stands: `let token = "…"`,
/// `{ apiKey: "…" }`, `connect(password="…")`, `"password": "…"`, `'key' => '…'`,
/// `const API_KEY: &str = "…"`, `var apiKey string = "…"`.
fn quoted_assignments(line: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    // Quote characters found unclosed: one is an apostrophe in prose, and looking for
    // the end of every later one again would read the line once per quote.
    let mut unclosed = [false; 3];
    let mut i = 0;
    while i < bytes.len() {
        let Some(q) = b"\"'`".iter().position(|c| *c == bytes[i]) else {
            i += 1;
            continue;
        };
        if unclosed[q] {
            i += 1;
            continue;
        }
        let Some((literal, after)) = quoted(&line[i..]) else {
            unclosed[q] = true;
            i += 1;
            continue;
        };
        let end = line.len() - after.len();
        if let Some(name) =
            assigned_name(&line[line.floor_char_boundary(i.saturating_sub(NAME_REACH))..i])
        {
            out.push((name, literal));
        }
        i = end;
    }
    out
}

/// The name a literal is assigned to, from the text before the literal; `None` when
/// the literal is an argument, an element or a comparison.
fn assigned_name(before: &str) -> Option<&str> {
    let b = before.trim_end_matches(|c: char| c.is_ascii_alphabetic() && "rbfuRBFU".contains(c));
    let b = b.trim_end_matches(['@', '#']).trim_end();
    let left = if let Some(l) = b.strip_suffix(":=").or_else(|| b.strip_suffix("=>")) {
        l
    } else if let Some(l) = b.strip_suffix('=') {
        if l.ends_with(['=', '!', '<', '>', '+', '-', '*', '/', '|', '&', '^', '%']) {
            return None;
        }
        // `NAME: Type = "…"`: the name is before the annotation.
        match l.rfind(':') {
            Some(at) if !l[..at].ends_with(':') && type_annotation(&l[at + 1..]) => &l[..at],
            _ => l,
        }
    } else if let Some(l) = b.strip_suffix(':') {
        if l.ends_with(':') {
            return None;
        }
        l
    } else {
        return None;
    };
    let left = left.trim_end().trim_end_matches([']', '"', '\'']);
    let start = word_start(left, |c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    let mut name = &left[start..];
    // `var apiKey string = "…"` (Go): the last word is the type.
    if ["string", "String", "str", "bytes"].contains(&name) {
        let l = left[..start].trim_end();
        name = &l[word_start(l, |c| c.is_ascii_alphanumeric() || c == '_')..];
    }
    let name = name.rsplit('.').next().unwrap_or(name);
    (!name.is_empty()).then_some(name)
}

/// Whether `t` (after a `:`) is a type: `&str`, `&'static str`, `Final[str]`,
/// `Dict[str, str]`, `string` — one term, not words (`Authorization: MAC id=`).
fn type_annotation(t: &str) -> bool {
    let t = t.trim();
    let t = ["&'static ", "&mut ", "mut ", "dyn "]
        .iter()
        .fold(t, |t, p| t.strip_prefix(p).unwrap_or(t));
    !t.is_empty() && !t.contains(['"', '\'']) && !t.replace(", ", ",").contains(char::is_whitespace)
}

/// Where the run of `in_word` characters that ends `s` starts.
fn word_start(s: &str, in_word: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .rev()
        .find(|(_, c)| !in_word(*c))
        .map_or(0, |(at, c)| at + c.len_utf8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(name: &str, text: &str) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        scan_text(FileKind::of(name), text, &mut out);
        out
    }

    fn kinds(name: &str, text: &str) -> Vec<String> {
        find(name, text).into_iter().map(|(_, k)| k).collect()
    }

    #[test]
    fn env_files_want_a_secret_like_value() {
        assert_eq!(
            find(
                ".env",
                "# c\nDEBUG=true\nPORT=3000\nNODE_ENV=production\nDB=postgres://u:pass@h/db\nEMPTY=\nREF=jitc://x\nSESSION_SECRET=9f2Qx8Lm7Rt4Vb8Nc1Kd\nPASSWORD=${DB_PASSWORD}\nDB_PASSWORD=postgres123\nAUTH_CALLBACK=/auth/callback\nTOKEN_TTL=3600\n"
            ),
            [
                (5, "URL with a password".to_owned()),
                (8, "secret-like assignment to SESSION_SECRET".to_owned()),
                (10, "secret-like assignment to DB_PASSWORD".to_owned())
            ]
        );
        assert!(
            kinds(
                ".env.example",
                "DB=postgres://u:pass@h/db\nAPI_KEY=your-key-here\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn source_code_is_not_a_value() {
        let rust = "    secrets: BTreeMap::new(),\n    let token = std::env::var(\"TOKEN\")?;\n    password: args.password.clone(),\n    if token == \"Zx8Qw2Er5Ty7Ui9Op1\" {}\n    check(secret, \"Zx8Qw2Er5Ty7Ui9Op1\");\n";
        assert!(kinds("src/lib.rs", rust).is_empty());
        let py = "API_KEY = os.environ['API_KEY']\nSECRET_KEY = get_secret('x')\nDEBUG = True\n";
        assert!(kinds("settings.py", py).is_empty());
        assert_eq!(
            kinds("settings.py", "SECRET_KEY = \"9f$Qx2!Lm7Rt4Vb8Nc1Kd6\"\n"),
            ["secret-like assignment to SECRET_KEY"]
        );
        assert_eq!(
            kinds(
                "main.rs",
                "const API_TOKEN: &str = \"Zx8Qw2Er5Ty7Ui9Op1\";\n"
            ),
            ["secret-like assignment to API_TOKEN"]
        );
        assert_eq!(
            kinds("main.go", "var apiKey string = \"Zx8Qw2Er5Ty7Ui9Op1\"\n"),
            ["secret-like assignment to apiKey"]
        );
        assert_eq!(
            kinds(
                "app.js",
                "const cfg = { apiKey: 'Zx8Qw2Er5Ty7Ui9Op1', debug: true };\n"
            ),
            ["secret-like assignment to apiKey"]
        );
        assert_eq!(
            kinds(
                "db.py",
                "connect(host=\"db\", password=\"Zx8Qw2Er5Ty7Ui9Op1\")\n"
            ),
            ["secret-like assignment to password"]
        );
    }

    #[test]
    fn config_files() {
        assert_eq!(
            kinds("app.yaml", "db:\n  password: Zx8Qw2Er5Ty7Ui9Op1\n"),
            ["secret-like assignment to password"]
        );
        assert!(
            kinds(
                "app.yaml",
                "password: changeme-please-123\ntoken: ${{ secrets.TOKEN }}\nkey: !vault |\n"
            )
            .is_empty()
        );
        assert!(kinds("main.tf", "password = var.db_password\n").is_empty());
        assert!(
            kinds("notes.txt", "PASSWORD=aaaaaaaaaaaaaaaa\n").is_empty(),
            "low entropy"
        );
        assert_eq!(
            kinds("compose.yml", "  - POSTGRES_PASSWORD=Zx8Qw2Er5Ty7Ui9Op1\n"),
            ["secret-like assignment to POSTGRES_PASSWORD"]
        );
        assert!(
            kinds(
                "compose.yml",
                "  DATABASE_URL: postgres://postgres:postgres@db/app\n"
            )
            .is_empty()
        );
        assert!(
            kinds("README.md", "# PASSWORD=Zx8Qw2Er5Ty7Ui9Op1\n").is_empty(),
            "a comment"
        );
        assert!(kinds("tokens.py", "    Authorization: MAC id=\"h480djs93hd8\",\n").is_empty());
        assert!(
            kinds(
                "x.py",
                "é = 'Zx8Qw2Er5Ty7Ui9Op1'; ü: é = \"Q9wE2rT5yU8iO1pA3s\"\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn tool_files() {
        assert_eq!(
            kinds(".npmrc", "//registry.npmjs.org/:_authToken=Zx8Qw2Er5\n"),
            ["npm token"]
        );
        assert!(kinds(".npmrc", "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n").is_empty());
        assert_eq!(
            find(
                ".pypirc",
                "[pypi]\nusername = __token__\npassword = pypi-AgEIcHlw\n"
            ),
            [(3, "pypi password".to_owned())]
        );
        assert_eq!(
            kinds(
                ".netrc",
                "machine api.example.com login me password Zx8Qw2Er5\n"
            ),
            ["netrc password"]
        );
        assert_eq!(
            kinds(
                "credentials",
                "[default]\naws_secret_access_key = Zx8Qw2Er5Ty7Ui9Op1As/K7MDENG\n"
            ),
            ["aws credentials"]
        );
        assert!(
            kinds(
                "credentials",
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
            )
            .is_empty()
        );
    }
}

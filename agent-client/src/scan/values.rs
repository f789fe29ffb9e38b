//! What a name or a value looks like to `jitc scan` and `jitc import`: the known
//! shapes of credentials (token prefixes, JWTs, PEM private keys, URLs with a password),
//! random-looking strings, placeholders and references that are not values, names that
//! hold secrets, and the plain settings (numbers, booleans, hosts, URLs without
//! credentials) that are not secrets at all.

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;

/// A credential format recognised by its fixed prefix: the prefix, then a run of body
/// characters whose length is within `min..=max`.
struct Shape {
    prefix: &'static str,
    kind: &'static str,
    body: fn(u8) -> bool,
    min: usize,
    max: usize,
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}
fn alnum_underscore(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
fn alnum_dash(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}
/// base64url, also the alphabet of most vendors' `prefix-…` tokens.
fn url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}
fn upper_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}
fn webhook_path(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'/'
}

const MAX_TOKEN: usize = 1024;

const fn shape(
    prefix: &'static str,
    kind: &'static str,
    body: fn(u8) -> bool,
    min: usize,
    max: usize,
) -> Shape {
    Shape {
        prefix,
        kind,
        body,
        min,
        max,
    }
}

const SHAPES: &[Shape] = &[
    shape("ghp_", "GitHub token", alnum, 36, 255),
    shape("gho_", "GitHub token", alnum, 36, 255),
    shape("ghu_", "GitHub token", alnum, 36, 255),
    shape("ghs_", "GitHub token", alnum, 36, 255),
    shape("ghr_", "GitHub token", alnum, 36, 255),
    shape("github_pat_", "GitHub token", alnum_underscore, 22, 255),
    shape("glpat-", "GitLab token", url_safe, 20, 255),
    shape("xoxa-", "Slack token", alnum_dash, 10, 255),
    shape("xoxb-", "Slack token", alnum_dash, 10, 255),
    shape("xoxp-", "Slack token", alnum_dash, 10, 255),
    shape("xoxr-", "Slack token", alnum_dash, 10, 255),
    shape(
        "hooks.slack.com/services/",
        "Slack webhook URL",
        webhook_path,
        20,
        255,
    ),
    shape("sk_live_", "Stripe secret key", alnum, 16, 255),
    shape("rk_live_", "Stripe secret key", alnum, 16, 255),
    shape("sk_test_", "Stripe secret key", alnum, 16, 255),
    shape("rk_test_", "Stripe secret key", alnum, 16, 255),
    // OpenAI (`sk-proj-…`), Anthropic (`sk-ant-…`) and the many APIs that copied them.
    shape("sk-", "API key (sk-)", url_safe, 20, MAX_TOKEN),
    shape("npm_", "npm token", alnum, 36, 36),
    shape(
        "pypi-AgEIcHlwaS5vcmc",
        "PyPI token",
        url_safe,
        16,
        MAX_TOKEN,
    ),
    shape("AKIA", "AWS access key id", upper_digit, 16, 16),
    shape("ASIA", "AWS access key id", upper_digit, 16, 16),
    shape("AIza", "Google API key", url_safe, 35, 35),
    shape("hf_", "Hugging Face token", alnum, 30, 64),
];

const JWT_PREFIX: &str = "eyJ";
const PEM_PREFIX: &str = "-----BEGIN ";

/// One automaton finds every prefix in a line at once; the bodies are checked after.
static PREFIXES: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
    let all = SHAPES
        .iter()
        .map(|s| s.prefix)
        .chain([JWT_PREFIX, PEM_PREFIX]);
    // Built from constants: it cannot fail, but a failure would only mean no shapes.
    AhoCorasick::new(all).ok()
});

/// Published example credentials (AWS's documentation, jwt.io) that are everywhere in
/// docs and tests and open nothing.
const KNOWN_EXAMPLES: [&str; 2] = [
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
];

/// The kind of the first known credential format in `text`; `next_line` lets a PEM
/// header see the body that must follow it.
pub fn credential_shape(text: &str, next_line: Option<&str>) -> Option<&'static str> {
    let ac = PREFIXES.as_ref()?;
    let bytes = text.as_bytes();
    // A JWT's header run, once looked at, is not looked at again from each `eyJ`
    // inside it (same payload, same signature): the line is read once, not once per
    // match.
    let mut jwt_seen = 0;
    // Likewise a token body already counted (`sk-sk-sk-…` is one run, not many).
    let mut body_seen = 0;
    for m in ac.find_overlapping_iter(text) {
        let (start, end) = (m.start(), m.end());
        let prefix = &text[start..end];
        if prefix == PEM_PREFIX {
            if pem_private_key(&text[end..], next_line) {
                return Some("private key");
            }
            continue;
        }
        // A prefix inside a longer word (`task-…`, `disk-…`) is not one.
        if start > 0 && bytes[start - 1].is_ascii_alphanumeric() {
            continue;
        }
        if prefix == JWT_PREFIX {
            if start < jwt_seen {
                continue;
            }
            match jwt(&text[start..]) {
                Ok(()) => return Some("JSON web token"),
                Err(header) => jwt_seen = start + header,
            }
            continue;
        }
        let Some(shape) = SHAPES.iter().find(|s| s.prefix == prefix) else {
            continue;
        };
        if start < body_seen {
            continue;
        }
        // Counting stops past the longest body: a run of `sk-sk-sk-…` costs its
        // length once, not once per prefix.
        let run = bytes[end..]
            .iter()
            .take(shape.max + 1)
            .take_while(|b| (shape.body)(**b))
            .count();
        body_seen = end + run;
        let body = &text[end..end + run];
        if (shape.min..=shape.max).contains(&run) && !fake_body(body) {
            return Some(shape.kind);
        }
    }
    None
}

/// Whether a token body is a placeholder (`ghp_xxxx…`, `AKIA…EXAMPLE`, `sk-your-key-…`)
/// rather than something issued.
fn fake_body(body: &str) -> bool {
    let lower = body.to_ascii_lowercase();
    let mut distinct = [false; 256];
    for b in body.bytes() {
        distinct[usize::from(b)] = true;
    }
    distinct.iter().filter(|d| **d).count() < 6
        || [
            "xxxx",
            "example",
            "your",
            "0000",
            "1234567",
            "abcdefg",
            "placeholder",
        ]
        .iter()
        .any(|p| lower.contains(p))
        || wordy(body)
}

/// `eyJ…` `.` `eyJ…` `.` signature: a signed JSON web token (an unsigned one, with an
/// empty signature, proves nothing and is left alone). Otherwise the length of the
/// header run, which no later `eyJ` inside it needs to look at again.
fn jwt(s: &str) -> Result<(), usize> {
    let b = s.as_bytes();
    let seg = |from: usize| {
        b.get(from..).map_or(0, |r| {
            r.iter()
                .take(MAX_TOKEN * 16)
                .take_while(|c| url_safe(**c))
                .count()
        })
    };
    let header = seg(0);
    let payload = seg(header + 1);
    let sig_at = header + 1 + payload + 1;
    let sig = seg(sig_at);
    let ok = header >= 10
        && b.get(header) == Some(&b'.')
        && payload >= 10
        && s[header + 1..].starts_with(JWT_PREFIX)
        && b.get(header + 1 + payload) == Some(&b'.')
        && sig >= 16
        && !KNOWN_EXAMPLES.contains(&&s[sig_at..sig_at + sig]);
    if ok { Ok(()) } else { Err(header) }
}

/// After `-----BEGIN `: a private key's label, and then the key itself — base64 on the
/// next line (or after a `\n` escape, as in JSON and one-line env values), or the
/// `Proc-Type:` header of an encrypted legacy key. A header alone is how key-handling
/// code names the format, not a key.
fn pem_private_key(after: &str, next_line: Option<&str>) -> bool {
    let Some(label_end) = after.find("-----") else {
        return false;
    };
    let label = &after[..label_end];
    if !(label.ends_with("PRIVATE KEY") || label.ends_with("PRIVATE KEY BLOCK")) {
        return false;
    }
    let rest = &after[label_end + 5..];
    let body = if let Some(r) = rest
        .strip_prefix("\\n")
        .or_else(|| rest.strip_prefix("\\r\\n"))
    {
        r
    } else if let Some(r) = rest
        .strip_prefix('\n')
        .or_else(|| rest.strip_prefix("\r\n"))
    {
        r
    } else if rest
        .trim_matches(|c: char| c.is_whitespace() || "\"',".contains(c))
        .is_empty()
    {
        next_line
            .unwrap_or("")
            .trim_start_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'')
    } else {
        return false;
    };
    body.starts_with("Proc-Type:")
        || body
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
            .count()
            >= 16
}

/// The passwords in the userinfo of the URLs in `s` (`scheme://user:PASSWORD@host`).
pub fn url_passwords(s: &str) -> impl Iterator<Item = &str> {
    s.match_indices("://").filter_map(move |(at, _)| {
        let scheme = s[..at]
            .bytes()
            .rev()
            .take_while(|b| b.is_ascii_alphanumeric() || b"+.-".contains(b))
            .count();
        if scheme == 0 || !s.as_bytes()[at - scheme].is_ascii_alphabetic() {
            return None;
        }
        let rest = &s[at + 3..];
        let authority_end = rest
            .find(|c: char| c.is_whitespace() || "/?#\"'`<>\\".contains(c))
            .unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let userinfo = &authority[..authority.rfind('@')?];
        let password = &userinfo[userinfo.find(':')? + 1..];
        (!password.is_empty()).then_some(password)
    })
}

/// Whether a URL password is a real one. In an env file every password counts
/// (`postgres://u:pass@h/db` is one); elsewhere a plain word (`postgres`, `password`)
/// is how examples and local set-ups are written.
pub fn real_url_password(password: &str, strict: bool) -> bool {
    !placeholder(password) && !reference(password) && (strict || !wordy(password))
}

/// Bits of Shannon entropy per character: random tokens score high, words low.
pub fn entropy(s: &str) -> f64 {
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

/// Text that stands for a value rather than being one: `your-key-here`, `changeme`,
/// `<token>`, `xxxx`, `****`.
pub fn placeholder(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    [
        "changeme",
        "change_me",
        "change-me",
        "example",
        "placeholder",
        "your_",
        "your-",
        "yourpass",
        "yourkey",
        "yourtoken",
        "redacted",
        "dummy",
        "xxxx",
        "****",
        "...",
        "…",
        "<",
        ">",
        "todo",
        "replace",
        "%s",
        "%(",
        "1234567",
        "abcdefg",
    ]
    .iter()
    .any(|p| lower.contains(p))
        || KNOWN_EXAMPLES.contains(&v)
}

/// Text that points at a value kept elsewhere: a variable, a template, a secret
/// manager's reference.
pub fn reference(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    v.starts_with(['$', '%', '&', '*', '@', '!'])
        || ["${", "$(", "{{", "}}", "#{", "%{"]
            .iter()
            .any(|p| v.contains(p))
        // A format string's `{name}` or `{}`.
        || v.find('{').is_some_and(|at| v[at..].contains('}'))
        || [
            "jitc://",
            "op://",
            "vault:",
            "env:",
            "env.",
            "secrets.",
            "ssm:",
            "arn:aws:secretsmanager:",
            "arn:aws:ssm:",
        ]
        .iter()
        .any(|p| lower.starts_with(p))
}

/// Whether every piece of `v` between punctuation is a word as people write words
/// (`prod`, `Bearer`, `myApp`, `ADMIN`, `RSAPrivateKey`), a number, a short piece
/// (`v2`, `k8s`) or words and numbers run together (`v1alpha1`, `postgres123`,
/// `ipv6Address`): names, paths and phrases rather than generated material, in which
/// letters and digits mix and case flips at random. (About 1 in 80 random 20-character
/// strings passes for words; 1 in 400 at 24.)
pub fn wordy(v: &str) -> bool {
    v.split(|c: char| !c.is_ascii_alphanumeric()).all(|seg| {
        seg.len() <= 3
            || if seg.bytes().all(|b| b.is_ascii_alphabetic()) {
                word(seg)
            } else {
                words_and_numbers(seg)
            }
    })
}

/// Every run of letters in `seg` is a plainly written word of three letters or more
/// (`alpha`, `SHA`, `Address`, or a longer `camelCase` one), or the one-letter lead of
/// `v1alpha1`; runs of digits can be anything.
fn words_and_numbers(seg: &str) -> bool {
    let b = seg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let digits = b[i].is_ascii_digit();
        let len = b[i..]
            .iter()
            .take_while(|c| c.is_ascii_digit() == digits)
            .count();
        let run = &b[i..i + len];
        let plain = run.iter().all(u8::is_ascii_lowercase)
            || run.iter().all(u8::is_ascii_uppercase)
            || (run[0].is_ascii_uppercase() && run[1..].iter().all(u8::is_ascii_lowercase));
        let fits = digits
            || (i == 0 && len == 1)
            || (len >= 3 && plain)
            || (len >= 6 && word(&seg[i..i + len]));
        if !fits {
            return false;
        }
        i += len;
    }
    true
}

/// `lower`, `UPPER`, `Capitalised`, `camelCase` or `PascalCase`: humps of capitals and
/// at least two lower-case letters, with an acronym at the start (`RSAPrivate`), before
/// a longer hump (`HTTPServer`) or at the end (`parseURL`), and one short hump allowed
/// at the end (`InfoEx`). Random letters flip case too often to read so.
fn word(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_alphabetic) {
        return false;
    }
    if b.len() == 1 {
        return true;
    }
    let mut humps = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let upper = b[i..].iter().take_while(|c| c.is_ascii_uppercase()).count();
        let lower = b[i + upper..]
            .iter()
            .take_while(|c| c.is_ascii_lowercase())
            .count();
        if lower == 0 {
            // A run of capitals that ends the word (or is all of it).
            break;
        }
        humps.push((upper, lower));
        i += upper + lower;
    }
    let n = humps.len();
    humps.iter().enumerate().all(|(k, &(upper, lower))| {
        let short_ok = lower >= 2 || (k > 0 && k + 1 == n);
        let acronym_ok = k == 0 || upper == 1 || lower >= 3;
        short_ok && acronym_ok
    })
}

/// Whether `v` looks generated — a key, a token, a password — rather than a word, a
/// name, a path, a number, a placeholder or a reference.
pub fn random_looking(v: &str) -> bool {
    let classes = [
        v.bytes().any(|b| b.is_ascii_lowercase()),
        v.bytes().any(|b| b.is_ascii_uppercase()),
        v.bytes().any(|b| b.is_ascii_digit()),
        v.bytes().any(|b| !b.is_ascii_alphanumeric()),
    ];
    v.len() >= 10
        && !v.chars().any(char::is_whitespace)
        && !placeholder(v)
        && !reference(v)
        && !plain_value(v)
        && !wordy(v)
        && classes.iter().filter(|c| **c).count() >= 2
        && entropy(v) >= 3.0
}

/// The words of a name: `apiKey` → API KEY, `DB_PASSWORD` → DB PASSWORD,
/// `HTTPServerToken` → HTTP SERVER TOKEN.
fn name_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    for part in name.split(|c: char| !c.is_ascii_alphanumeric()) {
        let b = part.as_bytes();
        let mut start = 0;
        for i in 1..b.len() {
            let hump = b[i].is_ascii_uppercase()
                && (b[i - 1].is_ascii_lowercase()
                    || b[i - 1].is_ascii_digit()
                    || (b[i - 1].is_ascii_uppercase()
                        && b.get(i + 1).is_some_and(u8::is_ascii_lowercase)));
            if hump {
                words.push(part[start..i].to_ascii_uppercase());
                start = i;
            }
        }
        if start < part.len() {
            words.push(part[start..].to_ascii_uppercase());
        }
    }
    words
}

/// A name whose last word says it holds something about a secret, not the secret:
/// `TOKEN_TTL`, `PASSWORD_MIN_LENGTH`, `SECRET_KEY_FILE`, `API_KEY_HEADER`.
const METADATA_WORDS: &[&str] = &[
    "ID",
    "IDS",
    "NAME",
    "NAMES",
    "PATH",
    "FILE",
    "DIR",
    "URL",
    "URI",
    "HOST",
    "PORT",
    "TTL",
    "TIMEOUT",
    "EXPIRY",
    "EXPIRES",
    "EXPIRATION",
    "LENGTH",
    "LEN",
    "SIZE",
    "COUNT",
    "MIN",
    "MAX",
    "TYPE",
    "FORMAT",
    "HEADER",
    "FIELD",
    "PARAM",
    "PREFIX",
    "SUFFIX",
    "ENABLED",
    "DISABLED",
    "REQUIRED",
    "ENV",
    "VAR",
    "REF",
    "MODE",
    "POLICY",
    "VERSION",
    "ALGORITHM",
    "ALG",
    "LOCATION",
    "ENDPOINT",
    "REGION",
    "PROVIDER",
    "LABEL",
    "KIND",
    "PATTERN",
    "REGEX",
    "RULES",
    "STRATEGY",
    "METHOD",
    "SCOPE",
    "SCOPES",
];

/// Qualifiers that make a `KEY` a lookup key rather than a credential.
const PLAIN_KEY_WORDS: &[&str] = &[
    "PUBLIC",
    "PUBLISHABLE",
    "CACHE",
    "SORT",
    "PARTITION",
    "PRIMARY",
    "FOREIGN",
    "ROUTING",
    "IDEMPOTENCY",
    "HOT",
    "SHORTCUT",
    "MAP",
    "LOOKUP",
    "UNIQUE",
    "INDEX",
    "HASH",
    "DEDUP",
    "STORAGE",
    "LOCALE",
    "I18N",
    "TRANSLATION",
    "REDIS",
    "S3",
    "OBJECT",
];

/// Whether a variable or key name says it holds a credential.
pub fn secret_like_name(name: &str) -> bool {
    let words = name_words(name);
    let Some(last) = words.last() else {
        return false;
    };
    if METADATA_WORDS.contains(&last.as_str()) {
        return false;
    }
    let plain_key = words.iter().any(|w| PLAIN_KEY_WORDS.contains(&w.as_str()));
    // Alone, `key`, `pat` and `pass` are more often a map key, a pattern or a pass of
    // an algorithm than a credential; `api_key`, `GITHUB_PAT`, `DB_PASS` are telling.
    let qualified = words.len() > 1;
    // `_PAT` is a pattern in code unless a forge that issues personal access tokens
    // is named.
    let forge = words.iter().any(|w| {
        [
            "GITHUB",
            "GH",
            "GITLAB",
            "GL",
            "AZURE",
            "ADO",
            "DEVOPS",
            "BITBUCKET",
            "GITEA",
        ]
        .contains(&w.as_str())
    });
    words.iter().any(|w| {
        let w = w.as_str();
        matches!(
            w,
            "TOKEN" | "TOKENS" | "PWD" | "CREDS" | "AUTH" | "AUTHORIZATION" | "DSN" | "BEARER"
        ) || (matches!(w, "KEY" | "KEYS") && qualified && !plain_key)
            || (w == "PASS" && qualified)
            || (w == "PAT" && forge)
            || [
                "SECRET",
                "PASSWORD",
                "PASSWD",
                "PASSPHRASE",
                "CREDENTIAL",
                "APIKEY",
            ]
            .iter()
            .any(|s| w.contains(s))
            || (w.len() > 5 && (w.ends_with("TOKEN") || w.ends_with("TOKENS")))
            || [
                "ACCESSKEY",
                "PRIVATEKEY",
                "SIGNINGKEY",
                "MASTERKEY",
                "ENCRYPTIONKEY",
            ]
            .contains(&w)
    }) && name != "PWD"
        && name != "OLDPWD"
}

// ---- plain settings --------------------------------------------------------------

fn is_bool(v: &str) -> bool {
    ["true", "false", "yes", "no", "on", "off"]
        .iter()
        .any(|b| v.eq_ignore_ascii_case(b))
}

/// A decimal number short enough to be a setting (a long run of digits could be an
/// account number or a PIN-like secret).
fn is_number(v: &str) -> bool {
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    let mut parts = digits.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    !digits.is_empty()
        && digits.len() <= 12
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| f.bytes().all(|b| b.is_ascii_digit()))
        && (int.len() + frac.map_or(0, str::len)) > 0
}

fn is_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u32>().is_ok_and(|n| n <= 65535)
}

fn is_ipv4(h: &str) -> bool {
    let parts: Vec<&str> = h.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.parse::<u8>().is_ok())
}

/// `localhost`, an IP address, or a lower-case DNS name (`db.internal`) whose last
/// label is letters — no label of which looks generated.
fn is_host(h: &str) -> bool {
    if h == "localhost" || is_ipv4(h) {
        return true;
    }
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let labels: Vec<&str> = h.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && wordy(l)
        })
        && labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.bytes().all(|b| b.is_ascii_lowercase()))
}

/// `host`, `host:port`, `[v6]:port`, `:port`.
fn is_host_port(v: &str) -> bool {
    if is_host(v) || v.parse::<std::net::Ipv6Addr>().is_ok() {
        return true;
    }
    match v.rsplit_once(':') {
        Some(("", port)) => is_port(port),
        Some((host, port)) => is_port(port) && is_host(host),
        None => false,
    }
}

/// `scheme://host[:port][/path]` with no userinfo, no query or fragment (either can
/// carry a key), and no path segment that looks generated (webhook URLs carry their
/// token in the path).
fn is_plain_url(v: &str) -> bool {
    let Some((scheme, rest)) = v.split_once("://") else {
        return false;
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
        || rest.contains(['?', '#', '@'])
    {
        return false;
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    is_host_port(authority)
        && path.split('/').all(|seg| {
            seg.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
                && wordy(seg)
        })
}

/// A value that is never a secret in itself: a number, a boolean, a host or host and
/// port, a URL without credentials.
pub fn plain_value(v: &str) -> bool {
    is_number(v) || is_bool(v) || is_host_port(v) || is_plain_url(v)
}

/// Settings whose values are configuration by convention (`NODE_ENV`, `DB_HOST`).
fn plain_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "HOST",
        "HOSTNAME",
        "PORT",
        "NODE_ENV",
        "RAILS_ENV",
        "RACK_ENV",
        "APP_ENV",
        "FLASK_ENV",
        "MIX_ENV",
        "ENV",
        "ENVIRONMENT",
        "LOG_LEVEL",
        "RUST_LOG",
        "RUST_BACKTRACE",
        "DEBUG",
        "TZ",
        "LANG",
        "LC_ALL",
    ]
    .contains(&upper.as_str())
        || ["_HOST", "_HOSTNAME", "_PORT", "_LOG_LEVEL", "_ENV"]
            .iter()
            .any(|s| upper.ends_with(s))
}

/// Whether `jitc import` keeps `NAME=value` as a plain line of the reference file
/// instead of storing it: a value that is obviously not a secret. Anything shaped like
/// a credential is stored whatever its name; in doubt, it is stored.
pub fn plain_setting(name: &str, value: &str) -> bool {
    let v = value.trim();
    if v.is_empty() || v.len() > 256 || v.contains(['\n', '\r']) {
        return false;
    }
    if credential_shape(v, None).is_some() || url_passwords(v).next().is_some() {
        return false;
    }
    if is_bool(v) || plain_name(name) {
        return true;
    }
    !secret_like_name(name) && plain_value(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test tokens are assembled at run time so that this file holds no credential
    /// shape of its own for a scanner to find.
    fn tok(prefix: &str, body: &str) -> String {
        format!("{prefix}{body}")
    }

    const BODY36: &str = "R4nd0mT0k3nV4lu3xQ9wE2rT5yU8iO1pA3sD";

    #[test]
    fn token_shapes() {
        let cases = [
            (tok("gh", &format!("p_{BODY36}")), "GitHub token"),
            (
                tok("github_", &format!("pat_{}", &BODY36[..30])),
                "GitHub token",
            ),
            (tok("glp", "at-Zx8Qw2Er5Ty7Ui9Op1As"), "GitLab token"),
            (tok("xox", "b-2468013579-Zx8Qw2Er5Ty7"), "Slack token"),
            (tok("sk", "-proj-Zx8Qw2Er5Ty7Ui9Op1AsDf"), "API key (sk-)"),
            (tok("sk_", "live_Zx8Qw2Er5Ty7Ui9Op1"), "Stripe secret key"),
            (tok("np", &format!("m_{BODY36}")), "npm token"),
            (tok("AK", "IAZ7QW3ER5TY7UI2OP"), "AWS access key id"),
        ];
        for (t, kind) in &cases {
            assert_eq!(
                credential_shape(&format!("x = \"{t}\""), None),
                Some(*kind),
                "{t}"
            );
        }
        for fake in [
            tok("gh", "p_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
            tok("AK", "IAIOSFODNN7EXAMPLE"),
            tok("sk", "-your-api-key-goes-right-here"),
            tok("ta", &tok("sk", "-Zx8Qw2Er5Ty7Ui9Op1AsDf")),
            tok("sk", "-learn-something-else-entirely"),
        ] {
            assert_eq!(credential_shape(&fake, None), None, "{fake}");
        }
    }

    #[test]
    fn pem_needs_a_body() {
        let header = tok("-----BEGIN ", "OPENSSH PRIVATE KEY-----");
        assert_eq!(
            credential_shape(&header, Some("b3BlbnNzaC1rZXktdjEAAAAABG5vbmU")),
            Some("private key")
        );
        assert_eq!(
            credential_shape(&format!("\"{header}\\nMIIEvQIBADANBgkqhkiG9w0B\""), None),
            Some("private key")
        );
        assert_eq!(
            credential_shape(
                &format!("const H: &str = \"{header}\";"),
                Some("fn parse() {")
            ),
            None
        );
        assert_eq!(
            credential_shape(
                &tok("-----BEGIN ", "PUBLIC KEY-----"),
                Some("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A")
            ),
            None
        );
    }

    #[test]
    fn urls_with_passwords() {
        let p: Vec<&str> =
            url_passwords("a postgres://u:pass@h/db and https://x@y https://h/p").collect();
        assert_eq!(p, ["pass"]);
        assert!(real_url_password("pass", true));
        assert!(!real_url_password("password", false));
        assert!(real_url_password("Xk29fPq8Lm", false));
        assert!(!real_url_password("${DB_PASS}", true));
    }

    #[test]
    fn random_or_not() {
        for v in [
            "9f$Qx2!Lm7Rt4Vb8Nc1Kd6",
            "3f2a9c8d1e4b7a6f",
            "Tr0ub4dor&3x",
            "kLmQwErTyUiOpAsDf",
            "Q7xsmySwBcuZG5WgibnhZX",
            "550e8400-e29b-41d4-a716-446655440000",
        ] {
            assert!(random_looking(v), "{v}");
        }
        for v in [
            "aaaaaaaaaaaaaaaa",
            "changeme-please-123",
            "my_application_secret",
            "config/secrets.yml",
            "production",
            "https://api.example.com/v1",
            "localhost:5432",
            "X-Api-Key-Header",
            "test-token-12345",
            "camelCaseIdentifier",
            "_RSAPrivateKey",
            "Rfc3565KeyWrapBlob",
            "CryptDllImportPrivateKeyInfoEx",
            "v1alpha1-config",
            "(?:{hex}:{hex}|{ipv4})",
        ] {
            assert!(!random_looking(v), "{v}");
        }
    }

    #[test]
    fn names() {
        for n in [
            "GITHUB_PAT",
            "API_KEY",
            "apiKey",
            "GITHUB_TOKEN",
            "secrets",
            "DB_PASSWORD",
            "clientSecret",
            "SENTRY_DSN",
            "auth",
            "OPENAI_KEY",
        ] {
            assert!(secret_like_name(n), "{n}");
        }
        for n in [
            "TOKEN_TTL",
            "PASSWORD_MIN_LENGTH",
            "SECRET_KEY_FILE",
            "PORT",
            "PUBLIC_KEY",
            "cache_key",
            "tokenizer",
            "author",
            "PWD",
            "key",
            "pat",
            "LS32_PAT",
        ] {
            assert!(!secret_like_name(n), "{n}");
        }
    }

    #[test]
    fn plain_settings_for_import() {
        for (k, v) in [
            ("PORT", "3000"),
            ("DEBUG", "true"),
            ("NODE_ENV", "production"),
            ("LOG_LEVEL", "debug"),
            ("DB_HOST", "db.internal"),
            ("API_URL", "https://api.example.com/v1"),
            ("REDIS", "localhost:6379"),
            ("RATIO", "0.75"),
            ("AUTH_ENABLED", "yes"),
        ] {
            assert!(plain_setting(k, v), "{k}={v}");
        }
        for (k, v) in [
            ("DB_PASSWORD", "12345678"),
            ("DATABASE_URL", "postgres://u:pw@db/app"),
            ("HOOK", "https://example.org/hook/Zx8Qw2Er5Ty7Ui9Op1As"),
            ("SEARCH_URL", "https://api.example.com/?key=abc"),
            ("MODE", "fast"),
            ("ACCOUNT", "123456789012345678"),
            ("APP_ENV", &tok("gh", &format!("p_{BODY36}"))),
        ] {
            assert!(!plain_setting(k, v), "{k}={v}");
        }
    }
}

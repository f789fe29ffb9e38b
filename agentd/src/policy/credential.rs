//! `[[credential]]`: a secret bound to the hosts it belongs to, for the custody-free
//! gateway — the command gets a placeholder, and the agent adds the credential to
//! requests for those hosts only. What is parsed and checked here is the binding; a
//! secret with `custody = "required"` is never leased as a plain value.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use super::PolicyError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCredential {
    secret: String,
    hosts: Vec<String>,
    header: Option<String>,
    format: Option<String>,
    methods: Option<Vec<String>>,
    paths: Option<Vec<String>>,
    rate: Option<String>,
    custody: Option<Custody>,
    replace_placeholder: Option<bool>,
    upstream_ca: Option<String>,
    connect_to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Custody {
    /// The secret may also be leased as a value (the default).
    Optional,
    /// Only through the gateway: never handed to a command.
    Required,
}

/// A checked `[[credential]]`.
#[derive(Debug, Clone)]
pub struct Credential {
    pub secret: String,
    /// Exact host names, or `*.example.com` (any name below it).
    pub hosts: Vec<String>,
    pub header: String,
    /// Where the value goes: the one `{}`.
    pub format: String,
    pub methods: Option<Vec<String>>,
    /// Path globs (`*` crosses `/`), as written and compiled.
    pub paths: Option<(Vec<String>, GlobSet)>,
    /// Requests per minute at most.
    pub per_minute: Option<u32>,
    pub custody: Custody,
    pub replace_placeholder: bool,
    /// Extra trust roots for its hosts: the file, and its certificates as read when
    /// the policy was loaded (a later change to the file does nothing until then).
    pub upstream_ca: Option<TrustRoots>,
    pub connect_to: Option<String>,
}

/// Certificates read from a PEM file at policy load.
#[derive(Debug, Clone)]
pub struct TrustRoots {
    pub path: String,
    pub certs: std::sync::Arc<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

impl PartialEq for TrustRoots {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.certs == other.certs
    }
}

/// The most of a CA file read.
const MAX_CA_FILE: u64 = 4 << 20;

/// Reads the certificates of PEM file `path` (at most 4 MiB; at least one).
pub fn load_roots(path: &str) -> Result<TrustRoots, String> {
    use rustls::pki_types::pem::PemObject;
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CA_FILE + 1).read_to_end(&mut text))
        .map_err(|e| format!("upstream_ca {path}: {e}"))?;
    if text.len() as u64 > MAX_CA_FILE {
        return Err(format!(
            "upstream_ca {path}: larger than 4 MiB; is it a CA bundle?"
        ));
    }
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("upstream_ca {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("upstream_ca {path}: no PEM certificate in it"));
    }
    Ok(TrustRoots {
        path: path.to_owned(),
        certs: std::sync::Arc::new(certs),
    })
}

/// `[gateway]`: what the gateway does with hosts no credential is bound to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileGateway {
    passthrough_hosts: Option<Vec<String>>,
    gateway_only: Option<bool>,
    upstream_ca: Option<String>,
}

/// The checked `[gateway]` table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewaySettings {
    /// Tunnelled untouched (clients that pin certificates): `*.example.com` too.
    pub passthrough_hosts: Vec<String>,
    /// Refuse every host no credential is bound to.
    pub gateway_only: bool,
    /// Extra trust roots for every upstream the gateway forwards to.
    pub upstream_ca: Option<TrustRoots>,
}

impl GatewaySettings {
    pub fn passthrough(&self, host: &str) -> bool {
        host_matches(&self.passthrough_hosts, host)
    }
}

/// Whether `host` is one of `hosts` (exact, or below a `*.domain`).
pub fn host_matches(hosts: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    hosts.iter().any(|h| match h.strip_prefix("*.") {
        Some(base) => host.len() > base.len() + 1 && host.ends_with(&format!(".{base}")),
        None => h == host,
    })
}

pub(super) fn parse_gateway(file: Option<FileGateway>) -> Result<GatewaySettings, PolicyError> {
    let Some(g) = file else {
        return Ok(GatewaySettings::default());
    };
    let hosts = g.passthrough_hosts.unwrap_or_default();
    if let Some(h) = hosts.iter().find(|h| !host_ok(h)) {
        return Err(PolicyError::Gateway(format!(
            "passthrough host '{h}' is not a lower-case host name or '*.domain'"
        )));
    }
    Ok(GatewaySettings {
        passthrough_hosts: hosts,
        gateway_only: g.gateway_only.unwrap_or(false),
        upstream_ca: g
            .upstream_ca
            .as_deref()
            .map(load_roots)
            .transpose()
            .map_err(PolicyError::Gateway)?,
    })
}

impl Credential {
    /// Why a request with `method` to `path` may not carry this credential, if so.
    pub fn refuses(&self, method: &str, path: &str) -> Option<String> {
        if let Some(m) = &self.methods
            && !m.iter().any(|m| m == method)
        {
            return Some(format!(
                "the credential for '{}' allows {} only",
                self.secret,
                m.join(", ")
            ));
        }
        if let Some((globs, set)) = &self.paths
            && !set.is_match(path)
        {
            return Some(format!(
                "the credential for '{}' allows the paths {} only",
                self.secret,
                globs.join(", ")
            ));
        }
        None
    }

    /// Whether `host` is one this credential belongs to.
    pub fn binds(&self, host: &str) -> bool {
        host_matches(&self.hosts, host)
    }
}

fn host_ok(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
        })
}

fn rate(s: &str) -> Option<u32> {
    let (n, per) = s.split_once('/')?;
    let n: u32 = n.trim().parse().ok()?;
    match per.trim() {
        "s" | "sec" | "second" => n.checked_mul(60),
        "min" | "minute" => Some(n),
        "h" | "hour" => Some(n.div_ceil(60)),
        _ => None,
    }
    .filter(|n| *n > 0)
}

/// Checks the file's `[[credential]]` entries (number `i`, 1-based, in errors).
pub(super) fn parse(file: Vec<FileCredential>) -> Result<Vec<Credential>, PolicyError> {
    let mut out: Vec<Credential> = Vec::with_capacity(file.len());
    for (i, c) in file.into_iter().enumerate() {
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let err = |what: String| PolicyError::Credential {
            credential: number,
            what,
        };
        jitc_protocol::names::check_secret_name(&c.secret)
            .map_err(|why| err(format!("secret '{}' {why}", c.secret)))?;
        if out.iter().any(|o| o.secret == c.secret) {
            return Err(err(format!(
                "'{}' is bound twice; give one [[credential]] all its hosts",
                c.secret
            )));
        }
        if c.hosts.is_empty() {
            return Err(err(
                "hosts = [] binds no host; name the hosts the credential is for".into(),
            ));
        }
        if let Some(h) = c.hosts.iter().find(|h| !host_ok(h)) {
            return Err(err(format!(
                "host '{h}' is not a lower-case host name or '*.domain'"
            )));
        }
        let header = c.header.unwrap_or_else(|| "Authorization".into());
        if header.is_empty()
            || !header
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            return Err(err(format!("header '{header}' is not a header name")));
        }
        let format = c.format.unwrap_or_else(|| "Bearer {}".into());
        if format.matches("{}").count() != 1 || format.chars().any(char::is_control) {
            return Err(err(format!(
                "format '{format}' must hold exactly one {{}}, where the value goes, on one line"
            )));
        }
        let per_minute = match &c.rate {
            None => None,
            Some(r) => Some(rate(r).ok_or_else(|| {
                err(format!(
                    "rate '{r}' is not e.g. \"60/min\", \"2/s\" or \"500/h\""
                ))
            })?),
        };
        if let Some(m) = c
            .methods
            .iter()
            .flatten()
            .find(|m| m.is_empty() || !m.chars().all(|ch| ch.is_ascii_uppercase()))
        {
            return Err(err(format!(
                "method '{m}' is not an HTTP method in capitals (GET, POST, …)"
            )));
        }
        let paths = match c.paths {
            None => None,
            Some(globs) => {
                let mut b = GlobSetBuilder::new();
                for g in &globs {
                    if !g.starts_with('/') {
                        return Err(err(format!("path '{g}' must start with /")));
                    }
                    b.add(Glob::new(g).map_err(|e| err(format!("path '{g}': {e}")))?);
                }
                let set = b.build().map_err(|e| err(format!("paths: {e}")))?;
                Some((globs, set))
            }
        };
        out.push(Credential {
            secret: c.secret,
            hosts: c.hosts,
            header,
            format,
            methods: c.methods,
            paths,
            per_minute,
            custody: c.custody.unwrap_or(Custody::Optional),
            replace_placeholder: c.replace_placeholder.unwrap_or(false),
            upstream_ca: c
                .upstream_ca
                .as_deref()
                .map(load_roots)
                .transpose()
                .map_err(err)?,
            connect_to: c.connect_to,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::Policy;

    #[test]
    fn bindings_parse_and_are_checked() {
        let p = Policy::parse(
            "[[credential]]\nsecret = \"github/token\"\nhosts = [\"api.github.com\", \"*.githubusercontent.com\"]\nformat = \"token {}\"\ncustody = \"required\"\nrate = \"60/min\"\n",
        )
        .unwrap();
        let c = &p.credentials[0];
        assert_eq!(c.header, "Authorization");
        assert!(c.binds("api.github.com") && c.binds("API.GITHUB.COM"));
        assert!(c.binds("raw.githubusercontent.com"));
        assert!(!c.binds("githubusercontent.com") && !c.binds("evil.com"));
        assert!(!c.binds("api.github.com.evil.com"));
        assert_eq!(c.per_minute, Some(60));
        for (bad, says) in [
            ("hosts = []", "binds no host"),
            ("hosts = [\"Evil Host\"]", "not a lower-case host name"),
            ("hosts = [\"a.com\"]\nformat = \"{}{}\"", "exactly one {}"),
            ("hosts = [\"a.com\"]\nrate = \"fast\"", "is not e.g."),
            (
                "hosts = [\"a.com\"]\ncustody = \"maybe\"",
                "expected `optional` or `required`",
            ),
        ] {
            let e = Policy::parse(&format!("[[credential]]\nsecret = \"x\"\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}

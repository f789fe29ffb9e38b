//! The policy: `policy.toml` parsed into defaults, profiles and ordered rules, and the
//! judgement of one lease request against them.
//!
//! Each requested secret is judged on its own by the first rule that matches it (by
//! secret glob and profile), so bundling a guarded secret with a harmless one cannot
//! slip it past its rule. The request as a whole takes the strictest of the outcomes:
//! any refusal refuses, the strongest approval applies, the shortest `max_ttl` bounds.

pub mod backend;
pub mod credential;
pub mod hours;
mod source;

use std::collections::BTreeMap;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use jitc_protocol::{LeaseRequest, ProcessInfo, SecretVerdict};
use serde::Deserialize;

use hours::WorkingHours;

pub use source::{LoadError, PolicySource};

/// How much a human must be involved before a lease is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Approval {
    Never,
    OncePerTask,
    Always,
}

impl Approval {
    pub fn as_str(self) -> &'static str {
        match self {
            Approval::Never => "never",
            Approval::OncePerTask => "once-per-task",
            Approval::Always => "always",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Masking {
    Required,
    Optional,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDefaults {
    ttl: Option<String>,
    max_ttl: Option<String>,
    approval: Option<Approval>,
    approval_timeout: Option<String>,
    approval_memory: Option<String>,
    approver: Option<Vec<String>>,
    idle_lock: Option<String>,
    working_hours: Option<String>,
    alert_command: Option<Vec<String>>,
    burst_per_minute: Option<u32>,
    max_leases: Option<u32>,
    max_pending: Option<u32>,
    audit_keep: Option<String>,
    audit_keep_days: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProfile {
    /// None: a profile only `jitc sandbox --profile` gives.
    #[serde(default)]
    ancestors: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    secrets: Option<Vec<String>>,
    profiles: Option<Vec<String>>,
    commands: Option<Vec<String>>,
    max_ttl: Option<String>,
    approval: Option<Approval>,
    masking: Option<Masking>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    defaults: Option<FileDefaults>,
    #[serde(default)]
    profiles: BTreeMap<String, FileProfile>,
    #[serde(default)]
    rule: Vec<FileRule>,
    #[serde(default)]
    credential: Vec<credential::FileCredential>,
    gateway: Option<credential::FileGateway>,
    #[serde(default)]
    backend: BTreeMap<String, backend::FileBackend>,
}

/// `[defaults]`, with the design's values where the file is silent.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub ttl: Duration,
    pub max_ttl: Duration,
    pub approval: Approval,
    pub approval_timeout: Duration,
    pub approval_memory: Duration,
    pub approver: Option<Vec<String>>,
    pub idle_lock: Duration,
    /// Requests outside these hours (local time) are recorded as anomalies.
    pub working_hours: Option<(String, WorkingHours)>,
    /// Run with each anomaly's one-line description as its last argument.
    pub alert_command: Option<Vec<String>>,
    /// More leases of one secret than this in a minute is an anomaly.
    pub burst_per_minute: u32,
    /// Most leases active at once for one user; more are refused as busy (75).
    pub max_leases: u32,
    /// Most requests waiting for approval at once for one user.
    pub max_pending: u32,
    /// How much audit history rotation keeps.
    pub audit_retention: crate::audit::Retention,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(8 * 3600),
            approval: Approval::Never,
            approval_timeout: Duration::from_secs(60),
            approval_memory: Duration::from_secs(30 * 60),
            approver: None,
            idle_lock: Duration::from_secs(15 * 60),
            working_hours: None,
            alert_command: None,
            burst_per_minute: 30,
            max_leases: 256,
            max_pending: 32,
            audit_retention: crate::audit::Retention::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub ancestors: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// 1-based, as users count `[[rule]]` tables.
    pub number: u32,
    secrets: Option<GlobSet>,
    profiles: Option<Vec<String>>,
    commands: Option<Vec<String>>,
    max_ttl: Option<Duration>,
    approval: Option<Approval>,
    masking_required: bool,
    /// The rule as written, in one line, for explanations.
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub defaults: Defaults,
    pub profiles: Vec<Profile>,
    pub rules: Vec<Rule>,
    /// Secrets bound to hosts for the gateway (`[[credential]]`).
    pub credentials: Vec<credential::Credential>,
    /// `[gateway]`: passthrough hosts, gateway-only, extra upstream roots.
    pub gateway: credential::GatewaySettings,
    /// `[backend.NAME]`: clusters `bao://NAME/…` references are read from.
    pub backends: Vec<backend::Backend>,
}

/// What the policy says about one request.
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdicts: Vec<SecretVerdict>,
    /// Why the request is refused, if it is.
    pub refusal: Option<String>,
    pub approval: Approval,
    /// The lease's length: as asked, or the default capped by `max_ttl`.
    pub ttl: Duration,
    pub max_ttl: Duration,
    pub masking_required: bool,
    /// A rule pins the command (`commands`): its environment must not carry loader or
    /// interpreter hooks from the requester's.
    pub strict_env: bool,
}

/// What is wrong with a policy's text: one line, naming where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not TOML, or not the policy's shape (an unknown field, a wrong type).
    #[error("{at}{message}")]
    Syntax { at: String, message: String },
    #[error(
        "{field} = \"{value}\" is not a duration ({detail}); write e.g. \"90s\", \"15m\" or \"8h\""
    )]
    Duration {
        field: &'static str,
        value: String,
        detail: String,
    },
    #[error("{0} must be longer than 0s")]
    ZeroDuration(&'static str),
    #[error("{field} = {value:?} is not a size; write e.g. \"1GiB\", \"500MiB\" or \"2GB\" ")]
    Size { field: &'static str, value: String },
    #[error("audit_keep_days must be at least 1; leave it out to keep by size alone")]
    ZeroDays,
    #[error("max_leases and max_pending must be at least 1")]
    ZeroCap,
    #[error("{0} = [] names no program; remove it or give the program's path")]
    NoProgram(&'static str),
    #[error("working_hours: {0}")]
    WorkingHours(#[from] hours::WorkingHoursError),
    /// Something wrong in `[[rule]]` number `rule` (1-based).
    #[error("rule {rule}: {what}")]
    Rule { rule: u32, what: String },
    /// Something wrong in `[[credential]]` number `credential` (1-based).
    #[error("credential {credential}: {what}")]
    Credential { credential: u32, what: String },
    #[error("[gateway]: {0}")]
    Gateway(String),
    #[error("[backend.{0}]: {1}")]
    Backend(String, String),
}

fn duration(field: &'static str, value: &Option<String>) -> Result<Option<Duration>, PolicyError> {
    value
        .as_deref()
        .map(|v| {
            humantime::parse_duration(v).map_err(|e| PolicyError::Duration {
                field,
                value: v.to_owned(),
                detail: e.to_string(),
            })
        })
        .transpose()
}

/// `1GiB`, `500 MiB`, `2GB`, `1048576`: bytes, more than 0.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&b| b > 0)
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Where `offset` falls in `text`, as a 1-based line number.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Policy {
    /// Parses `text`; the error is one line naming the line of the problem.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let file: File = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            at: e
                .span()
                .map(|s| format!("line {}: ", line_of(text, s.start)))
                .unwrap_or_default(),
            message: e.message().trim().replace('\n', " "),
        })?;
        let fd = file.defaults.unwrap_or_default();
        let base = Defaults::default();
        let defaults = Defaults {
            ttl: duration("ttl", &fd.ttl)?.unwrap_or(base.ttl),
            max_ttl: duration("max_ttl", &fd.max_ttl)?.unwrap_or(base.max_ttl),
            approval: fd.approval.unwrap_or(base.approval),
            approval_timeout: duration("approval_timeout", &fd.approval_timeout)?
                .unwrap_or(base.approval_timeout),
            approval_memory: duration("approval_memory", &fd.approval_memory)?
                .unwrap_or(base.approval_memory),
            approver: fd.approver,
            idle_lock: duration("idle_lock", &fd.idle_lock)?.unwrap_or(base.idle_lock),
            working_hours: match fd.working_hours {
                Some(w) => Some((w.clone(), WorkingHours::parse(&w)?)),
                None => None,
            },
            alert_command: fd.alert_command,
            burst_per_minute: fd.burst_per_minute.unwrap_or(base.burst_per_minute),
            max_leases: fd.max_leases.unwrap_or(base.max_leases),
            max_pending: fd.max_pending.unwrap_or(base.max_pending),
            audit_retention: crate::audit::Retention {
                bytes: match &fd.audit_keep {
                    Some(s) => parse_size(s).ok_or_else(|| PolicyError::Size {
                        field: "audit_keep",
                        value: s.clone(),
                    })?,
                    None => base.audit_retention.bytes,
                },
                days: fd.audit_keep_days,
            },
        };
        if defaults.audit_retention.days == Some(0) {
            return Err(PolicyError::ZeroDays);
        }
        if defaults.max_leases == 0 || defaults.max_pending == 0 {
            return Err(PolicyError::ZeroCap);
        }
        if defaults
            .alert_command
            .as_ref()
            .is_some_and(|a| a.is_empty())
        {
            return Err(PolicyError::NoProgram("alert_command"));
        }
        if defaults.approver.as_ref().is_some_and(|a| a.is_empty()) {
            return Err(PolicyError::NoProgram("approver"));
        }
        for (field, d) in [
            ("ttl", defaults.ttl),
            ("max_ttl", defaults.max_ttl),
            ("approval_timeout", defaults.approval_timeout),
            ("idle_lock", defaults.idle_lock),
        ] {
            if d.is_zero() {
                return Err(PolicyError::ZeroDuration(field));
            }
        }
        let profiles: Vec<Profile> = file
            .profiles
            .into_iter()
            .map(|(name, p)| Profile {
                name,
                ancestors: p.ancestors,
            })
            .collect();
        let mut rules = Vec::with_capacity(file.rule.len());
        for (i, r) in file.rule.into_iter().enumerate() {
            let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let err = |what: String| PolicyError::Rule { rule: number, what };
            let secrets = match &r.secrets {
                None => None,
                Some(globs) => {
                    let mut b = GlobSetBuilder::new();
                    for g in globs {
                        b.add(Glob::new(g).map_err(|e| err(format!("bad secret pattern: {e}")))?);
                    }
                    Some(
                        b.build()
                            .map_err(|e| err(format!("bad secret patterns: {e}")))?,
                    )
                }
            };
            if let Some(ps) = &r.profiles {
                for p in ps {
                    if !profiles.iter().any(|q| &q.name == p) {
                        return Err(err(format!(
                            "profile '{p}' is not defined; add [profiles.{p}] with its ancestors"
                        )));
                    }
                }
            }
            if let Some(cs) = &r.commands {
                for c in cs {
                    if c.is_empty() || (c.contains('/') && !c.starts_with('/')) {
                        return Err(err(format!(
                            "command '{c}' must be a program name or an absolute path"
                        )));
                    }
                }
            }
            rules.push(Rule {
                number,
                text: rule_text(&r),
                secrets,
                profiles: r.profiles,
                commands: r.commands,
                max_ttl: duration("max_ttl", &r.max_ttl).map_err(|e| err(e.to_string()))?,
                approval: r.approval,
                masking_required: r.masking == Some(Masking::Required),
            });
        }
        Ok(Policy {
            defaults,
            profiles,
            rules,
            credentials: credential::parse(file.credential)?,
            gateway: credential::parse_gateway(file.gateway)?,
            backends: backend::parse(file.backend)?,
        })
    }

    /// The profile a request belongs to: the nearest process in its chain (the
    /// requester first) that matches a profile's `ancestors`, and its index there.
    pub fn profile_for(&self, chain: &[ProcessInfo]) -> Option<(String, usize)> {
        chain.iter().enumerate().find_map(|(i, proc)| {
            self.profiles
                .iter()
                .find(|p| p.ancestors.iter().any(|a| process_matches(a, proc)))
                .map(|p| (p.name.clone(), i))
        })
    }

    fn rule_for(&self, secret: &str, profile: Option<&str>) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            r.secrets.as_ref().is_none_or(|g| g.is_match(secret))
                && r.profiles
                    .as_ref()
                    .is_none_or(|ps| profile.is_some_and(|p| ps.iter().any(|q| q == p)))
        })
    }

    /// The first rule that names `secret` in its `secrets` (whatever its profiles): a
    /// secret a rule guards. Rules without `secrets` match everything and guard nothing
    /// in particular.
    pub fn guarding(&self, secret: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.secrets.as_ref().is_some_and(|g| g.is_match(secret)))
    }

    /// How much a human must be involved in changing `secret`: the approval its rule
    /// (for any requester) or the defaults ask for.
    pub fn write_approval(&self, secret: &str) -> Approval {
        self.guarding(secret)
            .and_then(|r| r.approval)
            .unwrap_or(self.defaults.approval)
    }

    /// The `[[credential]]` binding `secret` to hosts, if any.
    pub fn credential(&self, secret: &str) -> Option<&credential::Credential> {
        self.credentials.iter().find(|c| c.secret == secret)
    }

    /// Judges `req` for a requester of `profile`.
    pub fn decide(&self, req: &LeaseRequest, profile: Option<&str>) -> Decision {
        let d = &self.defaults;
        let mut verdicts = Vec::with_capacity(req.secrets.len());
        let mut refusal: Option<String> = None;
        let mut approval = Approval::Never;
        let mut max_ttl = d.max_ttl;
        let mut max_ttl_from = String::from("the defaults");
        let mut masking_required = false;
        let mut masking_from = String::new();
        let mut strict_env = false;
        for secret in &req.secrets {
            if !req.proxy
                && let Some(c) = self
                    .credentials
                    .iter()
                    .find(|c| c.secret == *secret && c.custody == credential::Custody::Required)
            {
                refusal.get_or_insert_with(|| {
                    format!(
                        "'{secret}' is bound to {} with custody = \"required\": it is never handed to a command as a value, only added by jitc's gateway to requests for those hosts (run the command with 'jitc exec --proxy', or proxy: true in MCP)",
                        c.hosts.join(", ")
                    )
                });
            }
            // A pinned version of a backend reference is judged as the reference itself
            // (`…?version=3#f` does not slip past a rule for `…#f`).
            let rule = self.rule_for(&jitc_protocol::names::without_version(secret), profile);
            verdicts.push(SecretVerdict {
                secret: secret.clone(),
                rule: rule.map(|r| r.number),
                rule_text: rule.map_or_else(|| "[defaults]".to_owned(), |r| r.text.clone()),
            });
            let from = rule.map_or_else(
                || "the defaults".to_owned(),
                |r| format!("rule {}", r.number),
            );
            approval = approval.max(rule.and_then(|r| r.approval).unwrap_or(d.approval));
            let rule_max = rule.and_then(|r| r.max_ttl).unwrap_or(d.max_ttl);
            if rule_max < max_ttl {
                max_ttl = rule_max;
                max_ttl_from = format!("{from} (for '{secret}')");
            }
            if rule.is_some_and(|r| r.masking_required) && !masking_required {
                masking_required = true;
                masking_from = format!("{from} (for '{secret}')");
            }
            strict_env |= rule.is_some_and(|r| r.commands.is_some());
            if refusal.is_none()
                && let Some(r) = rule
                && let Some(allowed) = &r.commands
                && !allowed
                    .iter()
                    .any(|c| command_allowed(c, &req.command.path))
            {
                refusal = Some(format!(
                    "policy rule {} lets '{secret}' go only to {}, not to {}",
                    r.number,
                    if allowed.is_empty() {
                        "no command".to_owned()
                    } else {
                        allowed.join(", ")
                    },
                    req.command.path
                ));
            }
        }
        let asked = req.ttl_ms.map(Duration::from_millis);
        let ttl = asked.unwrap_or(d.ttl.min(max_ttl));
        if refusal.is_none() && ttl > max_ttl {
            let allows = if max_ttl_from == "the defaults" {
                "allow"
            } else {
                "allows"
            };
            refusal = Some(format!(
                "a lease of {} is longer than the {} that {max_ttl_from} {allows}; ask for --ttl {} or less",
                humantime::format_duration(ttl),
                humantime::format_duration(max_ttl),
                humantime::format_duration(max_ttl)
            ));
        }
        if refusal.is_none()
            && req.proxy
            && !req.secrets.iter().any(|s| self.credential(s).is_some())
        {
            refusal = Some(
                "--proxy: no secret asked for is bound to hosts by a [[credential]] in policy.toml; add a binding, or run without --proxy".to_owned(),
            );
        }
        if refusal.is_none() && masking_required && !req.masking {
            refusal = Some(format!(
                "{masking_from} requires masking; run without --no-masking"
            ));
        }
        Decision {
            verdicts,
            refusal,
            approval,
            ttl,
            max_ttl,
            masking_required,
            strict_env,
        }
    }
}

/// Whether allow-list entry `entry` admits the resolved executable `path`: an absolute
/// entry must equal it, a bare name must equal its basename.
fn command_allowed(entry: &str, path: &str) -> bool {
    if entry.starts_with('/') {
        entry == path
    } else {
        basename(path) == entry
    }
}

/// Whether a profile's `ancestors` entry names `proc`: the basename of its executable
/// or argv[0], or, for an entry of several words ("jitc mcp"), the start of its argv.
fn process_matches(entry: &str, proc: &ProcessInfo) -> bool {
    let words: Vec<&str> = entry.split_whitespace().collect();
    match words.as_slice() {
        [] => false,
        [one] => {
            proc.exe.as_deref().is_some_and(|e| basename(e) == *one)
                || proc.argv.first().is_some_and(|a| basename(a) == *one)
        }
        [first, rest @ ..] => {
            proc.argv.len() > rest.len()
                && basename(&proc.argv[0]) == *first
                && proc.argv[1..=rest.len()]
                    .iter()
                    .zip(rest)
                    .all(|(a, w)| a == w)
        }
    }
}

/// One line describing a rule as written, for `jitc policy explain`.
fn rule_text(r: &FileRule) -> String {
    let list = |v: &Vec<String>| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if let Some(s) = &r.secrets {
        parts.push(format!("secrets = [{}]", list(s)));
    }
    if let Some(p) = &r.profiles {
        parts.push(format!("profiles = [{}]", list(p)));
    }
    if let Some(c) = &r.commands {
        parts.push(format!("commands = [{}]", list(c)));
    }
    if let Some(t) = &r.max_ttl {
        parts.push(format!("max_ttl = \"{t}\""));
    }
    if let Some(a) = r.approval {
        parts.push(format!("approval = \"{}\"", a.as_str()));
    }
    if r.masking == Some(Masking::Required) {
        parts.push("masking = \"required\"".into());
    }
    if parts.is_empty() {
        "(matches everything)".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jitc_protocol::CommandLine;

    const DESIGN_EXAMPLE: &str = r#"
[defaults]
ttl = "15m"
max_ttl = "8h"
approval = "never"
approval_timeout = "60s"
approval_memory = "30m"
approver = ["/usr/bin/ssh-askpass"]
idle_lock = "15m"

[profiles.agent]
ancestors = ["codex", "claude", "cursor", "aider", "jitc mcp"]

[[rule]]
secrets = ["prod/*"]
profiles = ["agent"]
approval = "always"
commands = ["psql", "pg_dump"]
max_ttl = "30m"
masking = "required"
"#;

    fn req(secrets: &[&str], path: &str) -> LeaseRequest {
        LeaseRequest {
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            command: CommandLine {
                path: path.into(),
                argv: vec![basename(path).into()],
                cwd: "/".into(),
            },
            task: None,
            ttl_ms: None,
            masking: true,
            proxy: false,
        }
    }

    fn proc(exe: &str, argv: &[&str]) -> ProcessInfo {
        ProcessInfo {
            pid: 1,
            exe: Some(exe.into()),
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_design_example_parses() {
        let p = Policy::parse(DESIGN_EXAMPLE).unwrap();
        assert_eq!(p.defaults.max_ttl, Duration::from_secs(8 * 3600));
        assert_eq!(
            p.defaults.approver.as_deref(),
            Some(&["/usr/bin/ssh-askpass".to_owned()][..])
        );
        assert_eq!(p.rules.len(), 1);
        assert_eq!(Policy::parse("").unwrap().defaults, Defaults::default());
    }

    #[test]
    fn audit_retention_reads_sizes_and_days() {
        let p =
            Policy::parse("[defaults]\naudit_keep = \"300MiB\"\naudit_keep_days = 90\n").unwrap();
        assert_eq!(p.defaults.audit_retention.bytes, 300 << 20);
        assert_eq!(p.defaults.audit_retention.days, Some(90));
        assert_eq!(
            p.defaults.audit_retention.describe(),
            "audit_keep 300 MiB, audit_keep_days 90"
        );
        let d = Policy::parse("").unwrap().defaults.audit_retention;
        assert_eq!((d.bytes, d.days), (1 << 30, None));
        for (text, bytes) in [("2GB", 2_000_000_000), ("1 GiB", 1 << 30), ("4096", 4096)] {
            let p = Policy::parse(&format!("[defaults]\naudit_keep = \"{text}\"\n")).unwrap();
            assert_eq!(p.defaults.audit_retention.bytes, bytes, "{text}");
        }
        for bad in ["lots", "0", "1PiB", "-5MiB", "99999999999999999999"] {
            let e = Policy::parse(&format!("[defaults]\naudit_keep = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("is not a size") && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
        let e = Policy::parse("[defaults]\naudit_keep_days = 0\n").unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
    }

    #[test]
    fn errors_are_one_line_with_the_line_number() {
        let e = Policy::parse("[defaults]\nttl = \"15m\"\naproval = \"never\"\n").unwrap_err();
        assert!(matches!(e, PolicyError::Syntax { .. }));
        let e = e.to_string();
        assert!(e.starts_with("line 3:"), "{e}");
        assert!(!e.contains('\n'));
        let e = Policy::parse("[defaults]\nttl = \"soon\"\n").unwrap_err();
        assert!(matches!(e, PolicyError::Duration { field: "ttl", .. }));
        assert!(e.to_string().contains("ttl = \"soon\""), "{e}");
        let e = Policy::parse("[[rule]]\nprofiles = [\"nope\"]\n").unwrap_err();
        assert!(matches!(e, PolicyError::Rule { rule: 1, .. }));
        assert!(e.to_string().contains("rule 1") && e.to_string().contains("[profiles.nope]"));
        let e = Policy::parse("[[rule]]\ncommands = [\"bin/psql\"]\n").unwrap_err();
        assert!(e.to_string().contains("absolute path"), "{e}");
        assert!(matches!(
            Policy::parse("[defaults]\nworking_hours = \"whenever\"\n"),
            Err(PolicyError::WorkingHours(_))
        ));
        assert!(Policy::parse("[[rule]]\napproval = \"sometimes\"\n").is_err());
        assert!(Policy::parse("[[rule]]\nsecrets = [\"a[\"]\n").is_err());
    }

    #[test]
    fn profiles_match_by_basename_or_argv_words() {
        let p = Policy::parse(DESIGN_EXAMPLE).unwrap();
        let chain = vec![
            proc("/usr/bin/jitc", &["jitc", "exec"]),
            proc("/usr/bin/dash", &["sh", "-c", "x"]),
            proc("/opt/codex/codex", &["/opt/codex/codex", "--full-auto"]),
            proc("/usr/bin/bash", &["bash"]),
        ];
        assert_eq!(p.profile_for(&chain), Some(("agent".into(), 2)));
        let mcp = vec![proc(
            "/home/u/.local/bin/jitc",
            &["/home/u/.local/bin/jitc", "mcp"],
        )];
        assert_eq!(p.profile_for(&mcp).map(|x| x.0), Some("agent".into()));
        let human = vec![
            proc("/usr/bin/jitc", &["jitc", "exec"]),
            proc("/usr/bin/bash", &["-bash"]),
        ];
        assert_eq!(p.profile_for(&human), None);
        // argv[0] renamed counts too (a copy of sh named codex).
        let renamed = vec![proc("/tmp/x/codex", &["codex", "-c", "jitc"])];
        assert!(p.profile_for(&renamed).is_some());
    }

    #[test]
    fn each_secret_is_judged_by_its_first_matching_rule() {
        let p = Policy::parse(
            r#"
[profiles.agent]
ancestors = ["codex"]
[[rule]]
secrets = ["prod/*"]
profiles = ["agent"]
commands = ["psql", "/usr/bin/pg_dump"]
approval = "always"
max_ttl = "30m"
[[rule]]
secrets = ["prod/*"]
approval = "once-per-task"
[[rule]]
secrets = ["dev/**"]
"#,
        )
        .unwrap();
        // An agent may send prod secrets only to the allowed commands.
        let d = p.decide(&req(&["prod/db"], "/usr/bin/psql"), Some("agent"));
        assert!(d.refusal.is_none(), "{:?}", d.refusal);
        assert_eq!(d.approval, Approval::Always);
        assert_eq!(d.ttl, Duration::from_secs(15 * 60));
        let d = p.decide(&req(&["prod/db"], "/usr/bin/curl"), Some("agent"));
        assert!(
            d.refusal
                .unwrap()
                .contains("only to psql, /usr/bin/pg_dump, not to /usr/bin/curl")
        );
        let d = p.decide(&req(&["prod/db"], "/usr/local/bin/pg_dump"), Some("agent"));
        assert!(d.refusal.is_some(), "an absolute entry must match exactly");
        // Bundling a harmless secret does not dodge the rule.
        let d = p.decide(&req(&["dev/x", "prod/db"], "/usr/bin/curl"), Some("agent"));
        assert!(d.refusal.is_some());
        // A human (no profile) falls through to rule 2.
        let d = p.decide(&req(&["prod/db"], "/usr/bin/curl"), None);
        assert!(d.refusal.is_none());
        assert_eq!(d.approval, Approval::OncePerTask);
        assert_eq!(d.verdicts[0].rule, Some(2));
        // Unmatched secrets get the defaults.
        let d = p.decide(&req(&["other"], "/bin/true"), None);
        assert_eq!(d.verdicts[0].rule, None);
        assert_eq!(d.approval, Approval::Never);
    }

    #[test]
    fn ttl_limits_and_masking() {
        let p = Policy::parse(
            "[[rule]]\nsecrets = [\"prod/*\"]\nmax_ttl = \"30m\"\nmasking = \"required\"\n",
        )
        .unwrap();
        let mut r = req(&["prod/db"], "/bin/true");
        let d = p.decide(&r, None);
        assert_eq!(d.ttl, Duration::from_secs(15 * 60));
        r.ttl_ms = Some(3_600_000);
        let refusal = p.decide(&r, None).refusal.unwrap();
        assert!(refusal.contains("longer than the 30m"), "{refusal}");
        assert!(refusal.contains("--ttl 30m"), "{refusal}");
        r.ttl_ms = Some(60_000);
        assert!(p.decide(&r, None).refusal.is_none());
        r.masking = false;
        let refusal = p.decide(&r, None).refusal.unwrap();
        assert!(refusal.contains("requires masking"), "{refusal}");
        // The default TTL is capped by a shorter max_ttl rather than refused.
        let q = Policy::parse("[[rule]]\nmax_ttl = \"5m\"\n").unwrap();
        assert_eq!(
            q.decide(&req(&["x"], "/bin/true"), None).ttl,
            Duration::from_secs(300)
        );
    }
}

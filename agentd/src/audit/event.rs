//! `Event`: one line of the audit trail, and `PeerJson`, the requesting process as a
//! record carries it. Never a value or a passphrase: no field could hold one, and what a
//! requester supplied is concealed (see `conceal`) and bounded before it is written.

use jitc_protocol::kinds::{AnomalyKind, EventKind};
use std::sync::Arc;

use jitc_protocol::{LeaseRequest, ProcessInfo};
use serde::Serialize;
use serde_json::value::RawValue;
use zeroize::Zeroize;

use super::conceal::{Concealed, Reach, conceal, nul_joined, occurs};
use crate::peer::Peer;

/// The process behind a request, as recorded: serialized once per connection (its
/// ancestry is most of a record) and shared by every event of that connection.
#[derive(Debug, Clone)]
pub struct PeerJson(Arc<RawValue>);

/// The most a peer may take up in a record. Too big, the ancestors' command lines are
/// cut first (to fewer bytes each, then to their program's name) — so that a requester
/// cannot push the process that gave it its profile out of the record with long
/// arguments — and only then is the ancestry cut from the top (init's end).
const MAX_PEER_JSON: usize = 64 << 10;

/// The most of each ancestor's argv kept at each step of fitting a peer into a record
/// (`None`: all of it; 0: only argv[0]).
const ARGV_STEPS: [Option<usize>; 4] = [None, Some(1024), Some(128), Some(0)];

impl PeerJson {
    pub fn new(peer: &Peer, chain: &[ProcessInfo]) -> PeerJson {
        #[derive(Serialize)]
        struct Record<'a> {
            pid: u32,
            uid: u32,
            exe: &'a Option<String>,
            argv: &'a [String],
            #[serde(skip_serializing_if = "Option::is_none")]
            sandbox: Option<u64>,
            chain: &'a [ProcessInfo],
        }
        let json_of = |chain: &[ProcessInfo]| {
            let record = Record {
                pid: peer.pid,
                uid: peer.uid,
                sandbox: peer.sandbox,
                exe: &peer.exe,
                argv: &peer.argv,
                chain,
            };
            // Serializing strings and numbers cannot fail.
            serde_json::to_string(&record).unwrap_or_default()
        };
        let mut raw = json_of(chain);
        let mut cut: Vec<ProcessInfo> = Vec::new();
        for step in ARGV_STEPS.iter().skip(1).copied().flatten() {
            if raw.len() <= MAX_PEER_JSON {
                break;
            }
            cut = chain.iter().map(|p| cut_argv(p, step)).collect();
            raw = json_of(&cut);
        }
        let mut kept = cut.len();
        while raw.len() > MAX_PEER_JSON && kept > 0 {
            kept = kept.saturating_sub((kept / 4).max(1));
            raw = json_of(&cut[..kept]);
        }
        PeerJson(Arc::from(RawValue::from_string(raw).unwrap_or_default()))
    }

    /// The executable of the requester's parent (the program that ran it), as
    /// recorded.
    pub fn parent_exe(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(self.0.get()).ok()?;
        let chain = v.get("chain")?.as_array()?;
        let parent = chain.get(1).or(chain.first())?;
        parent.get("exe")?.as_str().map(str::to_owned)
    }

    /// The peer with its executables but none of the command lines (nothing can be
    /// concealed in them when no value is at hand).
    pub fn without_argv(peer: &Peer, chain: &[ProcessInfo]) -> PeerJson {
        PeerJson::rewritten(peer, chain, String::clone, |_| None)
    }

    /// The peer and its ancestry as pids alone, saying why: a command line among them
    /// held a value of the vault.
    pub fn pids_only(peer: &Peer, chain: &[ProcessInfo]) -> PeerJson {
        #[derive(Serialize)]
        struct Pid {
            pid: u32,
        }
        #[derive(Serialize)]
        struct Record {
            pid: u32,
            uid: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            sandbox: Option<u64>,
            withheld: &'static str,
            chain: Vec<Pid>,
        }
        let record = Record {
            pid: peer.pid,
            uid: peer.uid,
            sandbox: peer.sandbox,
            withheld: "executables and command lines: one of them held the value of a secret in the vault",
            chain: chain.iter().map(|p| Pid { pid: p.pid }).collect(),
        };
        let raw = serde_json::to_string(&record).unwrap_or_default();
        PeerJson(Arc::from(RawValue::from_string(raw).unwrap_or_default()))
    }

    /// The peer with each executable passed through `exe` and each argument through
    /// `arg` (`None`: left out).
    fn rewritten(
        peer: &Peer,
        chain: &[ProcessInfo],
        exe: impl Fn(&String) -> String,
        arg: impl Fn(&String) -> Option<String>,
    ) -> PeerJson {
        let peer = Peer {
            exe: peer.exe.as_ref().map(&exe),
            argv: peer.argv.iter().filter_map(&arg).collect(),
            ..peer.clone()
        };
        let chain: Vec<ProcessInfo> = chain
            .iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                exe: p.exe.as_ref().map(&exe),
                argv: p.argv.iter().filter_map(&arg).collect(),
            })
            .collect();
        PeerJson::new(&peer, &chain)
    }
}

/// `p` with its arguments after argv[0] kept to about `max` bytes, the rest marked.
fn cut_argv(p: &ProcessInfo, max: usize) -> ProcessInfo {
    let mut argv = Vec::new();
    let mut total = 0;
    for (i, a) in p.argv.iter().enumerate() {
        if i > 0 && total + a.len() > max {
            argv.push(format!("… ({} more arguments)", p.argv.len() - i));
            break;
        }
        total += a.len();
        argv.push(a.clone());
    }
    ProcessInfo {
        pid: p.pid,
        exe: p.exe.clone(),
        argv,
    }
}

impl Serialize for PeerJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// What a record withholds when a command line of the request held a value of the
/// vault (see `Event::withhold_request`).
pub const VALUE_WITHHELD: &str = "command, argv, task and the requester's command lines: one of them held the value of a secret in the vault (concealing it in place would tell which string was one)";

/// What a record of a request made while the vault was locked withholds.
pub const LOCKED_WITHHELD: &str =
    "secret names, command, argv and task: the vault was locked, so values could not be concealed";

/// One event. Never a value or a passphrase: there is no field that could hold one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Event {
    /// Set by the writer: when the line was written, and its place in the chain.
    pub time: String,
    pub seq: u64,
    /// `None` only in a template other events are merged from (never written).
    pub event: Option<EventKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// For `anomaly`: what kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<AnomalyKind>,
    /// For `log_continued`: the chain's tag where the previous file ended, and the
    /// unkeyed lines since that tag (how many, and their digest) that the next keyed
    /// line seals, so that this file can be checked on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_digest: Option<String>,
    /// For `log_continued`: retention removed the older files up to this sequence
    /// number (and how many files), so `verify` accepts their absence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned_through: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned_files: Option<u64>,
    /// For `log_continued`: written by a writer that names rotated files by sequence
    /// and records what retention removes (`"seq"`), so `verify` never applies the old
    /// rotation's "nine numbered files" rule to its files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated_by: Option<&'static str>,
    /// What a record leaves out, and why (a request whose values were not at hand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withheld: Option<&'static str>,
    /// Unkeyed lines just before this one that will never be sealed (see `Writer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsealed_before: Option<u64>,
    /// For `policy_loaded`: the SHA-256 of the policy file as read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_sha256: Option<String>,
    /// What a requester supplied beyond what a record holds was cut (see `bound`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut: Option<Cut>,
    /// Values read from a backend: where from, and a dynamic secret's lease there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backend: Vec<BackendRecord>,
    /// For `gateway_request`: the request that carried a credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerJson>,
}

/// A read from a backend (`bao://`), as recorded: never a value.
#[derive(Debug, Clone, Serialize)]
pub struct BackendRecord {
    pub backend: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A request the gateway added a credential to: where it went and what came back
/// (`status` and `bytes` in `gateway_response`, absent before the request is forwarded
/// or when the host could not be reached). The path has no query.
#[derive(Debug, Clone, Serialize)]
pub struct HttpRecord {
    pub host: String,
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// A record's request fields were cut to fit: how many bytes there were in all (command,
/// task and argv), and their SHA-256 (each string followed by a NUL byte, in that order,
/// as concealed), so that what was left out can still be matched against a command line.
#[derive(Debug, Clone, Serialize)]
pub struct Cut {
    pub bytes: u64,
    pub sha256: String,
}

/// The most a record's command, task and argv may take, written as JSON (escapes count:
/// a control character is six bytes there).
pub const MAX_REQUEST_JSON: usize = 64 << 10;
/// The most a record's reason may take.
pub const MAX_REASON_JSON: usize = 4 << 10;

/// How long `c` is inside a JSON string (as serde_json writes it).
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Cuts `s` so that it takes at most `budget` bytes in JSON (an ellipsis marks the
/// cut, if there is room for it); returns what it takes now, never more than `budget`.
fn fit(s: &mut String, budget: usize) -> usize {
    const MARK: usize = '…'.len_utf8();
    let mut used = 0;
    let mut end = s.len();
    for (i, c) in s.char_indices() {
        let n = json_len(c);
        if used + n > budget {
            end = i;
            break;
        }
        used += n;
    }
    if end < s.len() {
        if budget < MARK {
            s.clear();
            return 0;
        }
        // Back off to make room for the ellipsis.
        while used + MARK > budget {
            let c = s[..end].chars().next_back().unwrap_or(' ');
            end -= c.len_utf8();
            used -= json_len(c);
        }
        s.truncate(end);
        s.push('…');
        used += MARK;
    }
    used
}

impl Event {
    pub fn new(event: EventKind) -> Event {
        Event {
            event: Some(event),
            ..Event::default()
        }
    }

    pub fn peer(mut self, peer: PeerJson) -> Event {
        self.peer = Some(peer);
        self
    }

    /// Conceals `values` wherever the request's own strings could carry one: the task,
    /// the command and its argv. (The requester's chain is concealed where it is kept,
    /// see `Session::conceal`.)
    pub fn conceal(&mut self, values: &[Concealed<'_>], reach: Reach) {
        // One look at the request's own strings first: nearly always nothing is there.
        let hay = nul_joined(
            [&self.task, &self.command]
                .into_iter()
                .flatten()
                .chain(self.argv.iter().flatten()),
        );
        if values.iter().any(|(_, v)| occurs(&hay, v, reach)) {
            // What is replaced held a value: wiped, not just dropped.
            for field in [&mut self.task, &mut self.command].into_iter().flatten() {
                if let Some(c) = conceal(field, values, reach) {
                    std::mem::replace(field, c).zeroize();
                }
            }
            for arg in self.argv.iter_mut().flatten() {
                if let Some(c) = conceal(arg, values, reach) {
                    std::mem::replace(arg, c).zeroize();
                }
            }
        }
    }

    /// Cuts what a requester supplied to what a record may hold: command, task and argv
    /// to `MAX_REQUEST_JSON` in all (in that order; what is cut is counted and hashed in
    /// `cut`), the reason to `MAX_REASON_JSON`. Done last, on concealed strings.
    pub fn bound(&mut self) {
        use sha2::Digest;
        let size = |e: &Event| -> usize {
            e.command
                .iter()
                .chain(&e.task)
                .chain(e.argv.iter().flatten())
                .map(|s| s.chars().map(json_len).sum::<usize>())
                .sum()
        };
        if let Some(r) = &mut self.reason {
            fit(r, MAX_REASON_JSON);
        }
        if size(self) <= MAX_REQUEST_JSON {
            return;
        }
        let mut hash = sha2::Sha256::new();
        let mut bytes = 0u64;
        for s in self
            .command
            .iter()
            .chain(&self.task)
            .chain(self.argv.iter().flatten())
        {
            hash.update(s.as_bytes());
            hash.update([0]);
            bytes += s.len() as u64;
        }
        let mut budget = MAX_REQUEST_JSON;
        for field in [&mut self.command, &mut self.task].into_iter().flatten() {
            budget = budget.saturating_sub(fit(field, budget));
        }
        if let Some(argv) = &mut self.argv {
            let mut kept = 0;
            for a in argv.iter_mut() {
                if budget == 0 {
                    break;
                }
                budget = budget.saturating_sub(fit(a, budget));
                kept += 1;
            }
            argv.truncate(kept);
        }
        let digest: [u8; 32] = hash.finalize().into();
        self.cut = Some(Cut {
            bytes,
            sha256: super::chain::hex(&digest),
        });
    }

    /// The secrets, task and command of a lease request.
    pub fn request(mut self, req: &LeaseRequest) -> Event {
        self.secrets = req.secrets.clone();
        self.task = req.task.clone();
        self.command = Some(req.command.path.clone());
        self.argv = Some(req.command.argv.clone());
        self
    }

    /// Leaves out everything a requester wrote that a value was found in (command,
    /// argv, task) — wiped — and says so.
    pub fn withhold_request(&mut self) {
        for field in [&mut self.task, &mut self.command] {
            if let Some(mut s) = field.take() {
                s.zeroize();
            }
        }
        if let Some(mut argv) = self.argv.take() {
            argv.iter_mut().for_each(|a| a.zeroize());
        }
        self.withheld = Some(VALUE_WITHHELD);
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Event {
        self.reason = Some(reason.into());
        self
    }

    /// Fills the fields this event leaves empty from `base` (who asked, for what).
    pub fn merge(mut self, base: &Event) -> Event {
        // Field by field: only what `self` lacks is copied (a lease's record merges
        // its base once or twice, and the base's chain is most of its size).
        fn or<T: Clone>(mine: &mut Option<T>, base: &Option<T>) {
            if mine.is_none() {
                mine.clone_from(base);
            }
        }
        or(&mut self.lease, &base.lease);
        if self.secrets.is_empty() {
            self.secrets.clone_from(&base.secrets);
        }
        or(&mut self.task, &base.task);
        or(&mut self.command, &base.command);
        or(&mut self.argv, &base.argv);
        or(&mut self.peer, &base.peer);
        or(&mut self.profile, &base.profile);
        or(&mut self.decision, &base.decision);
        or(&mut self.reason, &base.reason);
        or(&mut self.approval, &base.approval);
        or(&mut self.ttl_secs, &base.ttl_secs);
        or(&mut self.withheld, &base.withheld);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_copies_what_merging_the_whole_base_copied() {
        // `merge` as it was: the whole base cloned, then each field taken if missing.
        fn merged_as_before(mut e: Event, base: &Event) -> Event {
            let b = base.clone();
            e.lease = e.lease.or(b.lease);
            if e.secrets.is_empty() {
                e.secrets = b.secrets;
            }
            e.task = e.task.or(b.task);
            e.command = e.command.or(b.command);
            e.argv = e.argv.or(b.argv);
            e.peer = e.peer.or(b.peer);
            e.profile = e.profile.or(b.profile);
            e.decision = e.decision.or(b.decision);
            e.reason = e.reason.or(b.reason);
            e.approval = e.approval.or(b.approval);
            e.ttl_secs = e.ttl_secs.or(b.ttl_secs);
            e.withheld = e.withheld.or(b.withheld);
            e
        }
        let full = |tag: &str| Event {
            lease: Some(7),
            secrets: vec![format!("S_{tag}")],
            task: Some(format!("task {tag}")),
            command: Some(format!("/bin/{tag}")),
            argv: Some(vec![tag.to_owned(), "--x".into()]),
            profile: Some(tag.to_owned()),
            decision: Some("granted"),
            reason: Some(format!("because {tag}")),
            approval: Some(3),
            ttl_secs: Some(900),
            withheld: Some("withheld"),
            ..Event::new(EventKind::LeaseGranted)
        };
        let empty = || Event::new(EventKind::LeaseEnded);
        let no_args = Event {
            argv: Some(Vec::new()),
            ..empty()
        };
        let cases = [
            (empty(), full("base")),
            (full("mine"), full("base")),
            (full("mine"), empty()),
            (empty(), empty()),
            (no_args, full("base")),
        ];
        for (mine, base) in cases {
            let before = serde_json::to_string(&merged_as_before(mine.clone(), &base)).unwrap();
            let now = serde_json::to_string(&mine.merge(&base)).unwrap();
            assert_eq!(now, before);
        }
    }

    #[test]
    fn long_command_lines_cannot_push_an_ancestor_out_of_the_record() {
        let peer = Peer {
            pid: 1000,
            uid: 1000,
            gid: 1000,
            exe: Some("/usr/bin/jitc".into()),
            argv: vec!["jitc".into()],
            sandbox: None,
        };
        let mut chain: Vec<ProcessInfo> = (0..63)
            .map(|i| ProcessInfo {
                pid: 2000 + i,
                exe: Some("/bin/sh".into()),
                argv: vec!["sh".into(), "-c".into(), "x".repeat(4000)],
            })
            .collect();
        chain.push(ProcessInfo {
            pid: 1,
            exe: Some("/usr/local/bin/claude".into()),
            argv: vec!["claude".into()],
        });
        let json = PeerJson::new(&peer, &chain);
        let text = json.0.get();
        assert!(text.len() <= MAX_PEER_JSON);
        assert!(text.contains("/usr/local/bin/claude"), "the anchor was cut");
        assert!(text.contains("more arguments"));
    }

    #[test]
    fn bound_cuts_to_the_budget_whatever_the_escapes() {
        for (arg, n) in [
            ("\u{1}", 60_000),
            ("x", 300_000),
            ("é", 100_000),
            ("\"", 40_000),
        ] {
            let mut e = Event {
                command: Some("/usr/bin/true".into()),
                argv: Some((0..4).map(|_| arg.repeat(n / 4)).collect()),
                reason: Some("\u{1}".repeat(10_000)),
                ..Event::new(EventKind::LeaseGranted)
            };
            e.bound();
            let json = serde_json::to_string(&e).unwrap();
            assert!(
                json.len() < MAX_REQUEST_JSON + MAX_REASON_JSON + 1024,
                "{}",
                json.len()
            );
            assert!(e.cut.is_some());
        }
        for budget in 0..8 {
            let mut s = "abcdefghij".to_owned();
            assert!(fit(&mut s, budget) <= budget);
        }
    }
}

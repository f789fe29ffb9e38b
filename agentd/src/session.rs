//! `Session`: one client connection's view — who it is, what it holds, and its chain
//! as records, listings and prompts show it — and `Marks`, the processes whose command
//! lines held a passphrase the agent checked.

use std::sync::Arc;

use jitc_protocol::{ProcessInfo, Response};
use tokio::sync::mpsc;

use crate::audit::PeerJson;
use crate::peer::Peer;

/// One client connection's view: who it is and what it holds.
#[derive(Debug)]
pub struct Session {
    pub peer: Peer,
    /// Pushes to this connection (`LeaseEnded`, `Waiting`).
    pub pushes: mpsc::UnboundedSender<Response>,
    /// Leases this connection holds; released when it closes.
    pub leases: Vec<u64>,
    /// The peer's ancestry, read from /proc the first time a request needs it. What
    /// decides (profiles) — never shown as it is once something was concealed in it.
    chain: Option<Arc<[ProcessInfo]>>,
    /// The peer and its ancestry as records, listings and prompts show them: with every
    /// value and passphrase found in them concealed. `None`: as they are.
    shown: Option<(Peer, Arc<[ProcessInfo]>)>,
    /// The peer and its ancestry as audit records carry them, made once.
    peer_json: Option<PeerJson>,
    /// The same strings, to look for leased values in (see `audit::haystack`).
    haystack: Option<Arc<[u8]>>,
    /// What screens found in `haystack`, by screen generation: the chain does not
    /// change, so a screen that has not changed is not run over it again.
    found: Vec<(u64, Vec<Arc<str>>)>,
    /// The generation of the agent's marked processes last applied to `shown`.
    marks_applied: u64,
    /// A command line of the chain held a value of the vault: shown as pids alone.
    withheld: bool,
    /// Keyed hashes of the sets of values whose cut beginnings were concealed in the
    /// chain as shown (`known_concealed`): the same set again changes nothing.
    known: Vec<u64>,
    known_keys: std::hash::RandomState,
    /// The sandbox the peer lives in (`None`: outside every sandbox). Decided when the
    /// connection was accepted; `peer.sandbox` carries its id into records.
    pub sandbox: Option<Arc<crate::sandbox::Registration>>,
    /// This connection registered a sandbox (`jitc sandbox` keeps it open to learn of
    /// the agent's end): it is never dropped as idle.
    pub registered_sandbox: bool,
}

impl Session {
    pub fn new(peer: Peer, pushes: mpsc::UnboundedSender<Response>) -> Session {
        Session {
            peer,
            pushes,
            leases: Vec::new(),
            chain: None,
            shown: None,
            known: Vec::new(),
            known_keys: std::hash::RandomState::new(),
            peer_json: None,
            haystack: None,
            found: Vec::new(),
            marks_applied: 0,
            withheld: false,
            sandbox: None,
            registered_sandbox: false,
        }
    }

    /// Places the session in `sandbox` (as the connection was accepted).
    pub fn place(&mut self, sandbox: Option<Arc<crate::sandbox::Registration>>) {
        self.peer.sandbox = sandbox.as_ref().map(|s| s.id());
        self.sandbox = sandbox;
        self.peer_json = None;
    }

    /// The id of the sandbox the peer lives in.
    pub fn sandbox_id(&self) -> Option<u64> {
        self.sandbox.as_ref().map(|s| s.id())
    }

    /// The processes of the chain (the peer first) whose shown form differs from what
    /// `/proc` shows: something was concealed in them.
    pub(crate) fn concealed_processes(&mut self) -> Vec<ProcessInfo> {
        let Some((_, shown)) = &self.shown else {
            return Vec::new();
        };
        let shown = shown.clone();
        let raw = self.chain();
        shown
            .iter()
            .zip(raw.iter())
            .filter(|(s, r)| s != r)
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Shows `marked` processes of the chain as they were shown when they were marked
    /// (their pid and start time match).
    pub(crate) fn show_marked(&mut self, marked: &Marks) {
        if self.marks_applied == marked.generation || marked.by_process.is_empty() {
            return;
        }
        self.marks_applied = marked.generation;
        let raw = self.chain();
        let mut replace: Vec<(usize, ProcessInfo)> = Vec::new();
        for (i, p) in raw.iter().enumerate() {
            let Some(start) = crate::peer::start_time(p.pid) else {
                continue;
            };
            if let Some(shown) = marked.by_process.get(&(p.pid, start)) {
                replace.push((i, shown.clone()));
            }
        }
        if replace.is_empty() {
            return;
        }
        let (mut peer, chain) = match self.shown.take() {
            Some(s) => s,
            None => (self.peer.clone(), raw),
        };
        let mut chain = chain.to_vec();
        for (i, shown) in replace {
            if i == 0 && shown.pid == peer.pid {
                peer.exe = shown.exe.clone();
                peer.argv = shown.argv.clone();
            }
            if let Some(slot) = chain.get_mut(i) {
                *slot = shown;
            }
        }
        self.shown = Some((peer, chain.into()));
        self.peer_json = None;
        // A marked form replaced what was concealed in it: conceal again.
        self.known.clear();
    }

    /// What `screen` finds in the peer's and its ancestors' strings (remembered while
    /// the screen stays as it is).
    pub fn found_by(&mut self, screen: &crate::vault::Screen) -> Vec<Arc<str>> {
        let generation = screen.generation();
        if let Some((_, found)) = self.found.iter().find(|(g, _)| *g == generation) {
            return found.clone();
        }
        let found = screen.find(&self.haystack());
        if self.found.len() >= 4 {
            self.found.remove(0);
        }
        self.found.push((generation, found.clone()));
        found
    }

    /// The peer and its ancestors up to init (shared, so leases keep it cheaply). The
    /// peer itself as it was at accept time: `jitc exec` makes itself non-dumpable
    /// before it asks for values, and `/proc` then hides its executable.
    pub fn chain(&mut self) -> Arc<[ProcessInfo]> {
        let peer = &self.peer;
        self.chain
            .get_or_insert_with(|| {
                if peer.pid == 0 {
                    return Vec::new().into();
                }
                crate::peer::chain_from(ProcessInfo {
                    pid: peer.pid,
                    exe: peer.exe.clone(),
                    argv: peer.argv.clone(),
                })
                .into()
            })
            .clone()
    }

    /// The requester's and its ancestors' strings, to look for leased values in.
    pub fn haystack(&mut self) -> Arc<[u8]> {
        if let Some(h) = &self.haystack {
            return h.clone();
        }
        let chain = self.chain();
        let h: Arc<[u8]> = crate::audit::haystack(&self.peer, &chain).into();
        self.haystack = Some(h.clone());
        h
    }

    /// The peer as records carry it, with `secrets` (a passphrase, and one tried)
    /// concealed as `<concealed:passphrase>` wherever its or its ancestors' command
    /// lines hold them (`echo pw | jitc unlock --passphrase-stdin` run by `bash -c`),
    /// in this record and every later one of this connection.
    pub fn peer_json_hiding(&mut self, secrets: &[&[u8]]) -> PeerJson {
        let forms: Vec<zeroize::Zeroizing<Vec<u8>>> = secrets
            .iter()
            .flat_map(|s| crate::vault::screen::forms(s))
            .collect();
        let list: Vec<crate::audit::Concealed<'_>> =
            forms.iter().map(|f| ("passphrase", f.as_slice())).collect();
        // The requester typed these itself: nothing to learn from how far they reach.
        self.conceal(&list, crate::audit::Reach::Known);
        self.peer_json()
    }

    /// The keyed hash of a set of `(name, value)` pairs, for `known_done`.
    pub fn known_key<'a>(&self, values: impl Iterator<Item = (&'a str, &'a [u8])>) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.known_keys.build_hasher();
        for (name, value) in values {
            h.write_usize(name.len());
            h.write(name.as_bytes());
            h.write_usize(value.len());
            h.write(value);
        }
        h.finish()
    }

    /// Whether the values hashed to `key` were concealed in the chain as shown.
    pub fn known_done(&self, key: u64) -> bool {
        self.known.contains(&key)
    }

    /// Remembers that the values hashed to `key` were; the last 16 sets are kept.
    pub fn remember_known(&mut self, key: u64) {
        if self.known.len() >= 16 {
            self.known.remove(0);
        }
        self.known.push(key);
    }

    /// Conceals `values` (as far as `reach` goes) in the peer and its ancestry as they
    /// are shown from now on. Whether anything was.
    pub fn conceal(
        &mut self,
        values: &[crate::audit::Concealed<'_>],
        reach: crate::audit::Reach,
    ) -> bool {
        if values.is_empty() {
            return false;
        }
        let haystack = self.haystack();
        let whole = values
            .iter()
            .any(|(_, v)| crate::audit::occurs(&haystack, v, reach));
        let cut = !whole && reach == crate::audit::Reach::Known && self.cut_in_a_value(values);
        if !(whole || cut) {
            return false;
        }
        self.rewrite(|s| crate::audit::conceal(s, values, reach))
    }

    /// Whether an argument of the peer or an ancestor was cut short (it ends with `…`)
    /// inside one of `values`.
    fn cut_in_a_value(&mut self, values: &[crate::audit::Concealed<'_>]) -> bool {
        let chain = self.chain();
        self.peer
            .argv
            .iter()
            .chain(chain.iter().flat_map(|p| &p.argv))
            .any(|a| a.ends_with('…') && crate::audit::cut_tail(a, values).is_some())
    }

    /// Passes every executable and argument as shown through `fix` (`None`: kept); the
    /// replaced strings are wiped. Whether anything changed.
    pub fn rewrite(&mut self, fix: impl Fn(&str) -> Option<String>) -> bool {
        let (mut peer, chain) = match self.shown.take() {
            Some(s) => s,
            None => (self.peer.clone(), self.chain()),
        };
        let mut chain: Vec<ProcessInfo> = chain.to_vec();
        let mut changed = false;
        let mut apply = |s: &mut String| {
            if let Some(c) = fix(s) {
                zeroize::Zeroize::zeroize(&mut std::mem::replace(s, c));
                changed = true;
            }
        };
        peer.exe.iter_mut().for_each(&mut apply);
        peer.argv.iter_mut().for_each(&mut apply);
        for p in &mut chain {
            p.exe.iter_mut().for_each(&mut apply);
            p.argv.iter_mut().for_each(&mut apply);
        }
        self.shown = Some((peer, chain.into()));
        if changed {
            self.peer_json = None;
        }
        changed
    }

    /// Shows the peer and its ancestry as pids alone from now on: a command line held a
    /// value of the vault, and concealing it in place would tell which string was one.
    pub fn withhold(&mut self) {
        let chain = self.chain();
        let bare = |p: &ProcessInfo| ProcessInfo {
            pid: p.pid,
            exe: None,
            argv: Vec::new(),
        };
        let peer = Peer {
            exe: None,
            argv: Vec::new(),
            ..self.peer.clone()
        };
        self.shown = Some((peer, chain.iter().map(bare).collect()));
        self.peer_json = None;
        self.withheld = true;
        self.known.clear();
    }

    /// Who asked, as records say it: the executable as shown (see `shown`), and the pid.
    pub fn shown_requester(&self) -> String {
        let exe = match &self.shown {
            Some((peer, _)) => peer.exe.as_deref(),
            None => self.peer.exe.as_deref(),
        };
        format!("{} (pid {})", exe.unwrap_or("?"), self.peer.pid)
    }

    /// The peer's ancestry as listings and prompts show it (see `shown`).
    pub fn shown_chain(&mut self) -> Arc<[ProcessInfo]> {
        match &self.shown {
            Some((_, chain)) => chain.clone(),
            None => self.chain(),
        }
    }

    /// The peer as audit records carry it.
    pub fn peer_json(&mut self) -> PeerJson {
        if let Some(p) = &self.peer_json {
            return p.clone();
        }
        if self.withheld {
            let chain = self.chain();
            let p = PeerJson::pids_only(&self.peer, &chain);
            self.peer_json = Some(p.clone());
            return p;
        }
        let p = match &self.shown {
            Some((peer, chain)) => PeerJson::new(peer, chain),
            None => {
                let chain = self.chain();
                PeerJson::new(&self.peer, &chain)
            }
        };
        self.peer_json = Some(p.clone());
        p
    }

    /// The peer as records carry it with its command lines left out.
    pub fn peer_json_without_argv(&mut self) -> PeerJson {
        let chain = self.chain();
        PeerJson::without_argv(&self.peer, &chain)
    }
}

/// See `Agent::marks`.
#[derive(Debug, Default)]
pub struct Marks {
    by_process: std::collections::HashMap<(u32, u64), ProcessInfo>,
    /// In the order marked, to forget the oldest first.
    order: std::collections::VecDeque<(u32, u64)>,
    generation: u64,
}

/// The most processes marked at once; past it, those that are gone are forgotten, then
/// the oldest.
const MAX_MARKS: usize = 256;

impl Marks {
    pub(crate) fn mark(&mut self, pid: u32, start: u64, shown: ProcessInfo) {
        if self.by_process.insert((pid, start), shown).is_none() {
            self.order.push_back((pid, start));
        }
        if self.by_process.len() > MAX_MARKS {
            let gone: Vec<(u32, u64)> = self
                .order
                .iter()
                .filter(|(p, s)| crate::peer::start_time(*p) != Some(*s))
                .copied()
                .collect();
            for k in gone {
                self.by_process.remove(&k);
            }
            self.order.retain(|k| self.by_process.contains_key(k));
            while self.by_process.len() > MAX_MARKS {
                if let Some(k) = self.order.pop_front() {
                    self.by_process.remove(&k);
                }
            }
        }
        self.generation += 1;
    }
}

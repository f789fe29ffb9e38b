//! `Agent`: the daemon's shared state (the vault, when unlocked, and the lease table)
//! and the one dispatcher that routes each request to its command module.

use jitc_protocol::kinds::EventKind;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use jitc_protocol::{ErrorCode, Request, Response};
use tokio::sync::{Mutex, MutexGuard, Notify};

use crate::approval::Approvals;
use crate::audit::{Audit, Event, PeerJson};
use crate::cmd;
use crate::config::Config;
use crate::error::Refusal;
use crate::idle::Idle;
use crate::leases::{Lease, Leases};
use crate::policy::{Policy, PolicySource};
use crate::vault::{SaveBytes, Vault, VaultFile, VaultLock};

pub use crate::session::{Marks, Session};

#[derive(Debug)]
pub struct Agent {
    config: Config,
    vault_file: VaultFile,
    /// The vault file as the agent last read or wrote it (see `VaultFile::stamp`).
    vault_stamp: StdMutex<Option<crate::vault::FileStamp>>,
    _vault_lock: VaultLock,
    /// `Some` while unlocked. Held across a save so that writes are serialised.
    vault: Mutex<Option<Vault>>,
    /// Serialises passphrase checks, so the backoff cannot be dodged in parallel — nor
    /// by hanging up: a wrong passphrase's delay holds it to the end.
    passphrase_gate: Arc<Mutex<()>>,
    failures: AtomicU32,
    leases: StdMutex<Leases>,
    /// Wakes the expiry timer when the earliest expiry may have changed.
    leases_changed: Notify,
    approvals: StdMutex<Approvals>,
    policy_source: PolicySource,
    /// The policy load last recorded (see `PolicySource::stamp`), so each load is
    /// recorded once, not per lease.
    policy_recorded: StdMutex<u64>,
    /// The digest of a policy the agent has seen in force (this run, or remembered by
    /// the vault): while it is set, a missing policy file refuses every lease.
    policy_required: StdMutex<Option<[u8; 32]>>,
    /// Why the approver could not be started the last time, for `jitc status`.
    approver_error: StdMutex<Option<String>>,
    /// Set by `jitc stop` (who asked): the server shuts down.
    stop: Notify,
    stop_reason: StdMutex<Option<String>>,
    audit: Audit,
    /// Every rule that makes an anomaly (see `anomaly`).
    detector: crate::anomaly::Detector,
    idle: Idle,
    /// Set once shutdown begins: nothing may unlock the vault after that.
    shutting_down: AtomicBool,
    /// Processes whose command line held a passphrase given to the agent (by pid and
    /// start time), as records show them: a later connection from the same shell
    /// (`echo pw | jitc unlock; jitc exec …`) shows them the same way. Bound to the
    /// processes that carried a passphrase that was checked — never a search for the
    /// passphrase in strings a requester chose, which would answer guesses.
    marks: StdMutex<Marks>,
    /// Sandboxes `jitc sandbox` registered (see `sandbox`).
    sandboxes: crate::sandbox::Sandboxes,
    /// Secrets programs asked for that the vault does not hold (see `cmd::requested`).
    wanted: StdMutex<Vec<jitc_protocol::SecretWanted>>,
    /// The custody-free gateway (listening from the first `--proxy` lease).
    gateway: crate::gateway::Gateway,
    /// Sessions with the policy's backends (`bao://`).
    backends: crate::backend::Backends,
    /// The agent itself, for what outlives a request (the gateway's tasks).
    me: std::sync::OnceLock<std::sync::Weak<Agent>>,
}

/// The delay before answering a wrong passphrase: 0.1 s per failure so far, at most 10 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(u64::from(failures))).min(Duration::from_secs(10))
}

/// What handling a request sends back: a response, or a frame encoded already (a page
/// of secrets, encoded from the vault's own strings).
#[derive(Debug)]
// One per request, moved once to the writer: not worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Outgoing {
    Response(Response),
    Frame(zeroize::Zeroizing<Vec<u8>>),
}

impl From<Response> for Outgoing {
    fn from(r: Response) -> Outgoing {
        Outgoing::Response(r)
    }
}

impl Agent {
    pub fn new(config: Config, vault_lock: VaultLock) -> Agent {
        let vault_file = VaultFile::new(config.vault.clone());
        let policy = PolicySource::new(config.policy.clone());
        let config_audit = config.audit.clone();
        let journal = config_audit.path.parent().map_or_else(
            || std::path::PathBuf::from("."),
            |p| p.join("backend-leases"),
        );
        let retention = policy
            .current()
            .map(|p| p.defaults.audit_retention)
            .unwrap_or_default();
        let idle_lock = config
            .idle_lock
            .or_else(|| policy.current().ok().map(|p| p.defaults.idle_lock))
            .unwrap_or(Config::DEFAULT_IDLE_LOCK);
        Agent {
            config,
            vault_file,
            vault_stamp: StdMutex::new(None),
            _vault_lock: vault_lock,
            vault: Mutex::new(None),
            passphrase_gate: Arc::new(Mutex::new(())),
            failures: AtomicU32::new(0),
            leases: StdMutex::new(Leases::default()),
            leases_changed: Notify::new(),
            approvals: StdMutex::new(Approvals::default()),
            policy_source: policy,
            policy_recorded: StdMutex::new(0),
            policy_required: StdMutex::new(None),
            approver_error: StdMutex::new(None),
            stop: Notify::new(),
            stop_reason: StdMutex::new(None),
            audit: {
                let audit = Audit::start(config_audit);
                audit.set_retention(retention);
                audit
            },
            detector: crate::anomaly::Detector::default(),
            idle: Idle::new(idle_lock),
            shutting_down: AtomicBool::new(false),
            marks: StdMutex::new(Marks::default()),
            sandboxes: crate::sandbox::Sandboxes::new(),
            wanted: StdMutex::new(Vec::new()),
            gateway: crate::gateway::Gateway::default(),
            backends: crate::backend::Backends::new(journal),
            me: std::sync::OnceLock::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn vault_file(&self) -> &VaultFile {
        &self.vault_file
    }

    /// The audit trail everything is recorded in.
    /// Keeps `w` among the secrets asked for (once per name; at most `cap`, the oldest
    /// dropped first).
    pub fn want(&self, w: jitc_protocol::SecretWanted, cap: usize) {
        let mut all = self
            .wanted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|x| x.name != w.name);
        all.push(w);
        let over = all.len().saturating_sub(cap);
        all.drain(..over);
    }

    /// The secrets asked for, oldest first.
    pub fn wanted(&self) -> Vec<jitc_protocol::SecretWanted> {
        self.wanted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn sandboxes(&self) -> &crate::sandbox::Sandboxes {
        &self.sandboxes
    }

    /// Sandbox `id` ended (its first process exited, and with it every process in it):
    /// its registration goes, on record.
    pub fn sandbox_ended(&self, id: u64) {
        if let Some(reg) = self.sandboxes.end(id) {
            tracing::info!(sandbox = id, "sandbox ended");
            self.audit.record_later(Event {
                profile: Some(reg.info.profile.clone()),
                argv: Some(reg.info.command.clone()),
                reason: Some(format!("sandbox {id} ended: its last process exited")),
                ..Event::new(EventKind::SandboxEnded)
            });
        }
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    pub fn idle(&self) -> &Idle {
        &self.idle
    }

    /// Wakes the expiry timer when the earliest expiry may have changed.
    pub fn leases_changed(&self) -> &Notify {
        &self.leases_changed
    }

    /// Where the policy file is.
    pub fn policy_path(&self) -> &std::path::Path {
        self.policy_source.path()
    }

    /// Wrong passphrases in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::SeqCst)
    }

    /// Notes the vault file as the agent just read or wrote it.
    pub fn set_vault_stamp(&self, stamp: Option<crate::vault::FileStamp>) {
        *self.vault_stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
    }

    /// The peer as records carry it, with `passphrases` (given in this request, and
    /// checked) concealed; the processes whose command lines held one are marked, so
    /// that later connections show them concealed too.
    pub fn hiding_passphrases(&self, session: &mut Session, passphrases: &[&[u8]]) -> PeerJson {
        self.screen_passphrases(session);
        let peer = session.peer_json_hiding(passphrases);
        let concealed = session.concealed_processes();
        if !concealed.is_empty() {
            let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
            for p in concealed {
                if let Some(start) = crate::peer::start_time(p.pid) {
                    marks.mark(p.pid, start, p);
                }
            }
        }
        peer
    }

    /// Shows the processes of `session`'s chain that held a passphrase given earlier
    /// as they were shown then (see `marks`).
    pub fn screen_passphrases(&self, session: &mut Session) {
        let marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        session.show_marked(&marks);
    }

    /// Shows `session` with the passphrases given before concealed, and — where its
    /// chain holds a value of `vault` — as pids alone, counted like a refusal (the
    /// chain could be a set of guesses): for the records of requests that are not
    /// leases (a lease refuses such a request, see `cmd::lease::screen`).
    pub fn screen_session(&self, session: &mut Session, vault: Option<&Vault>) {
        self.screen_passphrases(session);
        if let Some(vault) = vault
            && !session.found_by(vault.fingerprints()).is_empty()
        {
            session.withhold();
            self.denied(Event {
                withheld: Some(crate::audit::VALUE_WITHHELD),
                ..Event::default().peer(session.peer_json())
            });
        }
    }

    /// The policy in force, or the refusal every lease gets while it is broken — or
    /// gone, once a policy was in force. Each load is recorded (with the file's
    /// SHA-256), each failure as a `policy_error`. Also carries a changed `idle_lock`
    /// over to the idle timer (unless a flag fixed it).
    pub fn policy(&self) -> Result<Arc<Policy>, Refusal> {
        let (current, stamp) = self.policy_source.current_and_stamp();
        let vanished = !stamp.exists && current.is_ok() && self.required_policy().is_some();
        if let (Ok(_), Some(digest)) = (&current, stamp.sha256) {
            *self
                .policy_required
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(digest);
        }
        let current = match current {
            Ok(_) if vanished => Err(crate::policy::LoadError::Vanished(
                self.policy_source.path().to_path_buf(),
            )),
            other => other,
        };
        {
            let mut last = self
                .policy_recorded
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if *last != stamp.generation {
                *last = stamp.generation;
                let event = match (&current, stamp.sha256) {
                    (Err(e), _) => Event::new(EventKind::PolicyError).reason(e.to_string()),
                    (Ok(_), Some(digest)) => Event {
                        policy_sha256: Some(crate::audit::chain::hex(&digest)),
                        ..Event::new(EventKind::PolicyLoaded)
                            .reason(self.policy_source.path().display().to_string())
                    },
                    (Ok(_), None) => Event::new(EventKind::PolicyLoaded).reason(format!(
                        "no policy file at {}: the defaults apply",
                        self.policy_source.path().display()
                    )),
                };
                self.audit.record_later(event);
            }
        }
        let policy =
            current.map_err(|e| Refusal::new(ErrorCode::Refused, format!("refused: {e}")))?;
        if self.config.idle_lock.is_none() {
            self.idle.set_timeout(policy.defaults.idle_lock);
        }
        self.audit.set_retention(policy.defaults.audit_retention);
        Ok(policy)
    }

    /// The digest of the policy that must be there (one was in force), if any.
    pub fn required_policy(&self) -> Option<[u8; 32]> {
        *self
            .policy_required
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Takes over what the vault remembers of a policy in force (at unlock).
    pub fn remember_policy(&self, digest: Option<[u8; 32]>) {
        let mut r = self
            .policy_required
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = digest;
        }
    }

    /// Forgets the policy that was in force (`jitc policy reset`): the defaults apply.
    pub fn forget_policy(&self) {
        *self
            .policy_required
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The policy as `jitc status` shows it.
    pub fn policy_state(&self) -> jitc_protocol::PolicyState {
        let mut state = self.policy_source.state();
        if let Err(r) = self.policy() {
            state.error = Some(r.message.trim_start_matches("refused: ").to_owned());
        }
        state.approver_error = self
            .approver_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        state
    }

    /// Notes whether the approver could be started (`None`: it could).
    pub fn set_approver_error(&self, error: Option<String>) {
        *self
            .approver_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// The one-at-a-time gate for passphrase checks.
    pub async fn passphrase_gate(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.passphrase_gate.clone().lock_owned().await
    }

    /// Asks the server to shut down (`jitc stop`), saying who asked.
    pub fn request_stop(&self, by: String) {
        *self.stop_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(by);
        self.stop.notify_one();
    }

    /// Completes when `jitc stop` asked the agent to stop; with who asked.
    pub async fn stop_requested(&self) -> String {
        self.stop.notified().await;
        self.stop_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }

    pub fn approvals_mut(&self) -> std::sync::MutexGuard<'_, Approvals> {
        self.approvals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks for good: requests still in flight (an unlock inside Argon2, say) cannot
    /// put a key back afterwards.
    pub async fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        // An agent started later would not know them for sandboxes: they end with us
        // (their launchers end them too; this does not depend on one being alive).
        self.sandboxes.end_all();
        self.lock("the agent shut down").await;
    }

    /// Installs an opened vault, unless shutdown has begun.
    pub fn install(&self, slot: &mut Option<Vault>, vault: Vault) -> Result<(), Refusal> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(Refusal::new(
                ErrorCode::Unavailable,
                "the agent is shutting down; start it again with 'jitc agent'",
            ));
        }
        *slot = Some(vault);
        self.reset_failures();
        self.idle.touch();
        Ok(())
    }

    /// The routing `match`: one arm per request kind, each in its own module.
    /// `None` for the one request that has no answer (`Release`).
    pub async fn handle(&self, session: &mut Session, request: Request) -> Option<Outgoing> {
        // The records these write carry the requester's command lines: every value of
        // the vault and every passphrase given before is concealed in them first. (A
        // lease screens its own, naming the secrets it asks for; an unlock, once open.)
        let records_peer = matches!(
            request,
            Request::AddSecret(_)
                | Request::RemoveSecret { .. }
                | Request::Rename { .. }
                | Request::Describe { .. }
                | Request::Passwd { .. }
                | Request::Approve { .. }
                | Request::Deny { .. }
                | Request::AuditAccept { .. }
                | Request::Stop
                | Request::PolicyReset { .. }
                | Request::ImportSecrets(_)
                | Request::AddSecrets(_)
        );
        if records_peer {
            let slot = self.vault_slot().await;
            self.screen_session(session, slot.as_ref());
        }
        if let Some(sandbox) = session.sandbox.clone()
            && let Some(what) = cmd::sandbox::forbidden(&request)
        {
            let refusal = cmd::sandbox::refuse_inside(self, session, &sandbox, &request, what);
            return Some(Response::from(refusal).into());
        }
        let reply = match request {
            Request::Hello(_) => Err(Refusal::bad_input(
                "protocol error: a second Hello on one connection; upgrade jitc",
            )),
            Request::Status => cmd::status::apply(self, session).await,
            Request::Init { passphrase, kdf } => {
                cmd::init::apply(self, session, passphrase, kdf).await
            }
            Request::Unlock { passphrase } => cmd::unlock::apply(self, session, passphrase).await,
            Request::Lock => cmd::lock::apply(self).await,
            Request::AddSecret(add) => cmd::add::apply(self, session, add).await,
            Request::RemoveSecret { name, passphrase } => {
                cmd::remove::apply(self, session, &name, passphrase).await
            }
            Request::Rename {
                from,
                to,
                passphrase,
            } => cmd::rename::apply(self, session, &from, &to, passphrase).await,
            Request::Describe { name, description } => {
                cmd::add::describe(self, session, &name, description).await
            }
            Request::Passwd { old, new } => cmd::passwd::apply(self, session, old, new).await,
            Request::ListSecrets { after } => {
                return Some(match cmd::list::apply(self, &after).await {
                    Ok(frame) => Outgoing::Frame(frame),
                    Err(r) => Response::from(r).into(),
                });
            }
            Request::Lease(req) => cmd::lease::apply(self, session, req).await,
            Request::Release { lease } => {
                cmd::lease::release(self, session, lease);
                return None;
            }
            Request::Guard { lease } => {
                cmd::lease::guard(self, session, lease);
                Ok(Response::Done)
            }
            Request::ListLeases { after } => cmd::leases::list(self, session, after),
            Request::Revoke { lease } => cmd::leases::revoke(self, session, lease),
            Request::ListPending { after } => cmd::approve::pending(self, after),
            Request::Approve { id, passphrase } => {
                cmd::approve::approve(self, session, id, passphrase).await
            }
            Request::Deny { id } => cmd::approve::deny(self, session, id),
            Request::Explain(req) => cmd::explain::apply(self, session, req).await,
            Request::AuditVerify => cmd::audit::verify(self).await,
            Request::AuditAccept { passphrase } => {
                cmd::audit::accept(self, session, passphrase).await
            }
            Request::Stop => cmd::lock::stop(self, session),
            Request::PolicyReset { passphrase } => {
                cmd::explain::reset(self, session, passphrase).await
            }
            Request::RegisterSandbox(req) => cmd::sandbox::register(self, session, req).await,
            Request::RequestSecret(w) => cmd::requested::request(self, session, w).await,
            Request::ListRequested => cmd::requested::list(self).await,
            Request::ListBackend { backend, path } => {
                crate::backend::list(self, &backend, &path).await
            }
            Request::ImportSecrets(req) => cmd::import::apply(self, session, req).await,
            Request::AddSecrets(req) => cmd::add::batch(self, session, req).await,
        };
        Some(reply.unwrap_or_else(Response::from).into())
    }

    /// The vault slot, locked or not.
    pub async fn vault_slot(&self) -> MutexGuard<'_, Option<Vault>> {
        self.vault.lock().await
    }

    /// The unlocked vault, or the refusal a locked one deserves. Counts as use.
    pub async fn unlocked(&self) -> Result<MutexGuard<'_, Option<Vault>>, Refusal> {
        let guard = self.vault.lock().await;
        if guard.is_none() {
            return Err(self.locked_refusal());
        }
        self.idle.touch();
        Ok(guard)
    }

    /// Why a request that needs the vault cannot be served now.
    pub fn locked_refusal(&self) -> Refusal {
        if self.vault_file.exists() {
            Refusal::locked()
        } else {
            Refusal::no_vault(&self.vault_file)
        }
    }

    /// Writes what changed, durably, off the async threads: a journal record, or a
    /// snapshot when one is due. A vault file replaced behind the agent gets a
    /// snapshot (as before the journal: the change is not lost in a journal that does
    /// not continue the file there now).
    pub async fn save(&self, vault: &mut Vault) -> Result<(), Refusal> {
        self.write_vault(vault).await
    }

    /// Saves bookkeeping (the audit checkpoint, first uses) into the vault. Skipped
    /// when the file is not
    /// the one the agent last read or wrote (someone restored or replaced it): nothing
    /// the user put there is overwritten for bookkeeping's sake.
    pub async fn save_checkpoint(&self, vault: &mut Vault) -> Result<(), Refusal> {
        if !self.vault_file_is_ours() {
            tracing::warn!(
                vault = %self.vault_file.path().display(),
                "the vault file changed behind the agent; not saving the audit checkpoint into it"
            );
            return Ok(());
        }
        self.write_vault(vault).await
    }

    /// Whether the vault file is the one the agent last read or wrote.
    pub fn vault_file_is_ours(&self) -> bool {
        let known = *self.vault_stamp.lock().unwrap_or_else(|p| p.into_inner());
        known.is_some() && known == self.vault_file.stamp()
    }

    /// Notes the vault file as it is now: the agent's own.
    pub fn note_vault_file(&self) {
        *self.vault_stamp.lock().unwrap_or_else(|p| p.into_inner()) = self.vault_file.stamp();
    }

    async fn write_vault(&self, vault: &mut Vault) -> Result<(), Refusal> {
        self.checkpoint(vault);
        let ours = self.vault_file_is_ours();
        loop {
            let how = vault
                .save_bytes(!ours)
                .map_err(|e| Refusal::from_vault(&self.vault_file, e))?;
            let file = self.vault_file.clone();
            let (how, written) = tokio::task::spawn_blocking(move || {
                let written = match &how {
                    SaveBytes::Append {
                        header,
                        record,
                        expect,
                    } => file.append_journal(header, record, *expect),
                    SaveBytes::Snapshot { bytes, .. } => {
                        file.write_atomic(bytes).map(|()| bytes.len() as u64)
                    }
                };
                (how, written)
            })
            .await
            .map_err(|_| Refusal::internal("saving the vault"))?;
            match (written, &how) {
                (Ok(len), _) => {
                    vault.saved(&how, len);
                    if let SaveBytes::Snapshot { .. } = how {
                        self.note_vault_file();
                    }
                    return Ok(());
                }
                // A journal that cannot take the record: a snapshot settles it.
                (Err(e), SaveBytes::Append { .. }) => {
                    tracing::warn!(error = %e, "cannot append to the vault's journal; writing a snapshot instead");
                    vault.save_failed();
                }
                (Err(e), SaveBytes::Snapshot { .. }) => {
                    vault.save_failed();
                    return Err(Refusal::from_file(e));
                }
            }
        }
    }

    /// Copies the audit trail's latest checkpoint into the vault (saved with it), so a
    /// log whose tail is cut off while the agent is down is still caught; and what the
    /// agent must remember across restarts (a policy in force, the audit sidecar).
    fn checkpoint(&self, vault: &mut Vault) {
        if let Some((seq, tag)) = self.audit.last_keyed()
            && vault.audit_checkpoint().is_none_or(|c| c.seq < seq)
        {
            vault.set_audit_checkpoint(Some(crate::vault::AuditCheckpoint { seq, tag }));
        }
        let policy = self.required_policy();
        let sidecar = self.audit.sidecar_written() || vault.bookkeeping().audit_sidecar;
        let b = vault.bookkeeping_mut();
        b.policy = policy;
        b.audit_sidecar = sidecar;
    }

    /// Saves what the vault must remember (a policy newly in force), at once: an agent
    /// killed now must not come back without it.
    pub async fn persist_bookkeeping(&self, vault: &mut Vault) {
        let wanted = self.required_policy();
        if vault.bookkeeping().policy != wanted
            && let Err(e) = self.save_checkpoint(vault).await
        {
            tracing::warn!(error = %e.message, "cannot save the policy digest into the vault");
        }
    }

    /// Wipes the key and every value from memory and ends every lease.
    pub async fn lock(&self, reason: &str) -> bool {
        let mut slot = self.vault.lock().await;
        let vault = slot.take();
        let was_unlocked = vault.is_some();
        // Approvals given for the unlocked vault do not outlive it; nor does the
        // gateway's CA key.
        self.approvals_mut().forget_all();
        self.gateway.forget();
        self.backends.forget();
        let ended = self.leases_mut().end_all(reason);
        let any_ended = !ended.is_empty();
        if self.shutting_down.load(Ordering::SeqCst) {
            // No agent will be there to wait out the grace: the holders stop them.
            for lease in &ended {
                self.record_ended(lease, reason);
            }
        } else {
            self.ended_by_agent(ended, reason);
        }
        if let Some(mut vault) = vault {
            // Written while the key is still there, so these lines are sealed; then the
            // vault keeps the checkpoint of the last of them, so a log cut back while
            // the agent is locked or down is caught.
            let locked = self
                .audit
                .record(Event::new(EventKind::Lock).reason(reason))
                .await;
            if locked.is_ok()
                && self.vault_file.exists()
                && let Err(e) = self.save_checkpoint(&mut vault).await
            {
                tracing::warn!(error = %e.message, "cannot save the audit checkpoint at lock");
            }
            self.audit.set_key(None);
            drop(vault);
        }
        drop(slot);
        if was_unlocked {
            // Off the async thread: trimming a large heap takes milliseconds.
            tokio::task::spawn_blocking(crate::hardening::release_freed_memory);
        }
        self.leases_changed.notify_one();
        if was_unlocked || any_ended {
            tracing::info!(leases_ended = any_ended, reason, "vault locked");
        }
        was_unlocked
    }

    /// Records that a change already on record (`kind` of `secret`) did not take effect
    /// after all: the vault could not be changed or saved.
    pub fn record_not_done(&self, kind: EventKind, secret: &str, why: &str) {
        self.record_not_done_all(kind, &[secret.to_owned()], why);
    }

    /// `record_not_done` for a change to several secrets at once.
    pub fn record_not_done_all(&self, kind: EventKind, secrets: &[String], why: &str) {
        self.audit.record_later(Event {
            secrets: secrets.to_vec(),
            decision: Some("failed"),
            ..Event::new(kind).reason(format!("not done: {why}"))
        });
    }

    /// Records that `lease` ended, and why.
    pub fn record_ended(&self, lease: &Lease, reason: &str) {
        self.audit.record_later(Event {
            lease: Some(lease.id),
            profile: lease.profile.clone(),
            ..Event::new(EventKind::LeaseEnded)
                .request(&lease.request)
                .reason(reason)
        });
    }

    /// Leases the agent ended (expiry, revoke, lock): recorded, and their commands
    /// stopped by the agent itself if their holders have not done it within the grace
    /// they have (a frozen `jitc` cannot keep a command running past its lease).
    pub fn ended_by_agent(&self, ended: Vec<Lease>, reason: &str) {
        for mut lease in ended {
            self.record_ended(&lease, reason);
            for guard in lease.guards.drain(..) {
                guard.kill_after(crate::procs::HOLDER_GRACE);
            }
        }
    }

    pub fn leases_mut(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Releases whatever a closing connection still holds.
    pub fn release_session(&self, session: &mut Session) {
        let ended: Vec<Lease> = {
            let mut leases = self.leases_mut();
            session
                .leases
                .drain(..)
                .filter_map(|id| leases.remove(id))
                .collect()
        };
        for lease in &ended {
            tracing::debug!(lease = lease.id, "lease released (connection closed)");
            self.record_ended(lease, "the connection closed");
            // The holder is gone without releasing it (killed?): nothing else will
            // stop its command now.
            for guard in &lease.guards {
                guard.kill();
            }
        }
        self.idle.touch();
    }

    /// The custody-free gateway.
    pub fn gateway(&self) -> &crate::gateway::Gateway {
        &self.gateway
    }

    /// The policy's backends, as the agent talks to them.
    pub fn backends(&self) -> &crate::backend::Backends {
        &self.backends
    }

    /// Tells the agent where it lives (`server::run` does), for tasks that outlive a
    /// request.
    pub fn set_me(self: &Arc<Self>) {
        let _ = self.me.set(Arc::downgrade(self));
    }

    pub fn me(&self) -> std::sync::Weak<Agent> {
        self.me.get().cloned().unwrap_or_default()
    }

    /// The anomaly rules.
    pub fn detector(&self) -> &crate::anomaly::Detector {
        &self.detector
    }

    /// Raises `anomaly` if there is one (see `raise`). `base` is copied only then: the
    /// checks run on every grant, and a lease's record is mostly its chain.
    pub fn raise_if(&self, anomaly: Option<crate::anomaly::Anomaly>, base: &Event) {
        if let Some(a) = anomaly {
            self.raise(a, base.clone());
        }
    }

    /// Records an anomaly (and announces it through the policy's `alert_command`).
    pub fn raise(&self, anomaly: crate::anomaly::Anomaly, base: Event) {
        let crate::anomaly::Anomaly { kind, description } = anomaly;
        tracing::warn!(kind = kind.as_str(), "{description}");
        self.audit.record_later(Event {
            anomaly: Some(kind),
            reason: Some(description.clone()),
            event: Some(EventKind::Anomaly),
            ..base
        });
        let alert = self
            .policy_source
            .current()
            .ok()
            .and_then(|p| p.defaults.alert_command.clone());
        let allowed = || {
            let ok = self.detector.alert_allowed(kind);
            if !ok {
                tracing::warn!(
                    kind = kind.as_str(),
                    "alert command skipped: too many alerts this minute"
                );
            }
            ok
        };
        if let Some(argv) = alert
            && allowed()
        {
            let spawned = crate::socket::child_command(&argv[0])
                .args(&argv[1..])
                .arg(format!("jitc: {description}"))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            if let Err(e) = spawned {
                tracing::warn!(command = %argv[0], error = %e, "cannot run the alert command");
                // On record, where `jitc audit` shows it: alerts are not reaching anyone.
                self.audit
                    .record_later(Event::new(EventKind::PolicyError).reason(format!(
                    "alert_command {} cannot run ({e}); anomalies are recorded but not announced",
                    argv[0]
                )));
            }
        }
    }

    /// A wrong passphrase (at unlock, approve, accept, passwd…): recorded as `failed`
    /// (whose peer must already have the passphrase tried concealed), counted toward
    /// the `wrong_passphrases` anomaly, and answered only after the backoff. The
    /// passphrase gate stays held until the backoff is over, even if the requester
    /// hangs up and this future is dropped: hanging up cannot skip the delay.
    pub async fn wrong_passphrase(
        &self,
        gate: tokio::sync::OwnedMutexGuard<()>,
        failed: Event,
    ) -> Refusal {
        let failures = self.record_failure();
        tracing::warn!(
            event = failed.event.map_or("", EventKind::as_str),
            failures,
            "refused: wrong passphrase"
        );
        let peer = failed.peer.clone();
        self.audit.record_later(failed.reason("wrong passphrase"));
        self.raise_if(
            self.detector.wrong_passphrase(failures),
            &Event {
                peer,
                ..Event::default()
            },
        );
        let delay = backoff(failures);
        let held = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            drop(gate);
        });
        let _ = held.await;
        Refusal::from_vault(&self.vault_file, crate::vault::VaultError::WrongPassphrase)
    }

    /// A refused lease: repeated refusals for one requester are an anomaly. The
    /// requester is the profile it runs under (chosen by its ancestry, which it cannot
    /// change), or else the program that ran `jitc` — not the `jitc` binary every
    /// request comes through, nor the command, which the requester names. Refusals of
    /// a locked vault are no sign of anything.
    pub fn denied(&self, base: Event) {
        // Refusals because the vault is locked do not count.
        if base.withheld == Some(crate::audit::LOCKED_WITHHELD) {
            return;
        }
        // As recorded (values concealed).
        let who = match &base.profile {
            Some(p) => format!("profile {p}"),
            None if base.withheld.is_some() => {
                "programs whose command lines held a value of the vault".into()
            }
            None => base
                .peer
                .as_ref()
                .and_then(PeerJson::parent_exe)
                .unwrap_or_else(|| "an unknown program".into()),
        };
        self.raise_if(self.detector.denied(&who), &base);
    }

    fn record_failure(&self) -> u32 {
        self.failures.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn reset_failures(&self) {
        self.failures.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(7), Duration::from_millis(700));
        assert_eq!(backoff(100), Duration::from_secs(10));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(10));
    }
}

//! The tools `jitc mcp` offers, each a thin layer over what the CLI does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::process::{self, Capped, ExecArgs, LeaseEvent, Shared};
use crate::error::{Error, Result};

/// What the model is told about using these tools.
const INSTRUCTIONS: &str = "jitc keeps the user's secrets; you never see a value, and you must never ask the user to paste one. \
Use list_secrets to see what exists and whether you may use it. To run a command that needs secrets, call run_with_secrets \
(or start_with_secrets for servers and watchers) with the secret names or jitc://NAME references: values go into that command's \
environment and are masked in its output. Approval happens out of band: when a call waits, tell the user to run the `jitc approve N` \
the result names. If a secret is missing, call request_secret and tell the user the command it returns. Never read .env files \
for secrets: scan_for_secrets finds them, and import_env_file moves them into jitc after the user approves.";

/// Bytes of each output stream a result carries (the first and last halves).
const OUTPUT_CAP: usize = 64 << 10;
/// Bytes `read_output` returns at most per call.
const READ_CAP: usize = 64 << 10;
/// Default and largest `timeout_s`.
const DEFAULT_TIMEOUT: u64 = 120;
const MAX_TIMEOUT: u64 = 3600;
/// How long `jitc exec` has to end its command after SIGTERM.
const GRACE: Duration = Duration::from_secs(8);
/// How long a finished command's output is still read (what it left behind holds the
/// pipes open until it is killed).
const DRAIN: Duration = Duration::from_secs(1);

/// A command started with `start_with_secrets`.
struct Running {
    /// `jitc exec`'s pid (kept alive by `reap`).
    pid: u32,
    child: Arc<tokio::sync::Mutex<tokio::process::Child>>,
    stdout: Shared,
    stderr: Shared,
    lease: Arc<Mutex<Option<u64>>>,
    exit: Arc<Mutex<Option<i32>>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

#[derive(Clone)]
pub struct Jitc {
    tool_router: ToolRouter<Self>,
    runs: Arc<Semaphore>,
    max_runs: usize,
    /// Leases this server's commands hold or held (its own, for list and revoke).
    leases: Arc<Mutex<HashSet<u64>>>,
    running: Arc<Mutex<HashMap<u64, Running>>>,
    next: Arc<AtomicU64>,
    /// Every `jitc exec` this server runs now (what `reap` must not touch).
    live: Arc<Mutex<HashSet<u32>>>,
}

// ---- arguments and results ----

#[derive(Debug, Serialize, JsonSchema)]
pub struct SecretView {
    /// The secret's name (use it in `secrets`, or as jitc://NAME).
    pub name: String,
    pub description: Option<String>,
    /// The variable `secrets: [name]` puts it in.
    pub env_var: String,
    /// For a command run by this client: "granted", "needs approval" or "refused".
    pub decision: String,
    /// Why, when it needs approval or is refused.
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretView>,
    /// Secrets asked for with request_secret that the user has not added yet.
    pub requested: Vec<RequestedView>,
    /// The team's backends: their secrets go by reference, bao://NAME/PATH#FIELD, in
    /// run_with_secrets' `env` (e.g. {"PGPASSWORD": "bao://team/database/creds/ro#password"}).
    pub backends: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RequestedView {
    pub name: String,
    pub description: Option<String>,
    /// The command the user runs to add it.
    pub command: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RequestArgs {
    /// The name the secret should have, e.g. "stripe/test-key".
    pub name: String,
    /// What it is for, in one line (shown to the user).
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunArgs {
    /// The command and its arguments (no shell unless you name one, e.g. ["sh", "-c", "…"]).
    pub command: Vec<String>,
    /// Secret names to put in the environment, each as its variable (see list_secrets).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Variables to set from references: {"DATABASE_URL": "jitc://db/url"}.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A dotenv reference file (KEY=jitc://NAME lines, and plain settings).
    pub env_file: Option<String>,
    /// Directory to run in (default: where the server runs).
    pub cwd: Option<String>,
    /// Text for the command's stdin (default: none).
    pub stdin: Option<String>,
    /// Seconds before the command is stopped (default 120, at most 3600).
    pub timeout_s: Option<u64>,
    /// How long the lease may last, e.g. "90s", "15m".
    pub ttl: Option<String>,
    /// What this is for, in a few words (shown to the user when approval is asked).
    pub task: Option<String>,
    /// Give secrets bound to hosts (list_secrets says which: gateway) as placeholders;
    /// jitc's gateway adds the real credential to the command's HTTPS requests for
    /// those hosts. Required for secrets whose custody is the gateway's.
    #[serde(default)]
    pub proxy: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RunResult {
    /// The command's exit code (None if it was stopped or never ran).
    pub exit_code: Option<i32>,
    /// Its output, with every leased value masked.
    pub stdout: String,
    pub stderr: String,
    /// Bytes left out of the middle of each stream (each is capped at 64 KiB).
    pub stdout_dropped: u64,
    pub stderr_dropped: u64,
    pub duration_ms: u64,
    /// The lease it ran under.
    pub lease: Option<u64>,
    /// Stopped at `timeout_s`.
    pub timed_out: bool,
    /// Why nothing ran (refused, or waiting for approval timed out), if so.
    pub refused: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Started {
    /// The process id to pass to read_output and stop_process.
    pub process: u64,
    pub lease: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadArgs {
    pub process: u64,
    /// "stdout" (default) or "stderr".
    pub stream: Option<String>,
    /// Where to read from: the `next_offset` of the last read (default 0).
    pub offset: Option<u64>,
    /// Milliseconds to wait for output when there is none yet (default 0, at most 30000).
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    pub text: String,
    pub next_offset: u64,
    /// Bytes before `offset` that are no longer kept (only the last MiB is).
    pub skipped: u64,
    pub running: bool,
    pub exit_code: Option<i32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProcessArgs {
    pub process: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Stopped {
    pub exit_code: Option<i32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct LeaseView {
    pub lease: u64,
    pub secrets: Vec<String>,
    pub command: String,
    pub expires: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct LeaseList {
    pub leases: Vec<LeaseView>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RevokeArgs {
    pub lease: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Revoked {
    pub revoked: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ImportArgs {
    /// The plaintext .env file.
    pub path: String,
    /// Prefix for the secret names: KEY becomes PREFIX+KEY (e.g. "myapp/").
    pub prefix: Option<String>,
    /// Where to write the reference file (KEY=jitc://NAME lines; default: PATH.jitc).
    pub reference_file: Option<String>,
    /// Store plain settings too (ports, hosts, flags), not only secret-looking values.
    pub all: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Imported {
    /// The secrets stored (names only).
    pub stored: Vec<String>,
    /// Keys kept as written in the reference file (plain settings).
    pub kept: Vec<String>,
    /// The reference file written.
    pub reference_file: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ScanArgs {
    /// A directory or file (default: where the server runs).
    pub path: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Finding {
    pub path: String,
    pub line: usize,
    /// What kind of credential it looks like; never the value.
    pub kind: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ScanResult {
    pub findings: Vec<Finding>,
    pub unreadable: usize,
    pub too_large: usize,
}

// ---- helpers ----

fn structured<T: Serialize>(out: &T, text: String, is_error: bool) -> CallToolResult {
    let value = serde_json::to_value(out).unwrap_or_default();
    let mut r = if is_error {
        CallToolResult::structured_error(value)
    } else {
        CallToolResult::structured(value)
    };
    r.content = vec![ContentBlock::text(text)];
    r
}

fn failed(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// Why `jitc exec` ran nothing: its last `jitc: …` line on stderr.
fn why_not(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("jitc: "))
        .map(|l| l.trim_start_matches("jitc: ").to_owned())
        .unwrap_or_else(|| "jitc exec failed before the command ran".into())
}

/// Runs `f` with a connection to the agent, off the async threads.
async fn with_agent<T: Send + 'static>(
    f: impl FnOnce(&mut crate::Client) -> Result<T> + Send + 'static,
) -> std::result::Result<T, String> {
    tokio::task::spawn_blocking(move || {
        let mut client = crate::start::connect_or_start()?;
        f(&mut client)
    })
    .await
    .map_err(|e| format!("internal error ({e})"))?
    .map_err(|e: Error| e.to_string())
}

/// The task as records and prompts show it: which MCP client asked, and for what.
fn task_of(ctx: &RequestContext<RoleServer>, task: Option<&str>) -> String {
    let client = ctx
        .peer
        .peer_info()
        .map(|i| format!("{} {}", i.client_info.name, i.client_info.version))
        .unwrap_or_else(|| "an unnamed client".into());
    let client: String = client
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let mut t = format!("via MCP client '{client}'");
    if let Some(task) = task {
        let task: String = task
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        t.push_str(": ");
        t.push_str(&task);
    }
    // The agent takes one line of at most 512 bytes.
    while t.len() > 500 {
        t.pop();
    }
    t
}

fn exec_args(a: &RunArgs, task: String) -> ExecArgs {
    ExecArgs {
        command: a.command.clone(),
        secrets: a.secrets.clone(),
        env: a.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        env_file: a.env_file.clone(),
        cwd: a.cwd.clone(),
        ttl: a.ttl.clone(),
        task,
        proxy: a.proxy,
    }
}

async fn progress(ctx: &RequestContext<RoleServer>, step: f64, message: String) {
    if let Some(token) = ctx.meta.get_progress_token() {
        let _ = ctx
            .peer
            .notify_progress(ProgressNotificationParam::new(token, step).with_message(message))
            .await;
    }
}

fn approval_message(id: u64) -> String {
    format!(
        "waiting for the user's approval: ask them to run `jitc approve {id}` in their terminal (or to answer their approver's prompt)"
    )
}

#[tool_router]
impl Jitc {
    pub fn new(max_runs: usize) -> Jitc {
        Jitc {
            tool_router: Self::tool_router(),
            runs: Arc::new(Semaphore::new(max_runs)),
            max_runs,
            leases: Arc::default(),
            running: Arc::default(),
            next: Arc::new(AtomicU64::new(1)),
            live: Arc::default(),
        }
    }

    #[tool(
        title = "List secrets",
        description = "Names and descriptions of the user's secrets, the variable each goes into, and whether a command you run may have it (granted, needs approval, or refused, and why). Never a value.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<SecretList>()
    )]
    async fn list_secrets(&self) -> std::result::Result<CallToolResult, McpError> {
        let listed = with_agent(|c| {
            let secrets = c.list()?;
            let mut out = Vec::with_capacity(secrets.len());
            for s in secrets {
                let e = c.explain(jitc_protocol::LeaseRequest {
                    secrets: vec![s.name.clone()],
                    command: jitc_protocol::CommandLine {
                        path: "/usr/bin/env".into(),
                        argv: vec!["env".into()],
                        cwd: "/".into(),
                    },
                    task: None,
                    ttl_ms: None,
                    masking: true,
                    proxy: false,
                })?;
                let (decision, reason) = match (&e.refusal, e.approval.as_str()) {
                    (Some(r), _) => ("refused", Some(r.clone())),
                    (None, "never" | "remembered") => ("granted", None),
                    (None, a) => ("needs approval", Some(format!("approval: {a}"))),
                };
                out.push(SecretView {
                    env_var: jitc_protocol::names::env_var_for(&s.name),
                    name: s.name,
                    description: s.description,
                    decision: decision.into(),
                    reason,
                });
            }
            let requested: Vec<RequestedView> = c
                .requested()?
                .into_iter()
                .map(|w| RequestedView {
                    command: format!("jitc add {}", w.name),
                    name: w.name,
                    description: w.description,
                })
                .collect();
            let backends = c.status()?.backends;
            Ok((out, requested, backends))
        })
        .await;
        Ok(match listed {
            Ok((secrets, requested, backends)) => {
                let mut text = secrets
                    .iter()
                    .map(|s| format!("{} ({}) — {}", s.name, s.env_var, s.decision))
                    .collect::<Vec<_>>()
                    .join("\n");
                for r in &requested {
                    text.push_str(&format!("\n{} — requested, not added yet", r.name));
                }
                for b in &backends {
                    text.push_str(&format!(
                        "\nbackend '{b}': reference its secrets as bao://{b}/PATH#FIELD in env"
                    ));
                }
                structured(
                    &SecretList {
                        secrets,
                        requested,
                        backends,
                    },
                    text,
                    false,
                )
            }
            Err(e) => failed(e),
        })
    }

    #[tool(
        title = "Run a command with secrets",
        description = "Runs a command with the named secrets in its environment, under a lease the user's policy judges (it may wait for the user's approval). Output is captured with every value masked; each stream is capped at 64 KiB (head and tail). Returns the exit code. A non-zero exit or a refusal is an error result.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true),
        output_schema = schema_for_output::<RunResult>()
    )]
    async fn run_with_secrets(
        &self,
        Parameters(args): Parameters<RunArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let timeout = Duration::from_secs(
            args.timeout_s
                .unwrap_or(DEFAULT_TIMEOUT)
                .clamp(1, MAX_TIMEOUT),
        );
        let started = Instant::now();
        let (mut spawned, _permit, exec_pid) = match self.begin(&args, &ctx) {
            Ok(b) => b,
            Err(refused) => return Ok(refused),
        };
        let stdout = Arc::new(Mutex::new(Capped::new(OUTPUT_CAP)));
        let stderr = Arc::new(Mutex::new(Capped::new(OUTPUT_CAP)));
        let out = spawned
            .child
            .stdout
            .take()
            .map(|o| tokio::spawn(process::capture(o, stdout.clone())));
        let err = spawned
            .child
            .stderr
            .take()
            .map(|e| tokio::spawn(process::capture(e, stderr.clone())));
        let mut lease = None;
        let mut timed_out = false;
        let mut step = 0.0;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let status = loop {
            tokio::select! {
                status = spawned.child.wait() => break status.ok(),
                Some(ev) = spawned.events.recv() => match ev {
                    LeaseEvent::Waiting(id) => {
                        step += 1.0;
                        progress(&ctx, step, approval_message(id)).await;
                    }
                    LeaseEvent::Granted(id) => {
                        lease = Some(id);
                        self.leases.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
                        step += 1.0;
                        progress(&ctx, step, format!("lease {id} granted; the command runs")).await;
                    }
                },
                () = &mut deadline => {
                    timed_out = true;
                    self.live(exec_pid, false);
                    self.end(&mut spawned.child, lease).await;
                    break None;
                }
                () = ctx.ct.cancelled() => {
                    self.live(exec_pid, false);
                    self.end(&mut spawned.child, lease).await;
                    return Err(McpError::internal_error("cancelled", None));
                }
            }
        };
        // A grant reported just before the exit.
        while let Ok(ev) = spawned.events.try_recv() {
            if let LeaseEvent::Granted(id) = ev {
                lease = Some(id);
            }
        }
        // What the command left behind (it holds the output pipes open) ends now; the
        // output is read to its end, or for a second more at most.
        self.live(exec_pid, false);
        self.reap();
        for task in [out, err].into_iter().flatten() {
            let _ = tokio::time::timeout(DRAIN, task).await;
        }
        let stdout = std::mem::take(&mut *stdout.lock().unwrap_or_else(PoisonError::into_inner));
        let stderr = std::mem::take(&mut *stderr.lock().unwrap_or_else(PoisonError::into_inner));
        let code = status.and_then(|s| s.code());
        let needs_lease =
            !args.secrets.is_empty() || !args.env.is_empty() || args.env_file.is_some();
        let stderr_text = stderr.text();
        // Nothing leased when one was asked for: jitc refused, and its last line says why.
        let refused = (needs_lease && lease.is_none() && !timed_out).then(|| why_not(&stderr_text));
        let result = RunResult {
            exit_code: if refused.is_some() { None } else { code },
            stdout: stdout.text(),
            stderr: stderr_text,
            stdout_dropped: stdout.dropped,
            stderr_dropped: stderr.dropped,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            lease,
            timed_out,
            refused: refused.clone(),
        };
        let (text, is_error) = match (&refused, timed_out, code) {
            (Some(r), _, _) => (format!("not run: {r}"), true),
            (None, true, _) => (
                format!("stopped after {} s (timeout_s)", timeout.as_secs()),
                true,
            ),
            (None, false, Some(0)) => (format!("exit 0\n{}", result.stdout), false),
            (None, false, c) => (
                format!(
                    "exit {}\nstdout:\n{}\nstderr:\n{}",
                    c.map_or("?".to_owned(), |c| c.to_string()),
                    result.stdout,
                    result.stderr
                ),
                true,
            ),
        };
        Ok(structured(&result, text, is_error))
    }

    #[tool(
        title = "Start a command with secrets",
        description = "Starts a long-running command (a dev server, a watcher) with secrets, as run_with_secrets does, and returns at once with a process id; read its masked output with read_output and end it with stop_process. It ends when this session ends.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true),
        output_schema = schema_for_output::<Started>()
    )]
    async fn start_with_secrets(
        &self,
        Parameters(args): Parameters<RunArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let (mut spawned, permit, exec_pid) = match self.begin(&args, &ctx) {
            Ok(b) => b,
            Err(refused) => return Ok(refused),
        };
        let stdout: Shared = Arc::default();
        let stderr: Shared = Arc::default();
        if let Some(o) = spawned.child.stdout.take() {
            process::follow(o, stdout.clone());
        }
        if let Some(e) = spawned.child.stderr.take() {
            process::follow(e, stderr.clone());
        }
        let needs_lease =
            !args.secrets.is_empty() || !args.env.is_empty() || args.env_file.is_some();
        // Wait for the grant (or for jitc exec to give up) before saying it started.
        let mut lease = None;
        let mut step = 0.0;
        if needs_lease {
            loop {
                tokio::select! {
                    ev = spawned.events.recv() => match ev {
                        Some(LeaseEvent::Waiting(id)) => {
                            step += 1.0;
                            progress(&ctx, step, approval_message(id)).await;
                        }
                        Some(LeaseEvent::Granted(id)) => {
                            lease = Some(id);
                            self.leases.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
                            break;
                        }
                        None => break,
                    },
                    () = ctx.ct.cancelled() => {
                        self.live(exec_pid, false);
                        self.end(&mut spawned.child, lease).await;
                        return Err(McpError::internal_error("cancelled", None));
                    }
                }
            }
            if lease.is_none() {
                let _ = spawned.child.wait().await;
                self.live(exec_pid, false);
                self.reap();
                let text = {
                    let s = stderr.0.lock().unwrap_or_else(PoisonError::into_inner);
                    String::from_utf8_lossy(&s.data.iter().copied().collect::<Vec<u8>>())
                        .into_owned()
                };
                let why = why_not(&text);
                return Ok(failed(format!("not started: {why}")));
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let pid = spawned.child.id().unwrap_or(0);
        let child = Arc::new(tokio::sync::Mutex::new(spawned.child));
        let exit: Arc<Mutex<Option<i32>>> = Arc::default();
        {
            let child = child.clone();
            let exit = exit.clone();
            tokio::spawn(async move {
                // Polls rather than holding the lock across the wait, so stop_process can
                // signal it meanwhile.
                loop {
                    {
                        let mut c = child.lock().await;
                        if let Ok(Some(s)) = c.try_wait() {
                            *exit.lock().unwrap_or_else(PoisonError::into_inner) =
                                Some(s.code().unwrap_or(-1));
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                Running {
                    pid,
                    child,
                    stdout,
                    stderr,
                    lease: Arc::new(Mutex::new(lease)),
                    exit,
                    _permit: permit,
                },
            );
        Ok(structured(
            &Started { process: id, lease },
            format!("started process {id}"),
            false,
        ))
    }

    #[tool(
        title = "Read a started command's output",
        description = "Masked output of a command started with start_with_secrets, from an offset (the next_offset of the last read), waiting up to wait_ms for more when there is none yet.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<Output>()
    )]
    async fn read_output(
        &self,
        Parameters(args): Parameters<ReadArgs>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let found = {
            let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            running.get(&args.process).map(|r| {
                let stream = match args.stream.as_deref() {
                    Some("stderr") => r.stderr.clone(),
                    _ => r.stdout.clone(),
                };
                (stream, r.exit.clone())
            })
        };
        let Some((stream, exit)) = found else {
            return Ok(failed(format!(
                "no process {} was started in this session",
                args.process
            )));
        };
        let offset = args.offset.unwrap_or(0);
        let wait = Duration::from_millis(args.wait_ms.unwrap_or(0).min(30_000));
        let deadline = Instant::now() + wait;
        loop {
            let notified = stream.1.notified();
            let (text, next, skipped, closed) = {
                let s = stream.0.lock().unwrap_or_else(PoisonError::into_inner);
                let end = s.start + s.data.len() as u64;
                let from = offset.max(s.start);
                let skipped = from - offset.min(from);
                let at = usize::try_from(from - s.start)
                    .unwrap_or(usize::MAX)
                    .min(s.data.len());
                let take = (s.data.len() - at).min(READ_CAP);
                let bytes: Vec<u8> = s.data.iter().skip(at).take(take).copied().collect();
                (
                    bytes,
                    from + take as u64,
                    skipped,
                    s.closed && from + take as u64 >= end,
                )
            };
            let now = Instant::now();
            if !text.is_empty() || closed || now >= deadline {
                let exit_code = *exit.lock().unwrap_or_else(PoisonError::into_inner);
                let out = Output {
                    text: String::from_utf8_lossy(&text).into_owned(),
                    next_offset: next,
                    skipped,
                    running: exit_code.is_none(),
                    exit_code,
                };
                let summary = format!("{}\n(next_offset {next})", out.text);
                return Ok(structured(&out, summary, false));
            }
            let _ = tokio::time::timeout(deadline - now, notified).await;
        }
    }

    #[tool(
        title = "Stop a started command",
        description = "Ends a command started with start_with_secrets (its whole process group) and hands its lease back.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<Stopped>()
    )]
    async fn stop_process(
        &self,
        Parameters(args): Parameters<ProcessArgs>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let found = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&args.process);
        let Some(r) = found else {
            return Ok(failed(format!(
                "no process {} was started in this session",
                args.process
            )));
        };
        {
            let lease = *r.lease.lock().unwrap_or_else(PoisonError::into_inner);
            self.live(r.pid, false);
            let mut child = r.child.lock().await;
            self.end(&mut child, lease).await;
        }
        let code = *r.exit.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(structured(
            &Stopped { exit_code: code },
            format!("stopped process {}", args.process),
            false,
        ))
    }

    #[tool(
        title = "List this session's leases",
        description = "The active leases of commands this server ran: lease id, secrets, command, expiry. Never a value.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<LeaseList>()
    )]
    async fn list_leases(&self) -> std::result::Result<CallToolResult, McpError> {
        let mine = self
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let listed = with_agent(|c| c.leases()).await;
        Ok(match listed {
            Ok(all) => {
                let leases: Vec<LeaseView> = all
                    .into_iter()
                    .filter(|l| mine.contains(&l.id))
                    .map(|l| LeaseView {
                        lease: l.id,
                        secrets: l.scope.secrets,
                        command: l.scope.command,
                        expires: l.expires,
                    })
                    .collect();
                let text = format!("{} active", leases.len());
                structured(&LeaseList { leases }, text, false)
            }
            Err(e) => failed(e),
        })
    }

    #[tool(
        title = "Revoke a lease",
        description = "Ends a lease of this session's now; its command is stopped.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<Revoked>()
    )]
    async fn revoke_lease(
        &self,
        Parameters(args): Parameters<RevokeArgs>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let mine = self
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&args.lease);
        if !mine {
            return Ok(failed(format!(
                "lease {} is not one of this session's; see list_leases",
                args.lease
            )));
        }
        let id = args.lease;
        Ok(match with_agent(move |c| c.revoke(Some(id))).await {
            Ok(n) => structured(
                &Revoked { revoked: n },
                format!("revoked lease {id}"),
                false,
            ),
            Err(e) => failed(e),
        })
    }

    #[tool(
        title = "Import a .env file",
        description = "Moves the plaintext values of a .env file into jitc, after the user approves (out of band: progress says which `jitc approve N` to ask for), and writes a reference file (KEY=jitc://NAME) for run_with_secrets' env_file. Returns the names stored and the reference file's path, never a value. Never replaces an existing secret. The .env itself is left in place for the user to delete.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<Imported>()
    )]
    async fn import_env_file(
        &self,
        Parameters(args): Parameters<ImportArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let file = std::path::PathBuf::from(&args.path);
        let reference = args.reference_file.clone().map_or_else(
            || std::path::PathBuf::from(format!("{}.jitc", args.path)),
            std::path::PathBuf::from,
        );
        if reference.exists() {
            return Ok(failed(format!(
                "{} exists already; name another reference_file",
                reference.display()
            )));
        }
        let prefix = args.prefix.clone().unwrap_or_default();
        let all = args.all.unwrap_or(false);
        let prepared = match tokio::task::spawn_blocking({
            let file = file.clone();
            move || crate::import::prepare(&file, &prefix, all)
        })
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Ok(failed(e.to_string())),
            Err(e) => return Ok(failed(format!("internal error ({e})"))),
        };
        let stored: Vec<String> = prepared.to_store.iter().map(|(n, _)| n.clone()).collect();
        if !stored.is_empty() {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let shown = prepared.shown.clone();
            let entries: Vec<jitc_protocol::LeasedValue> = prepared
                .to_store
                .iter()
                .map(|(name, value)| jitc_protocol::LeasedValue {
                    name: name.clone(),
                    value: jitc_protocol::SecretBytes::from_slice(value.as_bytes()),
                })
                .collect();
            let job = with_agent(move |c| {
                c.import_secrets(&shown, entries, |id| {
                    let _ = tx.send(id);
                })
            });
            tokio::pin!(job);
            let mut step = 0.0;
            let done = loop {
                tokio::select! {
                    r = &mut job => break r,
                    Some(id) = rx.recv() => {
                        step += 1.0;
                        progress(&ctx, step, approval_message(id)).await;
                    }
                }
            };
            if let Err(e) = done {
                return Ok(failed(format!("not imported: {e}")));
            }
        }
        // Made, never opened: a file or symlink put there meanwhile is not written through.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&reference)
            .and_then(|mut f| std::io::Write::write_all(&mut f, prepared.reference.as_bytes()));
        if let Err(e) = written {
            return Ok(failed(format!(
                "imported {}, but cannot write the reference file {} ({e})",
                stored.join(", "),
                reference.display()
            )));
        }
        let out = Imported {
            stored,
            kept: prepared.kept,
            reference_file: reference.display().to_string(),
        };
        let text = format!(
            "stored {} in jitc; the reference file is {} (use it as env_file); {} still holds the values in plain text: ask the user to delete it",
            if out.stored.is_empty() {
                "nothing".to_owned()
            } else {
                out.stored.join(", ")
            },
            out.reference_file,
            prepared.shown
        );
        Ok(structured(&out, text, false))
    }

    #[tool(
        title = "Request a secret",
        description = "Asks the user for a secret that does not exist yet: records its name and what it is for, and returns the command the user runs to add it (the value never passes through here). list_secrets shows it as requested until it is added.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<RequestedView>()
    )]
    async fn request_secret(
        &self,
        Parameters(args): Parameters<RequestArgs>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let name = args.name.clone();
        let description = args.description.clone();
        Ok(
            match with_agent(move |c| c.request_secret(&name, description)).await {
                Ok(()) => {
                    let view = RequestedView {
                        command: format!("jitc add {}", args.name),
                        name: args.name,
                        description: args.description,
                    };
                    let text = format!(
                        "asked for '{}': tell the user to run `{}` in their terminal (the value is typed there, never here)",
                        view.name, view.command
                    );
                    structured(&view, text, false)
                }
                Err(e) => failed(e),
            },
        )
    }

    #[tool(
        title = "Scan for plaintext secrets",
        description = "Looks for plaintext credentials in a directory or file (.env files, keys, tokens in config): path, line and kind of each — never the value or any part of it.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<ScanResult>()
    )]
    async fn scan_for_secrets(
        &self,
        Parameters(args): Parameters<ScanArgs>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let path = std::path::PathBuf::from(args.path.unwrap_or_else(|| ".".into()));
        let report = tokio::task::spawn_blocking(move || crate::scan::scan(&path)).await;
        Ok(match report {
            Ok(Ok(r)) => {
                let findings: Vec<Finding> = r
                    .findings
                    .into_iter()
                    .map(|f| Finding {
                        path: f.path,
                        line: f.line,
                        kind: f.kind,
                    })
                    .collect();
                let text = findings
                    .iter()
                    .map(|f| format!("{}:{} {}", f.path, f.line, f.kind))
                    .collect::<Vec<_>>()
                    .join("\n");
                structured(
                    &ScanResult {
                        findings,
                        unreadable: r.unreadable,
                        too_large: r.too_large,
                    },
                    text,
                    false,
                )
            }
            Ok(Err(e)) => failed(e.to_string()),
            Err(e) => failed(format!("internal error ({e})")),
        })
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Jitc {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("jitc", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

impl Jitc {
    /// Ends every started command (the session is over).
    async fn stop_all(&self) {
        let all: Vec<Running> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in all {
            let lease = *r.lease.lock().unwrap_or_else(PoisonError::into_inner);
            self.live(r.pid, false);
            let mut child = r.child.lock().await;
            self.end(&mut child, lease).await;
        }
        process::reap_strays(&[]);
    }

    /// Ends a command: its lease first, through the agent (which stops its process
    /// groups however they treat signals), then `jitc exec` itself, then whatever it
    /// left behind.
    async fn end(&self, child: &mut tokio::process::Child, lease: Option<u64>) {
        if let Some(id) = lease {
            let _ = with_agent(move |c| c.revoke(Some(id))).await;
            if tokio::time::timeout(GRACE, child.wait()).await.is_ok() {
                self.reap();
                return;
            }
        }
        process::terminate(child, GRACE).await;
        self.reap();
    }

    /// Starts `jitc exec` for `args` (with a run slot, its stdin fed): the started
    /// process, the slot, and its pid; or the result that says why not.
    #[allow(clippy::result_large_err)]
    fn begin(
        &self,
        args: &RunArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> std::result::Result<
        (process::Spawned, tokio::sync::OwnedSemaphorePermit, u32),
        CallToolResult,
    > {
        if args.command.is_empty() {
            return Err(failed(
                "command is empty: give the program and its arguments as a list",
            ));
        }
        let Ok(permit) = self.runs.clone().try_acquire_owned() else {
            return Err(failed(format!(
                "{} commands are running already (the most this server runs at once); wait for one to end, or stop one",
                self.max_runs
            )));
        };
        let exec = exec_args(args, task_of(ctx, args.task.as_deref()));
        let mut spawned = process::spawn(&exec, args.stdin.is_some())
            .map_err(|e| failed(format!("cannot start jitc exec ({e})")))?;
        let pid = spawned.child.id().unwrap_or(0);
        self.live(pid, true);
        if let (Some(text), Some(mut stdin)) = (args.stdin.clone(), spawned.child.stdin.take()) {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = stdin.write_all(text.as_bytes()).await;
            });
        }
        Ok((spawned, permit, pid))
    }

    /// Kills what finished commands left behind (keeps every running `jitc exec`).
    fn reap(&self) {
        let keep: Vec<u32> = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        process::reap_strays(&keep);
    }

    fn live(&self, pid: u32, alive: bool) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if alive {
            live.insert(pid);
        } else {
            live.remove(&pid);
        }
    }
}

/// Serves one session on stdin/stdout.
pub async fn serve(max_runs: usize) -> Result<u8> {
    let server = Jitc::new(max_runs);
    let keep = server.clone();
    let service = match server.serve(rmcp::transport::stdio()).await {
        Ok(s) => s,
        // The client went away before the session began: nothing to do.
        Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => return Ok(0),
        Err(e) => {
            return Err(Error::failure(format!(
                "the MCP session did not start ({e})"
            )));
        }
    };
    let _ = service.waiting().await;
    keep.stop_all().await;
    Ok(0)
}

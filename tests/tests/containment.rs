//! Containment of what a command is given (issue 9, items 1, 2 and 10): a lease's end
//! stops everything the command started — however the lease ends, and even when `jitc`
//! is killed or frozen; `jitc exec` cannot be dumped or read while it holds values; and
//! loader hooks cannot ride into a command the policy pins. Everything here runs as an
//! ordinary user (uid 1000), agent and attacker alike.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use jitc_tests::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const VALUE: &str = "tok-containment-7f3a9c21e5";

fn setup() -> (TestEnv, Agent) {
    let env = TestEnv::new_as(USER);
    let agent = env.start_agent();
    env.init();
    env.add("T", VALUE);
    (env, agent)
}

/// Pids of every process whose environment holds `value` (read as root: the test can
/// see them all).
fn holders(value: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(env) = fs::read(e.path().join("environ"))
            && env.windows(value.len()).any(|w| w == value.as_bytes())
        {
            out.push(pid);
        }
    }
    out
}

/// Waits until no process holds `value` (the kernel reaps asynchronously); panics with
/// the survivors if some outlive the deadline.
#[track_caller]
fn no_holder_survives(value: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = holders(value);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes still hold the value: {:?}",
            left.iter()
                .map(|p| fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The command every case runs: a background job and a foreground one, both holding
/// the value, and one that leaves the process group (a daemon of its own session).
const SCRIPT: &str = "sleep 300 & setsid sleep 301 & echo ready; sleep 302";
/// The command line of the one that left the group, as /proc shows it.
const DAEMON: &str = "sleep\x00301";

fn start(env: &TestEnv, extra: &[&str]) -> Background {
    let mut args = vec!["exec", "-s", "T"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", SCRIPT]);
    let bg = env.spawn(&args);
    bg.expect_stdout("ready");
    // All three hold it before anything ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    while holders(VALUE).len() < 4 {
        assert!(Instant::now() < deadline, "the command did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    bg
}

#[test]
fn no_process_holding_the_value_survives_the_end_of_its_lease() {
    let (env, _agent) = setup();
    // Expiry.
    let bg = start(&env, &["--ttl", "2s"]);
    let out = bg.wait();
    assert!(
        out.stderr
            .starts_with("jitc: lease expired after 2s; stopped the command")
    );
    no_holder_survives(VALUE);
    // Revoke.
    let bg = start(&env, &[]);
    env.run(&["revoke", "--all"], None).ok();
    bg.wait();
    no_holder_survives(VALUE);
    // Lock.
    let bg = start(&env, &[]);
    env.run(&["lock"], None).ok();
    bg.wait();
    no_holder_survives(VALUE);
    env.unlock().ok();
    // `kill -9` of jitc: the command dies with it (PR_SET_PDEATHSIG), and the agent,
    // seeing the holder gone without a release, kills the command's group.
    let bg = start(&env, &[]);
    kill(Pid::from_raw(bg.pid() as i32), Signal::SIGKILL).unwrap();
    bg.wait();
    // The daemon of its own session is jitc's to stop, and jitc is gone: it is the one
    // process that can outlive a killed jitc (the README says so). Everything in the
    // command's group goes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<String> = holders(VALUE)
            .iter()
            .map(|p| fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default())
            .collect();
        if left.iter().all(|c| c.starts_with(DAEMON)) {
            break;
        }
        assert!(Instant::now() < deadline, "survivors: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in holders(VALUE) {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
    }
    no_holder_survives(VALUE);
}

#[test]
fn a_frozen_jitc_cannot_keep_its_command_past_the_lease() {
    let (env, _agent) = setup();
    let bg = start(&env, &["--ttl", "1s"]);
    // Frozen: it cannot hear that the lease ended, nor stop anything.
    let jitc = Pid::from_raw(bg.pid() as i32);
    kill(jitc, Signal::SIGSTOP).unwrap();
    // The agent stops the command's group itself, after the grace it gives holders.
    let deadline = Instant::now() + Duration::from_secs(60);
    while holders(VALUE).iter().any(|p| {
        fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| !c.starts_with(DAEMON))
    }) {
        assert!(Instant::now() < deadline, "the command outlived its lease");
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(jitc, Signal::SIGCONT).unwrap();
    bg.wait();
    no_holder_survives(VALUE);
}

#[test]
fn jitc_exec_cannot_be_dumped_or_read_while_it_holds_values() {
    let (env, _agent) = setup();
    let bg = env.spawn(&[
        "exec",
        "-s",
        "T",
        "--",
        "sh",
        "-c",
        "echo ready; exec sleep 300",
    ]);
    bg.expect_stdout("ready");
    let jitc = bg.pid();
    let child = find_child_named(jitc, "sleep");
    // Another process of the same user cannot read jitc's memory or environment…
    let mut c = env.command("/usr/bin/python3");
    c.arg("-c").arg(format!(
        "import sys\nfor f in ('mem', 'environ'):\n    try:\n        open('/proc/{jitc}/' + f, 'rb').read(1)\n        print(f, 'readable')\n    except OSError as e:\n        print(f, 'denied', e.errno)\n"
    ));
    let out = run_with_stdin(c, None).ok();
    assert!(out.stdout.contains("mem denied 13"), "{}", out.stdout);
    assert!(out.stdout.contains("environ denied 13"), "{}", out.stdout);
    // …and it would write no core.
    let limits = fs::read_to_string(format!("/proc/{jitc}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
    // The command regains what a program normally has: dumpable, its core limit back.
    let own = fs::read_to_string("/proc/self/limits").unwrap();
    let own_core = own
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let child_limits = fs::read_to_string(format!("/proc/{child}/limits")).unwrap();
    assert!(child_limits.contains(own_core), "{child_limits}");
    let mut c = env.command("/usr/bin/python3");
    c.arg("-c").arg(format!(
        "open('/proc/{child}/environ', 'rb').read(1); print('ok')"
    ));
    run_with_stdin(c, None).ok();
    env.run(&["revoke", "--all"], None).ok();
    bg.wait();
}

/// A shared object that, preloaded, leaves a mark and dumps nothing (it only proves it
/// ran inside the command).
fn preload_library(env: &TestEnv) -> std::path::PathBuf {
    shared_library(
        env,
        "mark",
        "#define _GNU_SOURCE\n#include <errno.h>\n#include <stdio.h>\n#include <stdlib.h>\n__attribute__((constructor)) static void mark(void) { const char *p = getenv(\"MARK\"); if (p) { FILE *f = fopen(p, \"a\"); if (f) { fprintf(f, \"preloaded into %s\\n\", program_invocation_short_name); fclose(f); } } }\n",
    )
}

/// `NAME.so`, built by gcc from the C `source`, in the test's tree.
fn shared_library(env: &TestEnv, name: &str, source: &str) -> std::path::PathBuf {
    let src = env.root().join(format!("{name}.c"));
    fs::write(&src, source).unwrap();
    let so = env.root().join(format!("{name}.so"));
    let built = std::process::Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("gcc is needed to build the preload library (scripts/test.sh installs it)");
    assert!(built.success());
    so
}

#[test]
fn loader_hooks_do_not_ride_into_a_pinned_command() {
    let (env, _agent) = setup();
    let so = preload_library(&env);
    let mark = env.root().join("marks");
    fs::write(&mark, "").unwrap();
    env.give(&mark);
    env.set_env("MARK", &mark);
    env.set_env("LD_PRELOAD", &so);
    let into = |m: &Path, program: &str| {
        fs::read_to_string(m)
            .unwrap()
            .lines()
            .filter(|l| *l == format!("preloaded into {program}"))
            .count()
    };
    // Unpinned (no rule names a command): the environment is the caller's to set.
    env.run(&["exec", "-s", "T", "--", "/usr/bin/true"], None)
        .ok();
    assert_eq!(
        into(&mark, "true"),
        1,
        "the library runs where nothing pins the command"
    );
    // Pinned: the command runs without the requester's loader hooks (jitc itself, which
    // the requester started, is another matter: it holds nothing yet when it starts).
    env.write_policy("[[rule]]\nsecrets = [\"T\"]\ncommands = [\"true\"]\n");
    env.run(&["exec", "-s", "T", "--", "/usr/bin/true"], None)
        .ok();
    assert_eq!(
        into(&mark, "true"),
        1,
        "LD_PRELOAD reached the pinned command"
    );
    let bash_env = env.root().join("hook.sh");
    fs::write(&bash_env, format!("echo bash_env >> {}\n", mark.display())).unwrap();
    env.set_env("BASH_ENV", &bash_env);
    env.write_policy("[[rule]]\nsecrets = [\"T\"]\ncommands = [\"bash\"]\n");
    let out = env
        .run(&["exec", "-s", "T", "--", "bash", "-c", "echo ran"], None)
        .ok();
    assert_eq!(out.stdout, "ran\n");
    let text = fs::read_to_string(&mark).unwrap();
    assert!(!text.contains("bash_env"), "BASH_ENV ran: {text}");
    assert_eq!(into(&mark, "bash"), 0, "{text}");
}

#[test]
fn an_env_file_cannot_set_a_loader_hook() {
    let (env, _agent) = setup();
    let file = env.root().join(".env");
    fs::write(&file, "A=1\nLD_PRELOAD=/tmp/evil.so\n").unwrap();
    env.run(
        &[
            "exec",
            "--env-file",
            file.to_str().unwrap(),
            "-s",
            "T",
            "--",
            "true",
        ],
        None,
    )
    .code(65)
    .one_line_error()
    .says("line 2")
    .says("LD_PRELOAD");
    fs::write(&file, "PYTHONPATH=./evil\n").unwrap();
    env.run(
        &[
            "exec",
            "--env-file",
            file.to_str().unwrap(),
            "-s",
            "T",
            "--",
            "true",
        ],
        None,
    )
    .code(65)
    .says("PYTHONPATH");
    // Binding a secret to a hook by name is refused the same way: a value the requester
    // stored itself would run inside the command.
    for binding in [
        &["-e", "LD_PRELOAD=jitc://T"][..],
        &["--file", "BASH_ENV=jitc://T"][..],
        &["-e", "GIT_CONFIG_KEY_0=jitc://T"][..],
    ] {
        let mut args = vec!["exec"];
        args.extend_from_slice(binding);
        args.extend_from_slice(&["--", "true"]);
        env.run(&args, None).code(65).one_line_error().says("hook");
    }
}

/// Every command, not only `exec`, is out of reach of the user's other processes once
/// connected: `jitc add` waiting for the value (or a passphrase) on stdin cannot have
/// its memory read.
#[test]
fn every_jitc_is_undumpable_once_connected() {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let (env, _agent) = setup();
    let mut c = env.command(jitc_bin());
    c.args(["add", "waiting"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = spawn(&mut c).unwrap();
    let pid = child.id();
    // Running as the user (setpriv is done) and non-dumpable (its /proc files belong to
    // root): that is the event to wait for.
    let hardened = || {
        let as_user = fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| s.lines().any(|l| l.starts_with(&format!("Uid:\t{USER}\t"))));
        as_user && fs::metadata(format!("/proc/{pid}/fd")).is_ok_and(|m| m.uid() == 0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hardened() {
        assert!(Instant::now() < deadline, "jitc add never hardened itself");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut py = env.command("/usr/bin/python3");
    py.arg("-c").arg(format!(
        "try:\n    open('/proc/{pid}/mem', 'rb').read(1)\n    print('readable')\nexcept OSError as e:\n    print('denied', e.errno)\n"
    ));
    let out = run_with_stdin(py, None).ok();
    assert!(out.stdout.contains("denied 13"), "{}", out.stdout);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"value-of-waiting-1234").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// Review round 2, finding F: the kill the agent holds in reserve for a lease's
/// command (7 s after the lease ends) is not sent to a process group that merely has
/// the same number by then — jitc stopped the command, and the kernel handed the pid
/// to an unrelated job of the user (made to happen here with `ns_last_pid`).
#[test]
fn a_reused_group_number_is_not_killed() {
    let (env, agent) = setup();
    let bg = env.spawn(&[
        "exec",
        "-s",
        "T",
        "--",
        "sh",
        "-c",
        "echo ready; exec sleep 300",
    ]);
    bg.expect_stdout("ready");
    let leader = find_child_named(bg.pid(), "sleep");
    env.run(&["revoke", "--all"], None).ok();
    bg.wait();
    // The command's group is gone (jitc stopped it and reaped it)…
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{leader}")).exists() {
        assert!(Instant::now() < deadline, "the command outlived jitc");
        std::thread::sleep(Duration::from_millis(10));
    }
    // …and its number goes to a new group leader, a job of the user's.
    let victim = loop {
        fs::write("/proc/sys/kernel/ns_last_pid", (leader - 1).to_string()).unwrap();
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=1000",
            "--regid=1000",
            "--clear-groups",
            "sleep",
            "300",
        ]);
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let mut child = c.spawn().unwrap();
        if child.id() == leader {
            break child;
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            Instant::now() < deadline,
            "could not get pid {leader} again"
        );
    };
    let mut victim = victim;
    // The agent's reserve kill comes due; it sees the number is someone else's.
    assert!(
        agent.stderr.wait_for(
            &format!(
                "after the grace group={leader} outcome=\"its number now belongs to another process"
            ),
            Duration::from_secs(60)
        ),
        "{}",
        agent.stderr.text()
    );
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the agent killed an unrelated process group"
    );
    let _ = victim.kill();
    let _ = victim.wait();
}

/// A loader hook in the environment `jitc exec` runs in — set there by a repository's
/// tooling, say, in the user's own shell — with a library that copies everything `jitc`
/// receives, the grant's values among it, to a file. `jitc` is static-pie
/// (packaging/build.sh, as scripts/test.sh builds it): no dynamic loader reads
/// `LD_PRELOAD`/`LD_AUDIT`, so the library never loads. (A dynamically linked `jitc`,
/// from a plain `cargo build`, loads it, and this test fails: checked.) Hardening, not
/// a boundary: a same-user process can speak to the agent with a client of its own
/// (README, "What a same-user process can still do").
#[test]
fn a_loader_hook_for_jitc_itself_never_loads_so_reads_no_value() {
    let (env, _agent) = setup();
    let so = shared_library(
        &env,
        "dump",
        r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
static void dump(const void *b, ssize_t n) {
    const char *p = getenv("DUMP");
    if (!p || n <= 0) return;
    FILE *f = fopen(p, "a");
    if (f) { fwrite(b, 1, (size_t)n, f); fclose(f); }
}
__attribute__((constructor)) static void mark(void) { dump("loaded\n", 7); }
ssize_t recv(int fd, void *b, size_t l, int fl) {
    ssize_t (*real)(int, void *, size_t, int) = dlsym(RTLD_NEXT, "recv");
    ssize_t n = real(fd, b, l, fl); dump(b, n); return n;
}
ssize_t recvfrom(int fd, void *b, size_t l, int fl, struct sockaddr *a, socklen_t *al) {
    ssize_t (*real)(int, void *, size_t, int, struct sockaddr *, socklen_t *) = dlsym(RTLD_NEXT, "recvfrom");
    ssize_t n = real(fd, b, l, fl, a, al); dump(b, n); return n;
}
ssize_t read(int fd, void *b, size_t l) {
    ssize_t (*real)(int, void *, size_t) = dlsym(RTLD_NEXT, "read");
    ssize_t n = real(fd, b, l); dump(b, n); return n;
}
"#,
    );
    let dump = env.root().join("dump");
    fs::write(&dump, "").unwrap();
    env.give(&dump);
    // The library loads into a dynamic program in that environment, and can write there.
    let mut c = env.command("/usr/bin/env");
    c.arg(format!("DUMP={}", dump.display()))
        .arg(format!("LD_PRELOAD={}", so.display()))
        .arg("/usr/bin/true");
    run_with_stdin(c, None).ok();
    assert!(
        fs::read(&dump).unwrap().starts_with(b"loaded\n"),
        "the library does not load even where it should"
    );
    fs::write(&dump, "").unwrap();
    env.write_policy("[[rule]]\nsecrets = [\"T\"]\ncommands = [\"true\"]\n");
    // Set by `env` for jitc alone (setpriv, which runs it as the user, would load the
    // library too).
    let mut c = env.command("/usr/bin/env");
    c.arg(format!("DUMP={}", dump.display()))
        .arg(format!("LD_PRELOAD={}", so.display()))
        .arg(format!("LD_AUDIT={}", so.display()))
        .arg(jitc_bin())
        .args(["exec", "-s", "T", "--", "/usr/bin/true"]);
    // Granted and run: the values did come to jitc.
    run_with_stdin(c, None).ok();
    assert!(
        env.run(&["audit", "--json", "--event", "lease_granted"], None)
            .ok()
            .stdout
            .contains("\"lease_granted\""),
        "no lease was granted"
    );
    let got = fs::read(&dump).unwrap();
    assert!(
        got.is_empty(),
        "the library loaded into jitc or its command ({} bytes copied; the value {})",
        got.len(),
        if got.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()) {
            "among them"
        } else {
            "not among them"
        }
    );
}

/// An agent that `jitc` starts (none was running) does not inherit the loader hooks of
/// the environment `jitc` was run in: it is about to hold the unlocked vault. (Before,
/// `LD_PRELOAD` set for `jitc status` loaded its library into the new agent.) The same
/// library does load into a dynamic program in that environment: the test would see it.
#[test]
fn an_agent_jitc_starts_takes_no_loader_hook_from_its_environment() {
    let env = TestEnv::new_as(USER);
    let so = preload_library(&env);
    let mark = env.root().join("marks");
    fs::write(&mark, "").unwrap();
    env.give(&mark);
    let hooked = |program: &std::ffi::OsStr, args: &[&str]| {
        let mut c = env.command("/usr/bin/env");
        c.arg(format!("MARK={}", mark.display()))
            .arg(format!("LD_PRELOAD={}", so.display()))
            .arg(program)
            .args(args);
        run_with_stdin(c, None)
    };
    hooked("/usr/bin/true".as_ref(), &[]).ok();
    assert_eq!(
        fs::read_to_string(&mark).unwrap(),
        "preloaded into true\n",
        "the library does not load even where it should"
    );
    fs::write(&mark, "").unwrap();
    // No agent runs: `jitc status` starts one.
    hooked(jitc_bin().as_os_str(), &["status"]).ok();
    let _stop = Stop(&env);
    let marks = fs::read_to_string(&mark).unwrap();
    assert!(!marks.contains("jitc-agentd"), "{marks}");
    assert!(!marks.contains("jitc"), "{marks}");
}

/// Stops the agent `jitc` started, whatever the test's outcome.
struct Stop<'a>(&'a TestEnv);
impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = run_with_stdin(self.0.jitc(&["stop"]), None);
    }
}

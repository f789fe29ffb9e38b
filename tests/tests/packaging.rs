//! Where users live: `packaging/install.sh` into a prefix and back out, the manual
//! pages, the completions in bash, zsh and fish, the systemd user units, and the Debian
//! package — the real scripts and tools on the real binaries.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use jitc_tests::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The target directory the binaries under test were built into (`…/target`).
fn target_dir() -> PathBuf {
    bin_dir().parent().unwrap().to_owned()
}

/// Every path under `root`, sorted (what a tree holds, to compare before and after).
fn tree(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            out.push(e.path());
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

/// `install.sh ARGS` in `env` (its HOME), from this build's binaries.
fn install_sh(env: &TestEnv, args: &[&str]) -> Run {
    let mut c = env.command("bash");
    c.arg(repo().join("packaging/install.sh"))
        .args(["--no-build", "--profile", "dev", "--no-demo"])
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("SHELL", "/bin/bash");
    run_with_stdin(c, None)
}

/// Runs `program` with `args` and the environment `env` gives, plus `extra`.
fn tool(env: &TestEnv, program: &str, args: &[&str], extra: &[(&str, &Path)]) -> Run {
    let mut c = env.command(program);
    c.args(args);
    for (k, v) in extra {
        c.env(k, v);
    }
    run_with_stdin(c, None)
}

#[track_caller]
fn assert_renders(env: &TestEnv, page: &Path, heading: &str) {
    let out = tool(
        env,
        "man",
        &["-l", page.to_str().unwrap()],
        &[("MANWIDTH", Path::new("100"))],
    );
    assert_eq!(out.code, 0, "{}: {}", page.display(), out.stderr);
    assert!(
        out.stdout.contains("NAME"),
        "{}: {}",
        page.display(),
        out.stdout
    );
    assert!(
        out.stdout.contains(heading),
        "{}: no {heading}: {}",
        page.display(),
        out.stdout
    );
}

#[test]
fn install_sh_installs_everything_and_uninstall_leaves_nothing_behind() {
    let env = TestEnv::new();
    let before = tree(env.root());
    let prefix = env.home.join(".local");
    let out = install_sh(&env, &[]).ok();
    // The exact lines for the rc file of the shell in use, PATH included.
    assert!(
        out.stdout.contains(&format!(
            "    export PATH=\"{}/bin:$PATH\"\n    . {}/lib/jitc/shell/jitc.sh\n",
            prefix.display(),
            prefix.display()
        )),
        "{}",
        out.stdout
    );
    let version = tool(
        &env,
        prefix.join("bin/jitc").to_str().unwrap(),
        &["--version"],
        &[],
    )
    .ok();
    assert_eq!(
        version.stdout.trim(),
        format!("jitc {}", env!("CARGO_PKG_VERSION"))
    );
    let man = prefix.join("share/man/man1");
    for page in ["jitc.1", "jitc-exec.1", "jitc-doctor.1", "jitc-sandbox.1"] {
        assert_renders(&env, &man.join(page), "EXAMPLES");
    }
    assert_renders(&env, &man.join("jitc-agentd.1"), "FILES");
    for f in [
        "share/bash-completion/completions/jitc",
        "share/zsh/site-functions/_jitc",
        "share/fish/vendor_completions.d/jitc.fish",
        "lib/jitc/shell/jitc.sh",
        "lib/jitc/shell/jitc.fish",
        "lib/jitc/shell/jitc.csh",
    ] {
        assert!(prefix.join(f).is_file(), "{f}");
    }
    // The units: only ExecStart= names where the binaries went; comments intact.
    let units = env.config.join("systemd/user");
    let service = fs::read_to_string(units.join("jitc-agentd.service")).unwrap();
    let original =
        fs::read_to_string(repo().join("packaging/systemd/jitc-agentd.service")).unwrap();
    assert!(!service.contains("@BINDIR@"), "{service}");
    let changed: Vec<(&str, &str)> = original
        .lines()
        .zip(service.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        vec![(
            "ExecStart=@BINDIR@/jitc-agentd",
            &*format!("ExecStart={}/bin/jitc-agentd", prefix.display())
        )]
    );
    let socket = fs::read_to_string(units.join("jitc-agentd.socket")).unwrap();
    assert!(
        socket.contains("Documentation=man:jitc-agentd(1)"),
        "{socket}"
    );
    // systemd accepts them (the manual page named by Documentation= included), and the
    // service stays as hardened as it is now.
    // (systemd-analyze leaves a directory in XDG_RUNTIME_DIR: not in the tree compared.)
    let runtime = tempfile::tempdir().unwrap();
    let runtime: &Path = runtime.path();
    let manpath = prefix.join("share/man");
    let verify = tool(
        &env,
        "systemd-analyze",
        &[
            "verify",
            "--user",
            units.join("jitc-agentd.service").to_str().unwrap(),
            units.join("jitc-agentd.socket").to_str().unwrap(),
        ],
        &[("XDG_RUNTIME_DIR", runtime), ("MANPATH", &manpath)],
    );
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
    let security = tool(
        &env,
        "systemd-analyze",
        &[
            "security",
            "--offline=yes",
            "--user",
            "--threshold=62",
            units.join("jitc-agentd.service").to_str().unwrap(),
        ],
        &[("XDG_RUNTIME_DIR", runtime)],
    );
    assert_eq!(security.code, 0, "{}{}", security.stdout, security.stderr);
    assert!(
        security
            .stdout
            .contains("Overall exposure level for jitc-agentd.service: 6.2"),
        "{}",
        security.stdout
    );
    // The vault's directory is left to the agent (it is private, and hidden inside
    // 'jitc sandbox').
    assert!(!env.data.join("jitc").exists());
    // Idempotent: again, the same tree.
    let installed = tree(env.root());
    install_sh(&env, &[]).ok();
    assert_eq!(tree(env.root()), installed);

    // Uninstalled, nothing is left, and no directory that was there before is gone.
    let out = install_sh(&env, &["--uninstall"]).ok();
    assert!(out.stdout.contains("removed jitc"), "{}", out.stdout);
    assert_eq!(tree(env.root()), before);
    // A file changed since it was installed is kept by --uninstall (and said so).
    install_sh(&env, &[]).ok();
    let page = man.join("jitc-scan.1");
    fs::write(&page, "my own notes\n").unwrap();
    let out = install_sh(&env, &["--uninstall"]).ok();
    assert!(
        out.stdout.contains(&format!("kept {}", page.display())),
        "{}",
        out.stdout
    );
    assert_eq!(fs::read_to_string(&page).unwrap(), "my own notes\n");
}

#[test]
fn install_sh_takes_the_binaries_from_cargo_target_dir_and_a_system_prefix() {
    let env = TestEnv::new();
    // A CARGO_TARGET_DIR without the binaries: install.sh looks there, not in target/.
    let mut c = env.command("bash");
    c.arg(repo().join("packaging/install.sh"))
        .args(["--no-build", "--profile", "dev", "--no-demo"])
        .env("CARGO_TARGET_DIR", env.root().join("elsewhere"));
    let out = run_with_stdin(c, None).code(1);
    assert!(
        out.stderr.contains(&format!(
            "{}/debug/jitc is missing",
            env.root().join("elsewhere").display()
        )),
        "{}",
        out.stderr
    );
    // Another prefix: the units go where the user manager reads them.
    let prefix = env.root().join("opt");
    let out = install_sh(&env, &["--prefix", prefix.to_str().unwrap()]).ok();
    assert!(
        env.config
            .join("systemd/user/jitc-agentd.service")
            .is_file()
    );
    assert!(!prefix.join("lib/systemd").exists());
    assert!(out.stdout.contains("export PATH="), "{}", out.stdout);
    // A second installation does not take the first one's units (nor a file of yours)
    // unless told to; nothing is written before it says so.
    let other = env.root().join("other");
    let out2 = install_sh(&env, &["--prefix", other.to_str().unwrap()]).code(1);
    let unit = env.config.join("systemd/user/jitc-agentd.service");
    assert!(
        out2.stderr.contains(&unit.display().to_string()) && out2.stderr.contains("--force"),
        "{}",
        out2.stderr
    );
    assert!(!other.exists());
    install_sh(&env, &["--prefix", prefix.to_str().unwrap(), "--uninstall"]).ok();
    assert!(!prefix.exists(), "{:?}", tree(env.root()));
    assert!(!env.config.join("systemd").exists());
    // A prefix systemd or sed would misread is refused before anything is written.
    for bad in ["/tmp/with space", "/tmp/a$HOME", "/tmp/a&b", "/tmp/100%"] {
        let out = install_sh(&env, &["--prefix", bad]).code(2);
        assert!(out.stderr.contains("plain path"), "{bad}: {}", out.stderr);
    }
}

/// What each shell completes for `words` with the completions install.sh put where the
/// shell looks, as the tree's user, with an unlocked agent holding two secrets.
struct Shells {
    env: TestEnv,
    prefix: PathBuf,
}

impl Shells {
    fn new() -> Shells {
        let env = TestEnv::new_as(USER);
        env.init();
        env.add("GITHUB_TOKEN", "ghp-value-for-completion-1");
        env.add("prod/db", "db-value-for-completion-2");
        let prefix = env.root().join("prefix");
        install_sh(&env, &["--prefix", prefix.to_str().unwrap()]).ok();
        // The installed jitc first on PATH, as the rc line makes it.
        env.set_env(
            "PATH",
            format!("{}/bin:/usr/local/bin:/usr/bin:/bin", prefix.display()),
        );
        Shells { env, prefix }
    }

    fn run(&self, shell: &str, script: &str) -> Vec<String> {
        let mut c = self.env.command(shell);
        c.args(if shell == "zsh" {
            vec!["-f", "-c"]
        } else {
            vec!["-c"]
        })
        .arg(script);
        let out = run_with_stdin(c, None);
        assert_eq!(out.code, 0, "{shell}: {}{}", out.stdout, out.stderr);
        // (`printf '%s\n'` of no words prints one empty line.)
        out.stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.to_owned())
            .collect()
    }

    fn bash(&self, words: &str) -> Vec<String> {
        self.run(
            "bash",
            &format!(
                r#"source {}/share/bash-completion/completions/jitc
COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}
_clap_complete_jitc jitc "${{COMP_WORDS[-1]}}" "${{COMP_WORDS[-2]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
                self.prefix.display()
            ),
        )
    }

    /// zsh's completion system loads `_jitc` from `fpath` (as compinit does); what it
    /// offers is what reaches `_describe`.
    fn zsh(&self, words: &str) -> Vec<String> {
        self.run(
            "zsh",
            &format!(
                r#"fpath=({}/share/zsh/site-functions $fpath)
autoload -Uz compinit && compinit -u -d "$HOME/.zcompdump"
[[ $_comps[jitc] == _jitc ]] || {{ print -u2 "jitc is not bound: $_comps[jitc]"; exit 1 }}
_describe() {{ print -rl -- "${{(@P)${{@[-1]}}}}" }}
words=({words}); CURRENT=${{#words}}
_jitc"#,
                self.prefix.display()
            ),
        )
        .into_iter()
        .map(|l| l.split(':').next().unwrap_or_default().to_owned())
        .collect()
    }

    /// fish finds vendor completions through XDG_DATA_DIRS, as a package installs them.
    fn fish(&self, line: &str) -> Vec<String> {
        self.env.set_env("XDG_DATA_DIRS", self.prefix.join("share"));
        self.run("fish", &format!("complete -C '{line}'"))
            .into_iter()
            .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
            .collect()
    }
}

#[test]
fn completions_offer_subcommands_and_the_vaults_secret_names_in_bash_zsh_and_fish() {
    let s = Shells::new();
    let names = vec!["GITHUB_TOKEN".to_owned(), "prod/db".to_owned()];
    assert_eq!(s.bash(r#"jitc exe"#), vec!["exec"]);
    assert_eq!(s.bash(r#"jitc exec -s """#), names);
    assert_eq!(s.bash(r#"jitc exec -e DB=pr"#), vec!["DB=prod/db"]);
    assert_eq!(s.bash(r#"jitc rm G"#), vec!["GITHUB_TOKEN"]);
    assert!(s.zsh(r#"jitc """#).contains(&"doctor".to_owned()));
    assert_eq!(s.zsh(r#"jitc exec -s """#), names);
    assert_eq!(s.fish("jitc exe"), vec!["exec"]);
    assert_eq!(s.fish("jitc exec -s "), names);
    // `revoke <TAB>` offers the active leases.
    let held = s.env.spawn(&[
        "exec",
        "-s",
        "GITHUB_TOKEN",
        "--",
        "sh",
        "-c",
        "echo started; exec sleep 300",
    ]);
    held.expect_stdout("started");
    let id = s.env.json(&["leases"])[0]["id"].to_string();
    assert_eq!(s.fish("jitc revoke ")[0], id);
    s.env.run(&["revoke", &id], None).ok();
    held.wait();
    // Locked, the names are not offered (and nothing prompts or fails).
    s.env.run(&["lock"], None).ok();
    assert!(s.bash(r#"jitc exec -s """#).is_empty());
    assert!(s.fish("jitc exec -s ").is_empty());
}

#[test]
fn completing_never_starts_an_agent() {
    let env = TestEnv::new_as(USER);
    let mut c = env.command(jitc_bin());
    c.args(["--", "jitc", "exec", "-s", ""])
        .env("JITC_COMPLETE", "fish");
    let out = run_with_stdin(c, None).ok();
    assert_eq!(out.stdout.trim(), "", "{}", out.stdout);
    assert!(env.agent_pid().is_none());
    assert!(!env.socket().exists());
    // The variable alone, without the `--` the shell code always passes, changes
    // nothing: the command runs.
    let mut c = env.command(jitc_bin());
    c.args(["exec", "--", "sh", "-c", "echo ran"])
        .env("JITC_COMPLETE", "bash");
    assert_eq!(run_with_stdin(c, None).ok().stdout, "ran\n");
}

#[test]
fn the_debian_package_installs_into_a_throwaway_root_and_lintian_finds_no_fault() {
    let out_dir = tempfile::Builder::new().prefix("jdeb").tempdir().unwrap();
    let deb = Command::new("bash")
        .arg(repo().join("packaging/deb.sh"))
        .args(["--profile", "dev", "--no-build", "-o"])
        .arg(out_dir.path())
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    assert!(
        deb.status.success(),
        "deb.sh (scripts/test.sh installs cargo-deb): {}",
        String::from_utf8_lossy(&deb.stderr)
    );
    let deb = PathBuf::from(String::from_utf8_lossy(&deb.stdout).lines().last().unwrap());
    assert!(deb.is_file(), "{}", deb.display());
    // The static-pie jitc carries this glibc: said, and held to its version.
    let info = Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .args(["Depends", "Built-Using"])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    if !fs::read(jitc_bin())
        .unwrap()
        .windows(b"/lib64/ld-linux".len())
        .any(|w| w == b"/lib64/ld-linux")
    {
        assert!(info.contains("Built-Using: glibc (= "), "{info}");
        assert!(info.contains("libc6 (<< "), "{info}");
    }
    let root = out_dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let dpkg = |args: &[&str]| {
        let out = Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .arg(format!("--log={}", root.join("dpkg.log").display()))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dpkg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // libc is not in the empty root's database: the one dependency it may ignore.
    dpkg(&["--force-depends", "-i", deb.to_str().unwrap()]);
    let files = dpkg(&["-L", "jitc"]);
    for f in [
        "/usr/bin/jitc",
        "/usr/bin/jitc-agentd",
        "/usr/share/man/man1/jitc.1.gz",
        "/usr/share/man/man1/jitc-exec.1.gz",
        "/usr/share/man/man1/jitc-agentd.1.gz",
        "/usr/share/bash-completion/completions/jitc",
        "/usr/share/zsh/vendor-completions/_jitc",
        "/usr/share/fish/vendor_completions.d/jitc.fish",
        "/usr/lib/systemd/user/jitc-agentd.service",
        "/usr/lib/systemd/user/jitc-agentd.socket",
        "/usr/share/jitc/shell/jitc.sh",
        "/usr/share/doc/jitc/copyright",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} not in:\n{files}");
    }
    let version = Command::new(root.join("usr/bin/jitc"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("jitc {}", env!("CARGO_PKG_VERSION"))
    );
    let service =
        fs::read_to_string(root.join("usr/lib/systemd/user/jitc-agentd.service")).unwrap();
    assert!(
        service.contains("\nExecStart=/usr/bin/jitc-agentd\n"),
        "{service}"
    );
    let page = Command::new("man")
        .arg("-l")
        .arg(root.join("usr/share/man/man1/jitc-agentd.1.gz"))
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&page.stdout).contains("EXAMPLES"));
    let lintian = Command::new("lintian")
        .args([
            "--fail-on",
            "error,warning",
            "--tag-display-limit",
            "0",
            "-EvIL",
            "+pedantic",
        ])
        .arg(&deb)
        .output()
        .expect("lintian (scripts/test.sh installs it)");
    assert!(
        lintian.status.success(),
        "{}",
        String::from_utf8_lossy(&lintian.stdout)
    );
    // Removed, the root holds none of its files.
    dpkg(&["--purge", "jitc"]);
    assert!(!root.join("usr/bin/jitc").exists());
}

/// `jitc` as packaging/build.sh links it (and scripts/test.sh builds it for every test
/// here): static-pie — no program interpreter, so no loader and no shared library at
/// start-up (BENCHMARKS.md: 0.4 ms of each `jitc exec`), and still position-independent
/// for ASLR. Where the compiler has no static C library, build.sh links it dynamically
/// and says so; this test then says so too.
#[test]
fn the_jitc_under_test_is_linked_static_pie_as_shipped() {
    // build.sh's test: `cc` finds glibc's libc.a and rcrt1.o.
    let static_ok = ["libc.a", "rcrt1.o"].iter().all(|f| {
        let out = Command::new("cc")
            .arg(format!("-print-file-name={f}"))
            .output()
            .unwrap();
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        p.is_absolute() && p.is_file()
    });
    if !static_ok {
        eprintln!("no static C library here: build.sh links jitc dynamically");
        return;
    }
    let elf = fs::read(jitc_bin()).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    assert_eq!(&elf[..5], b"\x7fELF\x02", "not a 64-bit ELF file");
    const ET_DYN: u16 = 3;
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    assert_eq!(u16_at(16), ET_DYN, "jitc is not position-independent");
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
    let types: Vec<u32> = (0..phnum as usize)
        .map(|i| u32_at(phoff + i * phentsize))
        .collect();
    assert!(
        !types.contains(&PT_INTERP),
        "{} has a program interpreter: build it with packaging/build.sh --profile dev \
         (scripts/test.sh does)",
        jitc_bin().display()
    );
    assert!(
        types.contains(&PT_DYNAMIC),
        "not static-pie: no dynamic section to relocate"
    );
}

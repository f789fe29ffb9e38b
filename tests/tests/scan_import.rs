//! `jitc scan` and `jitc import`, driven through the real `jitc` on real files: the scan
//! of a sample tree of planted credentials and decoys (precision and recall, exactly),
//! files as arguments, ignore files and markers, what it prints about paths and what
//! it never prints (values); the import's reference file (comments and plain settings
//! kept), `--all`, and the inputs it refuses (an empty file, its own output, …).
//!
//! Every credential below is assembled at run time from pieces and a seeded generator,
//! so this file holds no credential shape for a scanner (jitc's own included) to find.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use jitc_tests::*;

/// `len` letters and digits from `seed`, never all of one class.
fn rnd(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize]
        })
        .collect();
    // A fixed mix, so no draw can come out as a plain word or number.
    out[0] = b'Q';
    out[1] = b'7';
    out[2] = b'x';
    String::from_utf8(out).unwrap()
}

/// Upper-case letters and digits, as in an AWS key id.
fn rnd_upper(seed: u64, len: usize) -> String {
    rnd(seed, len).to_ascii_uppercase()
}

fn github(seed: u64) -> String {
    format!("{}{}", "gh", "p_") + &rnd(seed, 36)
}
fn pem(label: &str, seed: u64, sep: &str) -> String {
    let dashes = "-----";
    format!(
        "{dashes}BEGIN {label}{dashes}{sep}{}{sep}{dashes}END {label}{dashes}",
        rnd(seed, 64)
    )
}
fn jwt(seed: u64) -> String {
    let e = format!("{}{}", "ey", "J");
    format!(
        "{e}{}.{e}{}.{}",
        rnd(seed, 20),
        rnd(seed + 1, 30),
        rnd(seed + 2, 43)
    )
}

/// One line of a sample file: a planted credential with the kind `jitc scan` must
/// report, a decoy it must not report, or a neutral line.
enum Line {
    Plant(&'static str, String),
    Decoy(String),
    Text(String),
}
use Line::{Decoy, Plant, Text};

fn p(kind: &'static str, text: impl Into<String>) -> Line {
    Plant(kind, text.into())
}
fn d(text: impl Into<String>) -> Line {
    Decoy(text.into())
}
fn t(text: impl Into<String>) -> Line {
    Text(text.into())
}

/// A tree of files that knows what a scan of it must find.
struct Sample {
    root: PathBuf,
    /// `path:line kind` of every planted credential.
    planted: BTreeSet<String>,
    /// Decoy lines, and whole files that must not be read at all.
    decoys: usize,
    files: usize,
    /// Distinctive parts of every value in the tree, none of which may be printed.
    values: Vec<String>,
}

impl Sample {
    fn new(root: PathBuf) -> Sample {
        std::fs::create_dir_all(&root).unwrap();
        Sample {
            root,
            planted: BTreeSet::new(),
            decoys: 0,
            files: 0,
            values: Vec::new(),
        }
    }

    fn raw(&mut self, path: &str, bytes: &[u8]) {
        let at = self.root.join(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, bytes).unwrap();
        self.files += 1;
    }

    fn file(&mut self, path: &str, lines: Vec<Line>) {
        let mut text = String::new();
        for (i, line) in lines.iter().enumerate() {
            let l = match line {
                Plant(kind, l) => {
                    self.planted.insert(format!("{path}:{} {kind}", i + 1));
                    l
                }
                Decoy(l) => {
                    self.decoys += 1;
                    l
                }
                Text(l) => l,
            };
            text.push_str(l);
            text.push('\n');
        }
        self.raw(path, text.as_bytes());
    }

    /// A file whose whole content is a decoy: the scan must not look inside.
    fn unread(&mut self, path: &str, bytes: &[u8]) {
        self.decoys += 1;
        self.raw(path, bytes);
    }

    /// Remembers a value (and returns it) so the test can check it is never printed.
    fn v(&mut self, value: String) -> String {
        self.values.push(value.clone());
        value
    }
}

/// The sample tree: a repository with `.env` files, source code in several languages,
/// configuration, tool files, docs, and what a scan must skip.
fn sample(root: PathBuf) -> Sample {
    let mut s = Sample::new(root);
    let (session, gh) = (s.v(rnd(1, 32)), s.v(github(2)));
    s.file(
        ".env",
        vec![
            t("# app settings"),
            d("DEBUG=true"),
            d("PORT=3000"),
            d("NODE_ENV=production"),
            d("LOG_LEVEL=info"),
            d("API_URL=https://api.example.com/v1"),
            d("REDIS_URL=redis://localhost:6379/0"),
            d("TOKEN_TTL=3600"),
            d("AUTH_ENABLED=true"),
            d("SECRET_REF=jitc://app/secret"),
            d("PASSWORD=${DB_PASSWORD}"),
            d("EMPTY="),
            d("# API_KEY=commented-out-example-value"),
            p(
                "secret-like assignment to SESSION_SECRET",
                format!("SESSION_SECRET={session}"),
            ),
            p("URL with a password", "DB=postgres://u:pass@h/db"),
            p("GitHub token", format!("GITHUB_TOKEN={gh}")),
        ],
    );
    let stripe = s.v(format!("{}{}", "sk", "_live_") + &rnd(3, 24));
    s.file(
        ".env.local",
        vec![
            p("Stripe secret key", format!("STRIPE_KEY={stripe}")),
            d("PUBLIC_URL=http://localhost:3000"),
        ],
    );
    s.file(
        ".env.production",
        vec![
            p(
                "secret-like assignment to DB_PASSWORD",
                "DB_PASSWORD=postgres123",
            ),
            d("DB_HOST=db.internal"),
            d("DB_PORT=5432"),
        ],
    );
    s.file(
        ".env.example",
        vec![
            d("API_KEY=your-api-key-here"),
            d("DATABASE_URL=postgres://user:password@localhost/db"),
            d(format!("GITHUB_TOKEN={}{}{}", "gh", "p_", "x".repeat(36))),
        ],
    );
    let django = s.v(format!("{}$!{}", rnd(4, 12), rnd(5, 12)));
    s.file(
        "config/settings.py",
        vec![
            t("import os"),
            p(
                "secret-like assignment to SECRET_KEY",
                format!("SECRET_KEY = \"{django}\""),
            ),
            d("API_KEY = os.environ[\"API_KEY\"]"),
            d("TOKEN = get_random_secret_key()"),
            d("DEBUG = True"),
            d("PASSWORD_MIN_LENGTH = 12"),
            d("DATABASE_URL = f\"postgres://{user}:{password}@{host}/db\""),
        ],
    );
    let gitlab = s.v(format!("{}{}", "gl", "pat-") + &rnd(6, 20));
    s.file(
        "src/state.rs",
        vec![
            t("pub struct State {"),
            d("    secrets: BTreeMap<String, Secret>,"),
            t("}"),
            t("fn new() -> State {"),
            d("    State { secrets: BTreeMap::new() }"),
            t("}"),
            t("fn token(args: &Args) -> Result<String> {"),
            d("    let token = std::env::var(\"GITHUB_TOKEN\")?;"),
            d("    let password = args.password.clone();"),
            d("    if token == expected {}"),
            d("    const TOKEN_HEADER: &str = \"X-Auth-Token\";"),
            d(format!(
                "    const PEM_HEADER: &str = \"{}BEGIN OPENSSH PRIVATE KEY{}\";",
                "-----", "-----"
            )),
            d("    let secret_key = SecretKey::from_bytes(&bytes)?;"),
            d("    let api_key = format!(\"{prefix}{rest}\");"),
            p("GitLab token", format!("    let token = \"{gitlab}\";")),
            t("}"),
        ],
    );
    let (client_secret, session_jwt) = (s.v(rnd(7, 28)), s.v(jwt(8)));
    s.file(
        "src/client.ts",
        vec![
            d("const token = process.env.GITHUB_TOKEN;"),
            d("const apiKey = config.get(\"apiKey\");"),
            d("const headers = { Authorization: `Bearer ${token}` };"),
            p(
                "secret-like assignment to clientSecret",
                format!("const clientSecret: string = \"{client_secret}\";"),
            ),
            p(
                "JSON web token",
                format!("const session = \"{session_jwt}\";"),
            ),
        ],
    );
    let helm = s.v(rnd(9, 20));
    s.file(
        "deploy/values.yaml",
        vec![
            t("db:"),
            d("  host: db.internal"),
            p(
                "secret-like assignment to password",
                format!("  password: {helm}"),
            ),
            d("  existingSecret: db-credentials"),
            d("  passwordKey: password"),
            t("deploy:"),
            d("  token: ${{ secrets.DEPLOY_TOKEN }}"),
            d("  admin_password: changeme"),
        ],
    );
    let pg = s.v(rnd(10, 18));
    s.file(
        "docker-compose.yml",
        vec![
            t("services:"),
            t("  db:"),
            t("    environment:"),
            p(
                "secret-like assignment to POSTGRES_PASSWORD",
                format!("      - POSTGRES_PASSWORD={pg}"),
            ),
            d("      - PORT=8080"),
            t("  app:"),
            t("    environment:"),
            d("      DATABASE_URL: postgres://postgres:postgres@db:5432/app"),
            d("      REDIS_PASSWORD: ${REDIS_PASSWORD}"),
        ],
    );
    // One line, as `docker login` writes it.
    let auth = s.v(rnd(11, 40));
    s.file(
        ".docker/config.json",
        vec![p(
            "docker registry credentials",
            format!("{{\"auths\":{{\"ghcr.io\":{{\"auth\":\"{auth}=\"}}}}}}"),
        )],
    );
    let podman = s.v(rnd(12, 40));
    s.file(
        "home/.config/containers/auth.json",
        vec![
            t("{"),
            t("  \"auths\": {"),
            t("    \"quay.io\": {"),
            p(
                "docker registry credentials",
                format!("      \"auth\": \"{podman}\""),
            ),
            t("    }"),
            t("  }"),
            t("}"),
        ],
    );
    s.file(
        "other/.docker/config.json",
        vec![d("{\"auths\":{\"ghcr.io\":{}},\"credsStore\":\"desktop\"}")],
    );
    let (key_id, gcp) = (
        s.v(rnd(13, 40).to_ascii_lowercase()),
        pem("PRIVATE KEY", 14, "\\n"),
    );
    s.values.push(rnd(14, 64));
    s.file(
        "gcp/service-account.json",
        vec![
            t("{"),
            d("  \"type\": \"service_account\","),
            d("  \"project_id\": \"demo-project\","),
            d(format!("  \"private_key_id\": \"{key_id}\",")),
            p("private key", format!("  \"private_key\": \"{gcp}\\n\",")),
            d("  \"client_email\": \"svc@demo-project.iam.gserviceaccount.com\""),
            t("}"),
        ],
    );
    let integrity = s.v(rnd(15, 86));
    s.file(
        "package-lock.json",
        vec![
            t("{"),
            d("  \"name\": \"app\","),
            t("  \"packages\": {"),
            t("    \"node_modules/x\": {"),
            d("      \"resolved\": \"https://registry.npmjs.org/x/-/x-1.0.0.tgz\","),
            d(format!("      \"integrity\": \"sha512-{integrity}==\"")),
            t("    }"),
            t("  }"),
            t("}"),
        ],
    );
    s.values.push(rnd(16, 64));
    let ssh = pem("OPENSSH PRIVATE KEY", 16, "\n");
    let mut lines = ssh.lines();
    s.file(
        "keys/id_ed25519",
        vec![
            p("private key", lines.next().unwrap()),
            t(lines.next().unwrap()),
            t(lines.next().unwrap()),
        ],
    );
    s.file(
        "keys/id_ed25519.pub",
        vec![d(format!(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5{} me@host",
            rnd(17, 40)
        ))],
    );
    let npm = s.v(format!("{}{}", "np", "m_") + &rnd(18, 36));
    s.file(
        ".npmrc",
        vec![
            d("registry=https://registry.npmjs.org/"),
            p(
                "npm token",
                format!("//registry.npmjs.org/:_authToken={npm}"),
            ),
        ],
    );
    s.file(
        "other/.npmrc",
        vec![d("//registry.npmjs.org/:_authToken=${NPM_TOKEN}")],
    );
    let pypi = s.v(format!("{}{}", "pypi-", "AgEIcHlwaS5vcmc") + &rnd(19, 60));
    s.file(
        ".pypirc",
        vec![
            t("[pypi]"),
            d("username = __token__"),
            p("PyPI token", format!("password = {pypi}")),
        ],
    );
    let (akid, aws) = (
        s.v(format!("{}{}", "AK", "IA") + &rnd_upper(20, 16)),
        s.v(format!("{}/{}", rnd(21, 20), rnd(22, 19))),
    );
    s.file(
        ".aws/credentials",
        vec![
            t("[default]"),
            p("AWS access key id", format!("aws_access_key_id = {akid}")),
            p("aws credentials", format!("aws_secret_access_key = {aws}")),
        ],
    );
    s.file(
        "docs/aws.md",
        vec![
            d("    aws_access_key_id = AKIAIOSFODNN7EXAMPLE"),
            d("    aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ],
    );
    s.file(
        "README.md",
        vec![
            t("# App"),
            d("Set API_TOKEN in your environment."),
            d("    export OPENAI_API_KEY=sk-..."),
            d("Connect with postgres://user:password@localhost:5432/app"),
            d(format!(
                "Example token: {}.{}.{}",
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
                "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ",
                "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
            )),
        ],
    );
    let slack = s.v(format!("{}{}", "xo", "xb-") + "2468013579-" + &rnd(23, 24));
    s.file(
        "notes/slack.md",
        vec![
            t("# Slack"),
            t(""),
            p("Slack token", format!("bot token: {slack}")),
        ],
    );
    let openai = s.v(format!("{}{}", "sk", "-proj-") + &rnd(24, 40));
    s.file(
        "scripts/deploy.sh",
        vec![
            t("#!/bin/sh"),
            t("set -eu"),
            p("API key (sk-)", format!("export OPENAI_API_KEY={openai}")),
            d("export TOKEN=$(cat /run/secrets/token)"),
            d("curl -H \"Authorization: Bearer $TOKEN\" https://api.example.com"),
        ],
    );
    let netrc = s.v(rnd(25, 20));
    s.file(
        ".netrc",
        vec![p(
            "netrc password",
            format!("machine api.internal.dev login deploy password {netrc}"),
        )],
    );
    let git_pw = s.v(rnd(26, 24));
    s.file(
        ".git-credentials",
        vec![p(
            "URL with a password",
            format!("https://deploy:{git_pw}@git.internal.dev"),
        )],
    );
    let tf = s.v(rnd(27, 30));
    s.file(
        "infra/main.tf",
        vec![
            t("resource \"aws_db_instance\" \"db\" {"),
            d("  password = var.db_password"),
            d("  username = \"admin\""),
            p(
                "secret-like assignment to secret_key",
                format!("  secret_key = \"{tf}\""),
            ),
            t("}"),
        ],
    );
    let go = s.v(rnd(28, 22));
    s.file(
        "app/config.go",
        vec![
            t("package app"),
            p(
                "secret-like assignment to dbPassword",
                format!("var dbPassword string = \"{go}\""),
            ),
            d("var timeout = 30"),
            d("password := os.Getenv(\"DB_PASSWORD\")"),
        ],
    );
    let k8s = s.v(rnd(29, 44));
    s.file(
        "k8s/secret.yaml",
        vec![
            d("apiVersion: v1"),
            d("kind: Secret"),
            t("data:"),
            p(
                "secret-like assignment to api-token",
                format!("  api-token: {k8s}=="),
            ),
        ],
    );
    s.file(
        "build/meta.toml",
        vec![
            d(format!("commit = \"{}\"", hex(30, 40))),
            d(format!("checksum = \"{}\"", hex(31, 64))),
            d("request_id = \"550e8400-e29b-41d4-a716-446655440000\""),
        ],
    );
    // Git-ignored files are scanned: agents read them too.
    s.file(".gitignore", vec![t("ignored-by-git/")]);
    let ignored = s.v(rnd(32, 20));
    s.file(
        "ignored-by-git/creds.txt",
        vec![p(
            "secret-like assignment to API_PASSWORD",
            format!("API_PASSWORD={ignored}"),
        )],
    );
    // .jitcignore: a directory, a glob, and an exception to it.
    s.file(
        ".jitcignore",
        vec![t("fixtures/"), t("*.snap"), t("!important.snap")],
    );
    let fixture = s.v(rnd(33, 20));
    s.file("fixtures/fake.env", vec![d(format!("API_KEY={fixture}"))]);
    let (snap, important) = (s.v(github(34)), s.v(github(35)));
    s.file(
        "tests/__snapshots__/a.snap",
        vec![d(format!("token: {snap}"))],
    );
    s.file(
        "tests/__snapshots__/important.snap",
        vec![p("GitHub token", format!("token: {important}"))],
    );
    let marked = s.v(rnd(36, 20));
    s.file(
        "tests/test_auth.py",
        vec![
            d(format!("TEST_TOKEN = \"{marked}\"  # jitc:ignore")),
            t("def test(): pass"),
        ],
    );
    // Skipped: dependency and build directories, git's own, binaries, large files.
    let skipped = s.v(github(37));
    s.unread(
        "node_modules/pkg/.env",
        format!("TOKEN={skipped}\n").as_bytes(),
    );
    s.unread("target/debug/.env", format!("TOKEN={skipped}\n").as_bytes());
    s.unread(
        ".git/config",
        format!("url = https://me:{}@github.com/x/y\n", rnd(38, 20)).as_bytes(),
    );
    s.unread("blob.bin", format!("\0\0TOKEN={skipped}\n").as_bytes());
    let mut big = format!("TOKEN={skipped}\n").into_bytes();
    big.resize(5 * 1024 * 1024 + 1, b'a');
    s.unread("big.log", &big);
    // A symlink out of the tree is not followed.
    let outside = s.root.parent().unwrap().join("outside.env");
    std::fs::write(&outside, format!("TOKEN={skipped}\n")).unwrap();
    std::os::unix::fs::symlink(&outside, s.root.join("link.env")).unwrap();
    s.decoys += 1;
    s
}

/// Lower-case hex from `seed`.
fn hex(seed: u64, len: usize) -> String {
    rnd(seed, len * 2)
        .bytes()
        .map(|b| char::from(b"0123456789abcdef"[usize::from(b % 16)]))
        .take(len)
        .collect()
}

/// `path:line kind` of every finding `jitc scan --json` reports.
fn found_json(out: &str) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_str(out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}:{} {}",
                f["path"].as_str().unwrap(),
                f["line"],
                f["kind"].as_str().unwrap()
            )
        })
        .collect()
}

#[track_caller]
fn assert_no_value(s: &Sample, run: &Run) {
    for v in &s.values {
        assert!(
            !run.stdout.contains(v.as_str()) && !run.stderr.contains(v.as_str()),
            "a value was printed"
        );
    }
}

#[test]
fn scan_precision_and_recall_on_a_planted_tree() {
    let env = TestEnv::new();
    let s = sample(env.root().join("repo"));
    let tree = s.root.to_str().unwrap();
    let out = env.run(&["scan", "--json", tree], None).code(1);
    assert_no_value(&s, &out);
    let found = found_json(&out.stdout);
    let hits = found.intersection(&s.planted).count();
    let false_alarms: Vec<&String> = found.difference(&s.planted).collect();
    let missed: Vec<&String> = s.planted.difference(&found).collect();
    eprintln!(
        "scan sample: {} files, {} planted credentials, {} decoys: {hits} found, {} false alarm(s), {} missed; precision {:.3}, recall {:.3}",
        s.files,
        s.planted.len(),
        s.decoys,
        false_alarms.len(),
        missed.len(),
        hits as f64 / found.len().max(1) as f64,
        hits as f64 / s.planted.len() as f64
    );
    // The same by place alone (`path:line`), whatever the kind is called: the measure
    // that compares with scanners that name kinds differently.
    let place = |set: &BTreeSet<String>| -> BTreeSet<String> {
        set.iter()
            .map(|f| f.split_once(' ').unwrap().0.to_owned())
            .collect()
    };
    let (found_at, planted_at) = (place(&found), place(&s.planted));
    let hits_at = found_at.intersection(&planted_at).count();
    eprintln!(
        "by place: {hits_at} of {} found at a planted place; precision {:.3}, recall {:.3}",
        found_at.len(),
        hits_at as f64 / found_at.len().max(1) as f64,
        hits_at as f64 / planted_at.len() as f64
    );
    assert!(false_alarms.is_empty(), "false alarms: {false_alarms:#?}");
    assert!(missed.is_empty(), "missed: {missed:#?}");
    assert!(
        out.stderr.contains("not scanned: 1 file over 5 MiB"),
        "{}",
        out.stderr
    );

    // The same findings as `path:line kind` lines, in path order, and a summary.
    let text = env.run(&["scan", tree], None).code(1);
    assert_no_value(&s, &text);
    let mut expected: Vec<&String> = s.planted.iter().collect();
    expected.sort_by_key(|f| {
        let (place, _) = f.split_once(' ').unwrap();
        let (path, line) = place.rsplit_once(':').unwrap();
        (path.to_owned(), line.parse::<usize>().unwrap())
    });
    assert_eq!(text.stdout.lines().collect::<Vec<_>>(), expected);
    assert!(
        text.stderr
            .contains(&format!("{} plaintext credentials in", s.planted.len())),
        "{}",
        text.stderr
    );
}

#[test]
fn scan_takes_a_file_and_respects_the_repository_ignore_file() {
    let env = TestEnv::new();
    let s = sample(env.root().join("repo"));
    let dotenv = s.root.join(".env");
    let out = env.run(&["scan", dotenv.to_str().unwrap()], None).code(1);
    let expected: Vec<String> = s
        .planted
        .iter()
        .filter_map(|f| f.strip_prefix(".env:"))
        .map(|rest| format!("{}:{rest}", dotenv.display()))
        .collect();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), expected);
    // The repository's .jitcignore (its top holds .git) speaks for a file or a
    // directory scanned on their own, as it does in a scan of the whole tree.
    for ignored in [
        "fixtures/fake.env",
        "fixtures",
        "tests/__snapshots__/a.snap",
    ] {
        env.run(&["scan", s.root.join(ignored).to_str().unwrap()], None)
            .ok()
            .says("no plaintext credentials found");
    }
    env.run(
        &[
            "scan",
            s.root
                .join("tests/__snapshots__/important.snap")
                .to_str()
                .unwrap(),
        ],
        None,
    )
    .code(1);
    // From inside the tree, without an argument.
    let mut c = env.jitc(&["scan"]);
    c.current_dir(s.root.join("config"));
    let run = run_with_stdin(c, None).code(1);
    assert_eq!(
        run.stdout,
        "settings.py:2 secret-like assignment to SECRET_KEY\n"
    );
}

#[test]
fn scan_refuses_what_it_cannot_scan_in_one_line() {
    let env = TestEnv::new();
    let missing = env.root().join("no-such-dir");
    env.run(&["scan", missing.to_str().unwrap()], None)
        .code(65)
        .one_line_error()
        .says(&format!(
            "cannot scan {}: No such file or directory; give a file or directory that exists",
            missing.display()
        ));
    env.run(&["scan", "/dev/null"], None)
        .code(65)
        .one_line_error()
        .says("cannot scan /dev/null: it is not a file or a directory");
    // A broken ignore file is an error, not a silently wider or narrower scan.
    let tree = env.root().join("bad");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join(".jitcignore"), "fixtures/\n[z-a]\n").unwrap();
    env.run(&["scan", tree.to_str().unwrap()], None)
        .code(65)
        .one_line_error()
        .says(".jitcignore line 2: not a gitignore pattern");
    // A clean tree passes.
    let clean = env.root().join("clean");
    std::fs::create_dir_all(&clean).unwrap();
    std::fs::write(clean.join("main.rs"), "fn main() {}\n").unwrap();
    env.run(&["scan", clean.to_str().unwrap()], None)
        .ok()
        .says("no plaintext credentials found");
}

#[test]
fn scan_escapes_control_characters_in_what_it_prints() {
    let env = TestEnv::new();
    let tree = env.root().join("tree");
    let odd = tree.join("a\nfake.env:1 GitHub token\u{202e}");
    std::fs::create_dir_all(&odd).unwrap();
    let token = github(40);
    std::fs::write(odd.join(".env"), format!("GITHUB_TOKEN={token}\n")).unwrap();
    std::fs::write(
        tree.join("odd.json"),
        "{\"pass\\nword\": \"Q7xZk29fPq8LmR4tV\"}\n",
    )
    .unwrap();
    let out = env.run(&["scan", tree.to_str().unwrap()], None).code(1);
    assert_eq!(
        out.stdout,
        "a\\nfake.env:1 GitHub token\\u{202e}/.env:1 GitHub token\nodd.json:1 secret-like assignment to pass\\nword\n"
    );
    assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token));
    // JSON carries the real name, escaped the JSON way.
    let json = env
        .run(&["scan", "--json", tree.to_str().unwrap()], None)
        .code(1);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v[0]["path"], "a\nfake.env:1 GitHub token\u{202e}/.env");
}

#[test]
fn scan_says_what_it_could_not_read() {
    let env = TestEnv::new();
    // A tree another user can enter, holding one file only root can read.
    let tree = env.root().join("shared");
    std::fs::create_dir_all(&tree).unwrap();
    for dir in [env.root(), tree.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(tree.join("a.env"), format!("GITHUB_TOKEN={}\n", github(41))).unwrap();
    std::fs::set_permissions(tree.join("a.env"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(tree.join("b.txt"), "nothing here\n").unwrap();
    let as_user = |target: &Path| {
        let mut c = env.command("setpriv");
        c.args(["--reuid=1000", "--regid=1000", "--clear-groups"])
            .arg(jitc_bin())
            .args(["scan", target.to_str().unwrap()]);
        run_with_stdin(c, None)
    };
    // Named on its own, a file it cannot read is an error: a gate must not pass it.
    as_user(&tree.join("a.env"))
        .code(74)
        .one_line_error()
        .says("a.env: Permission denied; check its permissions");
    let out = as_user(&tree).ok();
    assert!(
        out.stderr
            .contains("jitc: not scanned: 1 it could not read (first: a.env: Permission denied)"),
        "{}",
        out.stderr
    );
}

// ---- jitc import ------------------------------------------------------------------

fn setup() -> (TestEnv, Agent) {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    (env, agent)
}

#[test]
fn import_moves_a_dotenv_into_the_vault() {
    let (env, _agent) = setup();
    let file = env.home.join(".env");
    std::fs::write(
        &file,
        "# database\nDATABASE_URL=postgres://u:pw-4471@db/app\nSTRIPE_KEY='sk_test_99$x'  # the test key\n\nEMPTY=\nALREADY=jitc://TOKEN\nPORT=3000\nexport DEBUG=true\nNODE_ENV=production\nAPI_HOST=api.internal\n",
    )
    .unwrap();
    let out = env
        .run(
            &["import", file.to_str().unwrap(), "--prefix", "app/"],
            None,
        )
        .ok();
    assert_eq!(
        out.stdout,
        "# database\nDATABASE_URL=jitc://app/DATABASE_URL\nSTRIPE_KEY=jitc://app/STRIPE_KEY # the test key\n\nEMPTY=\nALREADY=jitc://TOKEN\nPORT=3000\nexport DEBUG=true\nNODE_ENV=production\nAPI_HOST=api.internal\n"
    );
    assert!(
        out.stderr.contains(
            "kept 4 plain settings as written, not in the vault: PORT, DEBUG, NODE_ENV, API_HOST; add --all to store them too"
        ) && out.stderr.contains("imported 2 secrets")
            && out.stderr.contains("delete it"),
        "{}",
        out.stderr
    );
    for v in ["pw-4471", "sk_test_99"] {
        assert!(!out.stdout.contains(v) && !out.stderr.contains(v));
    }
    assert!(file.exists(), "the original stays");
    assert_eq!(
        env.secret_names(),
        ["app/DATABASE_URL", "app/STRIPE_KEY"],
        "plain settings stay out of the vault"
    );
    // The reference file works as it is: secrets leased, plain settings passed through.
    let refs = env.home.join("refs.env");
    std::fs::write(&refs, &out.stdout).unwrap();
    env.add("TOKEN", "already-stored-value");
    let out = env
        .run(
            &[
                "exec",
                "--env-file",
                refs.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                "printf %s \"$STRIPE_KEY\" | sha256sum; echo \"$PORT $DEBUG $NODE_ENV\"",
            ],
            None,
        )
        .ok();
    assert!(
        out.stdout.starts_with(&sha256_hex(b"sk_test_99$x")),
        "single quotes kept the $"
    );
    assert!(
        out.stdout.ends_with("3000 true production\n"),
        "{}",
        out.stdout
    );
    // Again: refused, nothing changed, unless --replace.
    env.run(
        &["import", file.to_str().unwrap(), "--prefix", "app/"],
        None,
    )
    .code(1)
    .one_line_error()
    .says("--replace");
    // Replacing needs the vault passphrase (once, for every secret).
    env.run(
        &[
            "import",
            file.to_str().unwrap(),
            "--prefix",
            "app/",
            "--replace",
        ],
        None,
    )
    .code(77)
    .one_line_error()
    .says("needs the vault passphrase");
    // --all stores the plain settings too.
    let out = env
        .run_as_human(
            &[
                "import",
                file.to_str().unwrap(),
                "--prefix",
                "app/",
                "--replace",
                "--all",
            ],
            b"",
        )
        .ok();
    assert!(
        out.stdout
            .contains("PORT=jitc://app/PORT\nexport DEBUG=jitc://app/DEBUG\n")
    );
    assert!(!out.stderr.contains("kept"), "{}", out.stderr);
    assert!(env.secret_names().contains(&"app/NODE_ENV".to_owned()));
    // A value dotenv would expand is refused rather than stored changed.
    std::fs::write(&file, "P=pa$word\n").unwrap();
    env.run(&["import", file.to_str().unwrap()], None)
        .code(65)
        .one_line_error()
        .says("line 1 has a '$' that dotenv would expand");
}

#[test]
fn import_refuses_a_file_with_nothing_to_import() {
    // None of these reaches the agent: no agent runs.
    let env = TestEnv::new();
    let file = env.home.join(".env");
    let import = |env: &TestEnv| env.run(&["import", ".env"], None);
    for (text, says) in [
        (
            "",
            ".env holds no KEY=value lines, so there is nothing to import",
        ),
        ("# only\n\n# comments\n", "holds no KEY=value lines"),
        (
            "A=jitc://a\nB=\n",
            "holds no values to import, only jitc:// references and empty values",
        ),
        (
            "A=x1y2z3w4v5\nB=2\nA=q9w8e7r6\n",
            ".env: A is set twice (lines 1 and 3)",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        import(&env).code(65).one_line_error().says(says);
    }
    // Only plain settings: nothing to store, and the reference file is the file.
    std::fs::write(&file, "PORT=3000\nDEBUG=false\n").unwrap();
    let out = import(&env).ok();
    assert_eq!(out.stdout, "PORT=3000\nDEBUG=false\n");
    assert!(out.stderr.contains("imported nothing"), "{}", out.stderr);
    assert_eq!(env.agent_pid(), None, "no agent was started");

    // `jitc import .env > .env`: the shell empties the file before jitc runs; jitc
    // says so instead of "imported 0". With `>>` the file is refused as it stands.
    let secret = rnd(42, 17);
    for (redirect, says) in [
        (
            ">>",
            "the output goes to .env itself — jitc would write into the file it reads",
        ),
        (
            ">",
            "the output goes to .env itself — the shell emptied it before jitc could read it",
        ),
    ] {
        std::fs::write(&file, format!("API_TOKEN={secret}\n")).unwrap();
        let mut c = env.command("sh");
        c.arg("-c").arg(format!(
            "'{}' import .env {redirect} .env",
            jitc_bin().display()
        ));
        let out = run_with_stdin(c, None).code(65).one_line_error().says(says);
        assert!(!out.stderr.contains(&secret));
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"", "the shell emptied it");
}

#[test]
fn scan_and_import_agree_on_an_env_file() {
    // What import keeps as plain, scan does not flag; what scan flags, import stores.
    let (env, _agent) = setup();
    let file = env.home.join(".env");
    let token = github(50);
    std::fs::write(
        &file,
        format!("DEBUG=true\nPORT=3000\nNODE_ENV=production\nDB=postgres://u:pass@h/db\nGITHUB_TOKEN={token}\n"),
    )
    .unwrap();
    let scan = env.run(&["scan", file.to_str().unwrap()], None).code(1);
    assert_eq!(scan.stdout.lines().count(), 2, "{}", scan.stdout);
    let out = env.run(&["import", file.to_str().unwrap()], None).ok();
    assert_eq!(
        out.stdout,
        "DEBUG=true\nPORT=3000\nNODE_ENV=production\nDB=jitc://DB\nGITHUB_TOKEN=jitc://GITHUB_TOKEN\n"
    );
    // The reference file passes the scan.
    std::fs::write(&file, &out.stdout).unwrap();
    env.run(&["scan", file.to_str().unwrap()], None).ok();
}

"""What reading secrets from an OpenBao backend costs (BENCHMARKS.md, "Backends — issue
14"): run by scripts/bench-backend.sh, standard library only.

`backend_bench.py run OUT.json` (inside the throwaway home bench-backend.sh sets up: an
unlocked agent whose policy names backend `team`, a dev-mode OpenBao with its file
audit device on, PostgreSQL behind OpenBao's database engine) measures:

0. which requests OpenBao sees per lease (from its audit log), for each kind of read;
1. wall time, interleaved round by round in a shuffled order: `jitc exec -s local/x --
   true`, `jitc exec -e X=bao://team/secret/app#password -- true` and `bao kv get`
   (with `/usr/bin/true` as the floor of starting any process, and `bao version` as
   the floor of the bao CLI: its start-up, no request);
2. the same for a dynamic database credential (both fields of one read) beside `bao
   read database/creds/ro`. jitc revokes the credential after the command has exited,
   off the client's path; each of its runs then waits (untimed) for that revocation to
   be on record in jitc's audit log, so that it does not land on the next command
   measured, and how long after the exit jitc asked and OpenBao had revoked (from
   OpenBao's audit log) is kept. The roles `bao read` makes are never revoked: they are counted,
   then revoked with `bao lease revoke -prefix`;
3. leases per second with 1 and 8 clients each running `jitc exec … -- true` in a loop
   for a fixed time (local secret, KV reference, and `bao kv get` for reference;
   rounds interleaved), with the CPU the agent, OpenBao and PostgreSQL spent per lease;
   then the dynamic credential the same way, and whether every role it made is gone
   once its revocations settle.

`backend_bench.py report OUT.json` prints the results as Markdown.
"""

import json
import os
import random
import subprocess
import sys
import threading
import time

TRUE = "/usr/bin/true"
LOCAL = ["-s", "local/x"]
KV = ["-e", "X=bao://team/secret/app#password"]
DB = ["-e", "PGUSER=bao://team/database/creds/ro#username",
      "-e", "PGPASSWORD=bao://team/database/creds/ro#password"]


def env_int(name, default):
    return int(os.environ.get(name, default))


def pct(sorted_xs, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_xs:
        return float("nan")
    k = max(0, min(len(sorted_xs) - 1, int(round(p / 100.0 * len(sorted_xs) + 0.5)) - 1))
    return sorted_xs[k]


def median(xs):
    s = sorted(xs)
    n = len(s)
    return (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2) if n else float("nan")


def summary(xs):
    s = sorted(xs)
    return {"n": len(s), "p50": median(s), "p10": pct(s, 10), "p90": pct(s, 90),
            "p99": pct(s, 99), "min": s[0] if s else None, "max": s[-1] if s else None}


class Env:
    def __init__(self):
        e = os.environ
        self.jitc = e["JITC"]
        self.bao = e["BAO"]
        self.bao_audit = e["BAO_AUDIT"]
        self.jitc_audit = e["JITC_AUDIT"]
        self.agent_pid = int(e["AGENT_PID"])
        self.pg_dir = e["PG_DIR"]
        self.psql = json.loads(e["PSQL_CMD"])
        # The commands measured: bao with its own token; jitc as set up.
        self.cli_env = dict(os.environ, BAO_TOKEN=e["BAO_CLI_TOKEN"])
        self.root_env = dict(os.environ, BAO_TOKEN=e["BAO_ROOT"])
        self.errors = {}
        # The raw HTTP GET's token goes in a header file, not in curl's argv.
        self.header_file = os.path.join(os.environ.get("TMPDIR_BENCH", "/tmp"), "bao-token-header")
        with open(os.open(self.header_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write("X-Vault-Token: " + e["BAO_CLI_TOKEN"] + "\n")
        self.kv_url = e["BAO_ADDR"] + "/v1/secret/data/app"

    def jitc_exec(self, refs, *cmd):
        return [self.jitc, "exec", *refs, "--", *(cmd or (TRUE,))]

    def arms(self):
        return {
            "true": ([TRUE], None),
            "local": (self.jitc_exec(LOCAL), None),
            "kv": (self.jitc_exec(KV), None),
            "bao_version": ([self.bao, "version"], self.cli_env),
            "bao_kv": ([self.bao, "kv", "get", "-mount=secret", "-field=password", "app"], self.cli_env),
            "http_kv": (["curl", "-sf", "-o", "/dev/null", "-H", "@" + self.header_file, self.kv_url], None),
            "db": (self.jitc_exec(DB), None),
            "bao_db": ([self.bao, "read", "-format=json", "database/creds/ro"], self.cli_env),
        }

    def run(self, name, argv, env):
        """Runs `argv` once; its wall time (None if it failed, which is kept)."""
        t0 = time.perf_counter()
        r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            e = self.errors.setdefault(name, {"count": 0, "samples": []})
            e["count"] += 1
            msg = f"exit {r.returncode}: {r.stderr.decode(errors='replace').strip()[:300]}"
            if msg not in e["samples"] and len(e["samples"]) < 5:
                e["samples"].append(msg)
            return None
        return dt

    def sql(self, query):
        r = subprocess.run([*self.psql, query], cwd=self.pg_dir, env=dict(os.environ, HOME=self.pg_dir),
                           capture_output=True, text=True, check=True)
        return r.stdout.strip()

    def roles(self):
        """The roles OpenBao made: jitc's (root's token, v-root-…), bao's (v-token-…)."""
        return {
            "jitc": int(self.sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-root-%'")),
            "bao": int(self.sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-token-%'")),
            "all": int(self.sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-%'")),
        }

    def bao_leases(self):
        r = subprocess.run([self.bao, "list", "-format=json", "sys/leases/lookup/database/creds/ro/"],
                           env=self.root_env, capture_output=True, text=True)
        return len(json.loads(r.stdout)) if r.returncode == 0 and r.stdout.strip() else 0


class Tail:
    """New JSON lines of a file, from where it stands when made (across a rotation: the
    agent's audit log rotates when full)."""

    def __init__(self, path):
        self.path = path
        self.f = open(path, "rb")
        self.f.seek(0, os.SEEK_END)
        self.rest = b""

    def read(self):
        self.rest += self.f.read()
        try:
            if os.stat(self.path).st_ino != os.fstat(self.f.fileno()).st_ino:
                self.rest += self.f.read()
                self.f.close()
                self.f = open(self.path, "rb")
                self.rest += self.f.read()
        except FileNotFoundError:
            pass
        *lines, self.rest = self.rest.split(b"\n")
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


def revocations(recs):
    return sum(1 for r in recs if r.get("event") in ("backend_revoked", "backend_revoke_failed")), \
        sum(1 for r in recs if r.get("event") == "backend_revoke_failed")


def bao_requests(env, argv, cmd_env, n, audit_tail, jitc_tail=None):
    """What OpenBao is asked per run of `argv` (from its audit log), `n` runs; for jitc's
    dynamic read, each run waits for its revocation so that it is counted."""
    audit_tail.read()
    for _ in range(n):
        env.run("requests", argv, cmd_env)
        if jitc_tail is not None:
            wait_revocations(jitc_tail, 1, 30)
    time.sleep(0.2)  # OpenBao writes its response record after answering.
    counts, sent, took = {}, {}, {}
    for r in audit_tail.read():
        req = r.get("request", {})
        if r.get("type") == "request":
            path = req.get("path", "?")
            key = f"{req.get('operation', '?')} {path}"
            counts[key] = counts.get(key, 0) + 1
            sent[req.get("id")] = (key, audit_time(r.get("time")))
        elif r.get("type") == "response" and req.get("id") in sent:
            key, t0 = sent.pop(req.get("id"))
            t1 = audit_time(r.get("time"))
            if t0 is not None and t1 is not None:
                took.setdefault(key, []).append(t1 - t0)
    return {k: {"per_run": v / n, "server_ms": 1000 * median(took.get(k, []))}
            for k, v in sorted(counts.items())}


def audit_time(t):
    """Seconds of an RFC 3339 time in OpenBao's audit log (nanoseconds kept to µs)."""
    if not t:
        return None
    import datetime
    head, _, frac = t.rstrip("Z").partition(".")
    frac = (frac + "000000")[:6]
    return datetime.datetime.fromisoformat(f"{head}.{frac}+00:00").timestamp()


def wait_revocations(tail, want, timeout):
    """Waits until `want` revocations (or failures) are on record; (count, failed)."""
    seen = failed = 0
    end = time.monotonic() + timeout
    while True:
        s, f = revocations(tail.read())
        seen += s
        failed += f
        if seen >= want or time.monotonic() > end:
            return seen, failed
        time.sleep(0.0005)


def interleaved(env, names, rounds, warmup, seed, after=None):
    """`rounds` rounds (after `warmup`), each running every arm once in a shuffled order;
    `after(name)` runs untimed after each run."""
    arms = env.arms()
    rng = random.Random(seed)
    times = {n: [] for n in names}
    for i in range(warmup + rounds):
        order = list(names)
        rng.shuffle(order)
        for n in order:
            argv, cmd_env = arms[n]
            dt = env.run(n, argv, cmd_env)
            if after:
                after(n)
            if i >= warmup and dt is not None:
                times[n].append(dt)
    return {n: summary(ts) for n, ts in times.items()}


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def pids_named(comm):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/comm") as f:
                    if f.read().strip() == comm:
                        out.append(int(p))
            except OSError:
                pass
    return out


def cpu_now(env, bao_pid):
    return {"agent": cpu_seconds(env.agent_pid), "openbao": cpu_seconds(bao_pid),
            "postgres": sum(cpu_seconds(p) for p in pids_named("postgres"))}


def throughput(env, name, clients, duration, bao_pid):
    """`clients` loops of one arm for `duration` s: completions per second."""
    argv, cmd_env = env.arms()[name]
    done = [0] * clients
    failed = [0] * clients
    start = time.perf_counter()
    deadline = start + duration
    cpu0 = cpu_now(env, bao_pid)

    def loop(i):
        while time.perf_counter() < deadline:
            if env.run(name, argv, cmd_env) is None:
                failed[i] += 1
            else:
                done[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    cpu1 = cpu_now(env, bao_pid)
    n = sum(done)
    return {"clients": clients, "completed": n, "failed": sum(failed), "seconds": elapsed,
            "per_second": n / elapsed,
            "cpu_ms_per_run": {k: 1000 * (cpu1[k] - cpu0[k]) / max(n, 1) for k in cpu0}}


def run(out_path):
    env = Env()
    rounds = env_int("RUNS", 200)
    db_rounds = env_int("DB_RUNS", 100)
    warmup = env_int("WARMUP", 10)
    duration = float(os.environ.get("DURATION", "4"))
    tp_rounds = env_int("ROUNDS", 3)
    clients = [int(c) for c in os.environ.get("CLIENTS", "1 8").split()]
    bao_pid = int(os.environ["BAO_PID"])
    res = {"rounds": rounds, "db_rounds": db_rounds, "warmup": warmup, "duration": duration,
           "tp_rounds": tp_rounds, "clients": clients, "nproc": os.cpu_count(),
           "kernel": os.uname().release, "date": time.strftime("%Y-%m-%d"),
           "loadavg_before": os.getloadavg()[0]}
    bao_tail = Tail(env.bao_audit)
    jitc_tail = Tail(env.jitc_audit)

    # 0. What OpenBao is asked.
    arms = env.arms()
    print("backend_bench: requests per lease…", file=sys.stderr)
    res["requests"] = {
        "kv": bao_requests(env, *arms["kv"], 20, bao_tail),
        "bao_kv": bao_requests(env, *arms["bao_kv"], 20, bao_tail),
        "db": bao_requests(env, *arms["db"], 10, bao_tail, jitc_tail),
        "bao_db": bao_requests(env, *arms["bao_db"], 10, bao_tail),
    }
    bao_reads = 10
    res["roles_at_start"] = env.roles()

    # 1. KV.
    print(f"backend_bench: part 1, {rounds} interleaved rounds…", file=sys.stderr)
    t = time.monotonic()
    res["kv"] = interleaved(env, ["true", "local", "kv", "bao_version", "bao_kv", "http_kv"], rounds, warmup, 14)
    res["kv_seconds"] = time.monotonic() - t

    # 2. The dynamic credential; each of jitc's waits (untimed) for its revocation.
    print(f"backend_bench: part 2, {db_rounds} interleaved rounds…", file=sys.stderr)
    revoke_after, revoke_sent, revoke_done = [], [], []
    revoke_failed = [0]
    jitc_tail.read()
    bao_tail.read()

    def settle(name):
        if name == "db":
            exited = time.time()
            t0 = time.perf_counter()
            seen, failed = wait_revocations(jitc_tail, 1, 30)
            revoke_failed[0] += failed
            if seen:
                revoke_after.append(time.perf_counter() - t0)
            # When jitc asked OpenBao to revoke, and when OpenBao had (the role dropped).
            for r in bao_tail.read():
                if r.get("request", {}).get("path") == "sys/leases/revoke":
                    t = audit_time(r.get("time"))
                    if t is not None:
                        (revoke_sent if r.get("type") == "request" else revoke_done).append(t - exited)
    t = time.monotonic()
    res["db"] = interleaved(env, ["local", "db", "bao_db"], db_rounds, warmup, 41, after=settle)
    res["db_seconds"] = time.monotonic() - t
    res["revoke_after_exit"] = summary(revoke_after)
    res["revoke_sent_after_exit"] = summary(revoke_sent)
    res["revoke_done_after_exit"] = summary(revoke_done)
    res["revoke_failed"] = revoke_failed[0]
    bao_reads += db_rounds + warmup - env.errors.get("bao_db", {}).get("count", 0)
    res["roles_after_part2"] = env.roles()
    res["bao_reads"] = bao_reads
    res["bao_leases_after_part2"] = env.bao_leases()
    r = subprocess.run([env.bao, "lease", "revoke", "-sync", "-prefix", "database/creds/ro"], env=env.root_env,
                       capture_output=True, text=True)
    res["revoke_prefix"] = (r.stdout + r.stderr).strip()
    res["roles_after_revoke_prefix"] = env.roles()

    # 3. Leases per second.
    print(f"backend_bench: part 3, {tp_rounds} rounds of {duration} s runs at {clients} clients…",
          file=sys.stderr)
    t = time.monotonic()
    tp = {f"{n}@{c}": [] for c in clients for n in ("local", "kv", "bao_kv")}
    for _ in range(tp_rounds):
        for c in clients:
            for n in ("local", "kv", "bao_kv"):
                tp[f"{n}@{c}"].append(throughput(env, n, c, duration, bao_pid))
    jitc_tail.read()
    db_leases = 0
    for c in clients:
        r = throughput(env, "db", c, duration, bao_pid)
        tp[f"db@{c}"] = [r]
        db_leases += r["completed"] + r["failed"]
    t0 = time.monotonic()
    seen, failed = wait_revocations(jitc_tail, db_leases, 60)
    res["db_tp_settle_seconds"] = time.monotonic() - t0
    res["db_tp_revocations"] = {"leases": db_leases, "revoked_or_failed": seen, "failed": failed}
    time.sleep(0.5)
    res["roles_after_part3"] = env.roles()
    res["bao_leases_after_part3"] = env.bao_leases()
    res["tp_seconds"] = time.monotonic() - t
    res["throughput"] = tp
    res["bao_audit_bytes"] = os.path.getsize(env.bao_audit)
    res["errors"] = env.errors
    res["loadavg_after"] = os.getloadavg()[0]
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)


def ms(x):
    # A figure a short run did not reach (no revocation timed, say) is a dash.
    return "—" if x is None else f"{1000 * x:.2f} ms"


def report(path):
    with open(path) as f:
        r = json.load(f)
    p = []
    kv, db = r["kv"], r["db"]
    p.append("#### One command each: a KV v2 reference "
             f"({r['rounds']} interleaved rounds after {r['warmup']} warm-up)\n")
    p.append("| command | median | p10 | p90 | vs `jitc exec -s local/x` | vs `bao kv get` |")
    p.append("|---|---|---|---|---|---|")
    names = {"true": "`/usr/bin/true` (the floor)", "local": "`jitc exec -s local/x -- true`",
             "kv": "`jitc exec -e X=bao://team/secret/app#password -- true`",
             "bao_version": "`bao version` (the CLI's start-up, no request)",
             "bao_kv": "`bao kv get -mount=secret -field=password app`",
             "http_kv": "`curl` GET `/v1/secret/data/app` (raw HTTP, token in a header file)",
             "db": "`jitc exec -e PGUSER=bao://…/creds/ro#username -e PGPASSWORD=…#password -- true`",
             "bao_db": "`bao read database/creds/ro`"}
    for n in ("true", "local", "kv", "bao_version", "bao_kv", "http_kv"):
        s = kv[n]
        p.append(f"| {names[n]} | {ms(s['p50'])} | {ms(s['p10'])} | {ms(s['p90'])} | "
                 f"{s['p50'] / kv['local']['p50']:.2f}× | {s['p50'] / kv['bao_kv']['p50']:.2f}× |")
    p.append("")
    p.append("#### One command each: a dynamic PostgreSQL credential "
             f"({r['db_rounds']} interleaved rounds after {r['warmup']} warm-up)\n")
    p.append("| command | median | p10 | p90 | vs `jitc exec -s local/x` | vs `bao read` |")
    p.append("|---|---|---|---|---|---|")
    for n in ("local", "db", "bao_db"):
        s = db[n]
        p.append(f"| {names[n]} | {ms(s['p50'])} | {ms(s['p10'])} | {ms(s['p90'])} | "
                 f"{s['p50'] / db['local']['p50']:.2f}× | {s['p50'] / db['bao_db']['p50']:.2f}× |")
    ra, rs, rd = r["revoke_after_exit"], r["revoke_sent_after_exit"], r["revoke_done_after_exit"]
    p.append("")
    p.append(f"After `jitc exec` returned ({ra['n']} leases, {r['revoke_failed']} revocations failed), not in "
             f"the times above: jitc asked OpenBao to revoke after a median {ms(rs['p50'])} (p90 "
             f"{ms(rs['p90'])}); OpenBao had revoked it (role dropped) after {ms(rd['p50'])} (p90 {ms(rd['p90'])}, "
             f"max {ms(rd['max'])}); the `backend_revoked` record was in jitc's audit log after "
             f"{ms(ra['p50'])} (p90 {ms(ra['p90'])}, max {ms(ra['max'])}).")
    p.append("")
    p.append("#### What OpenBao is asked per run (its audit log: request records; median time from "
             "request record to response record)\n")
    p.append("| run | requests |")
    p.append("|---|---|")
    for n in ("kv", "bao_kv", "db", "bao_db"):
        reqs = ", ".join(f"`{k}` ×{v['per_run']:g} ({v['server_ms']:.2f} ms in OpenBao)"
                         for k, v in r["requests"][n].items())
        p.append(f"| {names[n]} | {reqs} |")
    p.append("")
    tp = r["throughput"]
    cl = r["clients"]
    p.append(f"#### Leases per second ({r['duration']:g} s runs; median of {r['tp_rounds']} interleaved "
             "rounds; the dynamic credential one run), OpenBao's file audit device on\n")
    head = " | ".join(f"{c} client{'s' if c > 1 else ''}" for c in cl)
    p.append(f"| loop of | {head} | vs local at {cl[-1]} | CPU ms per run at {cl[-1]}: agent / OpenBao / PostgreSQL |")
    p.append("|---|" + "---|" * len(cl) + "---|---|")
    tnames = {"local": "`jitc exec -s local/x -- true`", "kv": "`jitc exec -e X=bao://…#password -- true` (KV)",
              "bao_kv": "`bao kv get` (for reference)", "db": "`jitc exec` dynamic credential (both fields)"}
    med = {}
    for n in ("local", "kv", "bao_kv", "db"):
        for c in cl:
            med[(n, c)] = median([x["per_second"] for x in tp[f"{n}@{c}"]])
    for n in ("local", "kv", "bao_kv", "db"):
        cells = " | ".join(f"{med[(n, c)]:.0f}/s" for c in cl)
        last = tp[f"{n}@{cl[-1]}"]
        cpu = {k: median([x["cpu_ms_per_run"][k] for x in last]) for k in ("agent", "openbao", "postgres")}
        p.append(f"| {tnames[n]} | {cells} | {med[(n, cl[-1])] / med[('local', cl[-1])]:.2f}× | "
                 f"{cpu['agent']:.2f} / {cpu['openbao']:.2f} / {cpu['postgres']:.2f} |")
    p.append("")
    fails = {k: sum(x["failed"] for x in v) for k, v in tp.items() if sum(x["failed"] for x in v)}
    rv = r["db_tp_revocations"]
    p.append("#### Roles left in PostgreSQL (`pg_roles` named `v-…`)\n")
    p.append("| when | jitc's (`v-root-…`) | `bao read`'s (`v-token-…`) |")
    p.append("|---|---|---|")
    p.append(f"| after part 0 (11 jitc leases, 10 `bao read`s) | {r['roles_at_start']['jitc']} | {r['roles_at_start']['bao']} |")
    p.append(f"| after part 2, jitc's revocations settled | {r['roles_after_part2']['jitc']} | "
             f"{r['roles_after_part2']['bao']} ({r['bao_reads']} reads) |")
    p.append(f"| after `bao lease revoke -prefix database/creds/ro` | {r['roles_after_revoke_prefix']['jitc']} | "
             f"{r['roles_after_revoke_prefix']['bao']} |")
    p.append(f"| after the dynamic throughput runs ({rv['leases']} leases), settled in "
             f"{r['db_tp_settle_seconds']:.1f} s | {r['roles_after_part3']['jitc']} | {r['roles_after_part3']['bao']} |")
    p.append("")
    p.append(f"Revocations on record after the throughput runs: {rv['revoked_or_failed']} of {rv['leases']} "
             f"({rv['failed']} failed); OpenBao leases outstanding: {r['bao_leases_after_part2']} after part 2, "
             f"{r['bao_leases_after_part3']} after part 3. OpenBao's audit log: "
             f"{r['bao_audit_bytes'] / 1e6:.1f} MB. Failed runs: {json.dumps(r['errors']) if r['errors'] else 'none'}"
             f"{'; in throughput: ' + json.dumps(fails) if fails else ''}. Phases took "
             f"{r['kv_seconds']:.0f} s, {r['db_seconds']:.0f} s and {r['tp_seconds']:.0f} s; load average "
             f"{r['loadavg_before']:.2f} before, {r['loadavg_after']:.2f} after.")
    print("\n".join(p))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit("usage: backend_bench.py run OUT.json | report OUT.json")

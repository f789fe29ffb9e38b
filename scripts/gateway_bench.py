"""What the custody-free gateway costs (BENCHMARKS.md, "The gateway"): run by
scripts/bench-gateway.sh, standard library only.

`gateway_bench.py run UP_PORT UP_CA AGENT_PID OUT.json` runs inside `jitc exec --proxy`
(it reads the proxy and its credential from $HTTPS_PROXY, jitc's bundle from
$SSL_CERT_FILE) and measures, against the same local upstream, through the gateway
(https://api.test, routed by the policy to 127.0.0.1:UP_PORT) and directly
(https://127.0.0.1:UP_PORT, trusting UP_CA), interleaved:

1. keep-alive latency: sequential GETs on one kept-alive connection each way;
2. a new connection (CONNECT + TLS, or TLS) per request;
3. the agent's memory with many tunnels open at once (/proc/AGENT_PID/status);
4. the throughput of a large download with curl, HTTP/1.1 and HTTP/2.

`gateway_bench.py check UP_DIR VALUE` then checks the upstream's request log: every
request through the gateway carried `Authorization: Bearer VALUE`, none sent directly did.
`gateway_bench.py report OUT.json` prints the results as Markdown.
"""

import base64
import gc
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

GATEWAY_HOST = "api.test"


def env_int(name, default):
    return int(os.environ.get(name, default))


def pct(sorted_xs, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_xs:
        return float("nan")
    k = max(0, min(len(sorted_xs) - 1, int(round(p / 100.0 * len(sorted_xs) + 0.5)) - 1))
    return sorted_xs[k]


def summary(xs):
    s = sorted(xs)
    return {"n": len(s), "p50": pct(s, 50), "p90": pct(s, 90), "p95": pct(s, 95), "p99": pct(s, 99),
            "p99.9": pct(s, 99.9), "min": s[0] if s else None, "max": s[-1] if s else None,
            "over_1ms": sum(1 for x in s if x > 1e-3)}


def cpu_seconds(pid):
    """utime + stime of process `pid`, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quickack(conn):
    """Acknowledges at once what the peer sent. The test upstream does not set
    TCP_NODELAY: a response written while its TLS 1.3 session tickets are not yet
    acknowledged waits for the client's delayed ACK (about 40 ms on Linux) — an artefact
    of the test server that would otherwise land in the direct baseline of a fraction
    of new connections. Done the same on both paths."""
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def median(xs):
    s = sorted(xs)
    n = len(s)
    return (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2) if n else float("nan")


class Paths:
    """How to reach the upstream: through the gateway, or directly."""

    def __init__(self, up_port, up_ca):
        proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
        self.proxy_host, self.proxy_port = proxy.hostname, proxy.port
        cred = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password)}"
        self.proxy_auth = "Basic " + base64.b64encode(cred.encode()).decode()
        self.gw_ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
        self.direct_ctx = ssl.create_default_context(cafile=up_ca)
        self.up_port = up_port

    def connect(self, via):
        """A connected (TCP + TLS; CONNECT first through the gateway) HTTPSConnection."""
        if via == "gateway":
            c = http.client.HTTPSConnection(self.proxy_host, self.proxy_port,
                                            context=self.gw_ctx, timeout=30)
            c.set_tunnel(GATEWAY_HOST, 443, headers={"Proxy-Authorization": self.proxy_auth})
        else:
            c = http.client.HTTPSConnection("127.0.0.1", self.up_port,
                                            context=self.direct_ctx, timeout=30)
        c.connect()
        return c


def get(conn, path, ack=False):
    conn.request("GET", path)
    if ack:
        quickack(conn)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200 or b'"ok":true' not in body:
        raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
    return len(body)


def keepalive(paths, n, block, errors, pid, cpu):
    """n sequential GETs per path on one kept-alive connection each, alternating
    blocks of `block` requests between the two; seconds per request."""
    conns = {v: paths.connect(v) for v in ("gateway", "direct")}
    times = {"gateway": [], "direct": []}
    for v, c in conns.items():  # warm-up: first requests, the lease's upstream client
        for _ in range(50):
            get(c, f"/x?via={v}&warm=1")
    done = 0
    rnd = 0
    while done < n:
        k = min(block, n - done)
        order = ("gateway", "direct") if rnd % 2 == 0 else ("direct", "gateway")
        for v in order:
            c, out = conns[v], times[v]
            path = f"/x?via={v}"
            cpu0 = cpu_seconds(pid)
            for _ in range(k):
                t0 = time.perf_counter()
                try:
                    get(c, path)
                except Exception as e:  # noqa: BLE001 - counted, and the run goes on
                    errors.append(f"keep-alive {v}: {e!r}")
                    c.close()
                    c = conns[v] = paths.connect(v)
                    continue
                out.append(time.perf_counter() - t0)
            cpu[v] += cpu_seconds(pid) - cpu0
        done += k
        rnd += 1
    for c in conns.values():
        c.close()
    return times


def newconn(paths, n, errors, pid, cpu):
    """n GETs per path, each on a new connection, alternating; seconds per request
    (connect + TLS + request + response)."""
    times = {"gateway": [], "direct": []}
    for v in ("gateway", "direct"):  # warm-up
        for _ in range(10):
            c = paths.connect(v)
            get(c, f"/x?via={v}&warm=1")
            c.close()
    for i in range(n):
        order = ("gateway", "direct") if i % 2 == 0 else ("direct", "gateway")
        for v in order:
            cpu0 = cpu_seconds(pid)
            t0 = time.perf_counter()
            try:
                c = paths.connect(v)
                quickack(c)
                get(c, f"/x?via={v}&new=1", ack=True)
                c.close()
            except Exception as e:  # noqa: BLE001
                errors.append(f"new connection {v}: {e!r}")
                continue
            times[v].append(time.perf_counter() - t0)
            cpu[v] += cpu_seconds(pid) - cpu0
    return times


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    fds = None
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    out["fds"] = fds
    return out


class Sampler:
    """The agent's VmRSS, sampled every 10 ms while running: the most seen."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, proc_status(self.pid)["VmRSS"])
            self.stop.wait(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.thread.join()


def tunnels(paths, pid, count, rounds, errors):
    """`rounds` times: `count` tunnels opened (CONNECT + TLS + one request each) and held
    open, then one more request on every one of them at once, then all closed; the
    agent's memory at each step."""
    steps = [("before", proc_status(pid))]
    for r in range(1, rounds + 1):
        conns = []
        with Sampler(pid) as s:
            for i in range(count):
                try:
                    c = paths.connect("gateway")
                    get(c, f"/x?via=gateway&tunnel={i}")
                    conns.append(c)
                except Exception as e:  # noqa: BLE001
                    errors.append(f"tunnel {i}: {e!r}")
        steps.append((f"round {r}: {len(conns)} tunnels open", proc_status(pid), s.peak))

        def again(c, i, errs):
            try:
                get(c, f"/x?via=gateway&tunnel={i}&again=1")
            except Exception as e:  # noqa: BLE001
                errs.append(f"tunnel {i} (second request): {e!r}")

        with Sampler(pid) as s:
            ts = [threading.Thread(target=again, args=(c, i, errors)) for i, c in enumerate(conns)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        steps.append((f"round {r}: a request on each at once", proc_status(pid), s.peak))
        for c in conns:
            c.close()
        # The agent notices the closes asynchronously: wait until its descriptors
        # are back to what they were (or 5 s), not a fixed time.
        base_fds = steps[0][1]["fds"]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            now = proc_status(pid)
            if base_fds is None or now["fds"] is None or now["fds"] <= base_fds + 4:
                break
            time.sleep(0.02)
        steps.append((f"round {r}: all closed", proc_status(pid)))
    return [{"step": st[0], **st[1], **({"peak_rss_sampled": st[2]} if len(st) > 2 else {})}
            for st in steps]


def curl_speed(via, version, up_port, up_ca, size, errors, pid):
    flag = "--http1.1" if version == "1.1" else "--http2"
    if via == "gateway":
        url = f"https://{GATEWAY_HOST}/big?bytes={size}"
        extra = []  # $HTTPS_PROXY and $CURL_CA_BUNDLE from jitc exec --proxy
    else:
        url = f"https://127.0.0.1:{up_port}/big?bytes={size}"
        extra = ["--noproxy", "*", "--cacert", up_ca]
    cmd = ["curl", "-sS", "--fail", flag, "-o", "/dev/null", "-w",
           "%{speed_download} %{size_download} %{http_version} %{time_total}", *extra, url]
    cpu0 = cpu_seconds(pid)
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    agent_cpu = cpu_seconds(pid) - cpu0
    parts = p.stdout.split()
    if p.returncode != 0 or len(parts) != 4 or int(parts[1]) != size or parts[2] != version:
        errors.append(f"curl {via} {flag}: rc {p.returncode} out {p.stdout!r} err {p.stderr.strip()!r}")
        return None
    return {"speed": float(parts[0]), "time": float(parts[3]), "http_version": parts[2],
            "agent_cpu": agent_cpu}


def throughput(up_port, up_ca, size, runs, versions, errors, pid):
    out = {v: {"gateway": [], "direct": []} for v in versions}
    for i in range(runs):
        for ver in versions:
            order = ("gateway", "direct") if i % 2 == 0 else ("direct", "gateway")
            for via in order:
                r = curl_speed(via, ver, up_port, up_ca, size, errors, pid)
                if r:
                    out[ver][via].append(r)
    return out


def run(up_port, up_ca, pid, out_path):
    n_keep = env_int("KEEPALIVE_REQUESTS", 2000)
    n_new = env_int("NEW_CONNECTIONS", 300)
    n_tun = env_int("TUNNELS", 100)
    big = env_int("BIG_BYTES", 1 << 30)
    big_runs = env_int("BIG_RUNS", 5)
    versions = os.environ.get("HTTP_VERSIONS", "1.1 2").split()
    paths = Paths(int(up_port), up_ca)
    errors = []
    res = {"params": {"keepalive_requests": n_keep, "new_connections": n_new, "tunnels": n_tun,
                      "big_bytes": big, "big_runs": big_runs, "python": sys.version.split()[0],
                      "nproc": os.cpu_count()}}
    res["agent_at_start"] = proc_status(pid)
    res["loadavg_start"] = os.getloadavg()
    started = time.monotonic()
    gc.disable()
    cpu = {"gateway": 0.0, "direct": 0.0}
    ka = keepalive(paths, n_keep, 100, errors, pid, cpu)
    res["keepalive"] = {v: summary(t) for v, t in ka.items()}
    res["keepalive_agent_cpu"] = cpu
    print(f"keep-alive: done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    cpu = {"gateway": 0.0, "direct": 0.0}
    nc = newconn(paths, n_new, errors, pid, cpu)
    res["newconn"] = {v: summary(t) for v, t in nc.items()}
    res["newconn_agent_cpu"] = cpu
    gc.enable()
    print(f"new connections: done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    res["tunnels"] = tunnels(paths, pid, n_tun, env_int("TUNNEL_ROUNDS", 3), errors)
    print(f"tunnels: done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    res["throughput"] = throughput(up_port, up_ca, big, big_runs, versions, errors, pid)
    print(f"throughput: done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    res["agent_at_end"] = proc_status(pid)
    res["loadavg_end"] = os.getloadavg()
    res["seconds"] = time.monotonic() - started
    res["errors"] = errors
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)


def check(up_dir, value, out_path):
    """Counts the requests the upstream saw, by path, and their Authorization header."""
    want = f"Bearer {value}"
    counts = {"gateway": 0, "direct": 0}
    bad = []
    versions = {}
    with open(os.path.join(up_dir, "requests.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            q = urllib.parse.parse_qs(r.get("query") or "")
            via = (q.get("via") or [None])[0]
            auth = (r["headers"].get("authorization") or [None])[0]
            if r["path"] == "/big":  # no room for ?via= (the route reads the whole query)
                key = f"{r['version']} {'with' if auth == want else 'without'} the credential"
                versions[key] = versions.get(key, 0) + 1
            if via == "gateway":
                counts["gateway"] += 1
                if auth != want:
                    bad.append(f"through the gateway without the credential: {r['path']} {r.get('query')}")
            elif via == "direct":
                counts["direct"] += 1
                if auth is not None:
                    bad.append(f"direct with an Authorization header: {r['path']}")
            if "proxy-authorization" in r["headers"] or "jitc-placeholder-" in line:
                bad.append(f"a proxy credential or placeholder reached the upstream: {r['path']}")
    with open(out_path) as f:
        res = json.load(f)
    res["upstream_log"] = {"requests": counts, "big_versions_seen_upstream": versions, "problems": bad[:20],
                           "problem_count": len(bad)}
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)


def ms(x):
    return f"{x * 1e3:.3f}"


def latency_table(L, stats, cpu):
    L.append("| | p50 ms | p90 ms | p99 ms | p99.9 ms | > 1 ms | agent CPU per request |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for v, name in (("direct", "direct"), ("gateway", "through the gateway")):
        st = stats[v]
        L.append(f"| {name} | {ms(st['p50'])} | {ms(st['p90'])} | {ms(st['p99'])} | {ms(st['p99.9'])} | "
                 f"{st['over_1ms']}/{st['n']} | {cpu[v] / st['n'] * 1e6:.0f} µs |")
    g, d = stats["gateway"], stats["direct"]
    L.append(f"| **added** | **{ms(g['p50'] - d['p50'])}** | {ms(g['p90'] - d['p90'])} | "
             f"{ms(g['p99'] - d['p99'])} | {ms(g['p99.9'] - d['p99.9'])} | | |")
    L.append("")


def mib(st):
    return f"{st['VmRSS'] / 1024:.1f}", f"{st['VmHWM'] / 1024:.1f}"


def report(out_path):
    with open(out_path) as f:
        res = json.load(f)
    p = res["params"]
    L = []
    L.append("### Per request, one kept-alive connection each way (HTTP/1.1, sequential GETs)\n")
    L.append(f"{p['keepalive_requests']} GETs each way, interleaved in blocks of 100, after 50 warm-up "
             "requests each; time from sending the request to the end of the response body.\n")
    latency_table(L, res["keepalive"], res["keepalive_agent_cpu"])
    L.append("### Per request, a new connection each (HTTP/1.1)\n")
    L.append(f"{p['new_connections']} requests each way, alternating; time from connect to the end of "
             "the response: TCP + TLS (direct), or TCP + CONNECT + TLS with the gateway's leaf "
             "(the gateway's own connection to the upstream is pooled).\n")
    latency_table(L, res["newconn"], res["newconn_agent_cpu"])
    L.append(f"### Throughput: {p['big_bytes'] / (1 << 30):g} GiB downloaded with curl\n")
    L.append(f"{p['big_runs']} runs each, interleaved; medians of curl's `speed_download`, MiB/s; "
             "agent CPU: the agent's user + system time per GiB through it.\n")
    L.append("| | direct | through the gateway | ratio | agent CPU per GiB |")
    L.append("|---|---:|---:|---:|---:|")
    runs = []
    for ver, d in res["throughput"].items():
        dm = median([r["speed"] for r in d["direct"]]) / (1 << 20)
        gm = median([r["speed"] for r in d["gateway"]]) / (1 << 20)
        cpu = median([r["agent_cpu"] for r in d["gateway"]]) / (p["big_bytes"] / (1 << 30))
        L.append(f"| HTTP/{ver} | {dm:.0f} | {gm:.0f} | **{gm / dm:.0%}** | {cpu:.2f} s |")
        runs.append(f"HTTP/{ver} direct " + ", ".join(f"{r['speed'] / (1 << 20):.0f}" for r in d["direct"])
                    + "; through the gateway " + ", ".join(f"{r['speed'] / (1 << 20):.0f}" for r in d["gateway"]))
    L.append("")
    L.append("Every run (MiB/s): " + " — ".join(runs) + ".\n")
    L.append(f"### The agent's memory with {p['tunnels']} tunnels open at once\n")
    L.append(f"Each round: {p['tunnels']} tunnels opened one after another (CONNECT + TLS + one GET each) and "
             "held open, then one more GET on every one of them at once (a thread each), then all closed. "
             "Peak: VmRSS sampled every 10 ms during the step.\n")
    L.append("| step | VmRSS MiB | peak MiB | VmHWM MiB | threads | fds |")
    L.append("|---|---:|---:|---:|---:|---:|")
    rss, hwm = mib(res["agent_at_start"])
    st = res["agent_at_start"]
    L.append(f"| lease granted, no gateway connection yet | {rss} | | {hwm} | {st['Threads']} | {st['fds']} |")
    for st in res["tunnels"]:
        rss, hwm = mib(st)
        name = "after the latency runs" if st["step"] == "before" else st["step"]
        peak = f"{st['peak_rss_sampled'] / 1024:.1f}" if "peak_rss_sampled" in st else ""
        L.append(f"| {name} | {rss} | {peak} | {hwm} | {st['Threads']} | {st['fds']} |")
    st = res["agent_at_end"]
    rss, hwm = mib(st)
    L.append(f"| after the {p['big_runs'] * len(res['throughput'])} downloads through the gateway "
             f"| {rss} | | {hwm} | {st['Threads']} | {st['fds']} |")
    L.append("")
    ul = res.get("upstream_log")
    if ul:
        L.append(f"Checked in the upstream's log: {ul['requests']['gateway']} requests through the gateway, "
                 f"{ul['requests']['direct']} direct; {ul['problem_count']} problems (a request through the "
                 "gateway without `Authorization: Bearer <value>`, a direct one with any, a proxy credential "
                 f"or a placeholder reaching the upstream). Downloads as the upstream saw them: "
                 f"{ul['big_versions_seen_upstream']}.")
        for b in ul["problems"]:
            L.append(f"- {b}")
    L.append(f"Errors during the run: {len(res['errors'])}. Load average at start "
             f"{' '.join(f'{x:.2f}' for x in res['loadavg_start'])}, at end "
             f"{' '.join(f'{x:.2f}' for x in res['loadavg_end'])}; {p['nproc']} CPUs; "
             f"measured in {res['seconds']:.0f} s; Python {p['python']}.")
    for e in res["errors"][:20]:
        L.append(f"- {e}")
    print("\n".join(L))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"run": run, "check": check, "report": report}[cmd](*args)

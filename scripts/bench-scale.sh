#!/usr/bin/env bash
# How jitc scales with the vault (BENCHMARKS.md, "Scale"): for each vault size, the
# median wall time of `jitc ls`, `jitc add` (a new name), `jitc unlock` and
# `jitc exec -s X -- true`, and the time to import 10,000 entries into it. Release build
# in a throwaway home (NO_BUILD=1 to reuse it; BIN=DIR for another build).
#
#   scripts/bench-scale.sh [SIZES…]        [default: 10 1000 10000 100000]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10 1000 10000 100000)
[ -n "${NO_BUILD:-}" ] || [ -n "${BIN:-}" ] || packaging/build.sh >/dev/null
bin="$(cd "${BIN:-target/release}" && pwd)"
runs="${RUNS:-7}"

printf '%-8s %-9s %-9s %-11s %-9s %-14s %s\n' secrets ls_ms add_ms unlock_ms exec_ms import10k_ms vault_kib
for n in "${sizes[@]}"; do
    tmp="$(mktemp -d /tmp/jitc-bench-scale.XXXXXX)"
    (
        throwaway_home "$tmp"
        cd "$HOME"
        trap '"$bin/jitc" stop >/dev/null 2>&1 || true' EXIT
        python3 - "$bin/jitc" "$n" "$runs" <<'PY'
import hashlib, os, statistics, subprocess, sys, time
jitc, n, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
PASS = b"bench passphrase, not a real one\n"
def run(args, stdin=b""):
    subprocess.run([jitc] + args, input=stdin, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
def timed(args, stdin=b""):
    t = time.perf_counter(); run(args, stdin); return (time.perf_counter() - t) * 1000
def envfile(path, start, count, tag):
    with open(path, "w") as f:
        for i in range(start, start + count):
            f.write("K_%07d=%s\n" % (i, hashlib.sha256(("%s%d" % (tag, i)).encode()).hexdigest()[:32]))
run(["init", "--passphrase-stdin"], PASS)  # the default KDF: unlock is timed as users see it
for part in range(0, n, 20000):
    envfile("p.env", part, min(20000, n - part), "v")
    run(["import", "--prefix", "p%07d/" % part, "p.env"])
run(["add", "X"], b"bench-value-of-x")
ls = statistics.median(timed(["ls"]) for _ in range(runs))
add = statistics.median(timed(["add", "new/%d" % i], b"v%d-value" % i) for i in range(runs))
def unlock():
    run(["lock"]); return timed(["unlock", "--passphrase-stdin"], PASS)
unl = statistics.median(unlock() for _ in range(3))
ex = statistics.median(timed(["exec", "-s", "X", "--", "true"]) for _ in range(runs))
vault = os.path.getsize(os.path.expanduser("~/.local/share/jitc/vault.jitc")) // 1024
envfile("big.env", 0, 10000, "w")
imp = timed(["import", "--prefix", "imp/", "big.env"])
print("%-8d %-9.1f %-9.1f %-11.0f %-9.1f %-14.0f %d" % (n, ls, add, unl, ex, imp, vault))
PY
    )
    rm -rf "$tmp"
done

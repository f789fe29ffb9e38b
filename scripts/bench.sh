#!/usr/bin/env bash
# Reproduces the figures in BENCHMARKS.md on this machine:
#   1. wall time of `jitc status` and `jitc exec -s X -- true` against `ssh-add -l` and
#      `gpg-connect-agent /bye` talking to running agents (ssh-agent holds one key;
#      hyperfine, medians), and the
#      same exec against a second agent whose audit log is not synced;
#   2. lease grant+release pairs per second and latency with 1, 8, 32 and 128
#      concurrent clients, beside ssh-agent answering REQUEST_IDENTITIES driven by the
#      same client loop (jitc-lease-bench);
#   2b. the cost of the audit's fdatasync at 32 clients (a second agent, no sync);
#   3. the masker alone (criterion, one core, 1 and 100 values with all encodings), and
#      `jitc exec -s X -- cat` of a 1 GB file beside plain `cat`;
#   4. the agent's memory after unlocking a vault of 1,000 secrets.
# Everything runs in a throwaway home; nothing of yours is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${RUNS:-1000}"
if ! command -v hyperfine >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null 2>&1
    else
        echo "bench.sh: please install hyperfine" >&2; exit 1
    fi
fi
command -v ssh-agent >/dev/null || { echo "bench.sh: please install openssh-client" >&2; exit 1; }

packaging/build.sh >/dev/null
# The masker's criterion bench runs now, while HOME is still the real one (cargo and
# rustup live there); its figures are printed in their place below.
masker_bench="$(cargo bench --locked -p jitc --bench mask -- --noplot 2>/dev/null \
    | grep -E '^mask/|thrpt:' | grep -v '%' | paste - - \
    | sed -E 's/ +/ /g; s/thrpt: \[[^ ]+ [^ ]+ ([^ ]+ [^ ]+) [^]]+\]/median \1/')"
jitc="$PWD/target/release/jitc"
lease_bench="$PWD/target/release/jitc-lease-bench"

tmp="$(mktemp -d /tmp/jitc-bench.XXXXXX)"
cleanup() {
    [ -n "${SSH_AGENT_PID:-}" ] && kill "$SSH_AGENT_PID" 2>/dev/null || true
    [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null || true
    [ -n "${nosync_pid:-}" ] && kill "$nosync_pid" 2>/dev/null || true
    [ -n "${GNUPGHOME:-}" ] && gpgconf --kill gpg-agent 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
export HOME="$tmp" XDG_RUNTIME_DIR="$tmp/run" XDG_DATA_HOME="$tmp/data" \
    XDG_STATE_HOME="$tmp/state" XDG_CONFIG_HOME="$tmp/config"
unset JITC_SOCK JITC_VAULT
mkdir -m 0700 "$XDG_RUNTIME_DIR"

eval "$(ssh-agent -s -a "$tmp/ssh-agent.sock")" >/dev/null
ssh-keygen -q -t ed25519 -N '' -f "$tmp/id_ed25519"
ssh-add -q "$tmp/id_ed25519"

# gpg-agent too, the other agent a user already runs: `gpg-connect-agent /bye` is its
# connect-and-hello, as `ssh-add -l` is ssh-agent's.
if command -v gpg-connect-agent >/dev/null; then
    export GNUPGHOME="$tmp/gnupg"
    mkdir -m 0700 "$GNUPGHOME"
    gpgconf --launch gpg-agent
    gpg_cmd=('gpg-connect-agent --no-autostart /bye')
else
    echo "bench.sh: gpg-connect-agent not found (package gnupg): its row is left out" >&2
    gpg_cmd=()
fi

eval "$("$jitc" agent 2>/dev/null)"
agent_pid="$("$jitc" status --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')"
printf 'bench passphrase\n' | "$jitc" init --passphrase-stdin 2>/dev/null
printf 'value-of-x' | "$jitc" add X 2>/dev/null
# A second agent, the same but for the audit's fdatasync: what durability costs.
nosync_sock="$XDG_RUNTIME_DIR/nosync.sock"
JITC_SOCK="$nosync_sock" JITC_VAULT="$tmp/nosync.jitc" "$PWD/target/release/jitc-agentd" \
    --no-audit-sync --audit-log "$tmp/nosync-audit.log" >/dev/null 2>&1 &
nosync_pid=$!
while ! [ -S "$nosync_sock" ]; do sleep 0.05; done
printf 'bench passphrase\n' | JITC_SOCK="$nosync_sock" "$jitc" init --passphrase-stdin 2>/dev/null
printf 'value-of-x' | JITC_SOCK="$nosync_sock" "$jitc" add X 2>/dev/null

echo "== start-up and one round trip (hyperfine -N, $runs runs each, after 100 warm-up runs)"
hyperfine -N --warmup 100 --runs "$runs" --style basic \
    --export-json "$tmp/latency.json" \
    'ssh-add -l' "${gpg_cmd[@]}" "$jitc status" "$jitc exec -s X -- true" >/dev/null 2>&1
# The same exec against the agent whose audit is not synced (hyperfine -N cannot set
# a variable per command, so it is a run of its own, right after).
JITC_SOCK="$nosync_sock" hyperfine -N --warmup 100 --runs "$runs" --style basic \
    --export-json "$tmp/latency-nosync.json" "$jitc exec -s X -- true" >/dev/null 2>&1
python3 - "$tmp/latency.json" "$tmp/latency-nosync.json" <<'PY'
import json, statistics, sys
res = json.load(open(sys.argv[1]))["results"]
nosync = json.load(open(sys.argv[2]))["results"][0]
nosync["command"] += " (audit not synced)"
res.append(nosync)
base = statistics.median(res[0]["times"])
print(f"{'command':44} {'median':>10} {'mean':>10} {'p95':>10}  vs ssh-add -l")
for r in res:
    t = sorted(r["times"])
    med = statistics.median(t)
    p95 = t[int(len(t) * 0.95) - 1]
    name = r["command"].replace(sys.argv[1].rsplit('/', 1)[0], "")
    name = name.split("/target/release/")[-1]
    print(f"{name:44} {med*1e3:8.3f}ms {r['mean']*1e3:8.3f}ms {p95*1e3:8.3f}ms  {med/base:5.2f}x")
PY

echo
seconds="${SECONDS_PER_RUN:-3}"
rounds="${ROUNDS:-3}"
echo "== lease grant+release pairs vs ssh-agent REQUEST_IDENTITIES"
echo "   (${rounds} alternating rounds of ${seconds}s per setting; medians of the rounds)"
: > "$tmp/leases.txt"
for clients in 1 8 32 128; do
    for _ in $(seq 1 "$rounds"); do
        "$lease_bench" jitc "$JITC_SOCK" X "$clients" "$seconds" >> "$tmp/leases.txt"
        "$lease_bench" ssh "$SSH_AUTH_SOCK" - "$clients" "$seconds" >> "$tmp/leases.txt"
    done
done
python3 scripts/lease_table.py "$tmp/leases.txt" ssh "jitc pairs/s" "ssh-agent req/s" "ssh p99"

echo
echo "== the cost of durability: 32 clients, audit records fdatasync'd (group commit)"
echo "   against a second agent whose audit writes skip the sync (--no-audit-sync);"
echo "   the log is on $(df --output=fstype "$XDG_STATE_HOME" | tail -1); ${rounds} alternating rounds of ${seconds}s"
: > "$tmp/sync.txt"
for _ in $(seq 1 "$rounds"); do
    "$lease_bench" jitc "$JITC_SOCK" X 32 "$seconds" | sed 's/^/sync /' >> "$tmp/sync.txt"
    "$lease_bench" jitc "$nosync_sock" X 32 "$seconds" | sed 's/^/nosync /' >> "$tmp/sync.txt"
done
kill "$nosync_pid"
python3 - "$tmp/sync.txt" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    kind = line.split()[0]
    rate = float(re.search(r"rate=(\d+)", line).group(1))
    p50 = float(re.search(r"p50=([\d.]+)", line).group(1))
    p99 = float(re.search(r"p99=([\d.]+)", line).group(1))
    runs.setdefault(kind, []).append((rate, p50, p99))
med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in runs.items()}
for k, label in (("sync", "audit synced (default)"), ("nosync", "audit not synced")):
    r, p50, p99 = med[k]
    print(f"{label:24} {r:>8.0f} pairs/s  p50 {p50/1000:.2f}ms  p99 {p99/1000:.2f}ms")
print(f"durability keeps {med['sync'][0]/med['nosync'][0]*100:.0f}% of the unsynced rate")
PY

echo
echo "== masker throughput (criterion; one core; 16 MiB of log lines in 64 KiB writes)"
echo "$masker_bench"

echo
echo "== jitc exec -s Y -- cat of a 1 GB file, beside plain cat (output to /dev/null)"
printf 'sk_live_9fQ2xLm7Rt4Vb8Nc1Kd6Ab' | "$jitc" add Y 2>/dev/null
# 1 GiB of base64 lines (the last head closes the pipe early: no pipefail here).
(set +o pipefail; head -c 805306368 /dev/urandom | base64 -w 100 | head -c 1073741824) > "$tmp/big.txt"
hyperfine -N --warmup 2 --runs 10 --style basic --export-json "$tmp/cat.json" \
    "cat $tmp/big.txt" "$jitc exec -s Y -- cat $tmp/big.txt" >/dev/null 2>&1
python3 - "$tmp/cat.json" <<'PY'
import json, statistics, sys
res = json.load(open(sys.argv[1]))["results"]
base = statistics.median(res[0]["times"])
for r in res:
    med = statistics.median(r["times"])
    name = "jitc exec -s Y -- cat" if " exec -s Y " in r["command"] else "cat"
    print(f"{name:24} median {med*1e3:7.1f} ms  {1.073741824/med:5.2f} GB/s  {base/med:4.2f}x of cat's throughput")
PY
rm -f "$tmp/big.txt"

echo
echo "== agent memory with 1,000 secrets (32-byte values), after a fresh unlock"
for i in $(seq 1 1000); do
    head -c 24 /dev/urandom | base64 | "$jitc" add "bench/secret-$i" 2>/dev/null
done
"$jitc" lock 2>/dev/null
printf 'bench passphrase\n' | "$jitc" unlock --passphrase-stdin 2>/dev/null
"$jitc" exec -s bench/secret-500 -- true
for f in VmRSS VmHWM VmLck; do
    printf '%-6s %s\n' "$f" "$(sed -n "s/^$f:[[:space:]]*//p" /proc/"$agent_pid"/status)"
done
printf 'vault  %s bytes on disk\n' "$(stat -c %s "$XDG_DATA_HOME/jitc/vault.jitc")"

echo
echo "== the sandbox (scripts/bench-sandbox.sh)"
# Built above; HOME is the throwaway one by now, where cargo would not find its toolchain.
NO_BUILD=1 "$PWD/scripts/bench-sandbox.sh"

echo
echo "== jitc mcp (scripts/bench-mcp.sh)"
NO_BUILD=1 "$PWD/scripts/bench-mcp.sh"

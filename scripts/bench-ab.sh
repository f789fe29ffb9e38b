#!/usr/bin/env bash
# Side by side, in one run: two builds of jitc (OLD and NEW release directories, each
# holding jitc, jitc-agentd and jitc-lease-bench) and ssh-agent as the peer.
#   1. `jitc exec -s X -- true` of each build beside `ssh-add -l` (hyperfine -N, each
#      command run through `env` so that each can be pointed at its own agent);
#   2. lease grant+release pairs per second at 1 and 32 clients, audit synced and not
#      synced, alternating rounds between the builds;
#   3. the agent's memory after unlocking a vault of 1,000 secrets.
# Each build gets its own throwaway home and a vault of 1,000 secrets (32-byte values),
# so that whatever a build does per secret on the lease path shows.
#
#   scripts/bench-ab.sh /path/to/old/target/release target/release
set -euo pipefail
old="$(realpath "${1:?usage: bench-ab.sh OLD_RELEASE_DIR NEW_RELEASE_DIR}")"
new="$(realpath "${2:?usage: bench-ab.sh OLD_RELEASE_DIR NEW_RELEASE_DIR}")"
runs="${RUNS:-500}"
rounds="${ROUNDS:-4}"
seconds="${SECONDS_PER_RUN:-3}"
secrets="${SECRETS:-1000}"
command -v hyperfine >/dev/null || { echo "bench-ab.sh: please install hyperfine" >&2; exit 1; }

tmp="$(mktemp -d /tmp/jitc-ab.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    # The agents are not our children: wait for them to be gone before removing
    # the directories they still write their last lines to.
    for p in "${pids[@]}"; do
        while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

eval "$(ssh-agent -s -a "$tmp/ssh-agent.sock")" >/dev/null
pids+=("$SSH_AGENT_PID")
ssh-keygen -q -t ed25519 -N '' -f "$tmp/id_ed25519"
ssh-add -q "$tmp/id_ed25519"

# setup NAME DIR [AGENT FLAGS…]: an agent of build DIR in $tmp/NAME, unlocked, with
# X and $secrets more secrets.
setup() {
    local name="$1" dir="$2"
    shift 2
    local home="$tmp/$name"
    mkdir -p "$home/run" && chmod 700 "$home/run"
    (
        export HOME="$home" XDG_RUNTIME_DIR="$home/run" XDG_DATA_HOME="$home/data" \
            XDG_STATE_HOME="$home/state" XDG_CONFIG_HOME="$home/config"
        unset JITC_SOCK JITC_VAULT
        "$dir/jitc-agentd" "$@" >/dev/null 2>&1 &
        echo $! > "$home/pid"
        while ! [ -S "$home/run/jitc/agent.sock" ]; do sleep 0.05; done
        printf 'bench passphrase\n' | "$dir/jitc" init --passphrase-stdin 2>/dev/null
        printf 'value-of-x' | "$dir/jitc" add X 2>/dev/null
        for i in $(seq 1 "$secrets"); do
            head -c 24 /dev/urandom | base64 | "$dir/jitc" add "bench/secret-$i" 2>/dev/null
        done
        "$dir/jitc" lock 2>/dev/null
        printf 'bench passphrase\n' | "$dir/jitc" unlock --passphrase-stdin 2>/dev/null
        "$dir/jitc" exec -s X -- true
    )
    pids+=("$(cat "$home/pid")")
    echo "$home/run/jitc/agent.sock" > "$home/sock"
}
setup old "$old"
setup new "$new"
setup old-nosync "$old" --no-audit-sync
setup new-nosync "$new" --no-audit-sync
sock() { cat "$tmp/$1/sock"; }
envs() {
    local home="$tmp/$1"
    echo "env HOME=$home XDG_RUNTIME_DIR=$home/run XDG_DATA_HOME=$home/data XDG_STATE_HOME=$home/state XDG_CONFIG_HOME=$home/config JITC_SOCK=$(sock "$1")"
}

echo "== exec latency: $runs runs each after 50 warm-up runs (hyperfine -N, all via env)"
hyperfine -N --warmup 50 --runs "$runs" --style basic --export-json "$tmp/exec.json" \
    "env SSH_AUTH_SOCK=$SSH_AUTH_SOCK ssh-add -l" \
    "$(envs old) $old/jitc exec -s X -- true" \
    "$(envs new) $new/jitc exec -s X -- true" >/dev/null 2>&1
python3 - "$tmp/exec.json" <<'PY'
import json, statistics, sys
res = json.load(open(sys.argv[1]))["results"]
names = ["ssh-add -l", "old jitc exec -s X -- true", "new jitc exec -s X -- true"]
base = statistics.median(res[0]["times"])
for name, r in zip(names, res):
    t = sorted(r["times"])
    med = statistics.median(t)
    p95 = t[int(len(t) * 0.95) - 1]
    print(f"{name:30} median {med*1e3:6.3f} ms  p95 {p95*1e3:6.3f} ms  {med/base:4.2f}x of ssh-add -l")
PY

echo
echo "== lease grant+release pairs: $rounds alternating rounds of ${seconds}s, medians"
: > "$tmp/leases.txt"
for clients in 1 32; do
    for _ in $(seq 1 "$rounds"); do
        for agent in old new old-nosync new-nosync; do
            build="${agent%-nosync}"
            dir="$old"; [ "$build" = new ] && dir="$new"
            "$dir/jitc-lease-bench" jitc "$(sock "$agent")" X "$clients" "$seconds" \
                | sed "s/^/$agent /" >> "$tmp/leases.txt"
        done
    done
done
python3 - "$tmp/leases.txt" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    agent = line.split()[0]
    clients = int(re.search(r"clients=(\d+)", line).group(1))
    rate = float(re.search(r"rate=(\d+)", line).group(1))
    p50 = float(re.search(r"p50=([\d.]+)", line).group(1))
    p99 = float(re.search(r"p99=([\d.]+)", line).group(1))
    runs.setdefault((agent, clients), []).append((rate, p50, p99))
print(f"{'agent':12} {'clients':>7} {'pairs/s':>9} {'p50':>9} {'p99':>9}  new/old")
for clients in (1, 32):
    for sync in ("", "-nosync"):
        med = {}
        for build in ("old", "new"):
            v = runs[(build + sync, clients)]
            med[build] = [statistics.median(x[i] for x in v) for i in range(3)]
            r, p50, p99 = med[build]
            print(f"{build + sync:12} {clients:>7} {r:>9.0f} {p50/1000:>7.2f}ms {p99/1000:>7.2f}ms", end="")
            print(f"  {med['new'][0]/med['old'][0]:5.2f}x" if build == "new" else "")
PY

echo
echo "== agent memory after unlocking a vault of $secrets secrets"
for agent in old new; do
    pid="$(cat "$tmp/$agent/pid")"
    printf '%-4s' "$agent"
    for f in VmRSS VmHWM VmLck; do
        printf '  %s %s' "$f" "$(sed -n "s/^$f:[[:space:]]*//p" /proc/"$pid"/status)"
    done
    echo
done

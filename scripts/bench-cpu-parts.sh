#!/usr/bin/env bash
# Where the agent's CPU per grant+release goes, by thread (issue 16, point 6): on held
# connections with CLIENTS clients, the utime+stime of each of the agent's threads
# (/proc/PID/task/TID/stat) over a run, divided by the pairs served:
#   runtime   the agent's one runtime thread: sockets, requests, leases, records
#             serialized, sealed and written;
#   sync      tokio's blocking pool: the audit fdatasync (and the checkpoint's);
#   compress  the threads that compressed rotated audit files (gone by the end: the
#             process's total less its live threads).
# Rounds alternate the agent as it ships with one started `--no-audit-sync`, so the
# durability's whole cost (the syncs and the smaller batches they make) reads off one
# run; ssh-agent's CPU per request at the same concurrency is beside them. Medians.
# POLICY=1 adds a third agent, as it ships but with a policy file (`[defaults]`, which
# changes nothing): what re-checking the file and its directories on each request costs.
#
#   scripts/bench-cpu-parts.sh   [ROUNDS=3 CLIENTS=32 SECONDS_PER_RUN=6 POLICY= NO_BUILD=1]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
rounds="${ROUNDS:-3}" clients="${CLIENTS:-32}" secs="${SECONDS_PER_RUN:-6}"
[ -n "${NO_BUILD:-}" ] || packaging/build.sh >/dev/null
bin="$PWD/target/release"
tick="$(getconf CLK_TCK)"
work="$(mktemp -d /tmp/jitc-cpu-parts.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# The same agent, without its syncs (`jitc agent` starts $JITC_AGENTD).
printf '#!/bin/sh\nexec %q --no-audit-sync "$@"\n' "$bin/jitc-agentd" >"$work/nosync-agentd"
chmod +x "$work/nosync-agentd"

# ticks PID: "name ticks" for each live thread, then "total ticks".
ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        printf '%s %s\n' "$(cat "$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
    done
    awk '{print "total", $14 + $15}' "/proc/$1/stat"
}
# parts BEFORE AFTER PAIRS: "total runtime sync compress" in microseconds per pair.
parts() {
    awk -v n="$3" -v t="$tick" '
        FNR == 1 { f++ }
        { k = $1 == "jitc-agentd" ? "runtime" : $1 == "tokio-rt-worker" ? "sync" \
              : $1 == "total" ? "total" : "compress"
          v[f, k] += $2 }
        END {
            for (k in v) { split(k, p, SUBSEP); if (p[1] == 1) d[p[2]] -= v[k]; else d[p[2]] += v[k] }
            # Threads gone by the end compressed: the total less the live threads.
            d["compress"] = d["total"] - d["runtime"] - d["sync"]
            s = 1e6 / t / n
            printf "%.1f %.1f %.1f %.1f\n", d["total"] * s, d["runtime"] * s, d["sync"] * s, d["compress"] * s
        }' "$1" "$2"
}
# one KIND (synced, nosync, policy or ssh): one round in a throwaway home. Prints the
# jitc agent's parts, or ssh-agent's CPU per request.
one() {
    local tmp="$work/home.$RANDOM" agentd="$bin/jitc-agentd" out
    mkdir "$tmp"
    [ "$1" != nosync ] || agentd="$work/nosync-agentd"
    (
        trap 'agents_down; rm -rf "$tmp"' EXIT
        throwaway_home "$tmp"
        JITC_AGENTD="$agentd" agents_up "$bin" >/dev/null
        if [ "$1" = ssh ]; then
            ticks "$SSH_AGENT_PID" >"$tmp/before"
            out="$("$bin/jitc-lease-bench" ssh "$SSH_AUTH_SOCK" - "$clients" "$secs")"
            ticks "$SSH_AGENT_PID" >"$tmp/after"
            parts "$tmp/before" "$tmp/after" "$(ops_of "$out")" | awk '{print $1}'
            exit
        fi
        if [ "$1" = policy ]; then
            mkdir -p "$XDG_CONFIG_HOME/jitc"
            (umask 077 && printf '[defaults]\n' >"$XDG_CONFIG_HOME/jitc/policy.toml")
        fi
        "$bin/jitc-lease-bench" jitc "$JITC_SOCK" X "$clients" 2 >/dev/null
        if [ "$1" = policy ] && "$bin/jitc" status | grep -q '^policy .*absent'; then
            echo "the policy file was not taken up" >&2
            exit 1
        fi
        ticks "$agent_pid" >"$tmp/before"
        out="$("$bin/jitc-lease-bench" jitc "$JITC_SOCK" X "$clients" "$secs")"
        ticks "$agent_pid" >"$tmp/after"
        parts "$tmp/before" "$tmp/after" "$(ops_of "$out")"
    )
}
declare -a synced nosync policy ssh
for i in $(seq "$rounds"); do
    r="$(one synced)"; synced+=("$r")
    echo "round $i  synced     total/runtime/sync/compress us: $r"
    r="$(one nosync)"; nosync+=("$r")
    echo "round $i  no sync    total/runtime/sync/compress us: $r"
    if [ -n "${POLICY:-}" ]; then
        r="$(one policy)"; policy+=("$r")
        echo "round $i  policy     total/runtime/sync/compress us: $r"
    fi
    r="$(one ssh)"; ssh+=("$r")
    echo "round $i  ssh-agent  per request us: $r"
done
# column N ROWS...: the median of column N.
column() {
    local c="$1"
    shift
    printf '%s\n' "$@" | awk -v c="$c" '{print $c}' | median
}
row() {
    local name="$1"
    shift
    printf '%-28s %8s %8s %8s %8s\n' "$name" "$(column 1 "$@")" "$(column 2 "$@")" \
        "$(column 3 "$@")" "$(column 4 "$@")"
}
echo "== agent CPU per grant+release, $clients clients, medians of $rounds rounds (us)"
printf '%-28s %8s %8s %8s %8s\n' "" total runtime sync compress
row "jitc-agentd" "${synced[@]}"
row "jitc-agentd --no-audit-sync" "${nosync[@]}"
[ -z "${POLICY:-}" ] || row "jitc-agentd, a policy file" "${policy[@]}"
printf '%-28s %8s\n' "ssh-agent, per request" "$(column 1 "${ssh[@]}")"

#!/usr/bin/env bash
# The agent's CPU per grant+release on held connections, two builds alternated (A, B,
# A, B, …) so that a drifting host hits both alike: each round starts the agent of one
# build in a throwaway home, warms up, then runs `jitc-lease-bench` with CLIENTS
# clients for SECONDS_PER_RUN and divides the agent's utime+stime (/proc/PID/stat) by
# the pairs served. Read medians: single runs move ±10 % on a shared VM.
#
#   scripts/bench-cpu-ab.sh A_RELEASE_DIR B_RELEASE_DIR   [ROUNDS=3 CLIENTS=32 SECONDS_PER_RUN=6]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
a="$(realpath "${1:?usage: bench-cpu-ab.sh A_RELEASE_DIR B_RELEASE_DIR}")"
b="$(realpath "${2:?usage: bench-cpu-ab.sh A_RELEASE_DIR B_RELEASE_DIR}")"
rounds="${ROUNDS:-3}" clients="${CLIENTS:-32}" secs="${SECONDS_PER_RUN:-6}"
tick="$(getconf CLK_TCK)"

# one BIN_DIR: microseconds of agent CPU per pair.
one() {
    local bin="$1" tmp out ops u0 s0 u1 s1
    tmp="$(mktemp -d /tmp/jitc-cpu-ab.XXXXXX)"
    (
        trap 'agents_down; rm -rf "$tmp"' EXIT
        throwaway_home "$tmp"
        agents_up "$bin" >/dev/null
        "$bin/jitc-lease-bench" jitc "$JITC_SOCK" X "$clients" 2 >/dev/null
        read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$agent_pid/stat")
        out="$("$bin/jitc-lease-bench" jitc "$JITC_SOCK" X "$clients" "$secs")"
        read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$agent_pid/stat")
        ops="$(ops_of "$out")"
        awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v n="$ops" -v t="$tick" \
            'BEGIN { printf "%.1f %.1f %.1f\n", (u+s)*1e6/t/n, u*1e6/t/n, s*1e6/t/n }'
    )
}
declare -a ra rb
for i in $(seq "$rounds"); do
    read -r t u s < <(one "$a"); ra+=("$t"); echo "round $i  A  $t us (user $u, system $s)"
    read -r t u s < <(one "$b"); rb+=("$t"); echo "round $i  B  $t us (user $u, system $s)"
done
ma="$(printf '%s\n' "${ra[@]}" | median)" mb="$(printf '%s\n' "${rb[@]}" | median)"
awk -v a="$ma" -v b="$mb" -v c="$clients" \
    'BEGIN { printf "agent CPU per grant+release, %d clients, median: A %.1f us, B %.1f us (B/A %.2f)\n", c, a, b, b/a }'

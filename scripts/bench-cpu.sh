#!/usr/bin/env bash
# The agent's CPU per lease, beside ssh-agent's per request (issue 16, point 6): the
# utime+stime each daemon accrues (from /proc/PID/stat) over a run, divided by what it
# served.
#   1. N `jitc exec -s X -- true` (a new connection, hello, lease, guard, release and
#      their records each) against N `ssh-add -l`;
#   2. jitc-lease-bench: grant+release pairs on held connections, 1 and 32 clients,
#      against ssh-agent's REQUEST_IDENTITIES, SECONDS each.
# In a throwaway home, release build. Tick-based accounting on a VM is coarse: use
# N ≥ 1000 and read the figures as ±10 %.
#
#   scripts/bench-cpu.sh            [N=1000 SECONDS=5 NO_BUILD=1]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
n="${N:-1000}"
secs="${SECONDS_PER_RUN:-5}"
[ -n "${NO_BUILD:-}" ] || packaging/build.sh >/dev/null
bin="$PWD/target/release"
tmp="$(mktemp -d /tmp/jitc-cpu.XXXXXX)"
cleanup() {
    agents_down
    rm -rf "$tmp"
}
trap cleanup EXIT
throwaway_home "$tmp"
agents_up "$bin"
tick="$(getconf CLK_TCK)"
# cpu PID: user and system ticks so far.
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; }
# per BEFORE AFTER COUNT: microseconds of user, system and both per item.
per() {
    read -r u0 s0 <<<"$1"; read -r u1 s1 <<<"$2"
    awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v n="$3" -v t="$tick" \
        'BEGIN { printf "%7.1f us (user %6.1f, system %6.1f)", (u+s)*1e6/t/n, u*1e6/t/n, s*1e6/t/n }'
}
echo "== daemon CPU per item, $n each"
a="$(cpu "$agent_pid")"
for _ in $(seq "$n"); do "$bin/jitc" exec -s X -- true; done
echo "jitc-agentd per 'jitc exec -s X -- true': $(per "$a" "$(cpu "$agent_pid")" "$n")"
a="$(cpu "$SSH_AGENT_PID")"
for _ in $(seq "$n"); do ssh-add -l >/dev/null; done
echo "ssh-agent   per 'ssh-add -l':             $(per "$a" "$(cpu "$SSH_AGENT_PID")" "$n")"
for clients in 1 32; do
    a="$(cpu "$agent_pid")"
    ops="$(ops_of "$("$bin/jitc-lease-bench" jitc "$JITC_SOCK" X "$clients" "$secs")")"
    echo "jitc-agentd per grant+release, $clients clients ($ops pairs): $(per "$a" "$(cpu "$agent_pid")" "$ops")"
    a="$(cpu "$SSH_AGENT_PID")"
    ops="$(ops_of "$("$bin/jitc-lease-bench" ssh "$SSH_AUTH_SOCK" - "$clients" "$secs")")"
    echo "ssh-agent   per request,        $clients clients ($ops requests): $(per "$a" "$(cpu "$SSH_AGENT_PID")" "$ops")"
done

#!/usr/bin/env bash
# Instructions the agent spends per lease (BENCHMARKS.md, "Where a lease's CPU goes"):
# runs the release agent under callgrind twice — serving no lease, then N leases of one
# secret (`jitc exec -s X -- true`, a new connection each) — and prints the difference
# per lease and the agent's functions that cost the most (inclusive). Instruction counts
# repeat from run to run, unlike times on a shared machine.
#
#   scripts/profile-lease.sh [N]          [default: 500]
#
# Under valgrind the CPU has no SHA-NI, so HMAC-SHA-256 shows at its software cost
# (sha2::sha256::soft); natively it is several times cheaper.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
n="${1:-500}"
command -v valgrind >/dev/null || { echo "profile-lease.sh: please install valgrind" >&2; exit 1; }
[ -n "${NO_BUILD:-}" ] || packaging/build.sh >/dev/null
bin="${BIN:-$PWD/target/release}"
out="$(mktemp -d /tmp/jitc-profile.XXXXXX)"

profile() { # profile LEASES
    local tmp; tmp="$(mktemp -d /tmp/jitc-profile-home.XXXXXX)"
    (
        throwaway_home "$tmp"
        cd "$HOME"
        callgrind_agent_up "$bin" "$out/cg.$1"
        for _ in $(seq 1 "$1"); do "$bin/jitc" exec -s X -- true; done
        "$bin/jitc" stop >/dev/null 2>&1 || true
        wait "$vg" || true
    )
    rm -rf "$tmp"
}
profile 0
profile "$n"
total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",","",$1); print $1; done=1}'; }
base="$(total "$out/cg.0")"
all="$(total "$out/cg.$n")"
echo "instructions per lease: $(( (all - base) / n )) (agent, $n leases, baseline subtracted)"
echo "top agent functions, inclusive, over the $n-lease run:"
callgrind_annotate --inclusive=yes "$out/cg.$n" 2>/dev/null | grep -E "jitc_agentd::" | awk 'NR <= 25' | cut -c1-150
echo "(callgrind files in $out)"

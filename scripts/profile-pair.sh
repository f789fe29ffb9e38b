#!/usr/bin/env bash
# Instructions the agent spends per grant+release on a held connection (what
# `jitc-lease-bench` and `bench-cpu.sh` drive, without a connection's set-up per lease):
# the release agent under callgrind, one client, run twice (SHORT and LONG seconds);
# the difference in instructions over the difference in pairs, with the share of
# software SHA-256 given apart (valgrind's CPU has no SHA-NI, so the chain's
# HMAC-SHA-256 shows there at several times its native cost). Instruction counts repeat
# from run to run, unlike times on a shared machine.
#
#   BIN=target/release scripts/profile-pair.sh        [SHORT=3 LONG=13 NO_BUILD=1]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
command -v valgrind >/dev/null || { echo "profile-pair.sh: please install valgrind" >&2; exit 1; }
[ -n "${NO_BUILD:-}" ] || packaging/build.sh >/dev/null
bin="$(realpath "${BIN:-target/release}")"

# run SECONDS: "pairs total-instructions soft-sha256-instructions"
run() {
    local tmp; tmp="$(mktemp -d /tmp/jitc-profile-pair.XXXXXX)"
    (
        trap 'rm -rf "$tmp"' EXIT
        throwaway_home "$tmp"
        callgrind_agent_up "$bin" "$tmp/cg.out"
        out="$("$bin/jitc-lease-bench" jitc "$JITC_SOCK" X 1 "$1")"
        "$bin/jitc" stop >/dev/null 2>&1 || true
        wait "$vg" || true
        callgrind_annotate "$tmp/cg.out" 2>/dev/null >"$tmp/annotated"
        printf '%s %s %s\n' "$(ops_of "$out")" \
            "$(awk '/PROGRAM TOTALS/ && !d {gsub(",","",$1); print $1; d=1}' "$tmp/annotated")" \
            "$(awk '/sha256::soft::.*compress/ && !d {gsub(",","",$1); print $1; d=1}' "$tmp/annotated" | grep . || echo 0)"
    )
}
read -r p1 t1 s1 < <(run "${SHORT:-3}")
read -r p2 t2 s2 < <(run "${LONG:-13}")
awk -v p1="$p1" -v t1="$t1" -v s1="$s1" -v p2="$p2" -v t2="$t2" -v s2="$s2" 'BEGIN {
    n = p2 - p1
    printf "instructions per grant+release: %.0f, of which software SHA-256 %.0f; without it %.0f (%d pairs apart)\n",
        (t2 - t1) / n, (s2 - s1) / n, ((t2 - t1) - (s2 - s1)) / n, n }'

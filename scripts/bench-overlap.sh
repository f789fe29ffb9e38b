#!/usr/bin/env bash
# Two `jitc` clients side by side against one agent (B's), beside `ssh-add -l`, with
# the disk quiet and then loaded by a parallel `dd oflag=dsync` loop on the audit log's
# filesystem: `jitc exec -s X -- true` of each, hyperfine -N, medians and ratios.
# Made for issue 16, point 5 — A forks the command after the values arrive, B (commit
# 4cf6eb1, "fork during the sync") while the agent syncs the grant — and good for any
# two clients that speak the same protocol.
#
#   scripts/bench-overlap.sh A_RELEASE_DIR B_RELEASE_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
old="$(realpath "${1:?usage: bench-overlap.sh A_RELEASE_DIR B_RELEASE_DIR}")"
new="$(realpath "${2:?usage: bench-overlap.sh A_RELEASE_DIR B_RELEASE_DIR}")"
runs="${RUNS:-500}"
command -v hyperfine >/dev/null || { echo "bench-overlap.sh: please install hyperfine" >&2; exit 1; }

tmp="$(mktemp -d /tmp/jitc-overlap.XXXXXX)"
load_pid=""
cleanup() {
    [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
    agents_down
    rm -rf "$tmp"
}
trap cleanup EXIT
throwaway_home "$tmp"
agents_up "$new"

measure() {
    hyperfine -N --warmup 50 --runs "$runs" --style basic --export-json "$tmp/$1.json" \
        'ssh-add -l' "$old/jitc exec -s X -- true" "$new/jitc exec -s X -- true" \
        >/dev/null 2>&1
    python3 - "$tmp/$1.json" "$1" <<'PY'
import json, statistics, sys
res = json.load(open(sys.argv[1]))["results"]
names = ["ssh-add -l", "A", "B"]
med = [statistics.median(r["times"]) * 1e3 for r in res]
for name, m in zip(names, med):
    print(f"{sys.argv[2]:7} {name:28} median {m:6.3f} ms  {m/med[0]:4.2f}x ssh-add -l")
print(f"{sys.argv[2]:7} B saves {med[1]-med[2]:+.3f} ms ({(med[1]-med[2])/med[1]*100:+.1f} %)")
PY
}
echo "== jitc exec -s X -- true, clients A and B, one agent ($runs runs each)"
measure quiet
( while :; do dd if=/dev/zero of="$tmp/load" bs=64k count=16 oflag=dsync 2>/dev/null; done ) &
load_pid=$!
measure loaded

#!/usr/bin/env bash
# What `jitc sandbox` costs (BENCHMARKS.md, "The sandbox"):
#   1. start-up: `jitc sandbox -q -- true` beside the bare `bwrap … -- true` it wraps and
#      plain `true` (hyperfine -N, medians);
#   2. the lease path with the namespace lookup: `jitc exec -s X -- true` (one new
#      connection per lease, so every run pays the lookup) with no sandbox registered,
#      from outside while one is, and from inside one — alternating rounds, medians.
# Runs in a throwaway home with the release build; nothing of yours is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

runs="${RUNS:-300}"
rounds="${ROUNDS:-3}"
command -v hyperfine >/dev/null || { echo "bench-sandbox.sh: please install hyperfine" >&2; exit 1; }
command -v bwrap >/dev/null || { echo "bench-sandbox.sh: please install bubblewrap" >&2; exit 1; }
[ -n "${NO_BUILD:-}" ] || packaging/build.sh >/dev/null
jitc="$PWD/target/release/jitc"

tmp="$(mktemp -d /tmp/jitc-bench-sandbox.XXXXXX)"
cleanup() {
    [ -n "${holder:-}" ] && kill "$holder" 2>/dev/null || true
    "$jitc" stop >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
throwaway_home "$tmp"
# The sandbox makes the home read-only and refuses to start in it: run from a project.
# And root's PATH holds /sbin and /bin, symlinks root could replace (jitc sandbox refuses
# them, rightly, when it runs as root): the bench keeps to the real directories.
mkdir -p "$HOME/project" && cd "$HOME/project"
export PATH="/usr/local/bin:/usr/bin"
eval "$("$jitc" agent 2>/dev/null)"
printf 'bench passphrase\n' | "$jitc" init --passphrase-stdin --kdf-memory 8 --kdf-iterations 1 2>/dev/null
printf 'value-of-x-0123' | "$jitc" add X 2>/dev/null

bwrap_true="bwrap --unshare-user --unshare-pid --unshare-ipc --die-with-parent --cap-drop ALL --dev-bind / / --proc /proc -- true"
echo "== start-up (hyperfine -N, $runs runs each after 20 warm-up runs)"
hyperfine -N --warmup 20 --runs "$runs" --style basic --export-json "$tmp/start.json" \
    "true" "$bwrap_true" "$jitc sandbox -q -- true" >/dev/null 2>&1
python3 - "$tmp/start.json" <<'PY'
import json, statistics, sys
res = json.load(open(sys.argv[1]))["results"]
med = [statistics.median(r["times"]) for r in res]
names = ["true", "bwrap … -- true", "jitc sandbox -- true"]
for n, m in zip(names, med):
    print(f"{n:24} median {m*1e3:7.3f} ms  {m/med[1]:5.2f}x bwrap")
print(f"jitc sandbox adds {(med[2]-med[1])*1e3:.2f} ms to bwrap (connect, status, register, the inner exec)")
PY

echo
echo "== jitc exec -s X -- true: the namespace lookup on the lease path"
echo "   ($rounds alternating rounds of $runs runs; medians of the rounds)"
: > "$tmp/lease.txt"
mkfifo "$tmp/hold"
for _ in $(seq 1 "$rounds"); do
    hyperfine -N --warmup 20 --runs "$runs" --style basic --export-json "$tmp/a.json" \
        "$jitc exec -s X -- true" >/dev/null 2>&1
    python3 -c 'import json,statistics,sys; print("none", statistics.median(json.load(open(sys.argv[1]))["results"][0]["times"]))' "$tmp/a.json" >> "$tmp/lease.txt"
    # A sandbox registered and waiting: outside clients now pay one lookup each.
    "$jitc" sandbox -q -- sh -c "read x < $tmp/hold" &
    holder=$!
    while ! "$jitc" status --json | grep -q '"profile"'; do sleep 0.05; done
    hyperfine -N --warmup 20 --runs "$runs" --style basic --export-json "$tmp/b.json" \
        "$jitc exec -s X -- true" >/dev/null 2>&1
    python3 -c 'import json,statistics,sys; print("outside", statistics.median(json.load(open(sys.argv[1]))["results"][0]["times"]))' "$tmp/b.json" >> "$tmp/lease.txt"
    echo go > "$tmp/hold"
    wait "$holder" || true
    holder=
    # From inside a sandbox: the lookup finds it.
    "$jitc" sandbox -q -- hyperfine -N --warmup 20 --runs "$runs" --style basic \
        --export-json "$tmp/c.json" "$jitc exec -s X -- true" >/dev/null 2>&1
    python3 -c 'import json,statistics,sys; print("inside", statistics.median(json.load(open(sys.argv[1]))["results"][0]["times"]))' "$tmp/c.json" >> "$tmp/lease.txt"
done
python3 - "$tmp/lease.txt" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    runs.setdefault(k, []).append(float(v))
med = {k: statistics.median(v) for k, v in runs.items()}
base = med["none"]
labels = {"none": "no sandbox registered", "outside": "outside, one sandbox registered",
          "inside": "inside the sandbox"}
for k in ("none", "outside", "inside"):
    print(f"{labels[k]:34} median {med[k]*1e3:7.3f} ms  {(med[k]/base-1)*100:+5.1f}%")
PY

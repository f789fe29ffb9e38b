#!/usr/bin/env bash
# The agent's resident memory under churn (BENCHMARKS.md, "Memory under churn"): for
# each vault size, the agent's VmRSS after the first unlock and after CYCLES rounds of
# lock, unlock and one add; and its VmLck. Secrets are imported from generated .env
# files (20,000 a file). Runs in a throwaway home with the release build (NO_BUILD=1 to
# reuse it; BIN=target/debug for a debug build); nothing of yours is touched.
#
#   scripts/bench-churn.sh [SIZES…]        e.g. SIZES: 1000 100000 [default: 1000 100000]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

cycles="${CYCLES:-100}"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 100000)
[ -n "${NO_BUILD:-}" ] || [ -n "${BIN:-}" ] || packaging/build.sh >/dev/null
bin="$(cd "${BIN:-target/release}" && pwd)"
jitc="$bin/jitc"

printf '%-9s %-7s %-14s %-14s %-6s %s\n' secrets cycles rss_first_kib rss_after_kib ratio vmlck_kib
for n in "${sizes[@]}"; do
    tmp="$(mktemp -d /tmp/jitc-bench-churn.XXXXXX)"
    (
        throwaway_home "$tmp"
        cd "$HOME"
        trap '"$jitc" stop >/dev/null 2>&1 || true' EXIT
        pass='bench passphrase, not a real one'
        printf '%s\n' "$pass" | "$jitc" init --passphrase-stdin --kdf-memory 8 --kdf-iterations 1 >/dev/null 2>&1
        python3 - "$n" <<'PY'
import hashlib, sys
n = int(sys.argv[1])
for part in range(0, n, 20000):
    with open("p%06d.env" % part, "w") as f:
        for i in range(part, min(n, part + 20000)):
            f.write("K_%06d=%s\n" % (i, hashlib.sha256(str(i).encode()).hexdigest()[:32]))
PY
        for f in p*.env; do "$jitc" import --prefix "${f%.env}/" "$f" >/dev/null 2>&1; done
        pid="$("$jitc" status --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')"
        rss() { awk "/^$1:/{print \$2}" "/proc/$pid/status"; }
        "$jitc" lock 2>/dev/null
        printf '%s\n' "$pass" | "$jitc" unlock --passphrase-stdin 2>/dev/null
        first="$(rss VmRSS)"
        for c in $(seq 1 "$cycles"); do
            "$jitc" lock 2>/dev/null
            printf '%s\n' "$pass" | "$jitc" unlock --passphrase-stdin 2>/dev/null
            printf 'churn-value-%s' "$c" | "$jitc" add "churn/$c" 2>/dev/null
        done
        after="$(rss VmRSS)"
        printf '%-9s %-7s %-14s %-14s %-6s %s\n' "$n" "$cycles" "$first" "$after" \
            "$(awk "BEGIN{printf \"%.2f\", $after/$first}")" "$(rss VmLck)"
    )
    rm -rf "$tmp"
done

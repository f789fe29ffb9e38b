#!/usr/bin/env bash
# What `jitc mcp` costs (BENCHMARKS.md, "jitc mcp"): see scripts/mcp_bench.py. Uses the
# release build and the Python SDK scripts/test.sh installs (target/test-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
[ -n "${NO_BUILD:-}" ] || packaging/build.sh >/dev/null
jitc="$PWD/target/release/jitc"
python="${JITC_TEST_VENV:-$PWD/target/test-venv}/bin/python"
[ -x "$python" ] || { echo "bench-mcp.sh: run scripts/test.sh first (it makes $python)" >&2; exit 1; }
tmp="$(mktemp -d /tmp/jitc-bench-mcp.XXXXXX)"
cleanup() { "$jitc" stop >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
throwaway_home "$tmp"
cd "$HOME"
eval "$("$jitc" agent 2>/dev/null)"
printf 'bench passphrase\n' | "$jitc" init --passphrase-stdin --kdf-memory 8 --kdf-iterations 1 2>/dev/null
printf 'value-of-x-0123' | "$jitc" add X 2>/dev/null
"$python" "$OLDPWD/scripts/mcp_bench.py" "$jitc" "${RUNS:-200}"

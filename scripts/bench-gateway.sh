#!/usr/bin/env bash
# What the custody-free gateway costs (BENCHMARKS.md, "The gateway"): added latency per
# request (kept-alive and new connections), download throughput, and the agent's memory
# with many tunnels open — through `jitc exec --proxy` and directly, interleaved, against
# the same local upstream (jitc-test-upstream). See scripts/gateway_bench.py.
# Knobs: NO_BUILD, KEEPALIVE_REQUESTS (2000), NEW_CONNECTIONS (300), TUNNELS (100),
# BIG_BYTES (1 GiB), BIG_RUNS (5), HTTP_VERSIONS ("1.1 2"), OUT (a JSON file to keep).
set -euo pipefail
keep="${OUT:+$(realpath -m "$OUT")}"
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
[ -n "${NO_BUILD:-}" ] || packaging/build.sh >/dev/null
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -z "$(git status --porcelain --untracked-files=no -- agentd agent-client protocol 2>/dev/null)" ] || rev="$rev+changes"
jitc="$PWD/target/release/jitc"
upstream="$PWD/target/release/jitc-test-upstream"
bench="$PWD/scripts/gateway_bench.py"
python=/usr/bin/python3
for b in "$jitc" "$upstream"; do
    [ -x "$b" ] || { echo "bench-gateway.sh: $b is missing (unset NO_BUILD)" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "bench-gateway.sh: needs curl" >&2; exit 1; }
tmp="$(mktemp -d /tmp/jitc-bench-gateway.XXXXXX)"
upstream_pid=
cleanup() {
    "$jitc" stop >/dev/null 2>&1 || true
    if [ -n "$upstream_pid" ]; then
        kill "$upstream_pid" 2>/dev/null || true
        wait "$upstream_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
throwaway_home "$tmp"
unset HTTPS_PROXY https_proxy HTTP_PROXY http_proxy ALL_PROXY all_proxy NO_PROXY no_proxy
cd "$HOME"
eval "$("$jitc" agent 2>/dev/null)"
printf 'bench passphrase\n' | "$jitc" init --passphrase-stdin --kdf-memory 8 --kdf-iterations 1 2>/dev/null
value='bench-real-token-5d1e0c9b8a7f6e5d'
printf '%s' "$value" | "$jitc" add api/token 2>/dev/null

# The upstream: it says READY HTTPS_PORT HTTP_PORT once listening.
mkdir "$tmp/up"
coproc UP { exec "$upstream" "$tmp/up" api.test 127.0.0.1 2>"$tmp/up/stderr"; }
upstream_pid=$UP_PID
ready= port= _http=
read -r -t 30 ready port _http <&"${UP[0]}" || true
if [ "$ready" != READY ] || [ -z "$port" ]; then
    echo "bench-gateway.sh: the upstream did not start: $(cat "$tmp/up/stderr")" >&2
    exit 1
fi

mkdir -p "$XDG_CONFIG_HOME/jitc"
cat >"$XDG_CONFIG_HOME/jitc/policy.toml" <<EOF
[gateway]
upstream_ca = "$tmp/up/ca.pem"

[[credential]]
secret = "api/token"
hosts = ["api.test"]
connect_to = "127.0.0.1:$port"
EOF

agent_pid="$("$jitc" status --json | "$python" -c 'import json,sys; print(json.load(sys.stdin)["pid"])')"
out="$tmp/results.json"
echo "bench-gateway.sh: agent pid $agent_pid, upstream https port $port; running…" >&2
SECONDS=0
"$jitc" exec --proxy -s api/token -- "$python" "$bench" run "$port" "$tmp/up/ca.pem" "$agent_pid" "$out"
"$python" "$bench" check "$tmp/up" "$value" "$out"
kill -0 "$agent_pid" 2>/dev/null || { echo "bench-gateway.sh: the agent is gone" >&2; exit 1; }
echo "bench-gateway.sh: measured in ${SECONDS} s on $(nproc) CPUs ($(uname -r)), tree $rev" >&2
[ -z "$keep" ] || cp "$out" "$keep"
"$python" "$bench" report "$out"

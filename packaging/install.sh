#!/usr/bin/env bash
# Builds jitc, installs it for the current user, and (unless --no-demo) shows it working
# in a throwaway home directory that it removes afterwards.
#
#   ./packaging/install.sh [--prefix DIR] [--no-demo]
#
# Installs: DIR/bin/{jitc,jitc-agentd} (DIR defaults to ~/.local), systemd user units
# in ~/.config/systemd/user (not enabled), and shell snippets in
# ~/.local/share/jitc/shell. Nothing is started or changed for your real vault.
set -euo pipefail

prefix="${HOME}/.local"
demo=1
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        --no-demo) demo=0; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done

here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
command -v cargo >/dev/null || { echo "install.sh: cargo is needed; install Rust from https://rustup.rs" >&2; exit 1; }

echo "==> building (release)"
cargo build --release --locked --bins

bindir="$prefix/bin"
echo "==> installing jitc and jitc-agentd into $bindir"
install -d -m 0755 "$bindir"
install -m 0755 target/release/jitc target/release/jitc-agentd "$bindir/"

unitdir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
install -d -m 0755 "$unitdir"
install -m 0644 packaging/systemd/jitc-agentd.socket "$unitdir/"
sed "s|@BINDIR@|$bindir|g" packaging/systemd/jitc-agentd.service > "$unitdir/jitc-agentd.service"
chmod 0644 "$unitdir/jitc-agentd.service"
sharedir="${XDG_DATA_HOME:-$HOME/.local/share}/jitc/shell"
install -d -m 0755 "$sharedir"
install -m 0644 packaging/shell/jitc.sh packaging/shell/jitc.fish packaging/shell/jitc.csh "$sharedir/"
echo "    systemd user units in $unitdir (optional: systemctl --user enable --now jitc-agentd.socket)"
echo "    shell snippet: add '. $sharedir/jitc.sh' to ~/.bashrc or ~/.zshrc"
case ":$PATH:" in
    *":$bindir:"*) ;;
    *) echo "    note: $bindir is not on your PATH; add it" ;;
esac

[ "$demo" = 1 ] || exit 0

echo
echo "==> demo, in a throwaway home (your real vault is not touched)"
demo_home="$(mktemp -d /tmp/jitc-demo.XXXXXX)"
cleanup() {
    if [ -S "$demo_home/run/jitc/agent.sock" ]; then
        JITC_SOCK="$demo_home/run/jitc/agent.sock" "$bindir/jitc" status --json 2>/dev/null \
            | sed -n 's/.*"pid": \([0-9]*\).*/\1/p' | xargs -r kill 2>/dev/null || true
    fi
    rm -rf "$demo_home"
}
trap cleanup EXIT
export HOME="$demo_home" XDG_RUNTIME_DIR="$demo_home/run" XDG_DATA_HOME="$demo_home/data" \
    XDG_STATE_HOME="$demo_home/state" XDG_CONFIG_HOME="$demo_home/config"
unset JITC_SOCK JITC_VAULT
mkdir -m 0700 "$XDG_RUNTIME_DIR"
jitc="$bindir/jitc"
step() { printf '\n$ %s\n' "$*"; }

step 'eval "$(jitc agent)"'
eval "$("$jitc" agent)"
step "jitc init --passphrase-stdin        # a real user types it at the prompt"
printf 'demo passphrase, not a real one\n' | "$jitc" init --passphrase-stdin
step "jitc add GITHUB_TOKEN --description 'demo token'   # value from stdin"
printf 'ghp_demo%s' "$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')" \
    | "$jitc" add GITHUB_TOKEN --description 'demo token'
step "jitc ls"
"$jitc" ls
step "jitc exec -s GITHUB_TOKEN -- sh -c 'echo \"the command got \${#GITHUB_TOKEN} characters of GITHUB_TOKEN\"'"
"$jitc" exec -s GITHUB_TOKEN -- sh -c 'echo "the command got ${#GITHUB_TOKEN} characters of GITHUB_TOKEN"'
step "grep -r ghp_demo \"\$HOME\"   # the value is nowhere on disk"
if grep -rq ghp_demo "$HOME"; then echo "FOUND (this is a bug)"; exit 1; else echo "(not found)"; fi
step "jitc lock && jitc exec -s GITHUB_TOKEN -- true"
"$jitc" lock
set +e
"$jitc" exec -s GITHUB_TOKEN -- true
code=$?
set -e
echo "(exit $code: a locked vault leases nothing)"
[ "$code" = 75 ]
echo
echo "==> jitc works. Next: 'jitc init' for your own vault, then 'jitc add' and 'jitc exec'."

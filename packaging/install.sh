#!/usr/bin/env bash
# Builds jitc and installs it: binaries, manual pages, shell completions, shell snippets
# and systemd user units. Run it again to upgrade; --uninstall removes exactly what it
# installed. Then (unless --no-demo) shows jitc working in a throwaway home directory
# that it removes afterwards — your real vault is never touched.
#
#   ./packaging/install.sh [--prefix DIR] [--no-demo] [--no-build] [--profile NAME] [--force]
#   ./packaging/install.sh --uninstall [--prefix DIR]
#
#   --prefix DIR    where to install [default: ~/.local]; DIR/bin, DIR/share/man, …
#   --no-build      install the binaries already built (no cargo run)
#   --profile NAME  the cargo profile to build and install [default: release]
#   --force         replace files this script did not install there (yours, another
#                   installation's units) instead of stopping
#   --uninstall     remove what an earlier run installed into DIR (its manifest says),
#                   but for files changed since
#
# Honours CARGO_TARGET_DIR. Systemd user units go to DIR/lib/systemd/user for /usr and
# /usr/local, else to ~/.config/systemd/user; the socket unit is enabled when a systemd
# user manager answers. The script prints the lines to add to your shell's rc file.
set -euo pipefail

home="${HOME%/}"
prefix="$home/.local"
demo=1
build=1
profile=release
uninstall=0
force=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }
                  prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        --profile) [ $# -ge 2 ] || { echo "install.sh: --profile needs a name" >&2; exit 2; }
                   profile="$2"; shift 2 ;;
        --profile=*) profile="${1#--profile=}"; shift ;;
        --no-demo) demo=0; shift ;;
        --no-build) build=0; shift ;;
        --uninstall) uninstall=1; shift ;;
        --force) force=1; shift ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done

# Paths as the caller meant them: ~ expanded, relative ones from where we were started.
case "$prefix" in "~") prefix="$home" ;; "~/"*) prefix="$home/${prefix#\~/}" ;; esac
case "$prefix" in /*) ;; *) prefix="$(pwd)/$prefix" ;; esac
prefix="${prefix%/}"
target="${CARGO_TARGET_DIR:-}"
case "$target" in ""|/*) ;; *) target="$(pwd)/$target" ;; esac
# systemd reads the unit's ExecStart= with its own quoting, $-variables and %-specifiers,
# and sed the replacement with its own &: keep the path plain rather than escape it.
if ! [[ "$prefix" =~ ^[A-Za-z0-9._/+@:,=-]+$ ]]; then
    echo "install.sh: the prefix '$prefix' holds characters systemd or the shell would read differently (space, quote, \$, %, &, …); choose a plain path" >&2
    exit 2
fi

bindir="$prefix/bin"
mandir="$prefix/share/man/man1"
# Beside the binaries, not in $XDG_DATA_HOME/jitc: that is the vault's directory (private,
# and hidden inside 'jitc sandbox', where the rc file still sources the snippet).
libdir="$prefix/lib/jitc"
snippetdir="$libdir/shell"
manifest="$libdir/install-manifest"
bashdir="$prefix/share/bash-completion/completions"
zshdir="$prefix/share/zsh/site-functions"
fishdir="$prefix/share/fish/vendor_completions.d"
# Where systemd's user manager looks: the system's unit directory for the system
# prefixes, else your own.
case "$prefix" in
    /usr|/usr/local) unitdir="$prefix/lib/systemd/user"; standard=1 ;;
    *) unitdir="${XDG_CONFIG_HOME:-$home/.config}/systemd/user"; standard=0 ;;
esac

user_systemd() {
    command -v systemctl >/dev/null && systemctl --user show-environment >/dev/null 2>&1
}
sum() { sha256sum "$1" | cut -d' ' -f1; }

if [ "$uninstall" = 1 ]; then
    [ -f "$manifest" ] || { echo "install.sh: nothing to uninstall: no $manifest" >&2; exit 1; }
    if grep -qx 'enabled jitc-agentd.socket' "$manifest" && user_systemd; then
        systemctl --user disable --now jitc-agentd.socket jitc-agentd.service >/dev/null 2>&1 || true
    fi
    # Each file as this script wrote it; one changed since (by you) is kept.
    while read -r kind hash path; do
        [ "$kind" = file ] && [ -f "$path" ] || continue
        if [ "$(sum "$path")" = "$hash" ]; then
            rm -f -- "$path"
        else
            echo "    kept $path: it changed since it was installed"
        fi
    done < "$manifest"
    dirs="$(sed -n 's/^dir //p' "$manifest.dirs" 2>/dev/null | sort -r)"
    rm -f -- "$manifest" "$manifest.dirs"
    # Then the directories this script made, deepest first, if they are empty now.
    while IFS= read -r d; do
        [ -n "$d" ] && { rmdir -- "$d" 2>/dev/null || true; }
    done <<< "$dirs"
    if user_systemd; then systemctl --user daemon-reload || true; fi
    echo "==> removed jitc from $prefix"
    exit 0
fi

here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
target="${target:-target}"
case "$profile" in
    dev|debug) profile=dev; outdir="$target/debug" ;;
    *) outdir="$target/$profile" ;;
esac
if [ "$build" = 1 ]; then
    command -v cargo >/dev/null || { echo "install.sh: cargo is needed; install Rust from https://rustup.rs" >&2; exit 1; }
    echo "==> building ($profile)"
    CARGO_TARGET_DIR="$target" packaging/build.sh --profile "$profile"
fi
for b in jitc jitc-agentd; do
    [ -x "$outdir/$b" ] || { echo "install.sh: $outdir/$b is missing; build it (packaging/build.sh --profile $profile) or drop --no-build" >&2; exit 1; }
done

gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT

# What this run installs: generated first, so that nothing is written before every
# destination is known to be free (or ours).
"$outdir/jitc" __man "$gen/man"
"$outdir/jitc-agentd" --man-page > "$gen/man/jitc-agentd.1"
"$outdir/jitc" completions bash > "$gen/jitc.bash"
"$outdir/jitc" completions zsh > "$gen/_jitc"
"$outdir/jitc" completions fish > "$gen/jitc.fish"
# Only the ExecStart= line names the binaries' directory; comments stay as written.
sed "s|^ExecStart=@BINDIR@/|ExecStart=$bindir/|" packaging/systemd/jitc-agentd.service > "$gen/jitc-agentd.service"
plan=()   # "MODE SOURCE DEST"
plan+=("0755 $outdir/jitc $bindir/jitc" "0755 $outdir/jitc-agentd $bindir/jitc-agentd")
for page in "$gen"/man/*.1; do plan+=("0644 $page $mandir/$(basename "$page")"); done
plan+=("0644 $gen/jitc.bash $bashdir/jitc" "0644 $gen/_jitc $zshdir/_jitc" "0644 $gen/jitc.fish $fishdir/jitc.fish")
for s in jitc.sh jitc.fish jitc.csh; do plan+=("0644 packaging/shell/$s $snippetdir/$s"); done
plan+=("0644 $gen/jitc-agentd.service $unitdir/jitc-agentd.service" "0644 packaging/systemd/jitc-agentd.socket $unitdir/jitc-agentd.socket")

# A file already at a destination that an earlier run of this script did not write here
# (yours, or another installation's unit) is not overwritten unless --force.
# Whether manifest FILE lists PATH.
listed() {
    local kind hash path
    [ -f "$1" ] || return 1
    while read -r kind hash path; do
        [ "$kind" = file ] && [ "$path" = "$2" ] && return 0
    done < "$1"
    return 1
}
ours() { listed "$manifest" "$1"; }
taken=()
for entry in "${plan[@]}"; do
    read -r _ src dest <<< "$entry"
    if [ -e "$dest" ] && ! ours "$dest" && ! cmp -s "$src" "$dest"; then taken+=("$dest"); fi
done
if [ ${#taken[@]} -gt 0 ] && [ "$force" = 0 ]; then
    echo "install.sh: these files exist and were not installed by this script into $prefix:" >&2
    printf '    %s\n' "${taken[@]}" >&2
    echo "install.sh: move them away (or uninstall the installation they belong to), or run again with --force to replace them" >&2
    exit 1
fi

# The directories this run makes (and those an earlier run made) are ours to remove.
new_dirs="$gen/dirs"
: > "$new_dirs"
[ -f "$manifest.dirs" ] && cat "$manifest.dirs" > "$new_dirs"
mkdirs() {
    local d p
    for d in "$@"; do
        local missing=()
        p="$d"
        while [ ! -d "$p" ]; do missing+=("$p"); p="$(dirname "$p")"; done
        install -d -m 0755 "$d"
        for p in "${missing[@]}"; do echo "dir $p" >> "$new_dirs"; done
    done
}
mkdirs "$bindir" "$mandir" "$snippetdir" "$bashdir" "$zshdir" "$fishdir" "$unitdir"

echo "==> installing jitc and jitc-agentd into $bindir"
installed="$gen/manifest"
: > "$installed"
for entry in "${plan[@]}"; do
    read -r mode src dest <<< "$entry"
    install -m "$mode" "$src" "$dest"
    echo "file $(sum "$dest") $dest" >> "$installed"
done
echo "    manual pages in $mandir, completions for bash, zsh and fish, snippets in $snippetdir"

# An upgrade drops what the earlier version installed and this one does not (a manual
# page for a command that is gone), if it is still as installed.
if [ -f "$manifest" ]; then
    while read -r kind hash path; do
        [ "$kind" = file ] && [ -f "$path" ] || continue
        listed "$installed" "$path" && continue
        [ "$(sum "$path")" = "$hash" ] && rm -f -- "$path"
    done < "$manifest"
fi

enabled=0
if user_systemd; then
    systemctl --user daemon-reload
    if systemctl --user enable --now jitc-agentd.socket >/dev/null 2>&1; then
        enabled=1
        echo "    systemd user units in $unitdir; jitc-agentd.socket enabled (the agent starts on first use)"
    else
        echo "    systemd user units in $unitdir; enabling jitc-agentd.socket failed: systemctl --user enable --now jitc-agentd.socket"
    fi
else
    echo "    systemd user units in $unitdir (no systemd user manager answers; 'jitc agent' starts the agent instead)"
fi
[ "$enabled" = 1 ] && echo 'enabled jitc-agentd.socket' >> "$installed"
mv -f "$installed" "$manifest"
sort -u "$new_dirs" > "$manifest.dirs"

echo
echo "==> add this to your shell's rc file:"
shell="$(basename "${SHELL:-sh}")"
on_path=1
case ":$PATH:" in *":$bindir:"*) ;; *) on_path=0 ;; esac
case "$shell" in
    fish)
        echo "    # ~/.config/fish/config.fish"
        [ "$on_path" = 1 ] || echo "    fish_add_path $bindir"
        [ "$standard" = 1 ] || echo "    set -p fish_complete_path $fishdir"
        echo "    source $snippetdir/jitc.fish" ;;
    csh|tcsh)
        echo "    # ~/.${shell}rc"
        [ "$on_path" = 1 ] || echo "    set path = ($bindir \$path)"
        echo "    source $snippetdir/jitc.csh" ;;
    zsh)
        echo "    # ~/.zshrc"
        [ "$on_path" = 1 ] || echo "    export PATH=\"$bindir:\$PATH\""
        [ "$standard" = 1 ] || echo "    fpath=($zshdir \$fpath)   # before compinit"
        echo "    . $snippetdir/jitc.sh" ;;
    *)
        echo "    # ~/.bashrc"
        [ "$on_path" = 1 ] || echo "    export PATH=\"$bindir:\$PATH\""
        echo "    . $snippetdir/jitc.sh" ;;
esac
echo "    then check the set-up with: jitc doctor"

[ "$demo" = 1 ] || exit 0

echo
echo "==> demo, in a throwaway home (your real vault is not touched)"
demo_home="$(mktemp -d /tmp/jitc-demo.XXXXXX)"
cleanup() {
    rm -rf "$gen"
    if [ -S "$demo_home/run/jitc/agent.sock" ]; then
        JITC_SOCK="$demo_home/run/jitc/agent.sock" "$bindir/jitc" stop 2>/dev/null || true
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

#!/usr/bin/env bash
# Builds the Debian package jitc_VERSION-1_ARCH.deb: both binaries, the manual pages,
# bash/zsh/fish completions, the systemd user units and the shell snippets.
#
#   ./packaging/deb.sh [--profile NAME] [--no-build] [-o DIR]
#
#   --profile NAME  the cargo profile to build and package [default: release]
#   --no-build      package the binaries already built
#   -o DIR          where to put the .deb [default: $CARGO_TARGET_DIR/debian]
#
# Installs cargo-deb (pinned) with cargo if it is missing. Honours CARGO_TARGET_DIR.
# Install the result with: sudo apt install ./jitc_*.deb
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
profile=release
build=1
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) [ $# -ge 2 ] || { echo "deb.sh: --profile needs a name" >&2; exit 2; }
                   profile="$2"; shift 2 ;;
        --profile=*) profile="${1#--profile=}"; shift ;;
        --no-build) build=0; shift ;;
        -o) [ $# -ge 2 ] || { echo "deb.sh: -o needs a directory" >&2; exit 2; }
            out="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "deb.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done
case "$profile" in debug) profile=dev ;; esac
# Relative paths as the caller meant them, before we change directory.
target="${CARGO_TARGET_DIR:-}"
case "$target" in ""|/*) ;; *) target="$(pwd)/$target" ;; esac
case "$out" in ""|/*) ;; *) out="$(pwd)/$out" ;; esac

cd "$(dirname "$0")/.."
target="${target:-target}"
export CARGO_TARGET_DIR="$target"
command -v cargo >/dev/null || { echo "deb.sh: cargo is needed; install Rust from https://rustup.rs" >&2; exit 1; }
if ! cargo deb --version >/dev/null 2>&1; then
    echo "==> installing cargo-deb $CARGO_DEB_VERSION (once)"
    cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi
command -v dpkg-shlibdeps >/dev/null \
    || echo "deb.sh: note: without dpkg-shlibdeps (package dpkg-dev) the package declares no dependency on libc" >&2

case "$profile" in dev) outdir="$target/debug" ;; *) outdir="$target/$profile" ;; esac
if [ "$build" = 1 ]; then
    echo "==> building ($profile)"
    packaging/build.sh --profile "$profile"
fi

# What the package ships that the binaries generate (see [package.metadata.deb] in
# agent-client/Cargo.toml).
gen=packaging/.generated
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/completions" "$gen/systemd"
"$outdir/jitc" __man "$gen/man"
"$outdir/jitc-agentd" --man-page > "$gen/man/jitc-agentd.1"
"$outdir/jitc" completions bash > "$gen/completions/jitc.bash"
"$outdir/jitc" completions zsh > "$gen/completions/_jitc"
"$outdir/jitc" completions fish > "$gen/completions/jitc.fish"
sed 's|^ExecStart=@BINDIR@/|ExecStart=/usr/bin/|' packaging/systemd/jitc-agentd.service \
    > "$gen/systemd/jitc-agentd.service"

out="${out:-$target/debian}"
mkdir -p "$out"
echo "==> packaging"
# cargo-deb warns that packaging the dev profile is deprecated; the tests do it to
# reuse the binaries they already built.
rc=0
deb="$(cargo deb -p jitc --no-build --locked --profile "$profile" -o "$out" 2> "$gen/cargo-deb.log")" || rc=$?
grep -v "Only source paths starting with exactly" "$gen/cargo-deb.log" >&2 || true
[ "$rc" = 0 ] && [ -f "$deb" ] || { echo "deb.sh: cargo deb failed (exit $rc)" >&2; exit 1; }

# A static-pie jitc (packaging/build.sh) carries this system's glibc: the package says
# so (Built-Using, as Debian Policy 7.8 asks), and depends on that upstream version only,
# so that a system whose glibc moves on asks for a rebuilt package rather than keeping
# a stale copy of it.
if ! readelf -lW "$outdir/jitc" 2>/dev/null | grep -q INTERP; then
    glibc_src="$(dpkg-query -W -f='${source:Version}' libc6-dev 2>/dev/null || true)"
    glibc_up="${glibc_src%%-*}"
    case "$glibc_up" in
        [0-9]*.[0-9]*)
            next="${glibc_up%%.*}.$(( ${glibc_up#*.} + 1 ))"
            unpacked="$(mktemp -d)"
            trap 'rm -rf "$unpacked"' EXIT
            dpkg-deb -R "$deb" "$unpacked/pkg"
            control="$unpacked/pkg/DEBIAN/control"
            # cargo-deb writes one Depends line (the agent's libc6 from shlibdeps) and
            # no Built-Using.
            grep -q '^Built-Using:' "$control" && { echo "deb.sh: cargo deb wrote a Built-Using field; cannot add glibc's" >&2; exit 1; }
            pin="libc6 (>= $glibc_up), libc6 (<< $next)"
            if grep -q '^Depends:' "$control"; then
                sed -i "s/^Depends: \(.*\)$/Depends: \1, $pin/" "$control"
            else
                sed -i "/^Description:/i Depends: $pin" "$control"
            fi
            sed -i "/^Description:/i Built-Using: glibc (= $glibc_src)" "$control"
            dpkg-deb --root-owner-group -Zxz -b "$unpacked/pkg" "$deb.new" >/dev/null
            mv "$deb.new" "$deb"
            ;;
        *) echo "deb.sh: note: cannot tell which glibc jitc was linked with (dpkg-query libc6-dev): no Built-Using" >&2 ;;
    esac
fi
echo "$deb"

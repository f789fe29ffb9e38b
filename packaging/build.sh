#!/usr/bin/env bash
# Builds every binary of the workspace, with `jitc` itself linked static-pie where the
# toolchain can (glibc's libc.a and rcrt1.o, from libc6-dev): no dynamic loader runs in
# the process that receives the values, so `LD_PRELOAD`/`LD_AUDIT` set by whoever
# starts it load nothing into it, and with no shared library to map and bind it starts
# ~0.3 ms sooner (`jitc exec -s X -- true` 0.4–0.6 ms, BENCHMARKS.md). It stays
# position-independent; on kernels that align large file mappings to 2 MiB its image
# gets ~9 bits less ASLR entropy than a dynamic PIE's (README, "How it is built"). The
# agent and the test tools stay dynamic. Where libc.a is missing, `jitc` is linked
# dynamically and a note says so.
#
#   ./packaging/build.sh [--profile NAME]      [default: release]
#
# install.sh, deb.sh, the bench scripts and scripts/test.sh build through this. A plain
# `cargo build` works too (a dynamic `jitc`). Honours CARGO_TARGET_DIR.
set -euo pipefail
profile=release
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) [ $# -ge 2 ] || { echo "build.sh: --profile needs a name" >&2; exit 2; }
                   profile="$2"; shift 2 ;;
        --profile=*) profile="${1#--profile=}"; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done
case "$profile" in debug) profile=dev ;; esac
# A relative target directory as the caller meant it, before we change directory.
case "${CARGO_TARGET_DIR:-}" in ""|/*) ;; *) export CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR" ;; esac
cd "$(dirname "$0")/.."

# rustc links with `cc` (unless a linker is configured for the target): ask it.
static_ok() {
    local f p
    [ "$(uname -s)" = Linux ] || return 1
    for f in libc.a rcrt1.o; do
        p="$(cc -print-file-name="$f" 2>/dev/null)" || return 1
        [ "${p#/}" != "$p" ] && [ -f "$p" ] || return 1
    done
}
if static_ok; then
    # build.rs leaves the unwinder to rustc's static link. Set for both commands, so
    # that the jitc library the other binaries use is not rebuilt between them.
    export JITC_STATIC_PIE=1
    cargo build --profile "$profile" --locked --workspace --bins --exclude jitc
    # Only the final link of `jitc` takes the flag: its dependencies, and the
    # proc-macros that must load into the compiler, are built as usual.
    cargo rustc --profile "$profile" --locked -p jitc --bin jitc -- -C target-feature=+crt-static
else
    echo "build.sh: note: no static C library (libc6-dev's libc.a, rcrt1.o): jitc is linked dynamically" >&2
    cargo build --profile "$profile" --locked --workspace --bins
fi

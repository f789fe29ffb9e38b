#!/usr/bin/env bash
# Builds every binary of the workspace, with `jitc` itself linked static-pie where the
# toolchain can (glibc's libc.a, from libc6-dev, beside the compiler): a `jitc` with no
# loader and no shared library to map and bind starts ~0.2 ms sooner, and
# `jitc exec -s X -- true` ran 0.4 ms faster side by side (BENCHMARKS.md). It stays
# position-independent, so ASLR is as before. The agent and the test tools stay
# dynamic. Where libc.a is missing, `jitc` is linked as usual and a note says so.
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
cd "$(dirname "$0")/.."

libc_a="$("${CC:-cc}" -print-file-name=libc.a 2>/dev/null || true)"
if [ "$(uname -s)" = Linux ] && [ "${libc_a#/}" != "$libc_a" ] && [ -f "$libc_a" ]; then
    # build.rs leaves the unwinder to rustc's static link. Set for both commands, so
    # that the jitc library the other binaries use is not rebuilt between them.
    export JITC_STATIC_PIE=1
    cargo build --profile "$profile" --locked --workspace --bins --exclude jitc
    # Only the final link of `jitc` takes the flag: its dependencies, and the
    # proc-macros that must load into the compiler, are built as usual.
    cargo rustc --profile "$profile" --locked -p jitc --bin jitc -- -C target-feature=+crt-static
else
    echo "build.sh: note: no static C library (libc6-dev's libc.a): jitc is linked dynamically" >&2
    cargo build --profile "$profile" --locked --workspace --bins
fi

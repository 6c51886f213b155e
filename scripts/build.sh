#!/usr/bin/env bash
# Configures and builds openshell-tunnel into ./build (ccache when present).
# Usage: scripts/build.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${OSH_BUILD_DIR:-build}"
# ccache: hash paths relative to the checkout, so that clones in other
# folders (CI) hit the same cache entries.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
# Configure on the first run, and whenever options are given.
if [[ ! -f "$BUILD_DIR/build.ninja" || $# -gt 0 ]]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
fi
# OSH_BUILD_TARGETS: only these targets (the demo needs three programs, not the tests).
# shellcheck disable=SC2086
cmake --build "$BUILD_DIR" -j"$(nproc)" ${OSH_BUILD_TARGETS:+--target $OSH_BUILD_TARGETS}
echo "build: binaries in $BUILD_DIR/cli and $BUILD_DIR/peers"

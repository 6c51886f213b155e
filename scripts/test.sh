#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test (unit and vm-tests).
# Run as root on Debian 12: vm-tests create their own network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "scripts/test.sh: run as root (vm-tests need network namespaces and TUN)" >&2; exit 1; }
scripts/install-deps.sh
scripts/build.sh
BUILD_DIR="${OSH_BUILD_DIR:-build}"
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 600 "$@"

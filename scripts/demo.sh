#!/usr/bin/env bash
# Installs what is needed, builds, and runs the demo: a sandbox "demo" with
# mini-gateway and mini-supervisor in network namespaces, openshell-tunnel up
# in a client namespace, then ssh and curl to demo.local through the tunnel.
# Everything it creates is removed when it ends. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "scripts/demo.sh: run as root (it creates network namespaces and a TUN)" >&2; exit 1; }
scripts/install-deps.sh
# Only the three programs the demo runs (scripts/test.sh builds everything).
OSH_BUILD_TARGETS="openshell-tunnel openshell-mini-gateway openshell-mini-supervisor" scripts/build.sh
BUILD_DIR="${OSH_BUILD_DIR:-build}"
export OSH_TUNNEL="$PWD/$BUILD_DIR/cli/openshell-tunnel"
export OSH_GATEWAY="$PWD/$BUILD_DIR/peers/openshell-mini-gateway"
export OSH_SUPERVISOR="$PWD/$BUILD_DIR/peers/openshell-mini-supervisor"
exec bash vm-tests/demo.sh

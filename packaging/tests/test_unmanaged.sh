#!/usr/bin/env bash
# packaging_unmanaged: the install puts the rules that tell NetworkManager
# and systemd-networkd to leave the tunnel's interface alone (issue 15.4)
# where each reads its vendor configuration, and they say so for osh*
# (the default --tun-name osh0). Installed with DESTDIR into a temporary
# root: nothing on this machine changes. When systemd-analyze is present,
# `cat-config` on that root must show the .network file among networkd's.
# Usage: test_unmanaged.sh BUILD_DIR
set -euo pipefail
BUILD="$1"
ROOT="$(mktemp -d /tmp/osh-unmanaged-root.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
DESTDIR="$ROOT" cmake --install "$BUILD" --component tunnel --prefix /usr >/dev/null
NM="$ROOT/usr/lib/NetworkManager/conf.d/90-openshell-tunnel.conf"
ND="$ROOT/usr/lib/systemd/network/10-openshell-tunnel.network"
fail() { echo "FAIL: $*"; exit 1; }
[[ -f $NM ]] || fail "no /usr/lib/NetworkManager/conf.d/90-openshell-tunnel.conf in the install"
grep -qx '\[keyfile\]' "$NM" || fail "$NM: no [keyfile] section"
grep -qx 'unmanaged-devices+=interface-name:osh\*' "$NM" || fail "$NM: no unmanaged-devices+=interface-name:osh*"
echo "  ok: NetworkManager: [keyfile] unmanaged-devices+=interface-name:osh*"
[[ -f $ND ]] || fail "no /usr/lib/systemd/network/10-openshell-tunnel.network in the install"
grep -qx 'Name=osh\*' "$ND" || fail "$ND: no Name=osh*"
grep -qx 'Unmanaged=yes' "$ND" || fail "$ND: no Unmanaged=yes"
echo "  ok: systemd-networkd: [Match] Name=osh* [Link] Unmanaged=yes"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze cat-config --root="$ROOT" systemd/network/10-openshell-tunnel.network 2>/dev/null |
    grep -q 'Unmanaged=yes' || fail "systemd-analyze cat-config does not find the .network file"
  echo "  ok: systemd-analyze cat-config finds it"
fi
echo "PASS: unmanaged-device rules installed"

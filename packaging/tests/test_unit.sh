#!/usr/bin/env bash
# packaging_unit_verify: `systemd-analyze verify` on openshell-tunnel.service
# as the package installs it. The unit's tunnel component is installed with
# DESTDIR into a temporary root (the install rules are tested on the way),
# beside a copy of this machine's unit directory (for sysinit.target & co.)
# and /bin/kill (ExecReload); verify runs with --root on that tree, so the
# ExecStart binary and the EnvironmentFile are the installed ones. Any
# output from verify (an unknown key is only a warning there) fails the test.
# systemd need not be PID 1: verify works on files. Skipped (77) without
# systemd-analyze.
# Usage: test_unit.sh BUILD_DIR
set -euo pipefail
BUILD="$1"
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze not installed (Debian package systemd)"; exit 77; }
ROOT="$(mktemp -d /tmp/osh-unit-root.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
DESTDIR="$ROOT" cmake --install "$BUILD" --component tunnel --prefix /usr >/dev/null
mkdir -p "$ROOT/usr/lib/systemd/system" "$ROOT/bin"
# Debian 12 keeps units in /lib/systemd/system (= /usr/lib with usrmerge).
for d in /lib/systemd/system /usr/lib/systemd/system; do
  [[ -d $d ]] && cp -a "$d/." "$ROOT/usr/lib/systemd/system/" 2>/dev/null || true
done
# The installed unit must win over any copy of it on this machine.
DESTDIR="$ROOT" cmake --install "$BUILD" --component tunnel --prefix /usr >/dev/null
cp /bin/kill "$ROOT/bin/kill"
UNIT="$ROOT/usr/lib/systemd/system/openshell-tunnel.service"
[[ -f $UNIT ]] || { echo "FAIL: the install did not put the unit at /usr/lib/systemd/system"; exit 1; }
[[ -x $ROOT/usr/bin/openshell-tunnel ]] || { echo "FAIL: no /usr/bin/openshell-tunnel in the install"; exit 1; }
[[ -f $ROOT/etc/openshell-tunnel/openshell-tunnel.env ]] || { echo "FAIL: no /etc/openshell-tunnel/openshell-tunnel.env"; exit 1; }
out="$(systemd-analyze verify --man=no --root="$ROOT" openshell-tunnel.service 2>&1)" && rc=0 || rc=$?
echo "systemd-analyze verify: exit $rc${out:+, output:}"
[[ -n $out ]] && echo "$out"
((rc == 0)) && [[ -z $out ]] || { echo "FAIL: systemd-analyze verify"; exit 1; }
echo "  ok: systemd-analyze verify passes without a warning"
# What the issue asks of the unit, checked literally.
need() { grep -qx "$1" "$UNIT" || { echo "FAIL: the unit lacks '$1'"; exit 1; }; echo "  ok: $1"; }
need 'Type=notify'
need 'ExecReload=/bin/kill -HUP $MAINPID'
need 'EnvironmentFile=/etc/openshell-tunnel/openshell-tunnel.env'
need 'CapabilityBoundingSet=CAP_NET_ADMIN CAP_DAC_READ_SEARCH CAP_SETUID CAP_SETGID CAP_SETPCAP'
need 'NoNewPrivileges=yes'
need 'ProtectSystem=strict'
need 'ReadWritePaths=-/etc/hosts'
need 'StateDirectory=openshell-tunnel'
need 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK'
need 'SystemCallFilter=@system-service'
# The state directory the unit grants is the binary's default --state-dir.
"$ROOT/usr/bin/openshell-tunnel" up --help >"$ROOT/up-help.txt"
grep -q -- '--state-dir TEXT=/var/lib/openshell-tunnel$' "$ROOT/up-help.txt" ||
  { echo "FAIL: up's default --state-dir is not /var/lib/openshell-tunnel (StateDirectory=)"; exit 1; }
echo "  ok: up's default --state-dir is StateDirectory= (/var/lib/openshell-tunnel)"
# systemd's own exposure estimate, for information (not a pass/fail).
if systemd-analyze security --help 2>/dev/null | grep -q -- --offline; then
  systemd-analyze security --offline=yes --root="$ROOT" openshell-tunnel.service 2>/dev/null | tail -n 1 || true
fi
echo "PASS: unit"

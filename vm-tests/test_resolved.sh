#!/usr/bin/env bash
# systemd-resolved for real (issue 17.4): Debian's systemd-resolved, extracted
# with `dpkg-deb -x` from the package that matches this machine's
# libsystemd-shared (apt-get download; never installed: installing it would
# rewrite the machine's /etc/resolv.conf), runs in the test's client network
# namespace and in a private mount namespace with its own D-Bus system bus.
# The tunnel registers through resolved's D-Bus API (sd-bus), and the test
# shows:
#   - after `up --dns resolver`, `resolvectl query demo.local` (a
#     ResolveHostname on the private bus) returns the sandbox's addresses from
#     the tunnel's DNS responder (resolved's hosts-file reading is off);
#   - the link has "~local" as routing-only domain and is no default route;
#     a name outside the domain is not sent to the tunnel's DNS (its query
#     counter does not move) and a name inside it is (nope.local: NXDOMAIN);
#   - `down` calls RevertLink on the link, and resolved answers it with a
#     method return (dbus-monitor on the private bus), before the TUN goes.
#
#   ┌────────── client netns + private mount ns (holder: sleep) ─────────────┐
#   │ tmpfs /run: /run/dbus/system_bus_socket <- dbus-daemon (generated conf)│
#   │             /run/systemd/resolve        <- systemd-resolved (extracted)│
#   │ /etc/passwd, /etc/group: + systemd-resolve (resolved drops to it)      │
#   │ /etc/systemd/resolved.conf: no DNS servers, no LLMNR/mDNS/stub/hosts   │
#   │ openshell-tunnel up --dns resolver, resolvectl, dbus-monitor           │
#   └────────────────────────────────────────────────────────────────────────┘
# Every mount is in the private mount namespace, which ends with its last
# process; the machine's /run, /etc and resolver configuration are untouched.
# No resolver traffic leaves the namespace: resolved has no DNS server but
# the tunnel's, and the client namespace has no route out.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

for tool in dbus-daemon dbus-monitor nsenter unshare dpkg-deb apt-get; do
  command -v "$tool" >/dev/null || fail "$tool is missing (scripts/install-deps.sh installs dbus-daemon and dbus-bin)"
done

say "systemd-resolved from Debian's package, extracted (not installed)"
SHARED_VER="$(dpkg-query -W -f='${Version}' libsystemd-shared 2>/dev/null || true)"
[[ -n $SHARED_VER ]] || fail "libsystemd-shared is not installed (it comes with systemd): resolved needs it"
mkdir -p "$OSH_WORK/deb"
# apt's download sandbox user must be able to write there.
chown _apt "$OSH_WORK/deb" 2>/dev/null || true
(cd "$OSH_WORK/deb" && apt-get download -qq "systemd-resolved=$SHARED_VER") ||
  fail "apt-get download systemd-resolved=$SHARED_VER failed (the version of this machine's libsystemd-shared; run apt-get update?)"
dpkg-deb -x "$OSH_WORK"/deb/systemd-resolved_*.deb "$OSH_WORK/resolved"
RESOLVED="$OSH_WORK/resolved/lib/systemd/systemd-resolved"
RESOLVECTL="$OSH_WORK/resolved/usr/bin/resolvectl"
[[ -x $RESOLVED && -x $RESOLVECTL ]] || fail "the package has no lib/systemd/systemd-resolved or usr/bin/resolvectl"
echo "  systemd-resolved $SHARED_VER: $RESOLVED"

osh_topology
osh_sandbox_services 1
osh_gateway
osh_supervisor

# Files for the private mount namespace.
free_id() { awk -F: '{u[$3] = 1} END {for (i = 999; i > 100; i--) if (!(i in u)) {print i; exit}}' "$1"; }
RUID="$(free_id /etc/passwd)"
RGID="$(free_id /etc/group)"
cp /etc/passwd "$OSH_WORK/passwd"
cp /etc/group "$OSH_WORK/group"
echo "systemd-resolve:x:$RUID:$RGID:systemd Resolver (osh test):/:/usr/sbin/nologin" >>"$OSH_WORK/passwd"
echo "systemd-resolve:x:$RGID:" >>"$OSH_WORK/group"
mkdir -p "$OSH_WORK/etc-systemd"
cat >"$OSH_WORK/etc-systemd/resolved.conf" <<'CONF'
[Resolve]
DNS=
FallbackDNS=
Domains=
LLMNR=no
MulticastDNS=no
DNSSEC=no
DNSOverTLS=no
DNSStubListener=no
ReadEtcHosts=no
Cache=no
CONF
cat >"$OSH_WORK/system.conf" <<'CONF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- A private system bus for vm-tests/test_resolved.sh: one socket, no
     activation, everyone may talk to everyone (the test's own processes). -->
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
CONF
cat >"$OSH_WORK/mntns.sh" <<SETUP
set -euo pipefail
mount -t tmpfs -o mode=0755 osh-run /run
mkdir -p /run/dbus /run/systemd/resolve
chown $RUID:$RGID /run/systemd/resolve
mount --bind "$OSH_WORK/passwd" /etc/passwd
mount --bind "$OSH_WORK/group" /etc/group
mkdir -p /etc/systemd 2>/dev/null || true
mount --bind "$OSH_WORK/etc-systemd" /etc/systemd
touch "$OSH_WORK/mntns.ready"
exec sleep infinity
SETUP

say "private mount namespace in $NS_CLIENT: tmpfs /run, resolved's user and config"
osh_spawn "$NS_CLIENT" mntns unshare --mount --propagation private bash "$OSH_WORK/mntns.sh"
wait_until 10 test -e "$OSH_WORK/mntns.ready"
HOLDER="$PID_mntns"
# The holder is `unshare` exec'ing bash exec'ing sleep: one PID throughout.
in_ns() { nsenter -t "$HOLDER" -m -n -- "$@"; }
# ns_spawn NAME CMD...: like osh_spawn, in the holder's mount and network namespaces.
ns_spawn() {
  local name="$1"
  shift
  rm -f "$OSH_WORK/$name.log"
  nsenter -t "$HOLDER" -m -n -- "$@" >"$OSH_WORK/$name.log" 2>&1 &
  OSH_PIDS+=("$!")
  eval "PID_${name//-/_}=$!"
}
check "the namespace's /run is its own tmpfs, not the machine's" \
  [ "$(stat -c %d /run)" != "$(nsenter -t "$HOLDER" -m stat -c %d /run)" ]

say "private D-Bus system bus, then systemd-resolved on it"
ns_spawn dbus dbus-daemon --config-file="$OSH_WORK/system.conf" --nofork --nopidfile --nosyslog
wait_until 10 in_ns test -S /run/dbus/system_bus_socket
ns_spawn dbusmon dbus-monitor --system
ns_spawn resolved env SYSTEMD_LOG_TARGET=console SYSTEMD_LOG_LEVEL=debug "$RESOLVED"
wait_until 15 in_ns dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
  org.freedesktop.DBus.GetNameOwner string:org.freedesktop.resolve1
check "resolved owns org.freedesktop.resolve1 on the private bus" \
  in_ns dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
  org.freedesktop.DBus.GetNameOwner string:org.freedesktop.resolve1
check "resolved dropped to its own user (uid $RUID)" \
  [ "$(awk '/^Uid:/ {print $3}' "/proc/$PID_resolved/status")" = "$RUID" ]

say "openshell-tunnel up --dns resolver (no hosts file): names only through resolved"
OSH_STATE="$OSH_WORK/state"
ns_spawn tunnel "$OSH_TUNNEL" up --gateway-endpoint "http://$OSH_GW_ADDR:$OSH_GW_PORT" --dns resolver \
  --hosts-file "" --state-dir "$OSH_STATE" --no-ssh-config --refresh-ms 500
wait_until 20 grep -q "Tunnel is up" "$OSH_WORK/tunnel.log"
check "the tunnel says resolved sends *.local to it" grep -q "systemd-resolved sends \*.local to the tunnel" "$OSH_WORK/tunnel.log"
status_json() { in_ns "$OSH_TUNNEL" status --state-dir "$OSH_STATE" --json; }
jq_py() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
V4="$(status_json | jq_py 'd["sandboxes"][0]["ipv4"]')"
V6="$(status_json | jq_py 'd["sandboxes"][0]["ipv6"]')"
dns_queries() { status_json | jq_py 'd["counters"]["dns_queries"]'; }
echo "  demo: $V4 $V6"
check "nothing in the hosts file" bash -c "! grep -q demo.local '$OSH_HOSTS'"

in_ns "$RESOLVECTL" status osh0 | tee "$OSH_WORK/link.txt"
check "link osh0: DNS servers are the tunnel's" grep -q "198.18.0.2" "$OSH_WORK/link.txt"
check "link osh0: routing-only domain ~local" grep -q "DNS Domain: ~local" "$OSH_WORK/link.txt"
check "link osh0: not a default route" grep -q -- "-DefaultRoute" "$OSH_WORK/link.txt"

say "resolvectl query demo.local (ResolveHostname on the private bus)"
in_ns "$RESOLVECTL" query demo.local | tee "$OSH_WORK/query.txt"
check "demo.local -> $V4 (from the tunnel, link osh0)" grep -q "demo.local: .*$V4.*link: osh0\|^ *$V4 .*-- link: osh0" "$OSH_WORK/query.txt"
check "demo.local -> $V6" grep -q "$V6" "$OSH_WORK/query.txt"
check "the answer came from the tunnel's network" grep -q "Data from: network" "$OSH_WORK/query.txt"

say "names outside .local are not routed to the tunnel"
before="$(dns_queries)"
for name in example.com demo.local.example sandbox.internal; do
  if in_ns "$RESOLVECTL" query "$name" >"$OSH_WORK/other.txt" 2>&1; then
    cat "$OSH_WORK/other.txt"
    fail "$name resolved, but resolved has no server for it"
  fi
  echo "  $name: $(cat "$OSH_WORK/other.txt")"
done
sleep "$(osh_scaled 1)"  # any stray query has arrived by now (longer when loaded: stricter)
check "the tunnel's DNS saw none of them (dns_queries $before -> $(dns_queries))" [ "$(dns_queries)" = "$before" ]
out="$(in_ns "$RESOLVECTL" query nope.local 2>&1 || true)"
echo "  nope.local: $out"
check "a name under .local is routed to the tunnel (NXDOMAIN from it)" bash -c "echo '$out' | grep -qi 'not found\|does not exist\|NXDOMAIN'"
check "and the tunnel's DNS saw it (dns_queries > $before)" [ "$(dns_queries)" -gt "$before" ]

say "down: the registration is reverted (RevertLink) before the TUN goes"
in_ns "$OSH_TUNNEL" down --state-dir "$OSH_STATE"
wait_rc "$PID_tunnel"
check "up exited 0" [ "$RC" = 0 ]
check "the tunnel logged the revert" grep -q "registration on osh0 reverted" "$OSH_WORK/tunnel.log"
check "no error removing the registration" bash -c "! grep -q 'removing the resolver registration' '$OSH_WORK/tunnel.log'"
sleep "$(osh_scaled 0.5)"  # dbus-monitor has written the call and its answer
# The RevertLink call on the bus, and resolved's answer to it (a method
# return, not an error).
serial="$(awk '/member=RevertLink/ {for (i = 1; i <= NF; i++) if ($i ~ /^serial=/) {sub("serial=", "", $i); print $i; exit}}' "$OSH_WORK/dbusmon.log")"
sender="$(awk '/member=RevertLink/ {for (i = 1; i <= NF; i++) if ($i ~ /^sender=/) {sub("sender=", "", $i); print $i; exit}}' "$OSH_WORK/dbusmon.log")"
grep "member=RevertLink" "$OSH_WORK/dbusmon.log" || true
check "RevertLink was called on org.freedesktop.resolve1.Manager" [ -n "$serial" ]
check "resolved answered it with a method return" \
  grep -Eq "^method return .*destination=$sender serial=[0-9]+ reply_serial=$serial\$" "$OSH_WORK/dbusmon.log"
check "no error reply to it" bash -c "! grep -Eq '^error .*destination=$sender .*reply_serial=$serial( |\$)' '$OSH_WORK/dbusmon.log'"
check "the TUN is gone" bash -c "! nsenter -t $HOLDER -n ip link show osh0 >/dev/null 2>&1"
check "resolved no longer answers demo.local" bash -c "! nsenter -t $HOLDER -m -n '$RESOLVECTL' query demo.local >/dev/null 2>&1"
echo "PASS: resolved"

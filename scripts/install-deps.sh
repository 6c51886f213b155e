#!/usr/bin/env bash
# Installs every Debian 12 package openshell-tunnel needs to build, test,
# package and run its demo. Idempotent; run as root.
#
# Starts no service on the machine, now or at the next boot: some of these
# packages enable and start a service in their postinst on a systemd host
# (openssh-server: ssh.service on port 22; dbus). For the install, a /usr/sbin/policy-rc.d that exits 101
# ("action forbidden", invoke-rc.d(8) and deb-systemd-invoke honour it) is put
# in place, and removed afterwards, even on failure, and only if this script
# created it (an existing one is left as it is).
set -euo pipefail
PKGS=(
  # build
  build-essential cmake ninja-build ccache pkg-config patch
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  liblwip-dev libnl-3-dev libnl-route-3-dev libspdlog-dev libldns-dev libcap-dev libseccomp-dev
  libnftables-dev libsystemd-dev libnghttp2-dev libssl-dev libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev
  # man page, package (CPack DEB + dpkg-shlibdeps), package test, unit check
  scdoc dpkg-dev file mmdebstrap systemd
  # tests and demo (the sandbox's sshd, the browser test's Chromium, the
  # resolved test's private D-Bus, the unit's syscall check, the benchmark chart,
  # nft to look at the firewall table in the isolation test)
  openssh-server openssh-client iproute2 iputils-ping procps curl python3 python3-scapy openssl bind9-dnsutils
  dbus-daemon dbus-bin strace nftables libcap2-bin
  chromium fonts-dejavu-core python3-matplotlib
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  POLICY="${OSH_POLICY_RC_D:-/usr/sbin/policy-rc.d}"  # overridable for packaging/tests/test_install_deps.sh
  created_policy=0
  remove_policy() { if ((created_policy)); then rm -f "$POLICY"; fi; }
  trap remove_policy EXIT
  if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\n# openshell-tunnel scripts/install-deps.sh: no service starts during the install\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    created_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # policy-rc.d stops services from starting now, but openssh-server's
  # postinst still enables ssh.service (deb-systemd-helper), so sshd would
  # listen on port 22 after the next boot: disable it again when this run
  # installed it (an ssh server the machine had before is left alone).
  for p in "${missing[@]}"; do
    if [[ $p == openssh-server ]] && command -v deb-systemd-helper >/dev/null; then
      deb-systemd-helper disable ssh.service >/dev/null 2>&1 || true
      echo "install-deps: ssh.service (enabled by openssh-server's install) disabled again"
    fi
  done
  remove_policy
  created_policy=0
fi
echo "install-deps: all ${#PKGS[@]} packages present"

# lwIP from Debian's own source package (OSH_LWIP=source, stack/lwip/README.md):
# a deb-src entry in a sources file of its own, with the URIs, suites,
# components and keyring of the machine's Debian entries (deb822 .sources or
# one-line .list), then `apt-get source` of the pinned version into a cache
# outside the checkout (scripts/fetch-lwip.sh). Rewritten, and the indexes
# updated, only when it changes or the version is not known to apt yet.
APT_SOURCES="${OSH_APT_SOURCES:-/etc/apt}"  # overridable for packaging/tests/test_install_deps.sh
SRC_FILE="$APT_SOURCES/sources.list.d/openshell-tunnel-src.sources"
LWIP_VERSION=2.1.3+dfsg1-2
want="# openshell-tunnel scripts/install-deps.sh: Debian's sources for lwIP (scripts/fetch-lwip.sh)
$(/usr/bin/python3 "$(dirname "$0")/debian-sources.py" --root "$APT_SOURCES" --type deb-src \
  --skip "$(basename "$SRC_FILE")")"
if [[ ! -f $SRC_FILE || "$(cat "$SRC_FILE")" != "$want" ]]; then
  printf '%s\n' "$want" >"$SRC_FILE"
  echo "install-deps: wrote $SRC_FILE (deb-src)"
  apt-get update -qq
elif ! apt-cache showsrc --only-source lwip 2>/dev/null | grep -qx "Version: $LWIP_VERSION"; then
  apt-get update -qq
fi
"$(dirname "$0")/fetch-lwip.sh" >/dev/null

#!/usr/bin/env bash
# Installs every Debian 12 package openshell-tunnel needs to build, test and
# run its demo. Idempotent; run as root.
set -euo pipefail
PKGS=(
  build-essential cmake ninja-build ccache pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  liblwip-dev libnl-3-dev libnl-route-3-dev libspdlog-dev libldns-dev libcap-dev
  libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev
  openssh-server openssh-client iproute2 iputils-ping procps curl python3 python3-scapy openssl bind9-dnsutils
  chromium fonts-dejavu-core
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: all ${#PKGS[@]} packages present"

#!/usr/bin/env bash
# Fetches and unpacks the source of Debian 12's lwIP, the one its
# liblwip-dev 2.1.3+dfsg1-2 is built from, for the project's own build of
# lwIP (OSH_LWIP=source, stack/lwip/README.md). `apt-get source` checks the
# files against the signed Sources index and dpkg-source applies Debian's
# patches, so the tree is exactly what Debian compiles.
#
# Needs a deb-src entry for bookworm (scripts/install-deps.sh writes one, as
# root); runs as any user. Idempotent: a complete tree is left as it is.
# Concurrent runs (two builds configuring at once) wait for each other.
#
# Usage: scripts/fetch-lwip.sh [DIR]
#   DIR: where the tree goes; default $OSH_LWIP_CACHE_DIR, else
#        ${XDG_CACHE_HOME:-$HOME/.cache}/openshell-tunnel/lwip-$VERSION
#        (outside the checkout: one fetch serves every clone).
# Prints DIR on stdout; progress and errors go to stderr. Exit 1 on failure.
set -euo pipefail
VERSION=2.1.3+dfsg1-2
# sha256 of lwip_$VERSION.dsc (it names every other file with its hash).
DSC_SHA256=8d8f944db8e6d542fc2d6f01559078fb1b5dda71651c67ee5fa3571ed1342c50
cache="${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/openshell-tunnel"
dir="${1:-${OSH_LWIP_CACHE_DIR:-$cache/lwip-$VERSION}}"
fail() { echo "fetch-lwip.sh: $*" >&2; exit 1; }

[[ -f $dir/.osh-fetched ]] && { echo "$dir"; exit 0; }
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
[[ -f $dir/.osh-fetched ]] && { echo "$dir"; exit 0; }  # another run fetched it meanwhile

command -v dpkg-source >/dev/null || fail "dpkg-source is missing (dpkg-dev; scripts/install-deps.sh)"
# Into a temporary directory that apt's download user (_apt) owns when this
# runs as root, so that apt downloads sandboxed (not into $HOME, often
# closed to it); then moved into place whole.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/osh-lwip-src.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
if ((EUID == 0)) && id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
echo "fetch-lwip.sh: apt-get source lwip=$VERSION into $dir" >&2
if ! (cd "$tmp" && apt-get source -qq --only-source "lwip=$VERSION" >&2); then
  fail "apt-get source lwip=$VERSION failed: no deb-src entry for bookworm? (scripts/install-deps.sh, as root, adds one)"
fi
got="$(sha256sum "$tmp/lwip_$VERSION.dsc" | cut -d' ' -f1)"
[[ $got == "$DSC_SHA256" ]] || fail "lwip_$VERSION.dsc has sha256 $got, expected $DSC_SHA256"
src="$tmp/lwip-${VERSION%-*}"
[[ -f $src/src/core/tcp.c && -f $src/debian/rules ]] || fail "apt-get source left no lwIP tree in $src"
touch "$src/.osh-fetched"
rm -rf "$dir"
mv "$src" "$dir"
echo "$dir"

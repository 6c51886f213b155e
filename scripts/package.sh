#!/usr/bin/env bash
# Builds the Debian packages with one command (CPack's DEB generator):
#   <build>/packages/openshell-tunnel_<version>_<arch>.deb        the tunnel, unit, man page, completion
#   <build>/packages/openshell-tunnel-peers_<version>_<arch>.deb  the mini gateway/supervisor (/usr/lib/openshell-tunnel)
# <version> is CMakeLists.txt's project version, with ~git<count>.<hash> for an
# untagged commit (cmake/version.cmake); Depends: comes from dpkg-shlibdeps.
# Builds first (scripts/build.sh, so ccache and OSH_BUILD_DIR apply; default
# build/). Prints the package paths, one a line, on stdout's last lines.
# Usage: scripts/package.sh            (OSH_PACKAGE_NO_BUILD=1: package the build as it is)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${OSH_BUILD_DIR:-build}"
if [[ ${OSH_PACKAGE_NO_BUILD:-0} != 1 ]]; then
  scripts/build.sh >&2
fi
[[ -f $BUILD_DIR/CPackConfig.cmake ]] || { echo "package.sh: $BUILD_DIR is not configured (scripts/build.sh)" >&2; exit 1; }
for tool in cpack dpkg-shlibdeps dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "package.sh: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
version="$(cat "$BUILD_DIR/generated/version.txt")"
rm -f "$BUILD_DIR"/packages/openshell-tunnel*_"$version"_*.deb
(cd "$BUILD_DIR" && cpack --config CPackConfig.cmake) >&2
debs=("$BUILD_DIR"/packages/openshell-tunnel*_"$version"_*.deb)
[[ ${#debs[@]} == 2 && -f ${debs[0]} ]] || { echo "package.sh: expected two packages for $version in $BUILD_DIR/packages" >&2; exit 1; }
for d in "${debs[@]}"; do
  echo "package.sh: $(dpkg-deb -f "$d" Package) $(dpkg-deb -f "$d" Version): $(du -h "$d" | cut -f1)" >&2
  echo "  Depends: $(dpkg-deb -f "$d" Depends)" >&2
done
realpath "${debs[@]}"

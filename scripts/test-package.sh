#!/usr/bin/env bash
# Proves the packages install into a clean Debian 12 root: mmdebstrap builds
# a minimal bookworm (variant apt: Essential + apt) from the same Debian
# mirrors this machine's apt uses (the bookworm* entries of
# /etc/apt/sources.list and /etc/apt/sources.list.d/*.{list,sources}), apt
# inside the root installs openshell-tunnel and openshell-tunnel-peers from
# their .deb files and resolves every dependency from the mirror, and there:
# `openshell-tunnel --version` prints the package's version, `--help` and
# `up --help` run, the mini gateway runs, and the unit, environment file
# (a conffile), man page and bash completion are where the package says.
# The root is a temporary directory, removed at the end; nothing on the
# machine is installed or changed.
#
# Usage: scripts/test-package.sh [--build-dir DIR] [DEB...]
#   no DEB: scripts/package.sh builds them (OSH_BUILD_DIR / --build-dir);
#   --build-dir DIR with no DEB: packages that build as it is (no rebuild;
#   what the ctest test package_install does).
# Run as root (mmdebstrap's root mode). Prints how long each step took.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "test-package.sh: run as root (mmdebstrap root mode)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "test-package.sh: mmdebstrap is missing (scripts/install-deps.sh)" >&2; exit 1; }
build_dir=""
if [[ ${1:-} == --build-dir ]]; then
  build_dir="$2"
  shift 2
fi
T0=$SECONDS
debs=("$@")
if ((${#debs[@]} == 0)); then
  if [[ -n $build_dir ]]; then
    mapfile -t debs < <(OSH_BUILD_DIR="$build_dir" OSH_PACKAGE_NO_BUILD=1 scripts/package.sh)
  else
    mapfile -t debs < <(scripts/package.sh)
  fi
fi
T_PKG=$((SECONDS - T0))
for d in "${debs[@]}"; do [[ -f $d ]] || { echo "test-package.sh: no such package $d" >&2; exit 1; }; done
tunnel_deb="" version=""
for d in "${debs[@]}"; do
  if [[ $(dpkg-deb -f "$d" Package) == openshell-tunnel ]]; then
    tunnel_deb="$d"
    version="$(dpkg-deb -f "$d" Version)"
  fi
done
[[ -n $tunnel_deb ]] || { echo "test-package.sh: no openshell-tunnel package among ${debs[*]}" >&2; exit 1; }
depends="$(dpkg-deb -f "$tunnel_deb" Depends)"
echo "openshell-tunnel $version, Depends (dpkg-shlibdeps): $depends"
[[ $depends == *libc6* && $depends == *libgrpc++* && $depends == *libsystemd0* ]] ||
  { echo "FAIL: Depends lacks libc6, libgrpc++ or libsystemd0: not computed by dpkg-shlibdeps?" >&2; exit 1; }
# Each package's own synopsis, and its long description indented by one space
# (deb-control(5)).
for d in "${debs[@]}"; do
  desc="$(dpkg-deb -f "$d" Description)"
  synopsis="$(head -1 <<<"$desc")"
  case "$(dpkg-deb -f "$d" Package)" in
    openshell-tunnel) want="every OpenShell sandbox reachable as a host on your network" ;;
    openshell-tunnel-peers) want="reference OpenShell gateway and supervisor for openshell-tunnel tests" ;;
    *) want="$synopsis" ;;
  esac
  [[ $synopsis == "$want" ]] || { echo "FAIL: $(basename "$d"): synopsis '$synopsis', want '$want'" >&2; exit 1; }
  if tail -n +2 <<<"$desc" | grep -qv '^ [^ ]'; then
    echo "FAIL: $(basename "$d"): long description lines must start with exactly one space" >&2; exit 1
  fi
done
echo "  ok: each package has its own synopsis and a one-space-indented description"

WORK="$(mktemp -d /tmp/osh-pkgtest.XXXXXX)"
cleanup() {
  local rc=$?
  # mmdebstrap unmounts what it mounted; the root is a plain directory tree.
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

# The machine's Debian bookworm sources, deb822 (Signed-By kept).
scripts/debian-sources.py --type deb >"$WORK/debian.sources"
echo "mirrors (from this machine's apt configuration):"
sed 's/^/  /' "$WORK/debian.sources"

# Checks run inside the new root (customize hook; $1 = the root).
cat >"$WORK/check.sh" <<CHECK
set -eu
root="\$1"
fail() { echo "FAIL: \$*"; exit 1; }
ok() { echo "  ok: \$*"; }
out="\$(chroot "\$root" openshell-tunnel --version)"
[ "\$out" = "openshell-tunnel $version" ] || fail "--version printed '\$out', the package is $version"
ok "openshell-tunnel --version: \$out"
chroot "\$root" openshell-tunnel --help >/dev/null || fail "--help"
chroot "\$root" openshell-tunnel --help | grep -q "Subcommands:" || fail "--help lists no subcommands"
ok "openshell-tunnel --help"
chroot "\$root" openshell-tunnel up --help | grep -q -- "--gateway-endpoint" || fail "up --help"
ok "openshell-tunnel up --help"
chroot "\$root" /usr/lib/openshell-tunnel/openshell-mini-gateway --help >/dev/null || fail "mini-gateway --help"
ok "/usr/lib/openshell-tunnel/openshell-mini-gateway --help"
for f in /usr/bin/openshell-tunnel /usr/lib/systemd/system/openshell-tunnel.service \
  /etc/openshell-tunnel/openshell-tunnel.env /usr/share/man/man8/openshell-tunnel.8.gz \
  /usr/share/bash-completion/completions/openshell-tunnel /usr/share/doc/openshell-tunnel/copyright \
  /usr/lib/openshell-tunnel/openshell-mini-supervisor /usr/lib/NetworkManager/conf.d/90-openshell-tunnel.conf \
  /usr/lib/systemd/network/10-openshell-tunnel.network; do
  [ -e "\$root\$f" ] || fail "\$f is missing"
done
ok "binary, unit, env file, man page, completion, copyright, peers, unmanaged-device rules in place"
chroot "\$root" dpkg-query -W -f='\${Conffiles}\n' openshell-tunnel | grep -q /etc/openshell-tunnel/openshell-tunnel.env ||
  fail "the env file is not a conffile"
ok "/etc/openshell-tunnel/openshell-tunnel.env is a conffile"
chroot "\$root" sh -c 'apt-get check -qq' || fail "apt-get check"
ok "apt-get check: every dependency satisfied"
chroot "\$root" dpkg-query -W -f='\${Package} \${Version} \${Status}\n' openshell-tunnel openshell-tunnel-peers
CHECK

T1=$SECONDS
# The .deb files are copied into the root and installed by the root's own
# apt (a host path given to --include is not visible to dpkg in the chroot).
mkdir -p "$WORK/debs"
cp "${debs[@]}" "$WORK/debs/"
in_root=()
for d in "${debs[@]}"; do in_root+=("/tmp/osh-debs/$(basename "$d")"); done
echo "mmdebstrap: bookworm, variant apt, then apt-get install ${in_root[*]}"
mmdebstrap --mode=root --variant=apt --format=directory \
  --customize-hook="mkdir -p \"\$1/tmp/osh-debs\" && cp $WORK/debs/*.deb \"\$1/tmp/osh-debs/\"" \
  --customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y ${in_root[*]}" \
  --customize-hook="bash $WORK/check.sh \"\$1\"" \
  --customize-hook="rm -rf \"\$1/tmp/osh-debs\"" \
  bookworm "$WORK/root" "$WORK/debian.sources" >"$WORK/mmdebstrap.log" 2>&1 || true
grep -E "^  ok: |^FAIL|^openshell-tunnel" "$WORK/mmdebstrap.log" || true
if ! grep -q "^  ok: apt-get check" "$WORK/mmdebstrap.log"; then
  echo "FAIL: the install or a check failed; the end of mmdebstrap's output:"
  grep -v "^I: " "$WORK/mmdebstrap.log" | tail -n 60
  exit 1
fi
T_ROOT=$((SECONDS - T1))
echo "root size: $(du -sh "$WORK/root" | cut -f1)"
echo "timing: packaging ${T_PKG} s, mmdebstrap + install + checks ${T_ROOT} s, total $((SECONDS - T0)) s"
echo "PASS: package installs into a clean Debian 12 root"

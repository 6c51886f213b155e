#!/usr/bin/env bash
# packaging_install_deps: scripts/install-deps.sh starts no host service. With
# dpkg-query and apt-get replaced by stubs on PATH (nothing is installed) and
# the policy-rc.d path pointed into a temporary directory (OSH_POLICY_RC_D):
#   - while apt-get install runs, a policy-rc.d exists and exits 101
#     ("action forbidden": invoke-rc.d and deb-systemd-invoke start nothing);
#   - afterwards it is gone, also when apt-get fails;
#   - a policy-rc.d that was there before is left exactly as it was;
#   - nothing is done when every package is installed;
#   - a deb-src entry for lwIP's source (scripts/fetch-lwip.sh) is written
#     from the machine's Debian 12 entries once, with one index update, and
#     the indexes are updated again only when apt does not know the version.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
W="$(mktemp -d /tmp/osh-deps-test.XXXXXX)"
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/bin"
# dpkg-query: "installed" unless $W/missing names the package.
cat >"$W/bin/dpkg-query" <<STUB
#!/usr/bin/env bash
pkg="\${@: -1}"
grep -qx "\$pkg" "$W/missing" 2>/dev/null && exit 1
echo "install ok installed"
STUB
# apt-get: records what the policy file did during "install"; fails on demand.
cat >"$W/bin/apt-get" <<STUB
#!/usr/bin/env bash
[[ \$1 == update ]] && { echo update >>"$W/updates"; exit 0; }
if [[ -x "$W/policy-rc.d" ]]; then
  "$W/policy-rc.d" ssh start && rc=0 || rc=\$?
  echo "policy present, exits \$rc" >"$W/seen"
else
  echo "no policy" >"$W/seen"
fi
[[ -e "$W/fail" ]] && exit 100
exit 0
STUB
# apt-cache: knows lwIP's source version unless $W/nosrc exists.
cat >"$W/bin/apt-cache" <<STUB
#!/usr/bin/env bash
[[ -e "$W/nosrc" ]] || echo "Version: 2.1.3+dfsg1-2"
STUB
chmod +x "$W/bin/"*
# The machine's apt configuration, a deb822 file and a one-line list (with a
# suite that is not Debian 12's, left out), and an lwIP tree already fetched.
mkdir -p "$W/apt/sources.list.d" "$W/lwip"
printf 'Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  >"$W/apt/sources.list.d/debian.sources"
printf 'deb [signed-by=/k.gpg] http://other.example/x bookworm-security main\ndeb http://other.example/y trixie main\n' >"$W/apt/sources.list"
touch "$W/lwip/.osh-fetched"
SRC="$W/apt/sources.list.d/openshell-tunnel-src.sources"
run() {
  PATH="$W/bin:$PATH" OSH_POLICY_RC_D="$W/policy-rc.d" OSH_APT_SOURCES="$W/apt" OSH_LWIP_CACHE_DIR="$W/lwip" \
    bash "$ROOT/scripts/install-deps.sh" >"$W/out" 2>&1
}
bad=0
check() { if eval "$2"; then echo "  ok: $1"; else echo "FAIL: $1"; cat "$W/out"; bad=1; fi; }

echo openssh-server >"$W/missing"
run
check "apt-get install ran with a policy-rc.d that exits 101" '[[ $(cat "$W/seen") == "policy present, exits 101" ]]'
check "the policy-rc.d is removed afterwards" '[[ ! -e $W/policy-rc.d ]]'

rm -f "$W/seen"
touch "$W/fail"
run && rc=0 || rc=$?
check "apt-get failing fails install-deps (exit $rc)" '((rc != 0))'
check "and still ran under the policy" '[[ $(cat "$W/seen") == "policy present, exits 101" ]]'
check "and the policy-rc.d is removed" '[[ ! -e $W/policy-rc.d ]]'
rm -f "$W/fail"

printf '#!/bin/sh\n# the admin'"'"'s own\nexit 0\n' >"$W/policy-rc.d"
chmod 755 "$W/policy-rc.d"
before="$(sha256sum <"$W/policy-rc.d")"
run
check "an existing policy-rc.d is used as it is" '[[ $(cat "$W/seen") == "policy present, exits 0" ]]'
check "and left in place, unchanged" '[[ -e $W/policy-rc.d && $(sha256sum <"$W/policy-rc.d") == "$before" ]]'
rm -f "$W/policy-rc.d" "$W/seen" "$W/missing"

run
check "nothing missing: apt-get is not run" '[[ ! -e $W/seen ]] && grep -q "packages present" "$W/out"'

# lwIP's deb-src entry: written on the first run, with one index update.
rm -f "$SRC" "$W/updates"
run
run
want="$(cat <<'EOF'
# openshell-tunnel scripts/install-deps.sh: Debian's sources for lwIP (scripts/fetch-lwip.sh)
Types: deb-src
URIs: http://other.example/x
Suites: bookworm-security
Components: main
Signed-By: /k.gpg

Types: deb-src
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
)"
check "deb-src entry: Debian 12's URIs, suites, components and keyring" '[[ $(cat "$SRC") == "$want" ]]'
check "written once, apt-get update once, over two runs" '[[ $(wc -l <"$W/updates") == 1 ]]'
touch "$W/nosrc"
run
check "apt knows no lwIP source: the indexes are updated again" '[[ $(wc -l <"$W/updates") == 2 ]]'
check "and the entry is left as it was" '[[ $(cat "$SRC") == "$want" ]]'
((bad == 0)) || exit 1
echo "PASS: install-deps starts no service"

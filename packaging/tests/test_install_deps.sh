#!/usr/bin/env bash
# packaging_install_deps: scripts/install-deps.sh starts no host service. With
# dpkg-query and apt-get replaced by stubs on PATH (nothing is installed) and
# the policy-rc.d path pointed into a temporary directory (OSH_POLICY_RC_D):
#   - while apt-get install runs, a policy-rc.d exists and exits 101
#     ("action forbidden": invoke-rc.d and deb-systemd-invoke start nothing);
#   - afterwards it is gone, also when apt-get fails;
#   - a policy-rc.d that was there before is left exactly as it was;
#   - nothing is done when every package is installed.
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
[[ \$1 == update ]] && exit 0
if [[ -x "$W/policy-rc.d" ]]; then
  "$W/policy-rc.d" ssh start && rc=0 || rc=\$?
  echo "policy present, exits \$rc" >"$W/seen"
else
  echo "no policy" >"$W/seen"
fi
[[ -e "$W/fail" ]] && exit 100
exit 0
STUB
chmod +x "$W/bin/"*
run() { PATH="$W/bin:$PATH" OSH_POLICY_RC_D="$W/policy-rc.d" bash "$ROOT/scripts/install-deps.sh" >"$W/out" 2>&1; }
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
((bad == 0)) || exit 1
echo "PASS: install-deps starts no service"

#!/usr/bin/env bash
# packaging_version: `openshell-tunnel --version` prints the build's version
# (generated/version.txt, which the .deb is also named after); it is
# CMakeLists.txt's project version, or that with ~git<commit count>.<8 hex>
# appended for a commit that exists in this checkout; dpkg accepts it as a
# Debian version, sorts a ~git build before its release and after the
# snapshot one commit earlier, whatever the hashes.
# Usage: test_version.sh BINARY VERSION_TXT PROJECT_VERSION
set -euo pipefail
BIN="$1" TXT="$2" BASE="$3"
v="$(cat "$TXT")"
out="$("$BIN" --version)"
[[ $out == "openshell-tunnel $v" ]] || { echo "FAIL: --version printed '$out', version.txt says '$v'"; exit 1; }
echo "  ok: --version prints '$out'"
[[ $v =~ ^${BASE//./\\.}(~git([0-9]+)\.([0-9a-f]{8}))?$ ]] || { echo "FAIL: '$v' is not $BASE or $BASE~git<count>.<hash>"; exit 1; }
count="${BASH_REMATCH[2]}" hash="${BASH_REMATCH[3]}"
if command -v dpkg >/dev/null; then
  dpkg --validate-version "$v" || { echo "FAIL: dpkg rejects '$v' as a Debian version"; exit 1; }
  echo "  ok: dpkg accepts '$v' as a Debian version"
  if [[ -n $hash ]]; then
    dpkg --compare-versions "$v" lt "$BASE" || { echo "FAIL: $v does not sort before $BASE"; exit 1; }
    echo "  ok: $v sorts before the release $BASE"
    earlier="$BASE~git$((count - 1)).ffffffff"
    dpkg --compare-versions "$earlier" lt "$v" || { echo "FAIL: $v does not sort after $earlier"; exit 1; }
    echo "  ok: $v sorts after the previous commit's snapshot ($earlier)"
  fi
fi
if [[ -n $hash ]]; then
  src="$(cd "$(dirname "$0")/../.." && pwd)"
  if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$src" cat-file -e "$hash^{commit}" 2>/dev/null || { echo "FAIL: $hash is no commit of $src"; exit 1; }
    echo "  ok: $hash is commit $(git -C "$src" log -1 --format='%h %s' "$hash" | cut -c1-60)"
  fi
fi
echo "PASS: version"

#!/usr/bin/env bash
# cli_usage_errors: an unknown command or option is named in the error and
# exits 1 (README "Exit codes"); --help and --version exit 0.
# Usage: test_usage_errors.sh BINARY
set -uo pipefail
bin="$1"
fail=0
check() {  # ARGS-STRING WANT-RC WANT-SUBSTRING
  local out rc
  out="$($bin $1 2>&1)"
  rc=$?
  if [[ $rc == "$2" && $out == *"$3"* ]]; then
    echo "  ok: '$1' -> $rc, '$3'"
  else
    echo "FAIL: '$1' -> $rc: $out"
    fail=1
  fi
}
check "bogus" 1 "unknown command or option 'bogus'"
check "--bogus" 1 "unknown command or option '--bogus'"
check "-v bogus" 1 "unknown command or option 'bogus'"
check "up --bogus" 1 "--bogus"
check "--help" 0 "SUBCOMMAND"
check "--version" 0 "openshell-tunnel "
check "--log-file /proc/no-such-dir/x.log status" 1 "--log-file /proc/no-such-dir/x.log: Failed opening"
check "--log-max-mib 0 status" 1 "--log-max-mib"
((fail == 0)) && echo "PASS: usage errors"
exit $fail

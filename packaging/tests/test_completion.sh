#!/usr/bin/env bash
# packaging_completion: the bash completion loads, registers itself, and
# completes commands, flags, flag values and sandbox names (COMP_WORDS
# simulations). Sandbox names come from a stub `status --json` (a fixture with
# two sandboxes; every other call goes to the real binary), and, with the real
# binary and no tunnel running, there are none and nothing is printed.
# Usage: test_completion.sh COMPLETION_FILE BINARY
set -euo pipefail
COMP="$1" BIN="$2"
WORK="$(mktemp -d /tmp/osh-comp-test.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/stub" <<STUB
#!/usr/bin/env bash
if [[ \$1 == status && \$* == *--json* ]]; then
  echo '{"pid":1,"gateway":{"endpoint":"http://x:1"},"sandboxes":[{"name":"demo","fqdn":"demo.local"},{"name":"db-1","fqdn":"db-1.local"}]}'
  exit 0
fi
exec "$BIN" "\$@"
STUB
chmod +x "$WORK/stub"

out="$(bash -c "source '$COMP'; complete -p openshell-tunnel")"
[[ $out == "complete -F _openshell_tunnel openshell-tunnel" ]] || { echo "FAIL: complete -p says '$out'"; exit 1; }
echo "  ok: $out"

# complete BIN WORD... : the completions for the last word, sorted, one line.
complete_words() {
  local bin="$1"
  shift
  bash -c '
    source "$1"; _OSH_COMP_BIN="$2"; shift 2
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
    COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    _openshell_tunnel
    printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " " | sed "s/ $//"' _ "$COMP" "$bin" "$@"
}
bad=0
expect() {  # expect "WANTED" WORD...
  local want="$1"
  shift
  local got
  got="$(complete_words "$WORK/stub" "$@")"
  if [[ $got == "$want" ]]; then echo "  ok: [$*] -> $got"; else echo "FAIL: [$*] -> '$got', expected '$want'"; bad=1; fi
}
expect "down forward ssh-proxy status up" openshell-tunnel ""
expect "down" openshell-tunnel d
expect "--dns" openshell-tunnel up --dn
expect "both hosts resolver" openshell-tunnel up --dns ""
expect "debug" openshell-tunnel --log-level de
expect "0.0 0.1 auto" openshell-tunnel forward --gateway-protocol ""
expect "--tun-name" openshell-tunnel -v up --tun
expect "--help --json --log-file --log-files --log-level --log-max-mib --state-dir --verbose -h -v" openshell-tunnel status -
expect "db-1 demo" openshell-tunnel ssh-proxy ""
expect "demo" openshell-tunnel ssh-proxy --gateway-endpoint http://g:1 de
expect "db-1 demo" openshell-tunnel forward 8080 ""
expect "" openshell-tunnel forward 8080 demo ""
expect "db-1 demo" openshell-tunnel forward --gateway-insecure 8080 ""
expect "" openshell-tunnel up --domain ""

# What bash really passes for `forward 127.0.0.1:8080 de`: COMP_WORDS split
# at ':' as well (COMP_WORDBREAKS); the sandbox is still the second argument.
got="$(bash -c '
  source "$1"; _OSH_COMP_BIN="$2"
  COMP_WORDS=(openshell-tunnel forward 127.0.0.1 : 8080 de); COMP_CWORD=5
  COMP_LINE="openshell-tunnel forward 127.0.0.1:8080 de"; COMP_POINT=${#COMP_LINE}
  _openshell_tunnel; printf "%s\n" "${COMPREPLY[@]}"' _ "$COMP" "$WORK/stub")"
if [[ $got == demo ]]; then echo "  ok: [forward 127.0.0.1:8080 de] (split at ':') -> demo"; else echo "FAIL: [forward 127.0.0.1:8080 de] -> '$got'"; bad=1; fi

# Every flag of `up --help` is offered after `up --`.
flags="$("$BIN" up --help | awk '/^Options:/ {on = 1; next} on && /^  -/ {n = split($1, f, ","); for (i = 1; i <= n; i++) if (f[i] ~ /^--/) print f[i]}' | sort)"
offered="$(complete_words "$WORK/stub" openshell-tunnel up -- | tr ' ' '\n' | sort)"
missing="$(comm -23 <(echo "$flags") <(echo "$offered"))"
if [[ -z $missing ]]; then echo "  ok: all $(echo "$flags" | wc -l) long flags of up are offered"; else echo "FAIL: not offered: $missing"; bad=1; fi

# The real binary without a tunnel: no sandbox names, no noise.
got="$(complete_words "$BIN" openshell-tunnel ssh-proxy --state-dir "$WORK/none" "" 2>&1)"
if [[ -z $got ]]; then echo "  ok: no tunnel running -> no sandbox names, nothing printed"; else echo "FAIL: got '$got'"; bad=1; fi
((bad == 0)) || exit 1
echo "PASS: completion"

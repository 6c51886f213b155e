#!/usr/bin/env bash
# packaging_maintainer_scripts: what the .deb's maintainer scripts ask of
# systemd in each dpkg state (deb-systemd-invoke conventions, Debian policy
# 6.5): an upgrade keeps the service enabled and restarts it only if it was
# running; remove and purge disable it; a fresh install enables nothing.
# Runs copies of packaging/debian/{postinst,prerm,postrm} against a stand-in
# `systemctl` that records its arguments, with the "systemd is running" check
# pointed at a directory of this test's own; nothing on the machine changes.
# Usage: test_maintainer_scripts.sh
set -euo pipefail
src="$(cd "$(dirname "$0")/../debian" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/run-systemd"
printf '#!/bin/sh\necho "systemctl $*" >>"%s/calls"\n' "$work" >"$work/bin/systemctl"
chmod +x "$work/bin/systemctl"
for s in postinst prerm postrm; do
  sed -e "s|/run/systemd/system|$work/run-systemd|g" -e "s|rm -rf /var/lib/openshell-tunnel|echo purge-state >>$work/calls|" \
    "$src/$s" >"$work/$s"
done
run() {  # SCRIPT ARGS...: prints the systemctl calls it made, one line
  : >"$work/calls"
  PATH="$work/bin:$PATH" sh "$work/$1" "${@:2}"
  tr '\n' ';' <"$work/calls"
}
fail=0
expect() {  # WHAT GOT WANT-REGEX UNWANTED-REGEX
  if [[ $2 =~ $3 ]] && { [[ -z $4 ]] || ! [[ $2 =~ $4 ]]; }; then
    echo "  ok: $1 ($2)"
  else
    echo "FAIL: $1: got '$2'"
    fail=1
  fi
}
expect "fresh install: daemon-reload, nothing enabled or started" "$(run postinst configure)" 'daemon-reload' 'enable|start|restart'
expect "upgrade: a running service is restarted on the new binary" "$(run postinst configure 0.2.0~git1.00000000)" 'try-restart openshell-tunnel' 'enable|disable'
expect "upgrade: prerm leaves the service running" "$(run prerm upgrade 0.2.0)" '^$' ''
expect "upgrade: postrm keeps the service enabled" "$(run postrm upgrade 0.2.0)" '^$' ''
expect "remove: prerm stops the service" "$(run prerm remove)" 'stop openshell-tunnel' ''
expect "remove: postrm disables it" "$(run postrm remove)" 'disable openshell-tunnel' 'purge-state'
expect "purge: postrm disables it and forgets the state" "$(run postrm purge)" 'disable openshell-tunnel.*purge-state' ''
((fail == 0)) || exit 1
echo "PASS: maintainer scripts"

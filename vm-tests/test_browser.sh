#!/usr/bin/env bash
# A browser reaches a service in the sandbox (issue 4.8).
#
#   client ns: headless Chromium ──► http://demo.local:8090/ ──► TUN osh0 ─► tunnel ══► gateway ══► supervisor
#   sbx ns:    webapp.py on 127.0.0.1:8090 (HTTP page + WebSocket /ws, RFC 6455)
#
# The page opens ws://demo.local:8090/ws, the server sends a token made for
# this run (it exists only on webapp.py's command line, never in the HTML),
# the page writes it into <span id="value"> and sends "ack:<token>" back. The
# page's load event is held until that round trip (webapp.py /wait), so the
# DOM Chromium dumps and the screenshot it takes both show the token.
# Checked: the rendered DOM holds the token, the server recorded sending it
# and receiving the ack for the same page, the tunnel opened the streams, the
# screenshot is a PNG of the window size (saved as an artifact, path printed).
#
# Chromium is the Debian binary run directly (/usr/lib/chromium/chromium, not
# the /usr/bin/chromium wrapper, which sources /etc/chromium.d: API keys and
# extension flags). It resolves demo.local with the system resolver, i.e.
# through the client namespace's hosts file (ip netns exec bind-mounts
# /etc/netns/<ns>/hosts); checked in its net log. It asks for IPv4 only: its
# IPv6 reachability probe fails (no IPv6 default route in the namespace).
#
# It never reaches the internet. Background networking, component updates,
# sync, QUIC, proxies and network-time queries are off, and the client
# namespace has no default route (checked). Chromium 156 still starts an
# on-demand update check of its "Optimization Guide On DeviceModels Manifest"
# component (update.googleapis.com) whatever the flags or the
# ComponentUpdatesEnabled policy say, so --host-resolver-rules maps every
# name except demo.local to NOTFOUND: such requests die inside Chromium before
# any DNS query. (The rule EXCLUDEs demo.local, which still resolves through
# the hosts file.) The net log is checked: every TCP connect went to the
# sandbox's tunnel address; the only other socket is Chromium's IPv6
# reachability probe, a UDP connect() to 2001:4860:4860::8888 that sends
# nothing.
#
# HOME, XDG dirs and the profile live in the test's temp dir. Chromium runs
# under timeout(1), which makes its own process group; the whole group is
# killed afterwards and on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

WEB_PORT=8090  # osh_sandbox_services' http.server has 8080
CHROMIUM="${OSH_CHROMIUM:-/usr/lib/chromium/chromium}"
CHROME_SECS="$(osh_scaled 60)" # the whole browser run, seconds (load-scaled)
WINDOW_W=900
WINDOW_H=400
REPO="$(cd "$(dirname "$0")/.." && pwd)"
ARTIFACTS="${OSH_ARTIFACTS:-$REPO/build/artifacts}"
CHROME_PGID=""

# True when process group $1 has no live (non-zombie) member.
group_gone() { ! ps -o stat= -g "$1" | grep -qv '^Z'; }

browser_cleanup() {
  local rc=$?
  set +e
  if [[ -n $CHROME_PGID ]]; then kill -KILL -- "-$CHROME_PGID" 2>/dev/null || true; fi
  (exit "$rc")  # osh_cleanup reads the test's status from $?
  osh_cleanup
}
trap browser_cleanup EXIT

[[ -x $CHROMIUM ]] || fail "$CHROMIUM not found: install chromium (scripts/install-deps.sh)"
mkdir -p "$ARTIFACTS"
SHOT="$(cd "$ARTIFACTS" && pwd)/browser.png"
rm -f "$SHOT"
TOKEN="osh-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"

osh_topology
osh_sandbox_services 1
say "sandbox: webapp.py (HTTP + WebSocket) on 127.0.0.1:$WEB_PORT, token $TOKEN"
osh_spawn "$NS_SBX" webapp /usr/bin/python3 "$(dirname "$0")/webapp.py" --bind 127.0.0.1 \
  --port "$WEB_PORT" --token "$TOKEN" --report "$OSH_WORK/webapp.report" --wait-secs 30
touch "$OSH_WORK/webapp.report"
wait_until 10 port_listens "$NS_SBX" "$WEB_PORT"
osh_gateway
osh_supervisor
osh_tunnel
check "demo.local is in the client's hosts file" grep -q "[[:space:]]demo\.local$" "$OSH_HOSTS"
check "client namespace has no IPv4 default route" [ -z "$(ip -n "$NS_CLIENT" -4 route show default)" ]
check "client namespace has no IPv6 default route" [ -z "$(ip -n "$NS_CLIENT" -6 route show default)" ]

say "the page as served carries no token (the browser can only get it over the WebSocket)"
n_client curl -sS --max-time "$(osh_scaled 10)" "http://demo.local:$WEB_PORT/" >"$OSH_WORK/page.html"
check "page served through the tunnel" grep -q '<span id="value">(waiting)</span>' "$OSH_WORK/page.html"
check "token absent from the page" bash -c '! grep -qF "$1" "$2"' _ "$TOKEN" "$OSH_WORK/page.html"

say "headless Chromium in the client namespace opens http://demo.local:$WEB_PORT/"
mkdir -p "$OSH_WORK/chrome/home" "$OSH_WORK/chrome/profile"
CHROME_ARGS=(
  --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage
  --disable-quic --no-proxy-server --no-first-run --no-default-browser-check
  --disable-background-networking --disable-component-update --disable-sync
  --disable-extensions --disable-breakpad --disable-crash-reporter --no-pings
  --disable-features=NetworkTimeServiceQuerying
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE demo.local"
  --log-net-log="$OSH_WORK/chrome/netlog.json"
  --user-data-dir="$OSH_WORK/chrome/profile" --window-size="$WINDOW_W,$WINDOW_H"
  --dump-dom --screenshot="$SHOT" "http://demo.local:$WEB_PORT/"
)
[[ $OSH_VERBOSE == 1 ]] && echo "  client\$ $CHROMIUM ${CHROME_ARGS[*]}" >&2
t0=$SECONDS
env HOME="$OSH_WORK/chrome/home" XDG_CONFIG_HOME="$OSH_WORK/chrome/home/.config" \
  XDG_CACHE_HOME="$OSH_WORK/chrome/home/.cache" DBUS_SESSION_BUS_ADDRESS=disabled: \
  timeout -s TERM -k 5 "$CHROME_SECS" ip netns exec "$NS_CLIENT" "$CHROMIUM" "${CHROME_ARGS[@]}" \
  >"$OSH_WORK/dom.html" 2>"$OSH_WORK/chromium.err" &
CHROME_PGID=$!  # timeout(1) puts itself and the browser in a group of its own
if wait "$CHROME_PGID"; then chrome_rc=0; else chrome_rc=$?; fi
kill -KILL -- "-$CHROME_PGID" 2>/dev/null || true  # helpers (zygotes) that outlived it
check "no browser process left in its group $CHROME_PGID (zombies aside)" wait_until 10 group_gone "$CHROME_PGID"
CHROME_PGID=""
# Its stderr without the D-Bus complaints (there is no bus here); shown on failure.
grep -v '/dbus/' "$OSH_WORK/chromium.err" >"$OSH_WORK/chromium.log" || true
say "chromium exited $chrome_rc after $((SECONDS - t0)) s"
if [[ -s $SHOT ]]; then echo "  screenshot artifact: $SHOT"; fi
check "chromium exited 0 (124 = timeout)" [ "$chrome_rc" -eq 0 ]

say "rendered DOM"
{ grep -E 'id="(value|status)"' "$OSH_WORK/dom.html" || echo "(no value or status element)"; } | sed 's/^/  /'
check "DOM shows the token in <span id=value>" grep -qF "<span id=\"value\">$TOKEN</span>" "$OSH_WORK/dom.html"
check "DOM says it came over the WebSocket from demo.local" \
  grep -qF "received over WebSocket from demo.local:$WEB_PORT" "$OSH_WORK/dom.html"

say "webapp's record"
sed 's/^/  /' "$OSH_WORK/webapp.report"
page="$(/usr/bin/python3 -c '
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
sent = {e["page"] for e in ev if e["event"] == "sent" and e["token"] == sys.argv[2]}
acked = [e["page"] for e in ev if e["event"] == "received" and e["text"] == "ack:" + sys.argv[2] and e["page"] in sent]
print(acked[0] if acked else "")' "$OSH_WORK/webapp.report" "$TOKEN")"
check "server sent the token and got it back from the same page ($page)" [ -n "$page" ]
check "the browser's page loaded the same page id" grep -qF "/ws?p=$page" "$OSH_WORK/dom.html"

say "screenshot"
check "screenshot written" [ -s "$SHOT" ]
check "screenshot is a ${WINDOW_W}x${WINDOW_H} PNG" /usr/bin/python3 -c '
import struct, sys
h = open(sys.argv[1], "rb").read(24)
ok = h[:8] == b"\x89PNG\r\n\x1a\n" and h[12:16] == b"IHDR" and struct.unpack("!II", h[16:24]) == (int(sys.argv[2]), int(sys.argv[3]))
sys.exit(0 if ok else 1)' "$SHOT" "$WINDOW_W" "$WINDOW_H"

say "Chromium's net log: where it resolved and connected"
V4="$(sandbox_v4)"
V6="$(sandbox_v6)"
/usr/bin/python3 - "$OSH_WORK/chrome/netlog.json" >"$OSH_WORK/netlog.summary" <<'PY'
# Prints "resolved HOST -> ADDRS", "connect TYPE ADDR" and "url URL" lines.
import json, sys
d = json.load(open(sys.argv[1]))
names = {v: k for k, v in d["constants"]["logEventTypes"].items()}
resolve_job = {}
for e in d["events"]:
    t, p = names.get(e["type"]), e.get("params", {})
    if t == "HOST_RESOLVER_MANAGER_JOB" and "host" in p:
        resolve_job[e["source"]["id"]] = p["host"]
    elif t == "HOST_RESOLVER_SYSTEM_TASK" and "address_list" in p:
        print("resolved", resolve_job.get(e["source"]["id"], "?"), "->", " ".join(p["address_list"]), "(system resolver)")
    elif t in ("TCP_CONNECT_ATTEMPT", "UDP_CONNECT") and "address" in p:
        print("connect", t, p["address"])
    elif t == "URL_REQUEST_START_JOB" and "url" in p:
        print("url", p["url"].split("?")[0])
PY
NL="$OSH_WORK/netlog.summary"
sort -u "$NL" | sed 's/^/  /'
tcp_elsewhere="$(grep '^connect TCP' "$NL" | grep -vxF -e "connect TCP_CONNECT_ATTEMPT $V4:$WEB_PORT" \
  -e "connect TCP_CONNECT_ATTEMPT [$V6]:$WEB_PORT" || true)"
udp_other="$(grep '^connect UDP' "$NL" | grep -vxF "connect UDP_CONNECT [2001:4860:4860::8888]:443" || true)"
check "demo.local resolved through the hosts file (system resolver) to $V4" \
  grep -qE "^resolved https?://demo\.local:$WEB_PORT -> (.* )?${V4//./\\.}:0( .*)? \(system resolver\)$" "$NL"
check "Chromium connected to the sandbox's tunnel address $V4:$WEB_PORT" \
  grep -qxF "connect TCP_CONNECT_ATTEMPT $V4:$WEB_PORT" "$NL"
check "and to nothing else over TCP${tcp_elsewhere:+: $tcp_elsewhere}" [ -z "$tcp_elsewhere" ]
check "no UDP socket but the IPv6 probe: no DNS query${udp_other:+: $udp_other}" [ -z "$udp_other" ]
say "requests Chromium made on its own, failed before DNS by --host-resolver-rules:"
{ grep '^url' "$NL" | grep -v '^url wss\?://demo\.local:\|^url https\?://demo\.local:' || echo "(none)"; } | sort -u | sed 's/^/  /'

stop_tunnel
check "tunnel opened at least 3 streams (page, WebSocket, /wait) (streams_opened=$(tunnel_counter streams_opened))" \
  [ "$(tunnel_counter streams_opened)" -ge 3 ]
say "PASS: a browser reaches a service in the sandbox"

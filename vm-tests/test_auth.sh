#!/usr/bin/env bash
# Gateway configuration and authentication end to end (issue 4.1, protocol
# §4.1-§4.3). Two mini-gateways in the gw namespace, each with its own
# mini-supervisor for the same sandbox (supervisors use the gateways'
# plaintext --supervisor-listen address):
#
#   gateway A  https://192.0.2.2:17670  TLS (server certificate from the test CA)
#   gateway B  https://192.0.2.2:17671  TLS + client certificates (mTLS) + bearer token
#
# Cases (every config tree is a temp dir passed with --config-dir; the system
# dir is an empty temp dir; the real user's and /etc config are never read):
#   A, --gateway-endpoint, CA found by the URL-host rule (gateways/192.0.2.2/mtls)
#                                   -> up, curl through the tunnel (sha256)
#   A, by DNS name gateway.osh.test -> up works (DNS SAN)
#   A, wrong CA                     -> "certificate verify failed (is the CA in ... right?)", exit 2
#   B, no client certificate        -> "... requires a client certificate ...", exit 2
#   B, wrong bearer token           -> "UNAUTHENTICATED: invalid token", exit 2
#   B, config files only: active_gateway + metadata.json (oidc) + mtls bundle
#      + oidc_token.json (expired: used anyway, with a warning)
#                                   -> up, curl and ssh through the tunnel
#   broken metadata.json / edge auth mode -> one line naming the file, exit 1
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

PORT_A=17670
PORT_B=17671
SUP_ADDR=198.51.100.1
PKI="$OSH_WORK/pki"
TOKEN="osh-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
mkdir -p "$PKI" "$OSH_WORK/system"
say "test PKI (openssl) in $PKI"
bash "$(dirname "$0")/../tests/relay/make_test_pki.sh" "$PKI"

osh_topology
osh_sandbox_services 1

say "gateway A: TLS on $OSH_GW_ADDR:$PORT_A; gateway B: mTLS + bearer on $OSH_GW_ADDR:$PORT_B"
osh_spawn "$NS_GW" gateway "$OSH_GATEWAY" --listen "$OSH_GW_ADDR:$PORT_A" \
  --supervisor-listen "$SUP_ADDR:$PORT_A" --sandbox "$OSH_SANDBOX_NAME=$OSH_SANDBOX_ID" \
  --tls-cert "$PKI/server.crt" --tls-key "$PKI/server.key"
osh_spawn "$NS_GW" gateway_b "$OSH_GATEWAY" --listen "$OSH_GW_ADDR:$PORT_B" \
  --supervisor-listen "$SUP_ADDR:$PORT_B" --sandbox "$OSH_SANDBOX_NAME=$OSH_SANDBOX_ID" \
  --tls-cert "$PKI/server.crt" --tls-key "$PKI/server.key" --client-ca "$PKI/ca.crt" \
  --bearer-token "$TOKEN"
wait_until 10 port_listens "$NS_GW" "$PORT_A"
wait_until 10 port_listens "$NS_GW" "$PORT_B"
for p in "$PORT_A" "$PORT_B"; do
  osh_spawn "$NS_SBX" "supervisor_$p" "$OSH_SUPERVISOR" --gateway-endpoint "http://$SUP_ADDR:$p" \
    --sandbox-id "$OSH_SANDBOX_ID" --ssh-target 127.0.0.1:22
  wait_until 15 grep -q "session accepted" "$OSH_WORK/supervisor_$p.log"
done
# The gateway's DNS name, for the DNS-SAN case (the client namespace's own hosts file).
printf '%s\tgateway.osh.test\n' "$OSH_GW_ADDR" >>"$OSH_HOSTS"

# The tunnel with a hermetic environment: no gateway variables from outside,
# an empty system config dir.
tunnel_cmd() {
  echo env -u OPENSHELL_GATEWAY_ENDPOINT -u OPENSHELL_GATEWAY -u OPENSHELL_GATEWAY_INSECURE \
    -u XDG_CONFIG_HOME "OPENSHELL_SYSTEM_GATEWAY_DIR=$OSH_WORK/system" "$OSH_TUNNEL" up \
    --hosts-file "$OSH_HOSTS" --no-ssh-config
}

# expect_fail NAME RC LINE ARGS...: `up` must exit RC and print LINE (exactly
# one "error:" line) on stderr. LINE starting with "~" is an extended regex.
expect_fail() {
  local name="$1" want_rc="$2" want_line="$3" rc=0 grep_mode=-qxF
  shift 3
  if [[ $want_line == "~"* ]]; then
    want_line="${want_line:1}"
    grep_mode=-qxE
  fi
  say "$name: expect exit $want_rc"
  timeout "$(osh_scaled 30)" ip netns exec "$NS_CLIENT" $(tunnel_cmd) --state-dir "$OSH_WORK/state-$name" "$@" \
    >"$OSH_WORK/$name.out" 2>"$OSH_WORK/$name.err" || rc=$?
  sed 's/^/    /' "$OSH_WORK/$name.err"
  check "$name: exit code $want_rc (got $rc)" [ "$rc" = "$want_rc" ]
  check "$name: the error line" grep "$grep_mode" -- "$want_line" "$OSH_WORK/$name.err"
  check "$name: exactly one error line" [ "$(grep -c '^error:' "$OSH_WORK/$name.err")" = 1 ]
}

# start_tunnel NAME ARGS...: `up` in the background until "Tunnel is up".
start_tunnel() {
  local name="$1"
  shift
  say "$name: up"
  rm -f "$OSH_WORK/tunnel.log"  # never match the previous run's "Tunnel is up"
  osh_spawn "$NS_CLIENT" tunnel $(tunnel_cmd) --state-dir "$OSH_WORK/state-$name" "$@"
  wait_until 20 grep -q "Tunnel is up" "$OSH_WORK/tunnel.log"
}

curl_blob_ok() {
  local sum
  sum="$(n_client curl -sS --max-time "$(osh_scaled 30)" "http://$OSH_SANDBOX_NAME.local:8080/blob" | sha256sum | cut -d' ' -f1)"
  [[ $sum == "$OSH_BLOB_SHA" ]]
}

# bundle DIR [ca] [client] [other-ca]: an mtls/ directory from the test PKI.
bundle() {
  local dir="$1"
  shift
  mkdir -p "$dir"
  for what in "$@"; do
    case "$what" in
      ca) cp "$PKI/ca.crt" "$dir/ca.crt" ;;
      other-ca) cp "$PKI/other-ca.crt" "$dir/ca.crt" ;;
      client) cp "$PKI/client.crt" "$dir/tls.crt" && install -m 600 "$PKI/client.key" "$dir/tls.key" ;;
    esac
  done
}

# ---- gateway A: TLS ----
CFG_A="$OSH_WORK/cfg-a"
bundle "$CFG_A/gateways/$OSH_GW_ADDR/mtls" ca
start_tunnel tls-ok --config-dir "$CFG_A" --gateway-endpoint "https://$OSH_GW_ADDR:$PORT_A"
check "summary names the CA file" grep -qF "TLS with CA $CFG_A/gateways/$OSH_GW_ADDR/mtls/ca.crt" "$OSH_WORK/tunnel.log"
check "TLS: curl through the tunnel (sha256)" curl_blob_ok
stop_tunnel

CFG_DNS="$OSH_WORK/cfg-dns"
bundle "$CFG_DNS/gateways/gateway.osh.test/mtls" ca
start_tunnel tls-dns --config-dir "$CFG_DNS" --gateway-endpoint "https://gateway.osh.test:$PORT_A"
check "TLS by DNS name: curl through the tunnel" curl_blob_ok
stop_tunnel

CFG_WRONG="$OSH_WORK/cfg-wrong-ca"
bundle "$CFG_WRONG/gateways/$OSH_GW_ADDR/mtls" other-ca
expect_fail wrong-ca 2 \
  "error: TLS handshake with https://$OSH_GW_ADDR:$PORT_A failed: certificate verify failed (is the CA in $CFG_WRONG/gateways/$OSH_GW_ADDR/mtls/ca.crt right?)" \
  --config-dir "$CFG_WRONG" --gateway-endpoint "https://$OSH_GW_ADDR:$PORT_A"

# ---- gateway B: mTLS + bearer ----
# gateway_b METADATA_EXTRA: a config tree with gateway "lab" -> gateway B.
lab_config() {  # DIR AUTH_MODE
  mkdir -p "$1/gateways/lab"
  printf '{"name":"lab","gateway_endpoint":"https://%s:%s","is_remote":true,"gateway_port":0,"auth_mode":"%s"}\n' \
    "$OSH_GW_ADDR" "$PORT_B" "$2" >"$1/gateways/lab/metadata.json"
}

CFG_NOCERT="$OSH_WORK/cfg-nocert"
lab_config "$CFG_NOCERT" mtls
bundle "$CFG_NOCERT/gateways/lab/mtls" ca
expect_fail no-client-cert 2 \
  "error: TLS handshake with https://$OSH_GW_ADDR:$PORT_B failed: the gateway closed the connection; it probably requires a client certificate and none is configured (mtls/tls.crt and mtls/tls.key in the gateway's config directory)" \
  --config-dir "$CFG_NOCERT" -g lab

CFG_BADTOKEN="$OSH_WORK/cfg-badtoken"
lab_config "$CFG_BADTOKEN" oidc
bundle "$CFG_BADTOKEN/gateways/lab/mtls" ca client
printf '{"access_token":"not-the-token","issuer":"https://idp.osh.test","client_id":"cli"}\n' \
  >"$CFG_BADTOKEN/gateways/lab/oidc_token.json"
chmod 600 "$CFG_BADTOKEN/gateways/lab/oidc_token.json"
# Health needs no token, so the first call refused is ListSandboxes.
expect_fail bad-bearer 2 \
  "~error: .*https://${OSH_GW_ADDR//./\\.}:$PORT_B.*invalid token.*" \
  --config-dir "$CFG_BADTOKEN" -g lab

CFG_B="$OSH_WORK/cfg-b"
lab_config "$CFG_B" oidc
bundle "$CFG_B/gateways/lab/mtls" ca client
printf '{"access_token":"%s","refresh_token":"r","expires_at":1000,"issuer":"https://idp.osh.test","client_id":"cli"}\n' \
  "$TOKEN" >"$CFG_B/gateways/lab/oidc_token.json"
chmod 600 "$CFG_B/gateways/lab/oidc_token.json"
echo lab >"$CFG_B/active_gateway"
start_tunnel config-files --config-dir "$CFG_B"
check "resolved from active_gateway with mTLS and the token" grep -qF \
  "gateway lab https://$OSH_GW_ADDR:$PORT_B (from $CFG_B/active_gateway): mTLS ($CFG_B/gateways/lab/mtls/tls.crt) with CA $CFG_B/gateways/lab/mtls/ca.crt, bearer token from $CFG_B/gateways/lab/oidc_token.json" \
  "$OSH_WORK/tunnel.log"
check "expired token: warned, used anyway" grep -qF "expired at 1970-01-01T00:16:40Z; using it anyway" "$OSH_WORK/tunnel.log"
check "mTLS + bearer: curl through the tunnel (sha256)" curl_blob_ok
out="$(osh_ssh "root@$OSH_SANDBOX_NAME.local" 'echo auth-ok')"
check "mTLS + bearer: ssh through the tunnel" [ "$out" = auth-ok ]
stop_tunnel
check "streams were opened on gateway B" grep -q "established" "$OSH_WORK/gateway_b.log"

# ---- configuration errors: exit 1, one line naming the file ----
CFG_BROKEN="$OSH_WORK/cfg-broken"
mkdir -p "$CFG_BROKEN/gateways/lab"
echo lab >"$CFG_BROKEN/active_gateway"
echo '{"name":"lab"}' >"$CFG_BROKEN/gateways/lab/metadata.json"
expect_fail broken-metadata 1 \
  "error: $CFG_BROKEN/gateways/lab/metadata.json: \"gateway_endpoint\" is missing" \
  --config-dir "$CFG_BROKEN"
lab_config "$CFG_BROKEN" cloudflare_jwt
expect_fail edge-auth 1 \
  "error: gateway 'lab' uses edge authentication (auth_mode \"cloudflare_jwt\" in $CFG_BROKEN/gateways/lab/metadata.json), which openshell-tunnel does not support" \
  --config-dir "$CFG_BROKEN"
expect_fail no-gateway 1 \
  "error: no gateway configured: pass --gateway-endpoint URL or -g NAME (or set OPENSHELL_GATEWAY_ENDPOINT / OPENSHELL_GATEWAY), or select one with \`openshell gateway select\` (no $OSH_WORK/cfg-empty/active_gateway or $OSH_WORK/system/active_gateway)" \
  --config-dir "$OSH_WORK/cfg-empty"

say "PASS: gateway configuration and authentication"

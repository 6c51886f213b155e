#!/usr/bin/env bash
# make_test_pki.sh DIR: a throwaway PKI for the TLS/mTLS tests (openssl CLI,
# EC P-256, valid 2 days), written into DIR (which must exist):
#   ca.crt ca.key                the test CA
#   server.crt server.key        gateway certificate from the CA; SANs:
#                                IP 127.0.0.1, IP ::1, IP 192.0.2.2 (the vm-tests'
#                                gateway), DNS gateway.osh.test, DNS localhost
#   client.crt client.key        client certificate from the CA (clientAuth)
#   other-ca.crt other-ca.key    an unrelated CA ("wrong CA")
#   other-client.crt other-client.key  client certificate from the other CA
# Used by tests/relay/gateway_auth_test.cc and vm-tests/test_auth.sh.
set -euo pipefail
dir="$1"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {  # NAME CN
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.crt" -days 2 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
leaf() {  # NAME CN CA EXTENSIONS
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2"
  printf '%s\n' "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -out "$1.crt" \
    -days 2 -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "openshell-tunnel test CA"
ca other-ca "openshell-tunnel other CA"
leaf server "gateway.osh.test" ca "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:::1,IP:192.0.2.2,DNS:gateway.osh.test,DNS:localhost"
leaf client "osh-test-user" ca "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
leaf other-client "osh-test-intruder" other-ca "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
rm -f ./*.srl

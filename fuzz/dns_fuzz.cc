// libFuzzer harness for DnsResponder::respond() (names/dns_responder.h).
//
// Each input is one UDP query datagram. Besides "no crash, no sanitizer
// report", it checks the properties every reply must have: sent only for a
// datagram that passes the header pre-check (DnsResponder::header_acceptable:
// full header, at most 512 bytes, QR clear, QDCOUNT 1, ANCOUNT and NSCOUNT 0,
// ARCOUNT at most 1), at most 1232 bytes, parseable by ldns, QR set, the
// query's ID. A violation aborts, so libFuzzer keeps the input.
//
// Build and run: see fuzz/README.md.
#include <cstdio>
#include <cstdlib>

#include "names/dns_responder.h"
#include "names/ldns_cxx.h"

namespace {

const osh::names::DnsResponder& responder() {
  static const osh::names::DnsResponder* r = [] {
    auto* d = new osh::names::DnsResponder("local", 5);
    d->set_names({
        {"demo", {{"198.18.0.2"}, {"fd00:6f73:6800::2"}}},
        {"multi", {{"198.18.0.3", "198.18.0.4"}, {}}},
    });
    return d;
  }();
  return *r;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "dns_fuzz: property violated: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> out = responder().respond({data, size});
  const bool must_drop = size < LDNS_HEADER_SIZE || size > 512 || LDNS_QR_WIRE(data) ||
                         LDNS_QDCOUNT(data) != 1 || LDNS_ANCOUNT(data) != 0 || LDNS_NSCOUNT(data) != 0 ||
                         LDNS_ARCOUNT(data) > 1;
  if (must_drop) {
    if (!out.empty()) fail("answered a datagram that fails the header pre-check");
    return 0;
  }
  if (out.empty()) fail("no reply to a datagram that passes the header pre-check");
  if (out.size() > osh::names::DnsResponder::kEdnsPayload) fail("reply larger than 1232 bytes");
  ldns_pkt* p = nullptr;
  if (ldns_wire2pkt(&p, out.data(), out.size()) != LDNS_STATUS_OK) fail("reply does not parse");
  const bool ok = ldns_pkt_qr(p) && ldns_pkt_id(p) == LDNS_ID_WIRE(data);
  ldns_pkt_free(p);
  if (!ok) fail("reply without QR or with another ID");
  return 0;
}

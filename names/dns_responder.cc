// Theory of operation.
//
// respond() is a pure function of (query bytes, current name table): no
// state survives a call, so it is safe on any thread and a bad datagram can
// only ever cost one response. The steps:
//
//   1. Header gate (header_acceptable()), on the raw bytes with ldns's
//      header macros (the only bytes read before ldns parses the message):
//      fewer than 12 or more than 512 bytes, QR set (never answer a
//      response: that is how reflection loops start), QDCOUNT != 1, ANCOUNT
//      or NSCOUNT != 0, ARCOUNT > 1 -> drop. This bounds what ldns is ever
//      given: a single crafted datagram of ~10,000 chained compression-
//      pointer questions used to cost 61-93 ms of parsing (issue 14.3); at
//      512 bytes and one question it is a few microseconds.
//   2. ldns_wire2pkt parses the whole message (names with compression
//      pointers, loop and bounds checks are ldns's). An opcode other than
//      QUERY gets NOTIMP whether or not the rest parses; a parse failure gets
//      a header-only FORMERR.
//   3. EDNS0 (RFC 6891): ldns folds the OPT record into packet fields and
//      lowers ARCOUNT by the number of OPT records it consumed, so the header
//      ARCOUNT minus the parsed one (minus a TSIG, which ldns also takes out)
//      is the OPT count (0 or 1 after the gate); version > 0 -> BADVERS.
//   4. Exactly one question of class IN, then the name rules of the class
//      comment in the header. Matching uses ldns's case-insensitive name
//      comparison and the first label's octets, lower-cased.
//   5. The response is built as an ldns_pkt (question cloned from the query,
//      so 0x20 case is echoed) and written with ldns_pkt2wire. If it exceeds
//      the size limit it is rebuilt without answer and authority records and
//      with TC set.
//
// Allocation failure inside ldns (a NULL return) is turned into std::bad_alloc
// here and caught at the top of respond(), which then sends nothing.
//
// The name table is an immutable snapshot (shared_ptr<const Table>); the
// mutex is held only to copy or swap the pointer.
#include "names/dns_responder.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <new>
#include <stdexcept>

#include "common/ip_address.h"
#include "names/ldns_cxx.h"

namespace osh::names {

namespace {

struct PktFree {
  void operator()(ldns_pkt* p) const noexcept { ldns_pkt_free(p); }
};
struct RrFree {
  void operator()(ldns_rr* r) const noexcept { ldns_rr_free(r); }
};
struct RdfFree {
  void operator()(ldns_rdf* r) const noexcept { ldns_rdf_deep_free(r); }
};
struct MallocFree {
  void operator()(uint8_t* p) const noexcept { std::free(p); }
};
using PktPtr = std::unique_ptr<ldns_pkt, PktFree>;
using RrPtr = std::unique_ptr<ldns_rr, RrFree>;
using RdfPtr = std::unique_ptr<ldns_rdf, RdfFree>;

// ldns reports allocation failure as NULL.
template <typename T>
T* check_alloc(T* p) {
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

// SOA timers, seconds (RFC 1035 §3.3.13). Nobody transfers this zone, so
// only MINIMUM (the negative-caching TTL, RFC 2308 §4) matters; it is the
// record TTL.
constexpr uint32_t kSoaRefresh_s = 3600;
constexpr uint32_t kSoaRetry_s = 600;
constexpr uint32_t kSoaExpire_s = 86400;

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), ascii_lower);
  return s;
}

// Header fields every response copies from the query (RFC 1035 §4.1.1;
// CD: RFC 4035 §3.1.6).
struct HeaderEcho {
  uint16_t id = 0;
  uint8_t opcode = 0;
  bool rd = false;
  bool cd = false;
};

// What the response will contain; records are owned here and cloned into
// the packet, so the plan can be written twice (full, then truncated).
struct Plan {
  HeaderEcho hdr;
  uint8_t rcode = LDNS_RCODE_NOERROR;  // low 4 bits
  uint8_t ext_rcode = 0;               // EDNS extended rcode (upper 8 bits)
  bool aa = false;
  const ldns_rr* question = nullptr;  // borrowed from the parsed query
  std::vector<RrPtr> answer;
  std::vector<RrPtr> authority;
  bool edns = false;      // the query had an OPT record
  bool edns_do = false;   // its DO bit (RFC 3225: copied)
  uint16_t limit = DnsResponder::kClassicPayload;  // response size limit, bytes
};

void push_clone(ldns_pkt* pkt, ldns_pkt_section section, const ldns_rr* rr) {
  ldns_rr* copy = check_alloc(ldns_rr_clone(rr));
  if (!ldns_pkt_push_rr(pkt, section, copy)) {
    ldns_rr_free(copy);
    throw std::bad_alloc();
  }
}

// Writes the plan; with_records=false leaves out answer and authority and
// sets TC. Returns an empty vector if ldns cannot write the packet.
std::vector<uint8_t> to_wire(const Plan& p, bool with_records) {
  PktPtr pkt(check_alloc(ldns_pkt_new()));
  ldns_pkt_set_id(pkt.get(), p.hdr.id);
  ldns_pkt_set_qr(pkt.get(), true);
  // Opcodes are 4 bits on the wire; ldns stores and writes the value as is.
  ldns_pkt_set_opcode(pkt.get(), static_cast<ldns_pkt_opcode>(p.hdr.opcode & 0x0f));
  ldns_pkt_set_aa(pkt.get(), p.aa);
  ldns_pkt_set_tc(pkt.get(), !with_records);
  ldns_pkt_set_rd(pkt.get(), p.hdr.rd);
  ldns_pkt_set_ra(pkt.get(), false);
  ldns_pkt_set_ad(pkt.get(), false);
  ldns_pkt_set_cd(pkt.get(), p.hdr.cd);
  ldns_pkt_set_rcode(pkt.get(), p.rcode);
  if (p.question != nullptr) push_clone(pkt.get(), LDNS_SECTION_QUESTION, p.question);
  if (with_records) {
    for (const RrPtr& rr : p.answer) push_clone(pkt.get(), LDNS_SECTION_ANSWER, rr.get());
    for (const RrPtr& rr : p.authority) push_clone(pkt.get(), LDNS_SECTION_AUTHORITY, rr.get());
  }
  if (p.edns) {
    ldns_pkt_set_edns_udp_size(pkt.get(), DnsResponder::kEdnsPayload);
    ldns_pkt_set_edns_extended_rcode(pkt.get(), p.ext_rcode);
    ldns_pkt_set_edns_version(pkt.get(), 0);
    ldns_pkt_set_edns_do(pkt.get(), p.edns_do);
  }
  uint8_t* raw = nullptr;
  size_t size = 0;
  const ldns_status st = ldns_pkt2wire(&raw, pkt.get(), &size);
  std::unique_ptr<uint8_t, MallocFree> owned(raw);
  if (st != LDNS_STATUS_OK || raw == nullptr) return {};
  return std::vector<uint8_t>(raw, raw + size);
}

std::vector<uint8_t> finish(const Plan& p) {
  std::vector<uint8_t> full = to_wire(p, true);
  if (full.size() <= p.limit) return full;
  return to_wire(p, false);
}

RrPtr new_rr(ldns_rr_type type, const ldns_rdf* owner, uint32_t ttl_s) {
  RrPtr rr(check_alloc(ldns_rr_new()));
  ldns_rr_set_type(rr.get(), type);
  ldns_rr_set_class(rr.get(), LDNS_RR_CLASS_IN);
  ldns_rr_set_ttl(rr.get(), ttl_s);
  ldns_rr_set_owner(rr.get(), check_alloc(ldns_rdf_clone(owner)));
  return rr;
}

void push_rdf(ldns_rr* rr, ldns_rdf* rdf) {
  check_alloc(rdf);
  if (!ldns_rr_push_rdf(rr, rdf)) {
    ldns_rdf_deep_free(rdf);
    throw std::bad_alloc();
  }
}

}  // namespace

struct DnsResponder::Table {
  struct Entry {
    std::vector<std::array<uint8_t, 4>> v4;
    std::vector<std::array<uint8_t, 16>> v6;
  };
  std::map<std::string, Entry, std::less<>> names;
  uint32_t serial = 1;  // SOA SERIAL
};

struct DnsResponder::Dname {
  RdfPtr rdf;          // "<domain>." as an ldns dname
  RdfPtr hostmaster;   // "hostmaster.<domain>." (SOA RNAME)
  size_t labels = 0;   // label count of rdf, root excluded
};

DnsResponder::DnsResponder(std::string domain, uint32_t ttl_s)
    : domain_(lower(std::move(domain))), ttl_s_(ttl_s), table_(std::make_shared<Table>()) {
  while (!domain_.empty() && domain_.back() == '.') domain_.pop_back();
  if (domain_.empty()) throw std::invalid_argument("DNS domain must not be empty or the root");
  auto d = std::make_unique<Dname>();
  d->rdf.reset(ldns_dname_new_frm_str(domain_.c_str()));
  d->hostmaster.reset(ldns_dname_new_frm_str(("hostmaster." + domain_).c_str()));
  if (!d->rdf || !d->hostmaster || domain_.find("..") != std::string::npos)
    throw std::invalid_argument("DNS domain \"" + domain_ + "\" is not a valid domain name");
  d->labels = ldns_dname_label_count(d->rdf.get());
  dname_ = std::move(d);
}

DnsResponder::~DnsResponder() = default;

void DnsResponder::set_names(NameTable names) {
  auto t = std::make_shared<Table>();
  for (auto& [label, addrs] : names) {
    Table::Entry e;
    for (const std::string& a : addrs.first) {
      const auto ip = IpAddress::parse(a);
      if (!ip || !ip->is_v4())
        throw std::invalid_argument("DNS name \"" + label + "\": \"" + a + "\" is not an IPv4 address");
      std::array<uint8_t, 4> b{};
      std::copy_n(ip->bytes.begin(), 4, b.begin());
      e.v4.push_back(b);
    }
    for (const std::string& a : addrs.second) {
      const auto ip = IpAddress::parse(a);
      if (!ip || !ip->is_v6())
        throw std::invalid_argument("DNS name \"" + label + "\": \"" + a + "\" is not an IPv6 address");
      e.v6.push_back(ip->bytes);
    }
    t->names[lower(label)] = std::move(e);
  }
  std::lock_guard lock(mu_);
  t->serial = table_->serial + 1;
  table_ = std::move(t);
}

bool DnsResponder::header_acceptable(std::span<const uint8_t> query) noexcept {
  if (query.size() < LDNS_HEADER_SIZE || query.size() > kMaxQueryBytes) return false;
  const uint8_t* wire = query.data();
  return !LDNS_QR_WIRE(wire) && LDNS_QDCOUNT(wire) == 1 && LDNS_ANCOUNT(wire) == 0 &&
         LDNS_NSCOUNT(wire) == 0 && LDNS_ARCOUNT(wire) <= 1;
}

std::vector<uint8_t> DnsResponder::respond(std::span<const uint8_t> query) const noexcept try {
  // 1. Header gate.
  if (!header_acceptable(query)) return {};
  const uint8_t* wire = query.data();

  Plan plan;
  plan.hdr.id = LDNS_ID_WIRE(wire);
  plan.hdr.opcode = LDNS_OPCODE_WIRE(wire);
  plan.hdr.rd = LDNS_RD_WIRE(wire) != 0;
  plan.hdr.cd = LDNS_CD_WIRE(wire) != 0;

  // 2. Parse.
  ldns_pkt* parsed = nullptr;
  const ldns_status st = ldns_wire2pkt(&parsed, wire, query.size());
  PktPtr q(st == LDNS_STATUS_OK ? parsed : nullptr);  // on error ldns frees and sets nothing
  if (!q) {
    plan.rcode = plan.hdr.opcode == LDNS_PACKET_QUERY ? LDNS_RCODE_FORMERR : LDNS_RCODE_NOTIMPL;
    return finish(plan);
  }

  // 3. EDNS0.
  const unsigned wire_arcount = LDNS_ARCOUNT(wire);
  const unsigned consumed = ldns_pkt_tsig(q.get()) != nullptr ? 1 : 0;
  const unsigned opt_count =
      wire_arcount >= ldns_pkt_arcount(q.get()) + consumed
          ? wire_arcount - ldns_pkt_arcount(q.get()) - consumed
          : 0;
  plan.edns = opt_count > 0;
  if (plan.edns) {
    plan.edns_do = ldns_pkt_edns_do(q.get());
    plan.limit = std::clamp<uint16_t>(ldns_pkt_edns_udp_size(q.get()), kClassicPayload, kEdnsPayload);
  }
  if (ldns_pkt_qdcount(q.get()) == 1 &&
      ldns_rr_list_rr_count(ldns_pkt_question(q.get())) == 1)
    plan.question = ldns_rr_list_rr(ldns_pkt_question(q.get()), 0);

  if (plan.hdr.opcode != LDNS_PACKET_QUERY) {
    plan.rcode = LDNS_RCODE_NOTIMPL;
    return finish(plan);
  }
  if (plan.edns && ldns_pkt_edns_version(q.get()) > 0) {
    plan.rcode = 0;  // BADVERS = 16: extended rcode 1, header rcode 0
    plan.ext_rcode = 1;
    return finish(plan);
  }

  // 4. The question.
  if (plan.question == nullptr) {
    plan.rcode = LDNS_RCODE_FORMERR;
    return finish(plan);
  }
  const ldns_rdf* qname = ldns_rr_owner(plan.question);
  const ldns_rr_type qtype = ldns_rr_get_type(plan.question);
  const ldns_rdf* apex = dname_->rdf.get();
  const bool at_apex = ldns_dname_compare(qname, apex) == 0;
  if (ldns_rr_get_class(plan.question) != LDNS_RR_CLASS_IN ||
      (!at_apex && !ldns_dname_is_subdomain(qname, apex)) || qtype == LDNS_RR_TYPE_AXFR ||
      qtype == LDNS_RR_TYPE_IXFR) {
    plan.rcode = LDNS_RCODE_REFUSED;
    return finish(plan);
  }

  // In our domain: authoritative from here on.
  plan.aa = true;
  std::shared_ptr<const Table> table;
  {
    std::lock_guard lock(mu_);
    table = table_;
  }
  auto soa = [&] {
    RrPtr rr = new_rr(LDNS_RR_TYPE_SOA, apex, ttl_s_);
    push_rdf(rr.get(), ldns_rdf_clone(apex));                    // MNAME
    push_rdf(rr.get(), ldns_rdf_clone(dname_->hostmaster.get()));  // RNAME
    push_rdf(rr.get(), ldns_native2rdf_int32(LDNS_RDF_TYPE_INT32, table->serial));
    push_rdf(rr.get(), ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, kSoaRefresh_s));
    push_rdf(rr.get(), ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, kSoaRetry_s));
    push_rdf(rr.get(), ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, kSoaExpire_s));
    push_rdf(rr.get(), ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, ttl_s_));  // MINIMUM
    return rr;
  };

  // Negative answers (NXDOMAIN, NODATA) carry no SOA (issue 14.8): with it
  // an NXDOMAIN was about 3x its query (25 -> 72 bytes), an amplifier for
  // anyone who can send the TUN datagrams with a forged source. RFC 2308 §3
  // wants the SOA for negative caching; without it resolvers do not cache
  // the answer (or only briefly), which costs a query to this responder, not
  // a wrong answer. The SOA is sent only to whoever asks for it.
  if (at_apex) {
    if (qtype == LDNS_RR_TYPE_SOA) plan.answer.push_back(soa());
    return finish(plan);
  }

  // <label>.<domain>? The first label of a dname is its first length octet
  // and that many octets (ldns keeps names uncompressed).
  const Table::Entry* entry = nullptr;
  if (ldns_dname_label_count(qname) == dname_->labels + 1) {
    const uint8_t* data = ldns_rdf_data(qname);
    const size_t size = ldns_rdf_size(qname);
    if (size >= 1 && data[0] + 1u <= size) {
      std::string label(reinterpret_cast<const char*>(data + 1), data[0]);
      auto it = table->names.find(lower(std::move(label)));
      if (it != table->names.end()) entry = &it->second;
    }
  }
  if (entry == nullptr) {
    plan.rcode = LDNS_RCODE_NXDOMAIN;
    return finish(plan);
  }
  if (qtype == LDNS_RR_TYPE_A) {
    for (const auto& a : entry->v4) {
      RrPtr rr = new_rr(LDNS_RR_TYPE_A, qname, ttl_s_);
      push_rdf(rr.get(), ldns_rdf_new_frm_data(LDNS_RDF_TYPE_A, a.size(), a.data()));
      plan.answer.push_back(std::move(rr));
    }
  } else if (qtype == LDNS_RR_TYPE_AAAA) {
    for (const auto& a : entry->v6) {
      RrPtr rr = new_rr(LDNS_RR_TYPE_AAAA, qname, ttl_s_);
      push_rdf(rr.get(), ldns_rdf_new_frm_data(LDNS_RDF_TYPE_AAAA, a.size(), a.data()));
      plan.answer.push_back(std::move(rr));
    }
  }
  return finish(plan);  // no answer: NODATA (RFC 2308 §2.2), without the SOA (above)
} catch (...) {
  return {};
}

}  // namespace osh::names

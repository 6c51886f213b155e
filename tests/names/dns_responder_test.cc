// DnsResponder: queries are built with ldns, fed to respond(), and the
// replies parsed with ldns again; every rule of the class comment has a test,
// and malformed input (prefixes, bit flips, random bytes, the fuzz corpus)
// must never crash and must only ever produce well-formed replies.
#include "names/dns_responder.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "names/ldns_cxx.h"

namespace osh::names {
namespace {

struct PktFree {
  void operator()(ldns_pkt* p) const { ldns_pkt_free(p); }
};
using PktPtr = std::unique_ptr<ldns_pkt, PktFree>;
struct RrFree {
  void operator()(ldns_rr* r) const { ldns_rr_free(r); }
};
using RrHolder = std::unique_ptr<ldns_rr, RrFree>;

using Bytes = std::vector<uint8_t>;

constexpr uint16_t kId = 0xbeef;

struct Q {
  std::string name = "demo.local.";
  ldns_rr_type type = LDNS_RR_TYPE_A;
  ldns_rr_class cls = LDNS_RR_CLASS_IN;
  uint16_t id = kId;
  bool rd = true;
  bool cd = false;
  uint8_t opcode = LDNS_PACKET_QUERY;
  std::optional<uint16_t> edns_udp;  // set: add an OPT record
  uint8_t edns_version = 0;
  bool edns_do = false;
};

PktPtr make_pkt(const Q& q) {
  ldns_pkt* p = nullptr;
  EXPECT_EQ(ldns_pkt_query_new_frm_str(&p, q.name.c_str(), q.type, q.cls, q.rd ? LDNS_RD : 0),
            LDNS_STATUS_OK);
  PktPtr pkt(p);
  ldns_pkt_set_id(p, q.id);
  ldns_pkt_set_cd(p, q.cd);
  ldns_pkt_set_opcode(p, static_cast<ldns_pkt_opcode>(q.opcode));
  if (q.edns_udp) {
    ldns_pkt_set_edns_udp_size(p, *q.edns_udp);
    ldns_pkt_set_edns_version(p, q.edns_version);
    ldns_pkt_set_edns_do(p, q.edns_do);
  }
  return pkt;
}

Bytes to_wire(const ldns_pkt* p) {
  uint8_t* w = nullptr;
  size_t n = 0;
  EXPECT_EQ(ldns_pkt2wire(&w, p, &n), LDNS_STATUS_OK);
  Bytes out(w, w + n);
  std::free(w);
  return out;
}

Bytes query(const Q& q) { return to_wire(make_pkt(q).get()); }

PktPtr parse(const Bytes& wire) {
  ldns_pkt* p = nullptr;
  const ldns_status st = ldns_wire2pkt(&p, wire.data(), wire.size());
  EXPECT_EQ(st, LDNS_STATUS_OK) << ldns_get_errorstr_by_id(st);
  return PktPtr(st == LDNS_STATUS_OK ? p : nullptr);
}

std::string rr_str(const ldns_rr* rr) {
  char* s = ldns_rr2str(rr);
  std::string out = s != nullptr ? s : "";
  std::free(s);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::vector<std::string> section(const ldns_pkt* p, ldns_pkt_section s) {
  ldns_rr_list* l = nullptr;
  switch (s) {
    case LDNS_SECTION_QUESTION: l = ldns_pkt_question(p); break;
    case LDNS_SECTION_ANSWER: l = ldns_pkt_answer(p); break;
    case LDNS_SECTION_AUTHORITY: l = ldns_pkt_authority(p); break;
    default: l = ldns_pkt_additional(p); break;
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < ldns_rr_list_rr_count(l); ++i) out.push_back(rr_str(ldns_rr_list_rr(l, i)));
  return out;
}

class DnsResponderTest : public ::testing::Test {
 protected:
  DnsResponderTest() : r_("local", 5) {
    r_.set_names({
        {"demo", {{"198.18.0.2"}, {"fd00:6f73:6800::2"}}},
        {"multi", {{"198.18.0.3", "198.18.0.4"}, {}}},
        {"v6only", {{}, {"fd00:6f73:6800::5", "fd00:6f73:6800::6"}}},
    });
  }

  // Sends q, expects a reply that ldns parses, with the fixed header rules.
  PktPtr ask(const Q& q) {
    const Bytes reply = r_.respond(query(q));
    EXPECT_FALSE(reply.empty());
    if (reply.empty()) return nullptr;
    EXPECT_LE(reply.size(), q.edns_udp ? DnsResponder::kEdnsPayload : DnsResponder::kClassicPayload);
    PktPtr p = parse(reply);
    if (!p) return nullptr;
    EXPECT_EQ(ldns_pkt_id(p.get()), q.id);
    EXPECT_TRUE(ldns_pkt_qr(p.get()));
    EXPECT_FALSE(ldns_pkt_ra(p.get()));
    EXPECT_EQ(ldns_pkt_rd(p.get()), q.rd);
    EXPECT_EQ(ldns_pkt_cd(p.get()), q.cd);
    EXPECT_EQ(static_cast<int>(ldns_pkt_get_opcode(p.get())), q.opcode);
    EXPECT_EQ(ldns_pkt_edns(p.get()), q.edns_udp.has_value());
    return p;
  }

  static std::string soa(uint32_t serial) {
    return "local.\t5\tIN\tSOA\tlocal. hostmaster.local. " + std::to_string(serial) +
           " 3600 600 86400 5";
  }

  DnsResponder r_;
};

TEST_F(DnsResponderTest, AnswersAForKnownName) {
  PktPtr p = ask({});
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
  EXPECT_TRUE(ldns_pkt_aa(p.get()));
  EXPECT_FALSE(ldns_pkt_tc(p.get()));
  EXPECT_EQ(section(p.get(), LDNS_SECTION_QUESTION), std::vector<std::string>{"demo.local.\tIN\tA"});
  EXPECT_EQ(section(p.get(), LDNS_SECTION_ANSWER),
            std::vector<std::string>{"demo.local.\t5\tIN\tA\t198.18.0.2"});
  EXPECT_TRUE(section(p.get(), LDNS_SECTION_AUTHORITY).empty());
  EXPECT_TRUE(section(p.get(), LDNS_SECTION_ADDITIONAL).empty());
}

TEST_F(DnsResponderTest, AnswersAAAAForKnownName) {
  PktPtr p = ask({.type = LDNS_RR_TYPE_AAAA});
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
  EXPECT_TRUE(ldns_pkt_aa(p.get()));
  EXPECT_EQ(section(p.get(), LDNS_SECTION_ANSWER),
            std::vector<std::string>{"demo.local.\t5\tIN\tAAAA\tfd00:6f73:6800::2"});
}

TEST_F(DnsResponderTest, AllAddressesInTableOrder) {
  PktPtr p = ask({.name = "multi.local."});
  ASSERT_TRUE(p);
  EXPECT_EQ(section(p.get(), LDNS_SECTION_ANSWER),
            (std::vector<std::string>{"multi.local.\t5\tIN\tA\t198.18.0.3",
                                      "multi.local.\t5\tIN\tA\t198.18.0.4"}));
  p = ask({.name = "v6only.local.", .type = LDNS_RR_TYPE_AAAA});
  ASSERT_TRUE(p);
  EXPECT_EQ(section(p.get(), LDNS_SECTION_ANSWER),
            (std::vector<std::string>{"v6only.local.\t5\tIN\tAAAA\tfd00:6f73:6800::5",
                                      "v6only.local.\t5\tIN\tAAAA\tfd00:6f73:6800::6"}));
}

TEST_F(DnsResponderTest, CaseInsensitiveMatchEchoesQuestionCase) {
  PktPtr p = ask({.name = "DeMo.LoCaL."});
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
  EXPECT_EQ(section(p.get(), LDNS_SECTION_QUESTION), std::vector<std::string>{"DeMo.LoCaL.\tIN\tA"});
  EXPECT_EQ(section(p.get(), LDNS_SECTION_ANSWER),
            std::vector<std::string>{"DeMo.LoCaL.\t5\tIN\tA\t198.18.0.2"});
  // The question bytes are echoed exactly (0x20 case, RFC draft-vixie-dnsext-dns0x20).
  const Bytes q = query({.name = "DeMo.LoCaL."});
  const Bytes reply = r_.respond(q);
  ASSERT_GE(reply.size(), q.size());
  EXPECT_TRUE(std::equal(q.begin() + LDNS_HEADER_SIZE, q.end(), reply.begin() + LDNS_HEADER_SIZE));
}

TEST_F(DnsResponderTest, TableKeysAreCaseInsensitive) {
  r_.set_names({{"MixedCase", {{"198.18.0.9"}, {}}}});
  PktPtr p = ask({.name = "mixedcase.local."});
  ASSERT_TRUE(p);
  EXPECT_EQ(section(p.get(), LDNS_SECTION_ANSWER),
            std::vector<std::string>{"mixedcase.local.\t5\tIN\tA\t198.18.0.9"});
}

TEST_F(DnsResponderTest, OtherTypesOfKnownNameAreNodataWithoutSoa) {
  for (ldns_rr_type t : {LDNS_RR_TYPE_MX, LDNS_RR_TYPE_TXT, LDNS_RR_TYPE_ANY, LDNS_RR_TYPE_SOA,
                         LDNS_RR_TYPE_NS, LDNS_RR_TYPE_PTR, LDNS_RR_TYPE_HTTPS}) {
    SCOPED_TRACE(t);
    PktPtr p = ask({.type = t});
    ASSERT_TRUE(p);
    EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
    EXPECT_TRUE(ldns_pkt_aa(p.get()));
    EXPECT_TRUE(section(p.get(), LDNS_SECTION_ANSWER).empty());
    EXPECT_TRUE(section(p.get(), LDNS_SECTION_AUTHORITY).empty());  // no SOA (issue 14.8)
  }
}

TEST_F(DnsResponderTest, KnownNameWithoutFamilyIsNodata) {
  PktPtr p = ask({.name = "multi.local.", .type = LDNS_RR_TYPE_AAAA});
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
  EXPECT_TRUE(section(p.get(), LDNS_SECTION_ANSWER).empty());
  EXPECT_TRUE(section(p.get(), LDNS_SECTION_AUTHORITY).empty());
  p = ask({.name = "v6only.local.", .type = LDNS_RR_TYPE_A});
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
  EXPECT_TRUE(section(p.get(), LDNS_SECTION_ANSWER).empty());
}

TEST_F(DnsResponderTest, ApexIsNodataExceptSoa) {
  for (ldns_rr_type t : {LDNS_RR_TYPE_A, LDNS_RR_TYPE_AAAA, LDNS_RR_TYPE_NS, LDNS_RR_TYPE_ANY}) {
    SCOPED_TRACE(t);
    PktPtr p = ask({.name = "LOCAL.", .type = t});
    ASSERT_TRUE(p);
    EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
    EXPECT_TRUE(ldns_pkt_aa(p.get()));
    EXPECT_TRUE(section(p.get(), LDNS_SECTION_ANSWER).empty());
    EXPECT_TRUE(section(p.get(), LDNS_SECTION_AUTHORITY).empty());  // no SOA in negative answers
  }
  PktPtr p = ask({.name = "local.", .type = LDNS_RR_TYPE_SOA});
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
  EXPECT_EQ(section(p.get(), LDNS_SECTION_ANSWER), std::vector<std::string>{soa(2)});
  EXPECT_TRUE(section(p.get(), LDNS_SECTION_AUTHORITY).empty());
}

TEST_F(DnsResponderTest, UnknownNamesInDomainAreNxdomain) {
  for (const char* name : {"nosuch.local.", "x.demo.local.", "a.b.c.local.", "DEMO2.local."}) {
    for (ldns_rr_type t : {LDNS_RR_TYPE_A, LDNS_RR_TYPE_AAAA, LDNS_RR_TYPE_MX}) {
      SCOPED_TRACE(std::string(name) + " " + std::to_string(t));
      PktPtr p = ask({.name = name, .type = t});
      ASSERT_TRUE(p);
      EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NXDOMAIN);
      EXPECT_TRUE(ldns_pkt_aa(p.get()));
      EXPECT_TRUE(section(p.get(), LDNS_SECTION_ANSWER).empty());
      EXPECT_TRUE(section(p.get(), LDNS_SECTION_AUTHORITY).empty());  // no SOA (issue 14.8)
    }
  }
}

TEST_F(DnsResponderTest, NamesOutsideDomainAreRefused) {
  for (const char* name : {"example.com.", "demo.", "demolocal.", "demo.xlocal.", "demo.local.com.", "."}) {
    SCOPED_TRACE(name);
    PktPtr p = ask({.name = name});
    ASSERT_TRUE(p);
    EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_REFUSED);
    EXPECT_FALSE(ldns_pkt_aa(p.get()));
    EXPECT_EQ(ldns_pkt_qdcount(p.get()), 1);
    EXPECT_EQ(ldns_pkt_ancount(p.get()), 0);
    EXPECT_EQ(ldns_pkt_nscount(p.get()), 0);
  }
}

TEST_F(DnsResponderTest, NonInClassAndZoneTransfersAreRefused) {
  for (ldns_rr_class c : {LDNS_RR_CLASS_CH, LDNS_RR_CLASS_HS, LDNS_RR_CLASS_ANY}) {
    PktPtr p = ask({.cls = c});
    ASSERT_TRUE(p);
    EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_REFUSED);
    EXPECT_FALSE(ldns_pkt_aa(p.get()));
  }
  for (ldns_rr_type t : {LDNS_RR_TYPE_AXFR, LDNS_RR_TYPE_IXFR}) {
    PktPtr p = ask({.name = "local.", .type = t});
    ASSERT_TRUE(p);
    EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_REFUSED);
  }
}

TEST_F(DnsResponderTest, CopiesIdRdCd) {
  for (bool rd : {false, true}) {
    for (bool cd : {false, true}) {
      for (uint16_t id : {0, 1, 0x8000, 0xffff}) {
        PktPtr p = ask({.id = id, .rd = rd, .cd = cd});  // ask() checks the echo
        ASSERT_TRUE(p);
        EXPECT_EQ(ldns_pkt_ancount(p.get()), 1);
      }
    }
  }
}

TEST_F(DnsResponderTest, ResponsesAreDropped) {
  PktPtr q = make_pkt({});
  ldns_pkt_set_qr(q.get(), true);
  EXPECT_TRUE(r_.respond(to_wire(q.get())).empty());
  // Our own reply fed back in is dropped too (no reflection loop).
  const Bytes reply = r_.respond(query({}));
  ASSERT_FALSE(reply.empty());
  EXPECT_TRUE(r_.respond(reply).empty());
}

TEST_F(DnsResponderTest, OtherOpcodesAreNotimp) {
  for (uint8_t op : {LDNS_PACKET_IQUERY, LDNS_PACKET_STATUS, LDNS_PACKET_NOTIFY, LDNS_PACKET_UPDATE}) {
    SCOPED_TRACE(static_cast<int>(op));
    PktPtr p = ask({.opcode = op});
    ASSERT_TRUE(p);
    EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOTIMPL);
    EXPECT_FALSE(ldns_pkt_aa(p.get()));
    EXPECT_EQ(ldns_pkt_ancount(p.get()), 0);
  }
  // Opcode 15 with a body that does not parse: still NOTIMP, header only.
  Bytes raw = {0x12, 0x34, 0x78, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  const Bytes reply = r_.respond(raw);
  ASSERT_EQ(reply.size(), static_cast<size_t>(LDNS_HEADER_SIZE));
  EXPECT_EQ(LDNS_ID_WIRE(reply.data()), 0x1234);
  EXPECT_EQ(LDNS_OPCODE_WIRE(reply.data()), 15);
  EXPECT_TRUE(LDNS_QR_WIRE(reply.data()));
  EXPECT_EQ(LDNS_RCODE_WIRE(reply.data()), LDNS_RCODE_NOTIMPL);
  EXPECT_EQ(LDNS_QDCOUNT(reply.data()), 0);
}

// The header pre-check (issue 14.3): each rule drops the datagram with no
// answer, judged from the 12-byte header alone.
TEST_F(DnsResponderTest, TwoOrZeroQuestionsAreDropped) {
  PktPtr q = make_pkt({});
  ldns_rr* second = nullptr;
  ASSERT_EQ(ldns_rr_new_question_frm_str(&second, "v6only.local. IN AAAA", nullptr, nullptr),
            LDNS_STATUS_OK);
  ASSERT_TRUE(ldns_pkt_push_rr(q.get(), LDNS_SECTION_QUESTION, second));
  const Bytes two = to_wire(q.get());
  ASSERT_EQ(LDNS_QDCOUNT(two.data()), 2);
  EXPECT_FALSE(DnsResponder::header_acceptable(two));
  EXPECT_TRUE(r_.respond(two).empty());

  PktPtr empty(ldns_pkt_new());
  ldns_pkt_set_id(empty.get(), 7);
  const Bytes none = to_wire(empty.get());
  ASSERT_EQ(LDNS_QDCOUNT(none.data()), 0);
  EXPECT_FALSE(DnsResponder::header_acceptable(none));
  EXPECT_TRUE(r_.respond(none).empty());
}

TEST_F(DnsResponderTest, AnswerOrAuthorityRecordsInAQueryAreDropped) {
  ldns_rr* rr = nullptr;
  ASSERT_EQ(ldns_rr_new_frm_str(&rr, "demo.local. 5 IN A 192.0.2.1", 0, nullptr, nullptr), LDNS_STATUS_OK);
  RrHolder answer(rr);
  for (ldns_pkt_section sec : {LDNS_SECTION_ANSWER, LDNS_SECTION_AUTHORITY}) {
    SCOPED_TRACE(static_cast<int>(sec));
    PktPtr q = make_pkt({});
    ASSERT_TRUE(ldns_pkt_push_rr(q.get(), sec, ldns_rr_clone(answer.get())));
    const Bytes wire = to_wire(q.get());
    EXPECT_EQ(LDNS_ANCOUNT(wire.data()) + LDNS_NSCOUNT(wire.data()), 1);
    EXPECT_FALSE(DnsResponder::header_acceptable(wire));
    EXPECT_TRUE(r_.respond(wire).empty());
  }
}

TEST_F(DnsResponderTest, TwoAdditionalRecordsAreDroppedOneWithEdnsIsAnswered) {
  // ARCOUNT 1: the OPT record (EDNS0) is the one additional record allowed.
  const Bytes one = query({.edns_udp = 1232});
  ASSERT_EQ(LDNS_ARCOUNT(one.data()), 1);
  EXPECT_TRUE(DnsResponder::header_acceptable(one));
  PktPtr p = ask({.edns_udp = 1232});
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
  EXPECT_EQ(ldns_pkt_ancount(p.get()), 1);
  // ARCOUNT 2 (OPT + an A record): dropped.
  PktPtr q = make_pkt({.edns_udp = 1232});
  ldns_rr* rr = nullptr;
  ASSERT_EQ(ldns_rr_new_frm_str(&rr, "demo.local. 5 IN A 192.0.2.1", 0, nullptr, nullptr), LDNS_STATUS_OK);
  ASSERT_TRUE(ldns_pkt_push_rr(q.get(), LDNS_SECTION_ADDITIONAL, rr));
  const Bytes two = to_wire(q.get());
  ASSERT_EQ(LDNS_ARCOUNT(two.data()), 2);
  EXPECT_FALSE(DnsResponder::header_acceptable(two));
  EXPECT_TRUE(r_.respond(two).empty());
}

// Pads a query with an EDNS option (RFC 7830 padding, code 12) to exactly
// `size` bytes.
Bytes padded_query(size_t size) {
  Bytes q = query({.edns_udp = 1232});
  // The OPT record is last: its RDLENGTH are the final two bytes.
  const size_t pad = size - q.size() - 4;
  q.insert(q.end(), {0x00, 0x0c, static_cast<uint8_t>(pad >> 8), static_cast<uint8_t>(pad & 0xff)});
  q.insert(q.end(), pad, 0);
  const size_t rdlen = pad + 4;
  q[q.size() - rdlen - 2] = static_cast<uint8_t>(rdlen >> 8);
  q[q.size() - rdlen - 1] = static_cast<uint8_t>(rdlen & 0xff);
  return q;
}

TEST_F(DnsResponderTest, QueriesOver512BytesAreDropped) {
  const Bytes at_limit = padded_query(DnsResponder::kMaxQueryBytes);
  ASSERT_EQ(at_limit.size(), 512u);
  PktPtr p = parse(r_.respond(at_limit));
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
  EXPECT_EQ(ldns_pkt_ancount(p.get()), 1);

  const Bytes over = padded_query(DnsResponder::kMaxQueryBytes + 1);
  ASSERT_EQ(over.size(), 513u);
  EXPECT_FALSE(DnsResponder::header_acceptable(over));
  EXPECT_TRUE(r_.respond(over).empty());
}

// The crafted query of issue 14 (about 10,000 questions whose names are
// chains of compression pointers) used to be parsed whole by ldns, tens of
// milliseconds each; now its header drops it before any parsing.
Bytes pointer_chain_query(size_t questions) {
  Bytes q = {0x66, 0x66, 0x01, 0x00, static_cast<uint8_t>(questions >> 8),
             static_cast<uint8_t>(questions & 0xff), 0, 0, 0, 0, 0, 0};
  size_t prev = q.size();
  q.insert(q.end(), {1, 'a', 0, 0x00, 0x01, 0x00, 0x01});  // a. A IN
  for (size_t i = 1; i < questions; ++i) {
    const size_t here = q.size();
    const size_t target = prev < 0x4000 ? prev : 12;  // pointers reach 14 bits
    q.insert(q.end(), {1, 'a', static_cast<uint8_t>(0xc0 | (target >> 8)),
                       static_cast<uint8_t>(target & 0xff), 0x00, 0x01, 0x00, 0x01});
    prev = here;
  }
  return q;
}

TEST_F(DnsResponderTest, PointerChainQueryIsDroppedWithoutParsing) {
  const Bytes crafted = pointer_chain_query(10000);
  ASSERT_GT(crafted.size(), 60000u);
  EXPECT_FALSE(DnsResponder::header_acceptable(crafted));
  EXPECT_TRUE(r_.respond(crafted).empty());
  // Without parsing: 1,000 of them cost far less than one parse did (tens of
  // ms); the bound is loose so that a loaded or sanitized build passes.
  const auto t0 = std::chrono::steady_clock::now();
  size_t answered = 0;
  for (int i = 0; i < 1000; ++i) answered += r_.respond(crafted).size();
  const auto spent = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(answered, 0u);
  EXPECT_LT(spent, std::chrono::milliseconds(50));
  // The same chain cut to the 512-byte limit with QDCOUNT 1 is parsed: one
  // question ("a.", outside the domain: REFUSED), the rest ignored.
  Bytes small(crafted.begin(), crafted.begin() + 512);
  small[4] = 0;
  small[5] = 1;
  ASSERT_TRUE(DnsResponder::header_acceptable(small));
  PktPtr p = parse(r_.respond(small));
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_REFUSED);
}

// Answer sizes (the class comment): errors, refusals and negative answers
// are never larger than the query (issue 14.8: an NXDOMAIN was ~3x its
// query), positive answers add one record per address, the SOA asked for
// one SOA; EDNS options are not echoed.
TEST_F(DnsResponderTest, AnswersAreNeverLargerThanNeeded) {
  struct Case {
    Q q;
    size_t extra;  // bytes the response may add to the query
  };
  const size_t soa = DnsResponder::kSoaBytes;
  for (const Case& c : {Case{{.name = "x.local."}, 0},
                        Case{{.name = "nosuch.local.", .edns_udp = 1232}, 0},
                        Case{{.name = "a.b.c.d.e.local."}, 0},
                        Case{{.name = "demo.local.", .type = LDNS_RR_TYPE_MX}, 0},
                        Case{{.name = "local.", .type = LDNS_RR_TYPE_A}, 0},
                        Case{{.name = "local.", .type = LDNS_RR_TYPE_SOA}, soa},
                        Case{{.name = "demo.local."}, 16},
                        Case{{.name = "demo.local.", .type = LDNS_RR_TYPE_AAAA}, 28},
                        Case{{.name = "multi.local."}, 2 * 16},
                        Case{{.name = "example.com."}, 0},
                        Case{{.name = "example.com.", .edns_udp = 1232}, 0},
                        Case{{.opcode = LDNS_PACKET_STATUS}, 0},
                        Case{{.edns_udp = 1232, .edns_version = 1}, 0}}) {
    SCOPED_TRACE(c.q.name + " type " + std::to_string(c.q.type));
    const Bytes in = query(c.q);
    const Bytes out = r_.respond(in);
    ASSERT_FALSE(out.empty());
    EXPECT_LE(out.size(), in.size() + c.extra);
  }
  // The smallest acceptable query and its NXDOMAIN (documented numbers).
  const Bytes tiny = query({.name = "x.local."});
  EXPECT_EQ(tiny.size(), 25u);
  EXPECT_EQ(r_.respond(tiny).size(), 25u);
  // EDNS options (here 200 bytes of padding) are not echoed.
  const Bytes padded = padded_query(300);
  EXPECT_LT(r_.respond(padded).size(), 100u);
  // A header-only FORMERR for a malformed body.
  Bytes cut = query({.name = "nosuch.local."});
  cut.resize(cut.size() - 3);
  EXPECT_EQ(r_.respond(cut).size(), static_cast<size_t>(LDNS_HEADER_SIZE));
}

TEST_F(DnsResponderTest, MalformedWithReadableHeaderIsFormerr) {
  Bytes q = query({.id = 0x4242});
  q.resize(q.size() - 3);  // cut into QTYPE
  const Bytes reply = r_.respond(q);
  PktPtr p = parse(reply);
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_id(p.get()), 0x4242);
  EXPECT_TRUE(ldns_pkt_qr(p.get()));
  EXPECT_TRUE(ldns_pkt_rd(p.get()));
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_FORMERR);
  EXPECT_EQ(reply.size(), static_cast<size_t>(LDNS_HEADER_SIZE));
}

TEST_F(DnsResponderTest, CompressionPointerLoopIsFormerr) {
  // Header (QDCOUNT 1) then a name that is a pointer to itself (offset 12).
  const Bytes q = {0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01};
  PktPtr p = parse(r_.respond(q));
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_id(p.get()), 0xabcd);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_FORMERR);
}

TEST_F(DnsResponderTest, CompressedNamesAreUnderstood) {
  // A single question's name comes first, so only later records can point
  // back at it: here an A record in the additional section whose owner is a
  // compression pointer to offset 12 (the question name).
  const Bytes q = {0x00, 0x09, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
                   // question: demo.local A IN
                   4, 'd', 'e', 'm', 'o', 5, 'l', 'o', 'c', 'a', 'l', 0, 0x00, 0x01, 0x00, 0x01,
                   // additional: <ptr to 12> A IN TTL 0 RDLEN 4 1.2.3.4
                   0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0x00, 0x04, 1, 2, 3, 4};
  PktPtr p = parse(r_.respond(q));
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
  EXPECT_EQ(section(p.get(), LDNS_SECTION_ANSWER),
            std::vector<std::string>{"demo.local.\t5\tIN\tA\t198.18.0.2"});
  EXPECT_FALSE(ldns_pkt_edns(p.get()));
}

TEST_F(DnsResponderTest, EdnsGetsOptWith1232AndDoEcho) {
  for (bool do_bit : {false, true}) {
    PktPtr p = ask({.edns_udp = 4096, .edns_do = do_bit});
    ASSERT_TRUE(p);
    EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
    EXPECT_EQ(ldns_pkt_edns_udp_size(p.get()), DnsResponder::kEdnsPayload);
    EXPECT_EQ(ldns_pkt_edns_version(p.get()), 0);
    EXPECT_EQ(ldns_pkt_edns_extended_rcode(p.get()), 0);
    EXPECT_EQ(ldns_pkt_edns_do(p.get()), do_bit);
    EXPECT_EQ(ldns_pkt_ancount(p.get()), 1);
  }
  // Negative answers carry the OPT too.
  PktPtr p = ask({.name = "nosuch.local.", .edns_udp = 1232});
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NXDOMAIN);
  p = ask({.name = "example.com.", .edns_udp = 512});
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_REFUSED);
}

TEST_F(DnsResponderTest, NoEdnsNoOpt) {
  const Bytes reply = r_.respond(query({}));
  ASSERT_GE(reply.size(), static_cast<size_t>(LDNS_HEADER_SIZE));
  EXPECT_EQ(LDNS_ARCOUNT(reply.data()), 0);
}

TEST_F(DnsResponderTest, EdnsVersionAboveZeroIsBadvers) {
  PktPtr p = ask({.edns_udp = 1232, .edns_version = 1});
  ASSERT_TRUE(p);
  // BADVERS = 16 (RFC 6891 §9): header rcode 0, extended rcode 1.
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), 0);
  EXPECT_EQ(ldns_pkt_edns_extended_rcode(p.get()), 1);
  EXPECT_EQ(ldns_pkt_edns_version(p.get()), 0);
  EXPECT_EQ(ldns_pkt_edns_udp_size(p.get()), DnsResponder::kEdnsPayload);
  EXPECT_EQ(ldns_pkt_ancount(p.get()), 0);
  EXPECT_FALSE(ldns_pkt_aa(p.get()));
}

TEST_F(DnsResponderTest, TwoOptRecordsAreDropped) {
  PktPtr q = make_pkt({.edns_udp = 1232});
  ldns_rr* opt = ldns_rr_new();
  ldns_rr_set_type(opt, LDNS_RR_TYPE_OPT);
  ldns_rr_set_owner(opt, ldns_dname_new_frm_str("."));
  ldns_rr_set_class(opt, static_cast<ldns_rr_class>(1232));
  ldns_rr_set_ttl(opt, 0);
  ASSERT_TRUE(ldns_pkt_push_rr(q.get(), LDNS_SECTION_ADDITIONAL, opt));
  const Bytes wire = to_wire(q.get());
  ASSERT_EQ(LDNS_ARCOUNT(wire.data()), 2);
  EXPECT_TRUE(r_.respond(wire).empty());  // ARCOUNT > 1: the header pre-check
}

// ldns takes a TSIG out of the additional section too; it must not be
// counted as an OPT record. The TSIG itself is ignored (not verified). A TSIG
// next to an OPT is ARCOUNT 2: dropped by the header pre-check.
TEST_F(DnsResponderTest, TsigIsNotCountedAsOpt) {
  const Bytes tsig = {0, 0x00, 0xfa, 0x00, 0xff, 0, 0, 0, 0, 0, 42,  // root TSIG ANY TTL 0 RDLEN 42
                      8, 'h', 'm', 'a', 'c', '-', 'm', 'd', '5', 7, 's', 'i', 'g', '-', 'a', 'l',
                      'g', 3, 'r', 'e', 'g', 3, 'i', 'n', 't', 0,  // hmac-md5.sig-alg.reg.int.
                      0, 0, 0x65, 0x53, 0xf1, 0x00, 0x01, 0x2c,   // time signed, fudge 300
                      0, 0, 0, 0, 0, 0, 0, 0};                    // MAC size 0, ID, error, other
  for (bool edns : {false, true}) {
    SCOPED_TRACE(edns);
    Bytes q = query(edns ? Q{.edns_udp = 1232} : Q{});
    q.insert(q.end(), tsig.begin(), tsig.end());
    q[11] = static_cast<uint8_t>(q[11] + 1);  // ARCOUNT
    const Bytes reply = r_.respond(q);
    if (edns) {
      EXPECT_TRUE(reply.empty());
      continue;
    }
    PktPtr p = parse(reply);
    ASSERT_TRUE(p);
    EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
    EXPECT_EQ(ldns_pkt_ancount(p.get()), 1);
    EXPECT_EQ(ldns_pkt_edns(p.get()), edns);
    EXPECT_EQ(LDNS_ARCOUNT(reply.data()), edns ? 1 : 0);
  }
}

TEST_F(DnsResponderTest, OversizedAnswerIsTruncated) {
  DnsResponder::NameTable t;
  std::vector<std::string> many;
  for (int i = 0; i < 40; ++i) many.push_back("198.18.1." + std::to_string(i));
  t["big"] = {many, {}};
  r_.set_names(t);
  // 40 A records: 12 + 16 + 40 * 16 = 668 bytes with compression.
  PktPtr p = ask({.name = "big.local."});
  ASSERT_TRUE(p);
  EXPECT_TRUE(ldns_pkt_tc(p.get()));
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOERROR);
  EXPECT_EQ(ldns_pkt_qdcount(p.get()), 1);
  EXPECT_EQ(ldns_pkt_ancount(p.get()), 0);
  // A requester payload below 512 counts as 512 (RFC 6891 §6.2.5).
  p = ask({.name = "big.local.", .edns_udp = 100});
  ASSERT_TRUE(p);
  EXPECT_TRUE(ldns_pkt_tc(p.get()));
  // With EDNS0 and 1232 bytes it fits.
  p = ask({.name = "big.local.", .edns_udp = 4096});
  ASSERT_TRUE(p);
  EXPECT_FALSE(ldns_pkt_tc(p.get()));
  EXPECT_EQ(ldns_pkt_ancount(p.get()), 40);
  // 100 records do not fit 1232 either.
  for (int i = 40; i < 100; ++i) many.push_back("198.18.1." + std::to_string(i));
  t["big"] = {many, {}};
  r_.set_names(t);
  p = ask({.name = "big.local.", .edns_udp = 4096});
  ASSERT_TRUE(p);
  EXPECT_TRUE(ldns_pkt_tc(p.get()));
  EXPECT_EQ(ldns_pkt_ancount(p.get()), 0);
}

TEST_F(DnsResponderTest, SetNamesReplacesTableAndBumpsSerial) {
  r_.set_names({{"other", {{"198.18.0.7"}, {}}}});
  PktPtr p = ask({});
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NXDOMAIN);
  p = ask({.name = "local.", .type = LDNS_RR_TYPE_SOA});  // the serial moved on
  ASSERT_TRUE(p);
  EXPECT_EQ(section(p.get(), LDNS_SECTION_ANSWER), std::vector<std::string>{soa(3)});
  p = ask({.name = "other.local."});
  ASSERT_TRUE(p);
  EXPECT_EQ(section(p.get(), LDNS_SECTION_ANSWER),
            std::vector<std::string>{"other.local.\t5\tIN\tA\t198.18.0.7"});
}

TEST_F(DnsResponderTest, SetNamesRejectsBadAddressesAndKeepsOldTable) {
  EXPECT_THROW(r_.set_names({{"x", {{"fd00::1"}, {}}}}), std::invalid_argument);
  EXPECT_THROW(r_.set_names({{"x", {{}, {"198.18.0.1"}}}}), std::invalid_argument);
  EXPECT_THROW(r_.set_names({{"x", {{"demo.local"}, {}}}}), std::invalid_argument);
  PktPtr p = ask({});
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_ancount(p.get()), 1);
  EXPECT_EQ(section(p.get(), LDNS_SECTION_AUTHORITY).size(), 0u);
  // Serial 2 still: the constructor's table is 1, the fixture's set_names made 2.
  p = ask({.name = "local.", .type = LDNS_RR_TYPE_SOA});
  ASSERT_TRUE(p);
  EXPECT_EQ(section(p.get(), LDNS_SECTION_ANSWER), std::vector<std::string>{soa(2)});
}

TEST(DnsResponderDomain, NormalisesAndValidates) {
  EXPECT_EQ(DnsResponder("LOCAL.").domain(), "local");
  EXPECT_EQ(DnsResponder("Sbx.Example").domain(), "sbx.example");
  EXPECT_THROW(DnsResponder(""), std::invalid_argument);
  EXPECT_THROW(DnsResponder("."), std::invalid_argument);
  EXPECT_THROW(DnsResponder("a..b"), std::invalid_argument);
  EXPECT_THROW(DnsResponder(std::string(64, 'a')), std::invalid_argument);
}

TEST(DnsResponderDomain, MultiLabelDomainAndTtl) {
  DnsResponder r("sbx.example", 30);
  r.set_names({{"demo", {{"198.18.0.2"}, {}}}});
  auto ask = [&](const char* name, ldns_rr_type type = LDNS_RR_TYPE_A) {
    return parse(r.respond(query({.name = name, .type = type})));
  };
  PktPtr p = ask("demo.SBX.example.");
  ASSERT_TRUE(p);
  EXPECT_EQ(section(p.get(), LDNS_SECTION_ANSWER),
            std::vector<std::string>{"demo.SBX.example.\t30\tIN\tA\t198.18.0.2"});
  p = ask("demo.example.");
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_REFUSED);
  p = ask("nosuch.sbx.example.");
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NXDOMAIN);
  p = ask("sbx.example.", LDNS_RR_TYPE_SOA);
  ASSERT_TRUE(p);
  EXPECT_EQ(section(p.get(), LDNS_SECTION_ANSWER),
            std::vector<std::string>{
                "sbx.example.\t30\tIN\tSOA\tsbx.example. hostmaster.sbx.example. 2 3600 600 86400 30"});
}

// Any reply must be a well-formed DNS response to the query's ID, within the
// size limit, and sent only for inputs that pass the header pre-check (a full
// header, at most 512 bytes, QR clear, QDCOUNT 1, ANCOUNT and NSCOUNT 0,
// ARCOUNT at most 1).
void expect_sane(const DnsResponder& r, const Bytes& in) {
  const Bytes out = r.respond(in);
  const bool acceptable = in.size() >= LDNS_HEADER_SIZE && in.size() <= 512 && !LDNS_QR_WIRE(in.data()) &&
                          LDNS_QDCOUNT(in.data()) == 1 && LDNS_ANCOUNT(in.data()) == 0 &&
                          LDNS_NSCOUNT(in.data()) == 0 && LDNS_ARCOUNT(in.data()) <= 1;
  EXPECT_EQ(DnsResponder::header_acceptable(in), acceptable);
  if (!acceptable) {
    EXPECT_TRUE(out.empty());
    return;
  }
  ASSERT_FALSE(out.empty());
  ASSERT_LE(out.size(), DnsResponder::kEdnsPayload);
  PktPtr p = parse(out);
  ASSERT_TRUE(p);
  EXPECT_EQ(ldns_pkt_id(p.get()), LDNS_ID_WIRE(in.data()));
  EXPECT_TRUE(ldns_pkt_qr(p.get()));
}

TEST_F(DnsResponderTest, EveryPrefixOfValidQueries) {
  for (const Q& q : {Q{}, Q{.name = "DeMo.LoCaL.", .edns_udp = 1232, .edns_do = true},
                     Q{.name = "a-rather-long-label-for-a-prefix-test.local.", .type = LDNS_RR_TYPE_AAAA}}) {
    const Bytes full = query(q);
    for (size_t n = 0; n <= full.size(); ++n) {
      SCOPED_TRACE(n);
      // A heap copy of exactly n bytes, so ASan would catch any over-read.
      const Bytes prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
      expect_sane(r_, prefix);
      if (n >= LDNS_HEADER_SIZE && n < full.size()) {
        PktPtr p = parse(r_.respond(prefix));
        ASSERT_TRUE(p);
        EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_FORMERR);
      }
    }
  }
}

TEST_F(DnsResponderTest, BitFlipsAndRandomBytesNeverCrash) {
  std::mt19937 rng(12345);  // fixed seed: the test is deterministic
  const Bytes base = query({.edns_udp = 1232});
  for (int i = 0; i < 20000; ++i) {
    Bytes m = base;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) m[rng() % m.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
    if (rng() % 4 == 0) m.resize(rng() % (m.size() + 1));
    expect_sane(r_, m);
  }
  for (int i = 0; i < 20000; ++i) {
    Bytes m(rng() % 600);
    for (auto& b : m) b = static_cast<uint8_t>(rng());
    if (m.size() >= 3 && rng() % 2 == 0) m[2] &= 0x7f;  // QR clear so that half get parsed
    if (m.size() >= 12 && rng() % 2 == 0) {  // a header that passes the pre-check
      m[4] = 0; m[5] = 1;
      std::fill(m.begin() + 6, m.begin() + 11, 0);
      m[11] &= 1;
    }
    expect_sane(r_, m);
  }
}

TEST_F(DnsResponderTest, ConcurrentRespondAndSetNames) {
  constexpr int kRounds = 2000;  // per thread
  std::thread writer([&] {
    for (int i = 0; i < kRounds; ++i)
      r_.set_names({{"demo", {{"198.18.0." + std::to_string(i % 250 + 1)}, {}}}});
  });
  const Bytes q = query({});
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      for (int i = 0; i < kRounds; ++i) {
        const Bytes out = r_.respond(q);
        ldns_pkt* p = nullptr;
        if (ldns_wire2pkt(&p, out.data(), out.size()) != LDNS_STATUS_OK || ldns_pkt_ancount(p) != 1)
          ++bad;
        ldns_pkt_free(p);
      }
    });
  }
  for (auto& t : readers) t.join();
  writer.join();
  EXPECT_EQ(bad.load(), 0) << "of " << 2 * kRounds << " replies";
}

// Replays the committed fuzz corpus (fuzz/corpus/dns) so that every seed and
// every crash turned into a seed runs in the normal build.
TEST(DnsResponderCorpus, ReplayFuzzCorpus) {
  DnsResponder r("local");
  r.set_names({{"demo", {{"198.18.0.2"}, {"fd00:6f73:6800::2"}}}});
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(OSH_DNS_CORPUS_DIR)) {
    if (!e.is_regular_file()) continue;
    SCOPED_TRACE(e.path().string());
    std::ifstream f(e.path(), std::ios::binary);
    const Bytes in((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    expect_sane(r, in);
    ++files;
  }
  EXPECT_GE(files, 12u);
}

}  // namespace
}  // namespace osh::names

// Writes the seed corpus for dns_fuzz (fuzz/corpus/dns): real query packets
// built with ldns, plus a few hand-made malformed ones. Run once:
//   build-fuzz/fuzz/make_dns_corpus fuzz/corpus/dns
// The output is committed; rerunning rewrites the same bytes.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "names/ldns_cxx.h"

namespace {

using Bytes = std::vector<uint8_t>;
std::string g_dir;

void write(const std::string& name, const Bytes& b) {
  const std::string path = g_dir + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (!f) {
    std::fprintf(stderr, "make_dns_corpus: cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

Bytes wire(const ldns_pkt* p) {
  uint8_t* w = nullptr;
  size_t n = 0;
  if (ldns_pkt2wire(&w, p, &n) != LDNS_STATUS_OK) std::exit(1);
  Bytes b(w, w + n);
  std::free(w);
  return b;
}

ldns_pkt* q(const char* name, ldns_rr_type t, uint16_t id, ldns_rr_class c = LDNS_RR_CLASS_IN) {
  ldns_pkt* p = nullptr;
  if (ldns_pkt_query_new_frm_str(&p, name, t, c, LDNS_RD) != LDNS_STATUS_OK) std::exit(1);
  ldns_pkt_set_id(p, id);
  return p;
}

void emit(const std::string& name, ldns_pkt* p) {
  write(name, wire(p));
  ldns_pkt_free(p);
}

ldns_rr* rr(const char* text, bool question = false) {
  ldns_rr* r = nullptr;
  const ldns_status st = question ? ldns_rr_new_question_frm_str(&r, text, nullptr, nullptr)
                                  : ldns_rr_new_frm_str(&r, text, 0, nullptr, nullptr);
  if (st != LDNS_STATUS_OK) {
    std::fprintf(stderr, "make_dns_corpus: %s: %s\n", text, ldns_get_errorstr_by_id(st));
    std::exit(1);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  g_dir = argv[1];

  emit("a_demo", q("demo.local.", LDNS_RR_TYPE_A, 0x0101));
  emit("aaaa_demo", q("demo.local.", LDNS_RR_TYPE_AAAA, 0x0102));
  emit("mx_demo", q("demo.local.", LDNS_RR_TYPE_MX, 0x0103));
  emit("any_demo", q("demo.local.", LDNS_RR_TYPE_ANY, 0x0104));
  emit("a_0x20_case", q("DeMo.LoCaL.", LDNS_RR_TYPE_A, 0x0105));
  emit("a_nxdomain", q("nosuch.local.", LDNS_RR_TYPE_A, 0x0106));
  emit("a_outside_domain", q("example.com.", LDNS_RR_TYPE_A, 0x0107));
  emit("soa_apex", q("local.", LDNS_RR_TYPE_SOA, 0x0108));
  emit("txt_chaos_class", q("version.bind.", LDNS_RR_TYPE_TXT, 0x0109, LDNS_RR_CLASS_CH));

  ldns_pkt* p = q("demo.local.", LDNS_RR_TYPE_A, 0x0201);
  ldns_pkt_set_edns_udp_size(p, 4096);
  ldns_pkt_set_edns_do(p, true);
  emit("edns0_a_do", p);

  p = q("demo.local.", LDNS_RR_TYPE_AAAA, 0x0202);
  ldns_pkt_set_edns_udp_size(p, 1232);
  ldns_pkt_set_edns_version(p, 1);
  emit("edns0_badvers", p);

  // Second question's name is compressed by ldns (pointer to offset 12).
  p = q("demo.local.", LDNS_RR_TYPE_A, 0x0301);
  ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, rr("demo.local. IN AAAA", true));
  emit("two_questions", p);

  // An additional record whose owner compresses to the question name.
  p = q("demo.local.", LDNS_RR_TYPE_A, 0x0302);
  ldns_pkt_push_rr(p, LDNS_SECTION_ADDITIONAL, rr("demo.local. 0 IN A 192.0.2.1"));
  emit("compressed_additional", p);

  p = q("demo.local.", LDNS_RR_TYPE_A, 0x0401);
  ldns_pkt_set_opcode(p, LDNS_PACKET_NOTIFY);
  emit("opcode_notify", p);

  p = q("demo.local.", LDNS_RR_TYPE_A, 0x0402);
  ldns_pkt_set_qr(p, true);
  emit("qr_response", p);

  Bytes full = wire(q("demo.local.", LDNS_RR_TYPE_A, 0x0501));
  write("truncated_in_name", Bytes(full.begin(), full.begin() + 18));
  write("truncated_header", Bytes(full.begin(), full.begin() + 7));
  write("header_only_qdcount1", Bytes(full.begin(), full.begin() + 12));

  // QDCOUNT 1, name = pointer to itself.
  write("pointer_loop", Bytes{0x05, 0x02, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0,
                              0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01});
  // QDCOUNT 1, name with a label length running past the end.
  write("label_overrun", Bytes{0x05, 0x03, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0,
                               0x3f, 'd', 'e', 'm', 'o', 0x00, 0x00, 0x01, 0x00, 0x01});
  return 0;
}

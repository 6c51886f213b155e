// Writes the seed corpora of packet_fuzz, stack_fuzz, config_fuzz,
// hosts_fuzz, ssh_config_fuzz, state_fuzz, control_fuzz and frame_fuzz
// (fuzz/corpus/<name>). Run once per corpus:
//   build-fuzz/fuzz/make_corpora packet fuzz/corpus/packet
//   build-fuzz/fuzz/make_corpora stack  fuzz/corpus/stack
//   build-fuzz/fuzz/make_corpora config fuzz/corpus/config
//   (and hosts, ssh_config, state, control, frame: fuzz/corpus/<the same name>)
// The output is committed; rerunning rewrites the same bytes.
//
// Packets are built here byte by byte (no library that would "fix" them):
// every kind issue 6.3 lists has a seed: IPv4 fragments (first, middle,
// last, overlapping, out of order, a tiny fragment that splits the TCP
// header), IPv6 fragments and extension headers, bad IPv4 and TCP
// checksums, IP options, zero-length and truncated headers, SYN+FIN, RST
// storms, unknown and oversized TCP options, ECN, ICMP "fragmentation
// needed" and ICMPv6 "packet too big" quoting a live connection.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz/packet_check.h"
#include "fuzz/stack_harness.h"

namespace {

using Bytes = std::vector<uint8_t>;
using osh::fuzz::StackRecord;
using osh::fuzz::wr16;
using osh::fuzz::wr32;
std::string g_dir;

void write(const std::string& name, const Bytes& b) {
  const std::string path = g_dir + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (!f) {
    std::fprintf(stderr, "make_corpora: cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

Bytes operator+(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
Bytes text(const std::string& s) { return Bytes(s.begin(), s.end()); }
Bytes prefix(const Bytes& b, size_t n) { return Bytes(b.begin(), b.begin() + static_cast<long>(std::min(n, b.size()))); }

// ---- addresses (see fuzz/stack_harness.h) ----
struct Addr {
  int family;
  uint8_t b[16];
  bool is_v4() const { return family == 4; }
};
Addr a4(uint8_t c, uint8_t d) { return Addr{4, {198, 18, c, d}}; }
Addr a6(uint8_t hi, uint8_t lo) {
  return Addr{6, {0xfd, 0x00, 0x6f, 0x73, 0x68, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, hi, lo}};
}
const Addr kClient4 = a4(0, 1), kClient6 = a6(0, 1);
const Addr kSbx4 = a4(0, 10), kSbx6 = a6(0, 0x10);
const Addr kSbxB4 = a4(255, 255), kSbxB6 = a6(0xff, 0xff);
const Addr kDns4 = a4(0, 2), kDns6 = a6(0, 2);
const Addr kUnassigned4 = a4(0, 99), kUnassigned6 = a6(0, 0x99);

// Destination ports: the harness's upstream behaves by port % 8.
constexpr uint16_t kRefuse = 1000, kUnreach = 1001, kEcho = 1002, kSource = 1003,
                   kResetOnData = 1004, kSilent = 1005, kSink = 1006, kCloseAtOnce = 1007;

// ---- IP ----
struct Ip4Opts {
  Bytes options;        // padded to 4 bytes
  uint16_t frag = 0x4000;  // DF
  uint16_t id = 0x1234;
  uint8_t tos = 0;
  int tot_delta = 0;    // added to the correct total length
};

Bytes ip4(const Addr& s, const Addr& d, uint8_t proto, const Bytes& payload, const Ip4Opts& o = {}) {
  Bytes opts = o.options;
  while (opts.size() % 4) opts.push_back(0);
  const size_t ihl = 20 + opts.size();
  Bytes h(ihl, 0);
  h[0] = static_cast<uint8_t>(0x40 | (ihl / 4));
  h[1] = o.tos;
  wr16(&h[2], static_cast<uint16_t>(static_cast<int>(ihl + payload.size()) + o.tot_delta));
  wr16(&h[4], o.id);
  wr16(&h[6], o.frag);
  h[8] = 64;
  h[9] = proto;
  std::memcpy(&h[12], s.b, 4);
  std::memcpy(&h[16], d.b, 4);
  std::memcpy(&h[20], opts.data(), opts.size());
  return h + payload;
}

// `ext` = extension headers already chained (their first next-header is
// `first`); the last of them names `proto`.
Bytes ip6(const Addr& s, const Addr& d, uint8_t next, const Bytes& payload, uint8_t tclass = 0,
          int plen_delta = 0) {
  Bytes h(40, 0);
  h[0] = static_cast<uint8_t>(0x60 | (tclass >> 4));
  h[1] = static_cast<uint8_t>(tclass << 4);
  wr16(&h[4], static_cast<uint16_t>(static_cast<int>(payload.size()) + plen_delta));
  h[6] = next;
  h[7] = 64;
  std::memcpy(&h[8], s.b, 16);
  std::memcpy(&h[24], d.b, 16);
  return h + payload;
}

Bytes ip(const Addr& s, const Addr& d, uint8_t proto, const Bytes& payload) {
  return s.is_v4() ? ip4(s, d, proto, payload) : ip6(s, d, proto, payload);
}

// ---- TCP ----
using osh::stack::kAck;
using osh::stack::kFin;
using osh::stack::kPsh;
using osh::stack::kRst;
using osh::stack::kSyn;
constexpr uint8_t kEce = 0x40, kCwr = 0x80;

struct Tcp {
  uint16_t sport = 40000, dport = kEcho;
  uint32_t seq = 1000, ack = 0;
  uint8_t flags = kSyn;
  uint16_t win = 64240;
  Bytes opts;
  Bytes data;
  int doff_words = -1;  // override the data offset (in 32-bit words)
};

const Bytes kSynOpts = {2, 4, 0x05, 0xb4,  // MSS 1460
                        4, 2,              // SACK permitted
                        8, 10, 0, 0, 0, 1, 0, 0, 0, 0,  // timestamps
                        1, 3, 3, 7};       // NOP, window scale 7

Bytes tcp(const Tcp& t) {
  Bytes opts = t.opts;
  while (opts.size() % 4) opts.push_back(0);
  Bytes h(20, 0);
  wr16(&h[0], t.sport);
  wr16(&h[2], t.dport);
  wr32(&h[4], t.seq);
  wr32(&h[8], t.ack);
  const size_t words = t.doff_words >= 0 ? static_cast<size_t>(t.doff_words) : (20 + opts.size()) / 4;
  h[12] = static_cast<uint8_t>(words << 4);
  h[13] = t.flags;
  wr16(&h[14], t.win);
  return h + opts + t.data;
}

// A packet with valid checksums.
Bytes good(Bytes p) {
  osh::fuzz::fix_checksums(p);
  return p;
}
// Flips the transport checksum (after making it valid).
Bytes bad_l4(Bytes p) {
  p = good(p);
  const auto parsed = osh::stack::classify(p);
  p[parsed.ip_header_len + osh::fuzz::checksum_field(parsed.protocol)] ^= 0x5a;
  return p;
}
Bytes bad_ip(Bytes p) {
  p = good(p);
  p[10] ^= 0x5a;
  return p;
}

Bytes tcp_pkt(const Addr& s, const Addr& d, const Tcp& t) { return ip(s, d, 6, tcp(t)); }
Bytes syn(const Addr& s, const Addr& d, uint16_t dport, uint16_t sport = 40000, uint32_t seq = 1000) {
  Tcp t;
  t.dport = dport;
  t.sport = sport;
  t.seq = seq;
  t.opts = kSynOpts;
  return good(tcp_pkt(s, d, t));
}

// ---- ICMP / UDP ----
Bytes icmp4(uint8_t type, uint8_t code, uint32_t rest, const Bytes& body) {
  Bytes m(8, 0);
  m[0] = type;
  m[1] = code;
  wr32(&m[4], rest);
  return m + body;
}
Bytes echo(const Addr& s, const Addr& d, uint16_t id = 0x4242, uint16_t seq = 1) {
  const bool v4 = s.is_v4();
  Bytes m = icmp4(v4 ? 8 : 128, 0, (uint32_t{id} << 16) | seq, text("osh-ping-data-0123456789"));
  return good(ip(s, d, v4 ? 1 : 58, m));
}
Bytes udp(const Addr& s, const Addr& d, uint16_t sport, uint16_t dport, const Bytes& data, int len_delta = 0) {
  Bytes u(8, 0);
  wr16(&u[0], sport);
  wr16(&u[2], dport);
  wr16(&u[4], static_cast<uint16_t>(static_cast<int>(8 + data.size()) + len_delta));
  return ip(s, d, 17, u + data);
}
// A DNS query for demo.local A (id 0x0101).
Bytes dns_query(uint16_t qtype = 1) {
  Bytes q = {0x01, 0x01, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 4, 'd', 'e', 'm', 'o', 5, 'l', 'o', 'c', 'a', 'l', 0};
  q.push_back(static_cast<uint8_t>(qtype >> 8));
  q.push_back(static_cast<uint8_t>(qtype));
  q.push_back(0);
  q.push_back(1);
  return q;
}

// ---- fragments ----
// Splits the payload of an IPv4 packet `proto` into fragments at byte
// offsets (multiples of 8) `cuts`; returns them in order.
std::vector<Bytes> frag4(const Addr& s, const Addr& d, uint8_t proto, const Bytes& payload,
                         std::vector<size_t> cuts, uint16_t id = 0x777) {
  std::vector<Bytes> out;
  cuts.push_back(payload.size());
  size_t from = 0;
  for (size_t i = 0; i < cuts.size(); ++i) {
    const size_t to = cuts[i];
    Ip4Opts o;
    o.id = id;
    o.frag = static_cast<uint16_t>((from / 8) | (i + 1 < cuts.size() ? 0x2000 : 0));
    out.push_back(good(ip4(s, d, proto, Bytes(payload.begin() + static_cast<long>(from),
                                              payload.begin() + static_cast<long>(to)), o)));
    from = to;
  }
  return out;
}

// IPv6 fragment header (RFC 8200 §4.5) carrying `part` at `offset`.
Bytes frag6_hdr(uint8_t next, size_t offset, bool more, uint32_t ident, const Bytes& part) {
  Bytes h(8, 0);
  h[0] = next;
  wr16(&h[2], static_cast<uint16_t>((offset & ~size_t{7}) | (more ? 1 : 0)));
  wr32(&h[4], ident);
  return h + part;
}
// Hop-by-hop / destination options header with one PadN (RFC 8200 §4.2).
Bytes opts6_hdr(uint8_t next, const Bytes& rest) {
  Bytes h = {next, 0, 1, 4, 0, 0, 0, 0};
  return h + rest;
}
// Routing header type 4 (segment routing) with 0 segments left, RFC 8754;
// type 0 (deprecated by RFC 5095) when `type0`.
Bytes routing6_hdr(uint8_t next, bool type0, const Bytes& rest) {
  Bytes h = {next, 2, static_cast<uint8_t>(type0 ? 0 : 4), 0, 0, 0, 0, 0};
  Bytes seg(16, 0);
  seg[0] = 0xfd;
  seg[15] = 0x10;
  return h + seg + rest;
}

Bytes l4_of(const Bytes& pkt) {
  const auto p = osh::stack::classify(pkt);
  return Bytes(pkt.begin() + static_cast<long>(p.ip_header_len), pkt.end());
}

// ---- records ----
StackRecord R(const Bytes& p, uint8_t ctl = 0) { return StackRecord{ctl, p}; }
constexpr uint8_t kFix = osh::fuzz::kFixChecksums, kRel = osh::fuzz::kRelativeAck,
                  kDefer = osh::fuzz::kDeferUpstream, kToggle = osh::fuzz::kToggleRoute;

// Raw TCP packet for a record with kFix|kRel: ack is relative to the ISS.
Bytes seg(const Addr& s, const Addr& d, uint16_t dport, uint32_t seq, uint32_t rel_ack, uint8_t flags,
          const Bytes& data = {}, uint16_t sport = 40000) {
  Tcp t;
  t.sport = sport;
  t.dport = dport;
  t.seq = seq;
  t.ack = rel_ack;
  t.flags = flags;
  t.data = data;
  return tcp_pkt(s, d, t);
}

// SYN + the ACK completing the handshake.
std::vector<StackRecord> handshake(const Addr& s, const Addr& d, uint16_t dport, uint16_t sport = 40000) {
  return {R(syn(s, d, dport, sport), kFix), R(seg(s, d, dport, 1001, 1, kAck, {}, sport), kFix | kRel)};
}

void emit(const std::string& name, const std::vector<StackRecord>& recs) {
  write(name, osh::fuzz::join_stack_input(recs));
}
std::vector<StackRecord> operator+(std::vector<StackRecord> a, const std::vector<StackRecord>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ======================================================================
// packet corpus: single packets
// ======================================================================
void packet_corpus() {
  for (int v : {4, 6}) {
    const std::string f = v == 4 ? "v4_" : "v6_";
    const Addr c = v == 4 ? kClient4 : kClient6, s = v == 4 ? kSbx4 : kSbx6;
    const Addr dns = v == 4 ? kDns4 : kDns6;
    write(f + "syn", syn(c, s, 22));
    Tcp t;
    t.opts = kSynOpts;
    t.data = text("data-on-syn");
    write(f + "syn_with_data", good(tcp_pkt(c, s, t)));
    write(f + "ack", good(seg(c, s, 22, 1001, 5000, kAck)));
    write(f + "data", good(seg(c, s, 22, 1001, 5000, kAck | kPsh, text("GET / HTTP/1.0\r\n\r\n"))));
    write(f + "fin", good(seg(c, s, 22, 1001, 5000, kAck | kFin)));
    write(f + "rst", good(seg(c, s, 22, 1001, 0, kRst)));
    write(f + "syn_fin", good(seg(c, s, 22, 1000, 0, kSyn | kFin)));
    write(f + "syn_rst", good(seg(c, s, 22, 1000, 0, kSyn | kRst)));
    write(f + "syn_ack", good(seg(c, s, 22, 1000, 77, kSyn | kAck)));
    write(f + "all_flags", good(seg(c, s, 22, 1000, 77, 0xff)));
    write(f + "no_flags", good(seg(c, s, 22, 1000, 77, 0)));
    t = Tcp{};
    t.flags = kSyn | kEce | kCwr;
    t.opts = kSynOpts;
    write(f + "syn_ecn_setup", good(v == 4 ? ip4(c, s, 6, tcp(t), Ip4Opts{{}, 0x4000, 1, 0x02})
                                            : ip6(c, s, 6, tcp(t), 0x02)));
    t.flags = kAck | kEce;
    t.data = text("ce");
    write(f + "data_ce_marked", good(v == 4 ? ip4(c, s, 6, tcp(t), Ip4Opts{{}, 0x4000, 1, 0x03})
                                             : ip6(c, s, 6, tcp(t), 0x03)));
    t = Tcp{};
    t.opts = {0xfe, 6, 0xde, 0xad, 0xbe, 0xef, 2, 4, 0x05, 0xb4};
    write(f + "syn_unknown_option", good(tcp_pkt(c, s, t)));
    t.opts = {2, 4, 0x05, 0xb4, 0xfd, 40};  // option length runs past the header
    write(f + "syn_option_past_header", good(tcp_pkt(c, s, t)));
    t.opts = {2, 0, 1, 1};  // zero option length (a parser must not loop)
    write(f + "syn_option_len0", good(tcp_pkt(c, s, t)));
    t.opts = {8, 1, 1, 1};  // length 1
    write(f + "syn_option_len1", good(tcp_pkt(c, s, t)));
    t.opts = Bytes(40, 1);  // 40 bytes of NOPs: data offset 15
    t.opts[0] = 0xfe;
    t.opts[1] = 40;
    write(f + "syn_option_40_bytes", good(tcp_pkt(c, s, t)));
    t.opts = {3, 3, 14};  // window scale 14 (maximum) and oversized 200
    write(f + "syn_wscale_14", good(tcp_pkt(c, s, t)));
    t.opts = {2, 4, 0, 0};  // MSS 0
    write(f + "syn_mss_zero", good(tcp_pkt(c, s, t)));
    write(f + "syn_bad_tcp_checksum", bad_l4(syn(c, s, 22)));
    t = Tcp{};
    t.doff_words = 4;  // data offset below 5
    write(f + "tcp_doff_4", good(tcp_pkt(c, s, t)));
    t.doff_words = 15;  // past the segment
    write(f + "tcp_doff_past_end", good(tcp_pkt(c, s, t)));
    Bytes full = syn(c, s, 22);
    write(f + "truncated_in_tcp", prefix(full, full.size() - 12));
    write(f + "truncated_in_ip", prefix(full, v == 4 ? 12 : 30));
    write(f + "echo", echo(c, s));
    write(f + "echo_bad_checksum", bad_l4(echo(c, s)));
    write(f + "dns_query", good(udp(c, dns, 33333, 53, dns_query(v == 4 ? 1 : 28))));
    write(f + "udp_len_past_packet", good(udp(c, dns, 33333, 53, dns_query(), 40)));
    write(f + "udp_len_short", good(udp(c, dns, 33333, 53, dns_query(), -20)));
    write(f + "udp_to_sandbox", good(udp(c, s, 33333, 9999, text("hello"))));
    write(f + "tcp_to_unassigned", syn(c, v == 4 ? kUnassigned4 : kUnassigned6, 80));
    write(f + "land_syn", syn(s, s, 22, 22));
    write(f + "gre", good(ip(c, s, 47, Bytes(8, 0))));
    write(f + "sctp", good(ip(c, s, 132, Bytes(12, 0))));
  }
  // IPv4 specifics.
  write("v4_bad_ip_checksum_syn", bad_ip(syn(kClient4, kSbx4, 22)));
  write("v4_bad_ip_checksum_echo", bad_ip(echo(kClient4, kSbx4)));
  {
    Tcp t;
    t.opts = kSynOpts;
    write("v4_ip_options_nop_eol", good(ip4(kClient4, kSbx4, 6, tcp(t), Ip4Opts{{1, 1, 1, 0}})));
    Bytes rr = {7, 39, 4};  // record route with room for 9 addresses
    rr.resize(39, 0);
    rr.push_back(0);
    write("v4_ip_options_record_route", good(ip4(kClient4, kSbx4, 6, tcp(t), Ip4Opts{rr})));
    write("v4_ip_options_router_alert", good(ip4(kClient4, kSbx4, 6, tcp(t), Ip4Opts{{148, 4, 0, 0}})));
    write("v4_ip_option_len_past_header", good(ip4(kClient4, kSbx4, 6, tcp(t), Ip4Opts{{7, 200, 4, 0}})));
    write("v4_echo_with_ip_options", good(ip4(kClient4, kSbx4, 1, l4_of(echo(kClient4, kSbx4)), Ip4Opts{{1, 1, 1, 1}})));
    Ip4Opts o;
    o.tot_delta = 30;
    write("v4_total_length_past_buffer", good(ip4(kClient4, kSbx4, 6, tcp(t), o)));
    o.tot_delta = -30;
    write("v4_total_length_short", good(ip4(kClient4, kSbx4, 6, tcp(t), o)));
    Bytes hdr_only = good(ip4(kClient4, kSbx4, 6, {}));
    write("v4_header_only_tcp", hdr_only);
    Bytes ihl4 = syn(kClient4, kSbx4, 22);
    ihl4[0] = 0x44;
    write("v4_ihl_4", ihl4);
    Bytes ihl15 = syn(kClient4, kSbx4, 22);
    ihl15[0] = 0x4f;
    write("v4_ihl_15_past_packet", ihl15);
    // Fragments of a SYN with 40 bytes of data: 60-byte TCP segment.
    Tcp fs;
    fs.opts = kSynOpts;
    fs.data = Bytes(40, 'f');
    Bytes l4 = l4_of(good(tcp_pkt(kClient4, kSbx4, fs)));
    auto frags = frag4(kClient4, kSbx4, 6, l4, {24, 48});
    write("v4_frag_first", frags[0]);
    write("v4_frag_middle", frags[1]);
    write("v4_frag_last", frags[2]);
    auto tiny = frag4(kClient4, kSbx4, 6, l4, {8});  // splits the TCP header
    write("v4_frag_tiny_first", tiny[0]);
    Ip4Opts df_mf;
    df_mf.frag = 0x6000;  // DF and MF
    write("v4_frag_df_and_mf", good(ip4(kClient4, kSbx4, 6, l4, df_mf)));
    Ip4Opts off_max;
    off_max.frag = 0x1fff;  // offset 65528: ends past 65535
    write("v4_frag_offset_max", good(ip4(kClient4, kSbx4, 6, Bytes(16, 0), off_max)));
    write("v4_icmp_frag_needed", good(ip4(kClient4, kSbx4, 1,
        icmp4(3, 4, 1280, prefix(good(seg(kSbx4, kClient4, 40000, 5001, 1001, kAck, {}, 22)), 28)))));
    write("v4_icmp_timestamp", good(ip4(kClient4, kSbx4, 1, icmp4(13, 0, 0, Bytes(12, 0)))));
    write("v4_to_b_broadcast_like", syn(kClient4, kSbxB4, 80));
    write("v4_udp_zero_checksum", [] {
      Bytes p = good(udp(kClient4, kDns4, 33333, 53, dns_query()));
      p[26] = p[27] = 0;
      return p;
    }());
  }
  // IPv6 specifics.
  {
    const Bytes l4 = l4_of(syn(kClient6, kSbx6, 22));
    write("v6_frag_first", ip6(kClient6, kSbx6, 44, frag6_hdr(6, 0, true, 0xabcd, Bytes(l4.begin(), l4.begin() + 16))));
    write("v6_frag_last", ip6(kClient6, kSbx6, 44, frag6_hdr(6, 16, false, 0xabcd, Bytes(l4.begin() + 16, l4.end()))));
    write("v6_atomic_fragment", ip6(kClient6, kSbx6, 44, frag6_hdr(6, 0, false, 0xabce, l4)));
    write("v6_hop_by_hop_then_tcp", ip6(kClient6, kSbx6, 0, opts6_hdr(6, l4)));
    write("v6_dest_opts_then_tcp", ip6(kClient6, kSbx6, 60, opts6_hdr(6, l4)));
    write("v6_routing_type0", ip6(kClient6, kSbx6, 43, routing6_hdr(6, true, l4)));
    write("v6_routing_type4", ip6(kClient6, kSbx6, 43, routing6_hdr(6, false, l4)));
    write("v6_hbh_then_fragment", ip6(kClient6, kSbx6, 0, opts6_hdr(44, frag6_hdr(6, 0, true, 1, l4))));
    write("v6_no_next_header", ip6(kClient6, kSbx6, 59, {}));
    write("v6_ext_header_truncated", ip6(kClient6, kSbx6, 60, Bytes{6, 9}));
    write("v6_payload_length_past_buffer", ip6(kClient6, kSbx6, 6, l4, 0, 100));
    write("v6_payload_length_short", ip6(kClient6, kSbx6, 6, l4, 0, -30));
    Bytes ptb = icmp4(2, 0, 1280, good(seg(kSbx6, kClient6, 40000, 5001, 1001, kAck, {}, 22)));
    write("v6_icmp_packet_too_big", good(ip6(kClient6, kSbx6, 58, ptb)));
    write("v6_icmp_neighbor_solicit", good(ip6(kClient6, kSbx6, 58, icmp4(135, 0, 0, Bytes(16, 0)))));
  }
  write("empty", {});
  write("one_byte_v4", {0x45});
  write("v4_19_bytes", prefix(syn(kClient4, kSbx4, 22), 19));
  write("v6_39_bytes", prefix(syn(kClient6, kSbx6, 22), 39));
  write("version_5", [] { Bytes p = syn(kClient4, kSbx4, 22); p[0] = 0x55; return p; }());
  write("version_0", Bytes(40, 0));
}

// ======================================================================
// stack corpus: sequences of client packets
// ======================================================================
void stack_corpus() {
  for (int v : {4, 6}) {
    const std::string f = v == 4 ? "v4_" : "v6_";
    const Addr c = v == 4 ? kClient4 : kClient6, s = v == 4 ? kSbx4 : kSbx6;
    const Addr sb = v == 4 ? kSbxB4 : kSbxB6, dns = v == 4 ? kDns4 : kDns6;

    // Echo: handshake, data, FIN after the echo, ACK of the stack's FIN.
    emit(f + "echo_session", handshake(c, s, kEcho) + std::vector<StackRecord>{
        R(seg(c, s, kEcho, 1001, 1, kAck | kPsh, text("hello")), kFix | kRel),
        R(seg(c, s, kEcho, 1006, 6, kAck | kFin), kFix | kRel),
        R(seg(c, s, kEcho, 1007, 7, kAck), kFix | kRel)});
    // Source: two frames (3000 + 100 bytes) then FIN; the client ACKs all.
    emit(f + "source_session", handshake(c, s, kSource) + std::vector<StackRecord>{
        R(seg(c, s, kSource, 1001, 1461, kAck), kFix | kRel),
        R(seg(c, s, kSource, 1001, 3001, kAck), kFix | kRel),
        R(seg(c, s, kSource, 1001, 3102, kAck | kFin), kFix | kRel)});
    emit(f + "refused", {R(syn(c, s, kRefuse), kFix)});
    emit(f + "unreachable", {R(syn(c, s, kUnreach), kFix)});
    emit(f + "syn_retransmits_while_opening",
         {R(syn(c, s, kSilent), kFix), R(syn(c, s, kSilent), kFix), R(syn(c, s, kSilent), kFix)});
    emit(f + "syn_retransmit_races_open",
         {R(syn(c, s, kEcho), kFix | kDefer), R(syn(c, s, kEcho), kFix | kDefer), R(syn(c, s, kEcho), kFix),
          R(seg(c, s, kEcho, 1001, 1, kAck), kFix | kRel)});
    emit(f + "reset_on_data", handshake(c, s, kResetOnData) + std::vector<StackRecord>{
        R(seg(c, s, kResetOnData, 1001, 1, kAck | kPsh, text("boom")), kFix | kRel)});
    emit(f + "close_at_once", handshake(c, s, kCloseAtOnce) + std::vector<StackRecord>{
        R(seg(c, s, kCloseAtOnce, 1001, 2, kAck | kFin), kFix | kRel)});
    emit(f + "sink_then_client_fin", handshake(c, s, kSink) + std::vector<StackRecord>{
        R(seg(c, s, kSink, 1001, 1, kAck | kPsh, Bytes(1400, 's')), kFix | kRel),
        R(seg(c, s, kSink, 2401, 1, kAck | kFin), kFix | kRel)});
    emit(f + "client_rst_established", handshake(c, s, kEcho) + std::vector<StackRecord>{
        R(seg(c, s, kEcho, 1001, 0, kRst), kFix)});
    // RST storm: wrong sequence numbers (ignored or challenge-ACKed), then
    // data still flows, then the exact RST.
    std::vector<StackRecord> storm = handshake(c, s, kEcho);
    for (uint32_t i = 0; i < 16; ++i)
      storm.push_back(R(seg(c, s, kEcho, 1001 + 7919 * (i + 1), 0, kRst), kFix));
    storm.push_back(R(seg(c, s, kEcho, 1001 + 100, 0, kRst | kAck), kFix | kRel));
    storm.push_back(R(seg(c, s, kEcho, 1001, 1, kAck | kPsh, text("still-alive")), kFix | kRel));
    storm.push_back(R(seg(c, s, kEcho, 1012, 0, kRst), kFix));
    emit(f + "rst_storm_live_connection", storm);
    std::vector<StackRecord> storm_unknown;
    for (uint16_t i = 0; i < 32; ++i)
      storm_unknown.push_back(R(seg(c, s, kEcho, 5000u + i, 0, kRst, {}, static_cast<uint16_t>(50000 + i)), kFix));
    emit(f + "rst_storm_unknown_flows", storm_unknown);
    emit(f + "syn_fin", {R(seg(c, s, kEcho, 1000, 0, kSyn | kFin), kFix)});
    emit(f + "syn_rst", {R(seg(c, s, kEcho, 1000, 0, kSyn | kRst), kFix)});
    emit(f + "syn_ack_unknown_flow", {R(seg(c, s, kEcho, 1000, 5, kSyn | kAck), kFix)});
    emit(f + "syn_bad_tcp_checksum", {R(bad_l4(syn(c, s, kEcho)), 0)});
    emit(f + "data_bad_tcp_checksum", handshake(c, s, kEcho) + std::vector<StackRecord>{
        R(bad_l4(seg(c, s, kEcho, 1001, 1, kAck | kPsh, text("corrupt"))), kRel)});
    Tcp t;
    t.dport = kEcho;
    t.opts = {0xfe, 6, 0xde, 0xad, 0xbe, 0xef, 0xfd, 40};
    emit(f + "syn_unknown_and_oversized_options",
         {R(tcp_pkt(c, s, t), kFix), R(seg(c, s, kEcho, 1001, 1, kAck), kFix | kRel)});
    t.opts = {2, 0, 1, 1};
    emit(f + "syn_option_len0", {R(tcp_pkt(c, s, t), kFix), R(seg(c, s, kEcho, 1001, 1, kAck), kFix | kRel)});
    t.opts = Bytes(40, 1);
    emit(f + "syn_40_bytes_of_options", {R(tcp_pkt(c, s, t), kFix)});
    t = Tcp{};
    t.dport = kEcho;
    t.flags = kSyn | kEce | kCwr;
    t.opts = kSynOpts;
    Tcp d;
    d.dport = kEcho;
    d.seq = 1001;
    d.ack = 1;
    d.flags = kAck | kPsh | kEce;
    d.data = text("ce-marked");
    emit(f + "ecn_session",
         {R(v == 4 ? ip4(c, s, 6, tcp(t), Ip4Opts{{}, 0x4000, 1, 0x02}) : ip6(c, s, 6, tcp(t), 0x02), kFix),
          R(seg(c, s, kEcho, 1001, 1, kAck), kFix | kRel),
          R(v == 4 ? ip4(c, s, 6, tcp(d), Ip4Opts{{}, 0x4000, 1, 0x03}) : ip6(c, s, 6, tcp(d), 0x03), kFix | kRel)});
    emit(f + "echo_request", {R(echo(c, s), 0), R(bad_l4(echo(c, s)), 0)});
    emit(f + "dns_query", {R(good(udp(c, dns, 33333, 53, dns_query(v == 4 ? 1 : 28))), 0)});
    emit(f + "not_sandbox", {R(syn(c, v == 4 ? kUnassigned4 : kUnassigned6, 80), kFix),
                             R(echo(c, v == 4 ? kUnassigned4 : kUnassigned6), 0)});
    emit(f + "land_syn_from_sandbox_address", {R(syn(s, s, kEcho, kEcho), kFix)});
    emit(f + "route_removed_under_live_connection", handshake(c, sb, kEcho) + std::vector<StackRecord>{
        R(seg(c, sb, kEcho, 1001, 1, kAck | kPsh, text("x")), kFix | kRel | kToggle),
        R(seg(c, sb, kEcho, 1002, 1, kAck | kPsh, text("y")), kFix | kRel | kToggle)});
    std::vector<StackRecord> many;
    for (uint16_t i = 0; i < 12; ++i) {
      auto h = handshake(c, s, i % 2 ? kSource : kEcho, static_cast<uint16_t>(41000 + i));
      many.insert(many.end(), h.begin(), h.end());
    }
    emit(f + "twelve_connections", many);
    // Regression (stack_fuzz finding 3): after the handshake, a FIN whose
    // sequence number is rcv_nxt + 2^31 (TCP length 1) aborts lwIP.
    emit(f + "fin_at_rcv_nxt_plus_2_31", handshake(c, s, kEcho) + std::vector<StackRecord>{
        R(seg(c, s, kEcho, 1001u + 0x80000000u, 1, kAck | kFin), kFix | kRel)});
    emit(f + "zero_window_probe", handshake(c, s, kSource) + std::vector<StackRecord>{
        R([&] { Tcp z; z.dport = kSource; z.seq = 1001; z.ack = 1; z.flags = kAck; z.win = 0; return tcp_pkt(c, s, z); }(), kFix | kRel),
        R(seg(c, s, kSource, 1001, 1461, kAck), kFix | kRel)});
    emit(f + "zero_length_and_truncated",
         {R({}, 0), R(prefix(syn(c, s, kEcho), 30), 0), R({0x45}, 0),
          R(syn(c, s, kEcho), kFix)});
  }
  // IPv4-only cases.
  const Addr c = kClient4, s = kSbx4;
  emit("v4_syn_bad_ip_checksum", {R(bad_ip(syn(c, s, kEcho)), 0)});
  {
    Tcp t;
    t.dport = kEcho;
    t.opts = kSynOpts;
    Bytes rr = {7, 11, 4};
    rr.resize(11, 0);
    emit("v4_ip_options_session", {R(ip4(c, s, 6, tcp(t), Ip4Opts{rr}), kFix),
                                   R(ip4(c, s, 6, tcp(Tcp{40000, kEcho, 1001, 1, kAck, 64240, {}, text("opt"), -1}), Ip4Opts{{1, 1, 1, 0}}), kFix | kRel)});
    Tcp fs;
    fs.dport = kEcho;
    fs.opts = kSynOpts;
    fs.data = Bytes(40, 'f');
    Bytes l4 = l4_of(good(tcp_pkt(c, s, fs)));
    auto frags = frag4(c, s, 6, l4, {24, 48});
    emit("v4_fragments_in_order", {R(frags[0]), R(frags[1]), R(frags[2])});
    emit("v4_fragments_out_of_order", {R(frags[2]), R(frags[0]), R(frags[1])});
    auto overlap_a = frag4(c, s, 6, l4, {32}, 0x778);
    Ip4Opts o;
    o.id = 0x778;
    o.frag = 16 / 8;  // offset 16, last: overlaps the first fragment
    emit("v4_fragments_overlapping",
         {R(overlap_a[0]), R(good(ip4(c, s, 6, Bytes(l4.begin() + 16, l4.end()), o))), R(overlap_a[1])});
    const auto tiny = frag4(c, s, 6, l4, {8});
    emit("v4_frag_tiny_first", {R(tiny[0]), R(tiny[1])});
    std::vector<StackRecord> icmp = handshake(c, s, kSource);
    Bytes quoted = good(seg(s, c, 40000, 1, 1001, kAck, {}, kSource));  // what the stack sent, as quoted
    icmp.push_back(R(ip4(c, s, 1, icmp4(3, 4, 576, Bytes(quoted.begin(), quoted.begin() + 28))), kFix));
    icmp.push_back(R(seg(c, s, kSource, 1001, 3001, kAck), kFix | kRel));
    emit("v4_icmp_frag_needed_live_connection", icmp);
  }
  {
    const Addr c6 = kClient6, s6 = kSbx6;
    const Bytes l4 = l4_of(syn(c6, s6, kEcho));
    emit("v6_fragments", {R(ip6(c6, s6, 44, frag6_hdr(6, 16, false, 7, Bytes(l4.begin() + 16, l4.end())))),
                          R(ip6(c6, s6, 44, frag6_hdr(6, 0, true, 7, Bytes(l4.begin(), l4.begin() + 16))))});
    emit("v6_extension_headers", {R(ip6(c6, s6, 0, opts6_hdr(6, l4))), R(ip6(c6, s6, 60, opts6_hdr(6, l4))),
                                  R(ip6(c6, s6, 43, routing6_hdr(6, true, l4))),
                                  R(ip6(c6, s6, 0, opts6_hdr(44, frag6_hdr(6, 0, false, 9, l4))))});
    // Regression (stack_fuzz finding 1): a SYN retransmitted while lwIP is
    // in SYN_RCVD resets its MSS from the option (1460) without the MTU
    // clamp; the 3000-byte frame then leaves as IPv6 fragments.
    emit("v6_syn_retransmit_in_handshake",
         {R(syn(c6, s6, kSource), kFix), R(syn(c6, s6, kSource), kFix),
          R(seg(c6, s6, kSource, 1001, 1, kAck), kFix | kRel),
          R(seg(c6, s6, kSource, 1001, 3001, kAck), kFix | kRel),
          R(seg(c6, s6, kSource, 1001, 3102, kAck | kFin), kFix | kRel)});
    std::vector<StackRecord> ptb = handshake(c6, s6, kSource);
    Bytes quoted = good(seg(s6, c6, 40000, 1, 1001, kAck | kPsh, Bytes(1200, 'x'), kSource));
    ptb.push_back(R(ip6(c6, s6, 58, icmp4(2, 0, 1280, quoted)), kFix));
    ptb.push_back(R(seg(c6, s6, kSource, 1001, 3001, kAck), kFix | kRel));
    emit("v6_icmp_packet_too_big_live_connection", ptb);
  }
}

// ======================================================================
// config corpus: flags byte, then NUL-separated files (config_harness.h)
// ======================================================================
void config_entry(const std::string& name, uint8_t flags, const std::vector<std::string>& parts) {
  Bytes b{flags};
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) b.push_back(0);
    b.insert(b.end(), parts[i].begin(), parts[i].end());
  }
  write(name, b);
}

void config_corpus() {
  const std::string cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  const std::string key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
  const std::string meta_h2c =
      R"({"name":"gw","gateway_endpoint":"http://127.0.0.1:17670","is_remote":false,"gateway_port":17670})";
  const std::string meta_tls = R"({"name":"gw","gateway_endpoint":"https://gw.example:8443","auth_mode":"mtls"})";
  const std::string meta_oidc = R"({"name":"gw","gateway_endpoint":"https://gw.example","auth_mode":"oidc"})";
  config_entry("h2c_active", 0x05, {meta_h2c, "", "gw\n"});
  config_entry("mtls_full_bundle", 0x3d, {meta_tls, "", "gw", cert, cert, key});
  config_entry("mtls_cert_without_key", 0x15, {meta_tls, "", "gw", "", cert});
  config_entry("mtls_key_not_pem", 0x3d, {meta_tls, "", "gw", cert, cert, "not a key"});
  config_entry("tls_insecure", 0x85, {meta_tls, "", "gw"});
  config_entry("oidc_valid_token", 0x07, {meta_oidc, R"({"access_token":"eyJhbGciOi.x.y","expires_at":1893456000})", "gw"});
  config_entry("oidc_expired_token", 0x07, {meta_oidc, R"({"access_token":"tok","expires_at":1700000000,"refresh_token":"r"})", "gw"});
  config_entry("oidc_token_missing", 0x05, {meta_oidc, "", "gw"});
  config_entry("oidc_token_with_space", 0x07, {meta_oidc, R"({"access_token":"a b"})", "gw"});
  config_entry("oidc_expires_negative", 0x07, {meta_oidc, R"({"access_token":"t","expires_at":-5})", "gw"});
  config_entry("oidc_expires_float", 0x07, {meta_oidc, R"({"access_token":"t","expires_at":1.5e9})", "gw"});
  config_entry("oidc_expires_huge", 0x07, {meta_oidc, R"({"access_token":"t","expires_at":18446744073709551615})", "gw"});
  config_entry("oidc_expires_string", 0x07, {meta_oidc, R"({"access_token":"t","expires_at":"soon"})", "gw"});
  config_entry("oidc_token_not_object", 0x07, {meta_oidc, R"(["t"])", "gw"});
  config_entry("auth_cloudflare", 0x05, {R"({"gateway_endpoint":"https://edge.example","auth_mode":"cloudflare_jwt"})", "", "gw"});
  config_entry("auth_unknown", 0x05, {R"({"gateway_endpoint":"http://h","auth_mode":"kerberos\u0007"})", "", "gw"});
  config_entry("meta_invalid_json", 0x05, {R"({"gateway_endpoint": "http://h",)", "", "gw"});
  config_entry("meta_array", 0x05, {"[1,2,3]", "", "gw"});
  config_entry("meta_endpoint_number", 0x05, {R"({"gateway_endpoint":17670})", "", "gw"});
  config_entry("meta_endpoint_missing", 0x05, {R"({"name":"gw"})", "", "gw"});
  config_entry("meta_name_dotdot", 0x05, {R"({"name":"..","gateway_endpoint":"http://h"})", "", "gw"});
  config_entry("meta_name_slash", 0x05, {R"({"name":"a/b","gateway_endpoint":"http://h"})", "", "gw"});
  config_entry("meta_unicode_escapes", 0x05, {R"({"name":"g\u00e9w","gateway_endpoint":"http://\u0068:1"})", "", "gw"});
  config_entry("meta_deep_nesting", 0x05, {R"({"x":)" + std::string(200, '[') + std::string(200, ']') + R"(,"gateway_endpoint":"http://h"})", "", "gw"});
  config_entry("meta_bom", 0x05, {"\xef\xbb\xbf" + meta_h2c, "", "gw"});
  config_entry("endpoint_ipv6_literal", 0x05, {R"({"gateway_endpoint":"https://[::1]:8443/"})", "", "gw"});
  config_entry("endpoint_bad_port", 0x05, {R"({"gateway_endpoint":"http://h:99999"})", "", "gw"});
  config_entry("endpoint_bad_scheme", 0x05, {R"({"gateway_endpoint":"ftp://h"})", "", "gw"});
  config_entry("endpoint_path_and_user", 0x05, {R"({"gateway_endpoint":"http://user@h:1/x/y?z"})", "", "gw"});
  config_entry("endpoint_flag_matches_stored", 0x41, {meta_h2c, "", "http://127.0.0.1:17670"});
  config_entry("endpoint_flag_no_match", 0x41, {meta_h2c, "", "https://other:1"});
  config_entry("endpoint_flag_garbage", 0x40, {"", "", "http://[::1"});
  config_entry("active_escape", 0x05, {meta_h2c, "", "../escape"});
  config_entry("active_blank", 0x05, {meta_h2c, "", " \n\t"});
  config_entry("active_unknown", 0x05, {meta_h2c, "", "nosuch"});
  config_entry("nothing", 0x00, {});
}

// ======================================================================
// text corpora: hosts files and ssh configs (selector byte first,
// fuzz/text_edit_check.h), state.json files (fuzz/state_check.h) and
// control requests (fuzz/control_check.h)
// ======================================================================
const std::string kB = "# BEGIN openshell-tunnel (managed, do not edit)\n";
const std::string kE = "# END openshell-tunnel\n";

void selected(const std::string& name, uint8_t selector, const std::string& body) {
  write(name, Bytes{selector} + text(body));
}

void hosts_corpus() {
  const std::string base = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  const std::string ours = kB + "198.18.0.2\tsbx-1.local\n" + kE;
  selected("empty", 1, "");
  selected("debian_default", 2, base + "\n# The following lines are desirable for IPv6 capable hosts\nff02::1 ip6-allnodes\n");
  selected("with_block", 1, base + ours);
  selected("block_in_the_middle", 2, base + ours + "10.0.0.1 after\n");
  selected("no_final_newline", 1, base + "10.0.0.1 last");
  selected("block_without_final_newline", 3, base + kB + "198.18.0.2\tx\n# END openshell-tunnel");
  selected("crlf_and_trailing_blanks", 1, "a b\r\n# BEGIN openshell-tunnel (managed, do not edit) \t\r\n1.2.3.4\tz\r\n" + kE);
  selected("two_blocks", 0, "one\n" + ours + "two\n" + ours + "three\n");
  selected("orphan_begin", 1, "one\n" + kB + "1.1.1.1\ta\n");
  selected("orphan_end", 2, "one\n" + kE + "two\n");
  selected("begin_begin_end", 1, kB + "keep\n" + kB + "drop\n" + kE);
  selected("end_before_begin", 1, kE + kB + kE);
  selected("stray_markers_around_a_block", 1, ours + kB + ours + "user\n" + kE);
  selected("stray_begin_before_a_block", 2, kB + ours + kE);
  selected("marker_lookalikes", 1, "#BEGIN openshell-tunnel\n# END openshell-tunnel-x\n # END openshell-tunnel\n");
  selected("nul_and_high_bytes", 1, std::string("a\0b\n\xff\xfe\n", 7) + ours);
  selected("only_newlines", 3, "\n\n\n");
}

void ssh_config_corpus() {
  const std::string user = "Host build\n  HostName build.example\n  User me\n\nHost *\n  ServerAliveInterval 30\n";
  const std::string ours = kB + "Include \"/var/lib/openshell-tunnel/ssh_config\"\n" + kE;
  selected("empty", 0, "");
  selected("user_config", 0, user);
  selected("with_block", 0, ours + user);
  selected("block_at_the_end", 1, user + ours);
  selected("old_include_path", 1, kB + "Include /old/path\n" + kE + user);
  selected("include_inside_host", 0, "Host x\n  Include other\n" + ours);
  selected("no_final_newline", 1, "Host x\n  User y");
  selected("orphan_begin", 0, kB + user);
  selected("two_blocks", 1, ours + user + ours);
  selected("crlf", 0, "Host a\r\n  User b\r\n" + ours);
}

void state_corpus() {
  const std::string sbx =
      R"("sandboxes":{"0b6c-uuid":{"name":"demo","v4":"198.18.0.2","v6":"fd00:6f73:6800::2"}})";
  write("full", text("{" R"("pid":4242,"boot_id":"2f1c3c1e-1111-2222-3333-444455556666","start_time":123456,)"
           R"("tun_name":"osh0","hosts_file":"/etc/hosts","ssh_config":"/root/.ssh/config",)"
           R"("ssh_include":"/var/lib/openshell-tunnel/ssh_config",)" + sbx + "}\n"));
  write("old_without_identity", text(R"({"pid":7,"tun_name":"osh0",)" + sbx + "}"));
  write("empty", Bytes{});
  write("empty_object", text("{}"));
  write("not_json", text("pid=1\n"));
  write("array", text("[1,2]"));
  write("null", text("null"));
  write("pid_negative", text(R"({"pid":-1})"));
  write("pid_float", text(R"({"pid":1.5})"));
  write("pid_huge_float", text(R"({"pid":1e300})"));
  write("pid_over_int", text(R"({"pid":4294967296})"));
  write("pid_string", text(R"({"pid":"1"})"));
  write("start_time_float", text(R"({"start_time":1e30})"));
  write("start_time_negative", text(R"({"start_time":-2})"));
  write("start_time_max", text(R"({"start_time":18446744073709551615})"));
  write("tun_name_number", text(R"({"tun_name":5})"));
  write("sandboxes_array", text(R"({"sandboxes":[1]})"));
  write("sandbox_not_object", text(R"({"sandboxes":{"a":1}})"));
  write("sandbox_fields_wrong", text(R"({"sandboxes":{"a":{"name":1}}})"));
  write("unicode_and_nul", text(R"({"tun_name":"\u0000\u00e9","sandboxes":{"\ud83d\ude00":{"name":"x"}}})"));
  write("lone_surrogate", text(R"({"tun_name":"\ud800"})"));
  write("invalid_utf8", text("{\"tun_name\":\"\xff\"}"));
  write("duplicate_keys", text(R"({"pid":1,"pid":2})"));
  write("deep_nesting", text("{\"x\":" + std::string(300, '[') + std::string(300, ']') + "}"));
  write("truncated", text(R"({"pid":1,"sandboxes":{"a":{)"));
}

void control_corpus() {
  write("status", text(R"({"cmd":"status"})"));
  write("down", text(R"({"cmd": "down"})"));
  write("unknown", text(R"({"cmd":"reboot"})"));
  write("cmd_number", text(R"({"cmd":1})"));
  write("cmd_null", text(R"({"cmd":null})"));
  write("no_cmd", text(R"({"command":"status"})"));
  write("array", text(R"(["status"])"));
  write("string", text(R"("status")"));
  write("empty", Bytes{});
  write("not_json", text("status"));
  write("trailing_garbage", text(R"({"cmd":"status"}x)"));
  write("two_objects", text(R"({"cmd":"status"}{"cmd":"down"})"));
  write("invalid_utf8_in_cmd", text("{\"cmd\":\"\xc3\x28\"}"));
  write("unicode_cmd", text(R"({"cmd":"st\u0061tus"})"));
  write("unknown_cmd_with_escapes", text(R"({"cmd":"\u0000\n\"x"})"));
  write("duplicate_cmd", text(R"({"cmd":"down","cmd":"status"})"));
  write("deep_nesting", text("{\"cmd\":\"status\",\"x\":" + std::string(500, '[') + std::string(500, ']') + "}"));
  write("nul_in_line", Bytes{'{', 0, '}'});
}

// ForwardTcp frames from the gateway (fuzz/frame_check.h): a response
// x-osh-tunnel-ext value, NUL, one frame in protobuf wire format, encoded
// here by hand (field 1 init, field 2 data, length-delimited).
Bytes pb_field(uint8_t tag, const Bytes& body) {
  Bytes b{tag};
  size_t n = body.size();
  do {
    b.push_back(static_cast<uint8_t>((n & 0x7f) | (n > 0x7f ? 0x80 : 0)));
    n >>= 7;
  } while (n);
  return b + body;
}

void frame_entry(const std::string& name, const std::string& header, const Bytes& frame) {
  write(name, text(header) + Bytes{0} + frame);
}

void frame_corpus() {
  const Bytes data = pb_field(0x12, text("hello"));
  frame_entry("data", "", data);
  frame_entry("data_all_extensions", "connect-ack,fin-frame,relay-error", data);
  frame_entry("empty_data_without_fin_frame", "connect-ack", pb_field(0x12, {}));
  frame_entry("empty_data_is_fin", "fin-frame", pb_field(0x12, {}));
  frame_entry("header_case_and_blanks", " FIN-Frame ,\tConnect-ACK,,unknown, relay-error ", data);
  frame_entry("header_only_commas", ",,,", data);
  frame_entry("no_payload", "fin-frame", Bytes{});
  frame_entry("init_from_gateway", "", pb_field(0x0a, pb_field(0x0a, text("sbx"))));
  frame_entry("init_then_data", "", pb_field(0x0a, {}) + data);
  frame_entry("data_then_init", "fin-frame", data + pb_field(0x0a, {}));
  frame_entry("two_data_fields", "", data + pb_field(0x12, text("second")));
  frame_entry("unknown_field", "", pb_field(0x1a, text("x")) + data);
  frame_entry("data_as_varint", "", Bytes{0x10, 0x05});
  frame_entry("length_past_the_end", "", Bytes{0x12, 0x10, 'a'});
  frame_entry("length_varint_huge", "", Bytes{0x12, 0xff, 0xff, 0xff, 0xff, 0x0f});
  frame_entry("truncated_varint", "", Bytes{0x12, 0x80});
  frame_entry("field_zero", "", Bytes{0x02, 0x00});
  frame_entry("group_start", "", Bytes{0x13});
  frame_entry("data_64k", "", pb_field(0x12, Bytes(65536, 'x')));
  write("header_without_nul", text("connect-ack,fin-frame"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s packet|stack|config|hosts|ssh_config|state|control|frame DIR\n", argv[0]);
    return 2;
  }
  g_dir = argv[2];
  const std::string what = argv[1];
  if (what == "packet") packet_corpus();
  else if (what == "stack") stack_corpus();
  else if (what == "config") config_corpus();
  else if (what == "hosts") hosts_corpus();
  else if (what == "ssh_config") ssh_config_corpus();
  else if (what == "state") state_corpus();
  else if (what == "control") control_corpus();
  else if (what == "frame") frame_corpus();
  else {
    std::fprintf(stderr, "make_corpora: unknown corpus %s\n", argv[1]);
    return 2;
  }
  return 0;
}

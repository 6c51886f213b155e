// Theory of operation: the packet gate
// ====================================
//
//   packet ──► classify() ──► malformed / fragment ─────────────────► drop (counted)
//                 │ checksums (SYN, ICMP, UDP; IPv4 header always) ──► drop_malformed
//                 │ source is a served or DNS address ──────────────► drop_malformed
//                 │ UDP :53 to a DNS address ───────────────────────► kDns
//                 │ destination not served ─────────────────────────► drop_not_sandbox
//                 │ ICMP echo ──────────────────────────────────────► kEcho
//                 │ not TCP ────────────────────────────────────────► drop_unsupported
//                 │ SYN without ACK (with FIN or RST: malformed) ───► kSyn (the SYN gate)
//                 └ any other TCP ──────────────────────────────────► kSegment (lwIP)
//
// The order matters and is the stack's contract (fuzz/stack_harness.cc and
// the corpus replay tests check the counters it implies).
#include "stack/gate.h"

#include <algorithm>

namespace osh::stack {

Verdict judge(std::span<const uint8_t> pkt, const RouteTable& routes,
              const std::vector<IpAddress>& dns_addrs, bool dns_on) {
  Verdict v;
  v.p = classify(pkt);
  const Parsed& p = v.p;
  switch (p.kind) {
    case Parsed::Kind::kMalformed: v.kind = Verdict::Kind::kDropMalformed; return v;
    case Parsed::Kind::kFragment: v.kind = Verdict::Kind::kDropFragment; return v;
    default: break;
  }
  const bool syn_only = p.kind == Parsed::Kind::kTcp && (p.tcp_flags & (kSyn | kAck)) == kSyn;
  if ((p.kind != Parsed::Kind::kTcp || syn_only) ? !checksums_ok(pkt, p) : !ip_header_checksum_ok(pkt, p)) {
    v.kind = Verdict::Kind::kDropMalformed;
    return v;
  }
  const auto is_dns = [&](const IpAddress& a) {
    return std::find(dns_addrs.begin(), dns_addrs.end(), a) != dns_addrs.end();
  };
  if (routes.contains(p.src) || is_dns(p.src)) {
    v.kind = Verdict::Kind::kDropMalformed;
    return v;
  }
  if (p.kind == Parsed::Kind::kUdp && p.dport == 53 && dns_on && is_dns(p.dst)) {
    v.kind = Verdict::Kind::kDns;
    return v;
  }
  if (!routes.contains(p.dst)) {
    v.kind = Verdict::Kind::kDropNotSandbox;
    return v;
  }
  if (p.kind == Parsed::Kind::kIcmpEcho) {
    v.kind = Verdict::Kind::kEcho;
    return v;
  }
  if (p.kind != Parsed::Kind::kTcp) {
    v.kind = Verdict::Kind::kDropUnsupported;
    return v;
  }
  if (syn_only) {
    v.kind = (p.tcp_flags & (kRst | kFin)) ? Verdict::Kind::kDropMalformed : Verdict::Kind::kSyn;
    return v;
  }
  v.kind = Verdict::Kind::kSegment;
  return v;
}

bool judge_output(std::span<uint8_t> pkt, const RouteTable& routes, uint32_t mtu) {
  // lwIP's output is well-formed by construction (it built the headers): no
  // classify() per packet, only the version and the source address at their
  // fixed offsets. The full parse only for a SYN-ACK (one per connection).
  constexpr uint8_t kProtoTcp = 6;
  IpAddress src;
  uint8_t proto = 0;
  size_t l4 = 0;  // offset of the transport header
  if (pkt.size() >= 20 && (pkt[0] >> 4) == 4) {
    src = IpAddress::v4(&pkt[12]);
    proto = pkt[9];
    l4 = static_cast<size_t>(pkt[0] & 0x0f) * 4;
  } else if (pkt.size() >= 40 && (pkt[0] >> 4) == 6) {
    src = IpAddress::v6(&pkt[8]);
    proto = pkt[6];  // lwIP adds no extension header to TCP
    l4 = 40;
  } else {
    return false;
  }
  if (!routes.contains(src)) return false;
  if (mtu > 1500 && proto == kProtoTcp && pkt.size() >= l4 + 20 && (pkt[l4 + 13] & (kSyn | kAck)) == (kSyn | kAck)) {
    const Parsed ps = classify(pkt);
    if (ps.kind != Parsed::Kind::kTcp) return false;
    const uint16_t link_mss = static_cast<uint16_t>(mtu - (ps.src.is_v6() ? 60 : 40));
    rewrite_tcp_mss(pkt, ps, link_mss);
  }
  return true;
}

}  // namespace osh::stack

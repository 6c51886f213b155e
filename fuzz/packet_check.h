// The contract of stack/packet.h as executable checks, shared by the fuzz
// harness (fuzz/packet_fuzz.cc) and the corpus replay in the normal build
// (tests/stack/corpus_replay_test.cc), plus the checksum helpers the stack
// harness uses to build and verify packets.
//
// check_packet() runs the checksum offload's helpers (check_vnet) and
// classify() on one packet and, for whatever it accepts,
// the builder the stack would use on it (make_rst_for_syn and
// make_unreachable for TCP, make_echo_reply for echo requests,
// make_udp_reply for UDP), and returns the first broken rule:
//   - classify: the lengths it reports lie inside the buffer and agree with
//     each other; bytes past the IP total length change nothing;
//   - every crafted packet re-classifies as what it is, with addresses and
//     ports swapped, the fields RFC 9293 §3.10.7.1 / RFC 792 / RFC 4443 §4.2
//     / RFC 768 require, a valid IPv4 header checksum and a valid transport
//     checksum, and a size within the minimum MTU for ICMP errors.
// Reads out of bounds are left to AddressSanitizer.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "stack/packet.h"
#include "stack/vnet.h"

namespace osh::fuzz {

using stack::Parsed;

inline uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline uint32_t rd32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
inline void wr16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void wr32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

/// ipv4_header_checksum_ok() - RFC 791 header checksum of an IPv4 packet
/// classify() accepted (true for IPv6, which has none).
inline bool ipv4_header_checksum_ok(std::span<const uint8_t> pkt, const Parsed& p) {
  if (!p.src.is_v4()) return true;
  return stack::checksum_fold(stack::checksum_add(0, pkt.first(p.ip_header_len))) == 0;
}

/// Offset in the transport header of its checksum field; 0 = no checksum we check.
inline size_t checksum_field(uint8_t protocol) {
  switch (protocol) {
    case 6: return 16;   // TCP
    case 17: return 6;   // UDP
    case 1: return 2;    // ICMP
    case 58: return 2;   // ICMPv6
    default: return 0;
  }
}

/// Sum over the pseudo-header (RFC 9293 §3.1, RFC 768, RFC 8200 §8.1);
/// ICMPv4 has none.
inline uint32_t pseudo_sum(const Parsed& p, size_t l4_len) {
  if (p.protocol == 1) return 0;
  uint32_t sum = stack::checksum_add(0, {p.src.bytes.data(), p.src.size()});
  sum = stack::checksum_add(sum, {p.dst.bytes.data(), p.dst.size()});
  sum += p.protocol;
  sum += static_cast<uint32_t>(l4_len & 0xffff) + static_cast<uint32_t>(l4_len >> 16);
  return sum;
}

/// transport_checksum_ok() - the TCP/UDP/ICMP/ICMPv6 checksum of a packet
/// classify() accepted (not kMalformed/kFragment) is valid. A zero UDP
/// checksum over IPv4 means "none" (RFC 768) and passes; over IPv6 it is
/// invalid (RFC 8200 §8.1). Other protocols pass.
inline bool transport_checksum_ok(std::span<const uint8_t> pkt, const Parsed& p) {
  const size_t field = checksum_field(p.protocol);
  if (field == 0) return true;
  const size_t l4_len = p.total_len - p.ip_header_len;
  if (l4_len < field + 2) return false;
  const auto l4 = pkt.subspan(p.ip_header_len, l4_len);
  if (p.protocol == 17 && p.src.is_v4() && rd16(&l4[6]) == 0) return true;
  return stack::checksum_fold(stack::checksum_add(pseudo_sum(p, l4_len), l4)) == 0;
}

/// fix_checksums() - rewrites the IPv4 header checksum and the transport
/// checksum of `pkt` so that both are valid, if classify() accepts it and the
/// transport header holds its checksum field. Used by the stack harness to
/// let fuzzed packets past lwIP's checksum test.
inline void fix_checksums(std::vector<uint8_t>& pkt) {
  const Parsed p = stack::classify(pkt);
  if (p.kind == Parsed::Kind::kMalformed) return;
  if (p.src.is_v4()) {
    wr16(&pkt[10], 0);
    wr16(&pkt[10], stack::checksum_fold(stack::checksum_add(0, {pkt.data(), p.ip_header_len})));
  }
  if (p.kind == Parsed::Kind::kFragment) return;
  const size_t field = checksum_field(p.protocol);
  const size_t l4_len = p.total_len - p.ip_header_len;
  if (field == 0 || l4_len < field + 2) return;
  uint8_t* l4 = pkt.data() + p.ip_header_len;
  wr16(l4 + field, 0);
  uint16_t sum = stack::checksum_fold(stack::checksum_add(pseudo_sum(p, l4_len), {l4, l4_len}));
  if (p.protocol == 17 && sum == 0) sum = 0xffff;
  wr16(l4 + field, sum);
}

inline bool same_parse(const Parsed& a, const Parsed& b) {
  return a.kind == b.kind && a.src == b.src && a.dst == b.dst &&
         a.ip_header_len == b.ip_header_len && a.total_len == b.total_len &&
         a.protocol == b.protocol && a.sport == b.sport && a.dport == b.dport && a.seq == b.seq &&
         a.ack == b.ack && a.tcp_flags == b.tcp_flags && a.tcp_payload_len == b.tcp_payload_len &&
         a.udp_payload_off == b.udp_payload_off && a.udp_payload_len == b.udp_payload_len;
}

/// check_crafted() - the rules every packet the tunnel builds itself obeys:
/// classify() accepts it whole (total length = size), valid checksums.
inline std::string check_crafted(const char* what, std::span<const uint8_t> out,
                                 const Parsed& r) {
  const std::string w = what;
  if (r.kind == Parsed::Kind::kMalformed) return w + ": does not classify";
  if (r.kind == Parsed::Kind::kFragment) return w + ": classifies as a fragment";
  if (r.total_len != out.size()) return w + ": IP length differs from its size";
  if (!ipv4_header_checksum_ok(out, r)) return w + ": bad IPv4 header checksum";
  if (!transport_checksum_ok(out, r)) return w + ": bad transport checksum";
  return "";
}

/// check_packet() - runs classify() and the builders on one packet as
/// described at the top of this file. Return: "" or the first broken rule.
/// Thread: any.
/// The checksum offload's rules (stack/vnet.h) on one input: the same bytes
/// read as a virtio-net header and a packet stay inside the buffer; a TCP
/// segment given the partial checksum and then completed (as the kernel
/// would) carries a valid checksum.
inline std::string check_vnet(std::span<const uint8_t> pkt, const Parsed& p) {
  std::vector<uint8_t> read(pkt.begin(), pkt.end());
  const stack::VnetInput in = stack::vnet_input(read);
  if (in.kind == stack::VnetInput::Kind::kPacket &&
      (in.packet.data() != read.data() + stack::VnetHeader::kSize ||
       in.packet.size() != read.size() - stack::VnetHeader::kSize))
    return "vnet_input: the packet is not the bytes after the header";
  if (p.kind != Parsed::Kind::kTcp) return "";
  std::vector<uint8_t> seg(pkt.begin(), pkt.begin() + static_cast<long>(p.total_len));
  const stack::VnetHeader h = stack::partial_tcp_checksum(seg);
  if (h.flags != stack::VnetHeader::kNeedsCsum || h.csum_start != p.ip_header_len || h.csum_offset != 16)
    return "partial_tcp_checksum: no NEEDS_CSUM header for a TCP segment";
  if (!stack::complete_partial_checksum(seg, h.csum_start, h.csum_offset))
    return "complete_partial_checksum: refused its own header";
  if (!stack::checksums_ok(seg, p) && stack::ip_header_checksum_ok(seg, p))
    return "partial checksum, completed, is not valid";
  return "";
}

inline std::string check_packet(std::span<const uint8_t> pkt) {
  const Parsed p = stack::classify(pkt);
  if (auto e = check_vnet(pkt, p); !e.empty()) return e;
  if (p.kind == Parsed::Kind::kMalformed) return "";
  // The lengths classify reports.
  const uint8_t version = pkt[0] >> 4;
  const int family = version == 4 ? AF_INET : AF_INET6;
  if (p.src.family != family || p.dst.family != family) return "classify: family != version";
  if (p.total_len > pkt.size()) return "classify: total_len past the buffer";
  if (p.ip_header_len > p.total_len) return "classify: header longer than the packet";
  if (p.ip_header_len < (version == 4 ? 20u : 40u)) return "classify: header too short";
  if (p.protocol != (version == 4 ? pkt[9] : pkt[6])) return "classify: protocol != header";
  const size_t l4_len = p.total_len - p.ip_header_len;
  switch (p.kind) {
    case Parsed::Kind::kTcp:
      if (p.protocol != 6 || l4_len < 20) return "classify: TCP without a full header";
      if (p.tcp_payload_len + 20 > l4_len) return "classify: TCP payload past the segment";
      break;
    case Parsed::Kind::kUdp:
      if (p.protocol != 17) return "classify: UDP kind for another protocol";
      if (p.udp_payload_off != p.ip_header_len + 8) return "classify: UDP payload offset";
      if (p.udp_payload_off + p.udp_payload_len > p.total_len) return "classify: UDP payload past the packet";
      break;
    case Parsed::Kind::kIcmpEcho:
      if (p.protocol != (version == 4 ? 1 : 58) || l4_len < 8) return "classify: echo without a full header";
      break;
    default:
      break;
  }
  // Bytes after the IP total length (link padding) change nothing.
  if (!same_parse(p, stack::classify(pkt.first(p.total_len))))
    return "classify: trailing bytes change the result";
  std::vector<uint8_t> padded(pkt.begin(), pkt.end());
  padded.push_back(0xa5);
  if (!same_parse(p, stack::classify(padded))) return "classify: a trailing byte changes the result";

  if (p.kind == Parsed::Kind::kTcp) {
    const std::vector<uint8_t> rst = stack::make_rst_for_syn(p);
    const Parsed r = stack::classify(rst);
    if (auto e = check_crafted("rst", rst, r); !e.empty()) return e;
    if (r.kind != Parsed::Kind::kTcp) return "rst: not TCP";
    if (r.src != p.dst || r.dst != p.src || r.sport != p.dport || r.dport != p.sport)
      return "rst: addresses or ports not swapped";
    if (r.tcp_flags != (stack::kRst | stack::kAck) || r.seq != 0 || r.tcp_payload_len != 0)
      return "rst: not a bare RST|ACK with seq 0";
    if (r.ack != p.seq + 1 + static_cast<uint32_t>(p.tcp_payload_len))
      return "rst: ack does not cover the SYN and its data";

    const std::vector<uint8_t> icmp = stack::make_unreachable(pkt, p);
    const Parsed u = stack::classify(icmp);
    if (auto e = check_crafted("unreachable", icmp, u); !e.empty()) return e;
    if (u.kind != Parsed::Kind::kOther || u.protocol != (version == 4 ? 1 : 58))
      return "unreachable: not an ICMP error";
    if (u.src != p.dst || u.dst != p.src) return "unreachable: addresses not swapped";
    if (icmp.size() > (version == 4 ? 576u : 1280u)) return "unreachable: larger than the minimum MTU";
    const uint8_t* m = icmp.data() + u.ip_header_len;
    if (m[0] != (version == 4 ? 3 : 1) || m[1] != (version == 4 ? 1 : 3))
      return "unreachable: wrong type or code";
    const size_t quote = icmp.size() - u.ip_header_len - 8;
    if (quote != std::min<size_t>(p.total_len, version == 4 ? 548 : 1232))
      return "unreachable: quotes too little or too much";
    if (!std::equal(m + 8, m + 8 + quote, pkt.begin())) return "unreachable: quote differs";
  }
  if (p.kind == Parsed::Kind::kIcmpEcho) {
    const std::vector<uint8_t> reply = stack::make_echo_reply(pkt, p);
    const Parsed r = stack::classify(reply);
    if (auto e = check_crafted("echo reply", reply, r); !e.empty()) return e;
    if (r.kind != Parsed::Kind::kOther) return "echo reply: classifies as a request";
    if (r.src != p.dst || r.dst != p.src) return "echo reply: addresses not swapped";
    if (reply.size() - r.ip_header_len != l4_len) return "echo reply: length differs";
    const uint8_t* m = reply.data() + r.ip_header_len;
    const uint8_t* q = pkt.data() + p.ip_header_len;
    if (m[0] != (version == 4 ? 0 : 129) || m[1] != 0) return "echo reply: wrong type or code";
    if (!std::equal(m + 4, m + l4_len, q + 4)) return "echo reply: id, sequence or data differ";
  }
  if (p.kind == Parsed::Kind::kUdp) {
    const auto payload = pkt.subspan(p.udp_payload_off, p.udp_payload_len);
    const std::vector<uint8_t> reply = stack::make_udp_reply(p, payload);
    const Parsed r = stack::classify(reply);
    if (auto e = check_crafted("udp reply", reply, r); !e.empty()) return e;
    if (r.kind != Parsed::Kind::kUdp) return "udp reply: not UDP";
    if (r.src != p.dst || r.dst != p.src || r.sport != p.dport || r.dport != p.sport)
      return "udp reply: addresses or ports not swapped";
    if (rd16(reply.data() + r.ip_header_len + 6) == 0) return "udp reply: zero checksum";
    if (r.udp_payload_len != payload.size() ||
        !std::equal(payload.begin(), payload.end(), reply.begin() + static_cast<long>(r.udp_payload_off)))
      return "udp reply: payload differs";
  }
  return "";
}

}  // namespace osh::fuzz

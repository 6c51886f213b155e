// Theory of operation: the TUN reader classifies every packet before lwIP
// sees it. classify() walks the IPv4 header (RFC 791) or the IPv6 fixed
// header (RFC 8200) and then the TCP (RFC 9293) or ICMP header, checking
// every length against the buffer, so a hostile packet can only ever be
// classified kMalformed. IPv4 fragments and IPv6 extension headers are not
// reassembled or walked: they are reported as kFragment/kOther and dropped by
// the caller (counted). The make_* functions build complete IP packets with
// valid checksums, for the answers the tunnel gives without lwIP.
#include "stack/packet.h"

#include <arpa/inet.h>

#include <cstring>

namespace osh::stack {
namespace {

constexpr uint8_t kProtoIcmp = 1;
constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kProtoIcmp6 = 58;
constexpr uint8_t kIp6Frag = 44;

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t rd32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
void wr16(uint8_t* p, uint16_t v) { p[0] = static_cast<uint8_t>(v >> 8); p[1] = static_cast<uint8_t>(v); }
void wr32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24); p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8); p[3] = static_cast<uint8_t>(v);
}

// Writes an IP header for `payload_len` bytes of `proto` at the front of
// `out` (which must be sized), returning the header length.
size_t write_ip_header(std::vector<uint8_t>& out, const IpAddress& src, const IpAddress& dst,
                       uint8_t proto, size_t payload_len) {
  if (src.is_v4()) {
    uint8_t* h = out.data();
    h[0] = 0x45; h[1] = 0;
    wr16(h + 2, static_cast<uint16_t>(20 + payload_len));
    wr16(h + 4, 0); wr16(h + 6, 0x4000);  // DF
    h[8] = 64; h[9] = proto;
    wr16(h + 10, 0);
    std::memcpy(h + 12, src.bytes.data(), 4);
    std::memcpy(h + 16, dst.bytes.data(), 4);
    wr16(h + 10, checksum_fold(checksum_add(0, {h, 20})));
    return 20;
  }
  uint8_t* h = out.data();
  h[0] = 0x60; h[1] = 0; h[2] = 0; h[3] = 0;
  wr16(h + 4, static_cast<uint16_t>(payload_len));
  h[6] = proto; h[7] = 64;
  std::memcpy(h + 8, src.bytes.data(), 16);
  std::memcpy(h + 24, dst.bytes.data(), 16);
  return 40;
}

}  // namespace

size_t FlowKeyHash::operator()(const FlowKey& k) const noexcept {
  IpAddressHash h;
  return h(k.src) * 31 + h(k.dst) * 17 + (size_t{k.sport} << 16) + k.dport;
}

std::string FlowKey::to_string() const {
  return host_port(src, sport) + " -> " + host_port(dst, dport);
}

uint32_t checksum_add(uint32_t sum, std::span<const uint8_t> d) {
  size_t i = 0;
  for (; i + 1 < d.size(); i += 2) sum += static_cast<uint32_t>((d[i] << 8) | d[i + 1]);
  if (i < d.size()) sum += static_cast<uint32_t>(d[i] << 8);
  return sum;
}

uint32_t pseudo_sum(const IpAddress& src, const IpAddress& dst, uint8_t proto, size_t len) {
  uint32_t sum = checksum_add(0, {src.bytes.data(), src.size()});
  sum = checksum_add(sum, {dst.bytes.data(), dst.size()});
  sum += proto;
  sum += static_cast<uint32_t>(len & 0xffff) + static_cast<uint32_t>(len >> 16);
  return sum;
}

uint16_t checksum_fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}

Parsed classify(std::span<const uint8_t> pkt) {
  Parsed p;
  if (pkt.empty()) return p;
  const uint8_t version = pkt[0] >> 4;
  size_t l4_off = 0;
  if (version == 4) {
    if (pkt.size() < 20) return p;
    const size_t ihl = size_t{static_cast<uint8_t>(pkt[0] & 0x0f)} * 4;
    const size_t tot = rd16(&pkt[2]);
    if (ihl < 20 || tot < ihl || tot > pkt.size()) return p;
    p.src = IpAddress::v4(&pkt[12]);
    p.dst = IpAddress::v4(&pkt[16]);
    p.ip_header_len = ihl;
    p.total_len = tot;
    p.protocol = pkt[9];
    const uint16_t frag = rd16(&pkt[6]);
    if ((frag & 0x2000) || (frag & 0x1fff)) { p.kind = Parsed::Kind::kFragment; return p; }
    l4_off = ihl;
  } else if (version == 6) {
    if (pkt.size() < 40) return p;
    const size_t plen = rd16(&pkt[4]);
    if (40 + plen > pkt.size()) return p;
    p.src = IpAddress::v6(&pkt[8]);
    p.dst = IpAddress::v6(&pkt[24]);
    p.ip_header_len = 40;
    p.total_len = 40 + plen;
    p.protocol = pkt[6];
    if (p.protocol == kIp6Frag) { p.kind = Parsed::Kind::kFragment; return p; }
    l4_off = 40;
  } else {
    return p;
  }
  const uint8_t* l4 = pkt.data() + l4_off;
  const size_t l4_len = p.total_len - l4_off;
  switch (p.protocol) {
    case kProtoTcp: {
      if (l4_len < 20) return p;
      const size_t doff = size_t{static_cast<uint8_t>(l4[12] >> 4)} * 4;
      if (doff < 20 || doff > l4_len) return p;
      p.sport = rd16(l4);
      p.dport = rd16(l4 + 2);
      p.seq = rd32(l4 + 4);
      p.ack = rd32(l4 + 8);
      p.tcp_flags = l4[13];
      p.tcp_payload_len = l4_len - doff;
      p.kind = Parsed::Kind::kTcp;
      return p;
    }
    case kProtoUdp: {
      if (l4_len < 8) return p;
      const size_t ulen = rd16(l4 + 4);
      if (ulen < 8 || ulen > l4_len) return p;
      p.sport = rd16(l4);
      p.dport = rd16(l4 + 2);
      p.udp_payload_off = l4_off + 8;
      p.udp_payload_len = ulen - 8;
      p.kind = Parsed::Kind::kUdp;
      return p;
    }
    case kProtoIcmp:
      if (version != 4 || l4_len < 8) return p;
      p.kind = (l4[0] == 8 && l4[1] == 0) ? Parsed::Kind::kIcmpEcho : Parsed::Kind::kOther;
      return p;
    case kProtoIcmp6:
      if (version != 6 || l4_len < 8) return p;
      p.kind = (l4[0] == 128 && l4[1] == 0) ? Parsed::Kind::kIcmpEcho : Parsed::Kind::kOther;
      return p;
    default:
      p.kind = Parsed::Kind::kOther;
      return p;
  }
}

bool ip_header_checksum_ok(std::span<const uint8_t> pkt, const Parsed& p) {
  return !p.src.is_v4() || checksum_fold(checksum_add(0, pkt.first(p.ip_header_len))) == 0;
}

bool checksums_ok(std::span<const uint8_t> pkt, const Parsed& p) {
  if (!ip_header_checksum_ok(pkt, p)) return false;
  size_t field = 0;
  switch (p.protocol) {
    case kProtoTcp: field = 16; break;
    case kProtoUdp: field = 6; break;
    case kProtoIcmp: field = 2; break;
    case kProtoIcmp6: field = 2; break;
    default: return true;
  }
  const size_t l4_len = p.total_len - p.ip_header_len;
  if (l4_len < field + 2) return false;
  const auto l4 = pkt.subspan(p.ip_header_len, l4_len);
  if (p.protocol == kProtoUdp && p.src.is_v4() && rd16(&l4[6]) == 0) return true;
  const uint32_t sum = p.protocol == kProtoIcmp ? 0 : pseudo_sum(p.src, p.dst, p.protocol, l4_len);
  return checksum_fold(checksum_add(sum, l4)) == 0;
}

namespace {
// Offset of the MSS option's value in `pkt`, or 0.
size_t mss_option_offset(std::span<const uint8_t> pkt, const Parsed& p) {
  if (p.kind != Parsed::Kind::kTcp) return 0;
  const size_t t = p.ip_header_len;
  const size_t doff = size_t{static_cast<uint8_t>(pkt[t + 12] >> 4)} * 4;
  size_t i = t + 20;
  const size_t end = t + doff;
  while (i < end) {
    const uint8_t kind = pkt[i];
    if (kind == 0) break;      // end of options
    if (kind == 1) { ++i; continue; }  // NOP
    if (i + 1 >= end) break;
    const uint8_t len = pkt[i + 1];
    if (len < 2 || i + len > end) break;
    if (kind == 2 && len == 4) return i + 2;
    i += len;
  }
  return 0;
}
}  // namespace

uint16_t tcp_mss_option(std::span<const uint8_t> pkt, const Parsed& p) {
  const size_t off = mss_option_offset(pkt, p);
  return off ? rd16(&pkt[off]) : 0;
}

bool rewrite_tcp_mss(std::span<uint8_t> pkt, const Parsed& p, uint16_t mss) {
  const size_t off = mss_option_offset(pkt, p);
  if (!off) return false;
  wr16(&pkt[off], mss);
  uint8_t* t = pkt.data() + p.ip_header_len;
  const size_t l4_len = p.total_len - p.ip_header_len;
  wr16(t + 16, 0);
  wr16(t + 16, checksum_fold(checksum_add(pseudo_sum(p.src, p.dst, kProtoTcp, l4_len), {t, l4_len})));
  return true;
}

std::vector<uint8_t> make_rst_for_syn(const Parsed& syn) {
  const size_t iphl = syn.dst.is_v4() ? 20 : 40;
  std::vector<uint8_t> out(iphl + 20, 0);
  write_ip_header(out, syn.dst, syn.src, kProtoTcp, 20);
  uint8_t* t = out.data() + iphl;
  wr16(t, syn.dport);
  wr16(t + 2, syn.sport);
  wr32(t + 4, 0);
  // RFC 9293 §3.10.7.1: ack covers the SYN (and any data it carried).
  wr32(t + 8, syn.seq + 1 + static_cast<uint32_t>(syn.tcp_payload_len));
  t[12] = 5 << 4;
  t[13] = kRst | kAck;
  wr16(t + 14, 0);
  uint32_t sum = pseudo_sum(syn.dst, syn.src, kProtoTcp, 20);
  wr16(t + 16, checksum_fold(checksum_add(sum, {t, 20})));
  return out;
}

std::vector<uint8_t> make_unreachable(std::span<const uint8_t> pkt, const Parsed& p) {
  // Quote as much of the offending packet as fits in the minimum MTU
  // (RFC 1812 §4.3.2.3 for IPv4: at least header + 8 bytes; RFC 4443 §3.1:
  // as much as fits in 1280 bytes).
  const bool v4 = p.src.is_v4();
  const size_t iphl = v4 ? 20 : 40;
  const size_t quote = std::min(p.total_len, v4 ? size_t{548} : size_t{1280 - 48});
  std::vector<uint8_t> out(iphl + 8 + quote, 0);
  write_ip_header(out, p.dst, p.src, v4 ? kProtoIcmp : kProtoIcmp6, 8 + quote);
  uint8_t* m = out.data() + iphl;
  m[0] = v4 ? 3 : 1;  // destination unreachable
  m[1] = v4 ? 1 : 3;  // host unreachable / address unreachable
  std::memcpy(m + 8, pkt.data(), quote);
  uint32_t sum = v4 ? 0 : pseudo_sum(p.dst, p.src, kProtoIcmp6, 8 + quote);
  wr16(m + 2, checksum_fold(checksum_add(sum, {m, 8 + quote})));
  return out;
}

std::vector<uint8_t> make_udp_reply(const Parsed& req, std::span<const uint8_t> payload) {
  const size_t iphl = req.src.is_v4() ? 20 : 40;
  const size_t ulen = 8 + payload.size();
  std::vector<uint8_t> out(iphl + ulen, 0);
  write_ip_header(out, req.dst, req.src, kProtoUdp, ulen);
  uint8_t* u = out.data() + iphl;
  wr16(u, req.dport);
  wr16(u + 2, req.sport);
  wr16(u + 4, static_cast<uint16_t>(ulen));
  std::memcpy(u + 8, payload.data(), payload.size());
  uint16_t sum = checksum_fold(checksum_add(pseudo_sum(req.dst, req.src, kProtoUdp, ulen), {u, ulen}));
  wr16(u + 6, sum == 0 ? 0xffff : sum);  // 0 means "no checksum" in UDP
  return out;
}

std::vector<uint8_t> make_echo_reply(std::span<const uint8_t> pkt, const Parsed& p) {
  const bool v4 = p.src.is_v4();
  const size_t iphl = v4 ? 20 : 40;
  const size_t icmp_len = p.total_len - p.ip_header_len;
  std::vector<uint8_t> out(iphl + icmp_len, 0);
  write_ip_header(out, p.dst, p.src, v4 ? kProtoIcmp : kProtoIcmp6, icmp_len);
  uint8_t* m = out.data() + iphl;
  std::memcpy(m, pkt.data() + p.ip_header_len, icmp_len);
  m[0] = v4 ? 0 : 129;
  m[2] = m[3] = 0;
  uint32_t sum = v4 ? 0 : pseudo_sum(p.dst, p.src, kProtoIcmp6, icmp_len);
  wr16(m + 2, checksum_fold(checksum_add(sum, {m, icmp_len})));
  return out;
}

}  // namespace osh::stack

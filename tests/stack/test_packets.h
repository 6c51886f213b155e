// Builds well-formed IPv4/IPv6 TCP, UDP and ICMP echo packets with valid
// checksums for the gate and state-machine unit tests (no lwIP).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "stack/packet.h"

namespace osh::stack::testing {

/// The addresses the unit tests use: client 198.18.0.1 / fd00::1, served
/// 198.18.0.10 / fd00::10, DNS 198.18.0.2.
inline IpAddress addr(const char* text) { return *IpAddress::parse(text); }

struct TcpSpec {
  IpAddress src = addr("198.18.0.1"), dst = addr("198.18.0.10");
  uint16_t sport = 40000, dport = 80;
  uint32_t seq = 1000, ack = 0;
  uint8_t flags = kSyn;
  uint16_t mss = 0;  ///< MSS option if non-zero
  std::string payload;
};

inline void put16(uint8_t* p, uint16_t v) { p[0] = static_cast<uint8_t>(v >> 8); p[1] = static_cast<uint8_t>(v); }
inline void put32(uint8_t* p, uint32_t v) { put16(p, static_cast<uint16_t>(v >> 16)); put16(p + 2, static_cast<uint16_t>(v)); }

/// An IP header for @l4_len bytes of protocol @proto, then the L4 bytes; the
/// transport checksum at @csum_off (from the L4 start) is filled in (ICMPv4:
/// without pseudo header).
inline std::vector<uint8_t> ip_packet(const IpAddress& src, const IpAddress& dst, uint8_t proto,
                                      std::vector<uint8_t> l4, size_t csum_off) {
  const bool v6 = src.is_v6();
  const size_t hl = v6 ? 40 : 20;
  std::vector<uint8_t> out(hl, 0);
  if (v6) {
    out[0] = 0x60;
    put16(&out[4], static_cast<uint16_t>(l4.size()));
    out[6] = proto;
    out[7] = 64;
    std::copy(src.bytes.begin(), src.bytes.end(), out.begin() + 8);
    std::copy(dst.bytes.begin(), dst.bytes.end(), out.begin() + 24);
  } else {
    out[0] = 0x45;
    put16(&out[2], static_cast<uint16_t>(20 + l4.size()));
    out[8] = 64;
    out[9] = proto;
    std::copy(src.bytes.begin(), src.bytes.begin() + 4, out.begin() + 12);
    std::copy(dst.bytes.begin(), dst.bytes.begin() + 4, out.begin() + 16);
    put16(&out[10], checksum_fold(checksum_add(0, {out.data(), 20})));
  }
  uint32_t sum = 0;
  if (proto != 1) {
    sum = checksum_add(sum, {src.bytes.data(), src.size()});
    sum = checksum_add(sum, {dst.bytes.data(), dst.size()});
    sum += proto;
    sum += static_cast<uint32_t>(l4.size());
  }
  put16(&l4[csum_off], 0);
  put16(&l4[csum_off], checksum_fold(checksum_add(sum, l4)));
  out.insert(out.end(), l4.begin(), l4.end());
  return out;
}

inline std::vector<uint8_t> tcp(const TcpSpec& s) {
  const size_t opt = s.mss ? 4 : 0;
  std::vector<uint8_t> t(20 + opt, 0);
  put16(&t[0], s.sport);
  put16(&t[2], s.dport);
  put32(&t[4], s.seq);
  put32(&t[8], s.ack);
  t[12] = static_cast<uint8_t>(((20 + opt) / 4) << 4);
  t[13] = s.flags;
  put16(&t[14], 65535);
  if (s.mss) {
    t[20] = 2;
    t[21] = 4;
    put16(&t[22], s.mss);
  }
  t.insert(t.end(), s.payload.begin(), s.payload.end());
  return ip_packet(s.src, s.dst, 6, std::move(t), 16);
}

inline std::vector<uint8_t> udp(const IpAddress& src, const IpAddress& dst, uint16_t dport, const std::string& payload) {
  std::vector<uint8_t> u(8, 0);
  put16(&u[0], 5353);
  put16(&u[2], dport);
  put16(&u[4], static_cast<uint16_t>(8 + payload.size()));
  u.insert(u.end(), payload.begin(), payload.end());
  return ip_packet(src, dst, src.is_v6() ? 17 : 17, std::move(u), 6);
}

inline std::vector<uint8_t> echo_request(const IpAddress& src, const IpAddress& dst) {
  std::vector<uint8_t> m(8 + 4, 0);
  m[0] = src.is_v6() ? 128 : 8;
  put16(&m[4], 7);
  put16(&m[6], 1);
  m[8] = 'p';
  return ip_packet(src, dst, src.is_v6() ? 58 : 1, std::move(m), 2);
}

}  // namespace osh::stack::testing

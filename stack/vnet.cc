// Theory of operation: see vnet.h. The header's fields are native-endian
// (legacy virtio, which a TUN uses unless told otherwise); the packet's are
// network order.
#include "stack/vnet.h"

#include <cstring>

#include "stack/packet.h"

namespace osh::stack {
namespace {

constexpr uint8_t kProtoTcp = 6;
constexpr size_t kTcpChecksumOffset = 16;

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

uint16_t native16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

/// Offset of the TCP header and the TCP length of an IPv4/IPv6 TCP packet
/// whose headers start @h, or {0, 0} (also for an IPv4 fragment, whose TCP
/// header is in the first fragment only, and whose checksum covers the
/// reassembled segment).
struct TcpAt {
  size_t l4 = 0, len = 0;
};
TcpAt tcp_at(std::span<const uint8_t> h) {
  if (h.size() >= 20 && (h[0] >> 4) == 4 && h[9] == kProtoTcp) {
    const size_t ihl = static_cast<size_t>(h[0] & 0x0f) * 4;
    const size_t total = rd16(&h[2]);
    const bool fragment = (rd16(&h[6]) & 0x3fff) != 0;  // MF or a fragment offset (RFC 791 §3.1)
    if (!fragment && ihl >= 20 && total >= ihl + 20 && h.size() >= ihl + kTcpChecksumOffset + 2) return {ihl, total - ihl};
  } else if (h.size() >= 40 + kTcpChecksumOffset + 2 && (h[0] >> 4) == 6 && h[6] == kProtoTcp) {
    const size_t len = rd16(&h[4]);
    if (len >= 20) return {40, len};
  }
  return {};
}

}  // namespace

VnetHeader VnetHeader::parse(std::span<const uint8_t> b) noexcept {
  VnetHeader h;
  h.flags = b[0];
  h.gso_type = b[1];
  h.hdr_len = native16(&b[2]);
  h.gso_size = native16(&b[4]);
  h.csum_start = native16(&b[6]);
  h.csum_offset = native16(&b[8]);
  return h;
}

void VnetHeader::write(std::span<uint8_t, kSize> out) const noexcept {
  out[0] = flags;
  out[1] = gso_type;
  std::memcpy(&out[2], &hdr_len, 2);
  std::memcpy(&out[4], &gso_size, 2);
  std::memcpy(&out[6], &csum_start, 2);
  std::memcpy(&out[8], &csum_offset, 2);
}

bool complete_partial_checksum(std::span<uint8_t> pkt, size_t start, size_t offset) noexcept {
  if (start > pkt.size() || offset + 2 > pkt.size() - start) return false;
  const uint16_t c = checksum_fold(checksum_add(0, pkt.subspan(start)));
  pkt[start + offset] = static_cast<uint8_t>(c >> 8);
  pkt[start + offset + 1] = static_cast<uint8_t>(c);
  return true;
}

VnetInput vnet_input(std::span<uint8_t> read) noexcept {
  VnetInput in;
  if (read.size() < VnetHeader::kSize) return in;
  const VnetHeader h = VnetHeader::parse(read);
  if (h.gso_type != VnetHeader::kGsoNone) {
    in.kind = VnetInput::Kind::kGso;
    return in;
  }
  in.packet = read.subspan(VnetHeader::kSize);
  // A TCP segment without SYN whose checksum field is where the header
  // says: lwIP may skip the check (the gate does not check such segments).
  const TcpAt t = tcp_at(in.packet);
  const bool plain_segment = t.l4 != 0 && t.l4 + 13 < in.packet.size() && (in.packet[t.l4 + 13] & kSyn) == 0;
  if ((h.flags & VnetHeader::kNeedsCsum) != 0) {
    if (plain_segment && h.csum_start == t.l4 && h.csum_offset == kTcpChecksumOffset) {
      in.l4_vouched = true;
    } else if (!complete_partial_checksum(in.packet, h.csum_start, h.csum_offset)) {
      in.packet = {};
      return in;
    }
  } else if ((h.flags & VnetHeader::kDataValid) != 0) {
    in.l4_vouched = plain_segment;
  }
  in.kind = VnetInput::Kind::kPacket;
  return in;
}

VnetHeader partial_tcp_checksum(std::span<uint8_t> headers) noexcept {
  VnetHeader h;
  const TcpAt t = tcp_at(headers);
  if (t.l4 == 0) return h;
  const bool v4 = (headers[0] >> 4) == 4;
  const IpAddress src = v4 ? IpAddress::v4(&headers[12]) : IpAddress::v6(&headers[8]);
  const IpAddress dst = v4 ? IpAddress::v4(&headers[16]) : IpAddress::v6(&headers[24]);
  const uint16_t folded = static_cast<uint16_t>(~checksum_fold(pseudo_sum(src, dst, kProtoTcp, t.len)));
  headers[t.l4 + kTcpChecksumOffset] = static_cast<uint8_t>(folded >> 8);
  headers[t.l4 + kTcpChecksumOffset + 1] = static_cast<uint8_t>(folded);
  h.flags = VnetHeader::kNeedsCsum;
  h.csum_start = static_cast<uint16_t>(t.l4);
  h.csum_offset = kTcpChecksumOffset;
  return h;
}

}  // namespace osh::stack

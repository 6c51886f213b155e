// The virtio-net header of a TUN opened with IFF_VNET_HDR and checksum
// offload (TUNSETOFFLOAD TUN_F_CSUM): parsed on every read, built on every
// write, and the partial checksums it implies (issue 16.5). Plain bytes, no
// lwIP type; unit-tested on their own (tests/stack/vnet_test.cc).
//
// The rules are the kernel's (include/linux/virtio_net.h
// virtio_net_hdr_to_skb / virtio_net_hdr_from_skb, drivers/net/tun.c
// tun_get_user / tun_put_user): a packet flagged NEEDS_CSUM is
// CHECKSUM_PARTIAL: its L4 checksum field holds only the folded,
// NOT complemented, pseudo-header sum, and whoever completes it sums the
// bytes from csum_start to the end and stores the complemented fold at
// csum_start + csum_offset (skb_checksum_help). A packet so flagged was
// generated on this host (its bytes came from memory, not a wire), and the
// kernel skips the check of such a packet on local delivery; DATA_VALID
// says the kernel already verified the checksum.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace osh::stack {

/// struct virtio_net_hdr (10 bytes), in host byte order: a TUN uses the
/// legacy (native) endianness unless TUNSETVNETLE/BE is set, which this
/// tunnel never does. Defined here because <linux/virtio_net.h> does not
/// compile as C++ (Debian 12's names a member `class`); the values are its.
struct VnetHeader {
  static constexpr size_t kSize = 10;
  static constexpr uint8_t kNeedsCsum = 1;  ///< VIRTIO_NET_HDR_F_NEEDS_CSUM
  static constexpr uint8_t kDataValid = 2;  ///< VIRTIO_NET_HDR_F_DATA_VALID
  static constexpr uint8_t kGsoNone = 0;    ///< VIRTIO_NET_HDR_GSO_NONE

  uint8_t flags = 0;
  uint8_t gso_type = kGsoNone;
  uint16_t hdr_len = 0;
  uint16_t gso_size = 0;
  uint16_t csum_start = 0;   ///< bytes from the start of the IP packet
  uint16_t csum_offset = 0;  ///< bytes from csum_start to the checksum field

  /// parse() - the header at the front of @bytes (at least kSize bytes).
  static VnetHeader parse(std::span<const uint8_t> bytes) noexcept;
  /// write() - the header as the kernel reads it, into @out (kSize bytes).
  void write(std::span<uint8_t, kSize> out) const noexcept;
};

/// What to do with one packet read from a virtio-net-header TUN.
struct VnetInput {
  enum class Kind {
    kPacket,     ///< `packet` is the IP packet; hand it to the gate
    kMalformed,  ///< shorter than the header, or checksum offsets past the packet
    kGso,        ///< gso_type is not NONE (never asked for): refused
  };
  Kind kind = Kind::kMalformed;
  std::span<uint8_t> packet;
  /// true: the kernel vouches for the TCP checksum and it was left as it
  /// came (lwIP must not check it; it may be partial). Only ever true for a
  /// TCP segment without SYN, whose checksum the gate does not check either.
  bool l4_vouched = false;
};

/// vnet_input() - splits one read() from a virtio-net-header TUN.
/// A NEEDS_CSUM TCP segment without SYN keeps its partial checksum
/// (l4_vouched); any other NEEDS_CSUM packet (a SYN, which the SYN gate
/// checks and keeps for later; UDP; ICMP) has its checksum completed in
/// place, so that the gate's checks and everything after them see a full
/// checksum. DATA_VALID TCP segments without SYN are vouched too.
/// @read: the bytes of one read(), header first; modified in place.
/// Thread: any (pure).
VnetInput vnet_input(std::span<uint8_t> read) noexcept;

/// complete_partial_checksum() - what skb_checksum_help does: sums
/// @pkt[@start..end) (the field included) and stores the complemented fold
/// at @start + @offset. @return false (nothing written) if the field lies
/// past the packet.
bool complete_partial_checksum(std::span<uint8_t> pkt, size_t start, size_t offset) noexcept;

/// partial_tcp_checksum() - prepares a TCP segment lwIP built without a
/// checksum for a NEEDS_CSUM write: stores the folded, not complemented,
/// pseudo-header sum (RFC 9293 §3.1; RFC 8200 §8.1) in its checksum field
/// and returns the header to write in front of it.
/// @headers: the start of the packet, at least the IP header and the TCP
///           header's first 18 bytes (the lengths are read from the IP
///           header; IPv6 without extension headers, as lwIP writes TCP).
/// @return the header (flags NEEDS_CSUM, csum_start = IP header length,
///         csum_offset = 16), or flags 0 and nothing written if @headers is
///         not IPv4/IPv6 TCP, is an IPv4 fragment or is too short.
VnetHeader partial_tcp_checksum(std::span<uint8_t> headers) noexcept;

}  // namespace osh::stack

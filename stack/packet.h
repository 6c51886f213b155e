// Packet-level helpers for the TUN side of the stack: parsing just enough of
// IPv4/IPv6/TCP/ICMP to classify a packet, and crafting the few packets the
// tunnel answers itself (TCP RST, ICMP unreachable, ICMP echo reply).
// No lwIP types: these are plain bytes, unit-tested on their own.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/ip_address.h"

namespace osh::stack {

/// The tree's one address type (common/ip_address.h), under stack's name.
using osh::IpAddress;
using osh::IpAddressHash;

/// A TCP 4-tuple as seen from the client: src = the user's side (kernel),
/// dst = the sandbox address and port.
struct FlowKey {
  IpAddress src, dst;
  uint16_t sport = 0, dport = 0;
  bool operator==(const FlowKey&) const = default;
  std::string to_string() const;
};

struct FlowKeyHash {
  size_t operator()(const FlowKey& k) const noexcept;
};

/// TCP flag bits (RFC 9293 §3.1).
enum TcpFlags : uint8_t {
  kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10, kUrg = 0x20,
};

/// What the classifier found in one packet from the TUN.
struct Parsed {
  enum class Kind {
    kTcp,           ///< well-formed TCP segment (IPv4 or IPv6, no extension headers)
    kIcmpEcho,      ///< ICMP/ICMPv6 echo request
    kUdp,           ///< UDP datagram (e.g. DNS)
    kOther,         ///< well-formed but not handled (other protocols, ICMP types)
    kFragment,      ///< IPv4 fragment or IPv6 fragment header: not reassembled
    kMalformed,     ///< truncated or inconsistent headers
  };
  Kind kind = Kind::kMalformed;
  IpAddress src, dst;
  size_t ip_header_len = 0;   ///< bytes, incl. IPv4 options
  size_t total_len = 0;       ///< bytes of the IP packet (from its header)
  uint8_t protocol = 0;
  // TCP only:
  uint16_t sport = 0, dport = 0;
  uint32_t seq = 0, ack = 0;
  uint8_t tcp_flags = 0;
  size_t tcp_payload_len = 0;
  // UDP only:
  size_t udp_payload_off = 0;  ///< bytes from the packet start
  size_t udp_payload_len = 0;

  FlowKey flow() const { return FlowKey{src, dst, sport, dport}; }
};

/// Classifies one IP packet. Never reads past `pkt`; anything inconsistent
/// (length fields larger than the buffer, header lengths too small) is
/// kMalformed. Thread: any.
Parsed classify(std::span<const uint8_t> pkt);

/// Whether the checksums of a packet classify() accepted (not kMalformed or
/// kFragment) are valid: the IPv4 header checksum (RFC 791; RFC 1122
/// §3.2.1.2) and the TCP, UDP, ICMP or ICMPv6 checksum (a zero UDP checksum
/// over IPv4 means "none", RFC 768). lwIP would check TCP itself, but only
/// after the SYN gate had opened a stream for a forged SYN.
bool checksums_ok(std::span<const uint8_t> pkt, const Parsed& p);

/// Only the IPv4 header checksum (true for IPv6, which has none).
bool ip_header_checksum_ok(std::span<const uint8_t> pkt, const Parsed& p);

/// The MSS option (RFC 9293 §3.7.1) of a TCP segment, or 0 if it has none.
uint16_t tcp_mss_option(std::span<const uint8_t> pkt, const Parsed& p);

/// Sets the MSS option of a TCP segment (in place) to `mss` and recomputes
/// the TCP checksum. @return false if the segment has no MSS option.
bool rewrite_tcp_mss(std::span<uint8_t> pkt, const Parsed& p, uint16_t mss);

/// Internet checksum (RFC 1071) over `data`, continuing from `sum`.
uint32_t checksum_add(uint32_t sum, std::span<const uint8_t> data);
/// The complemented 16-bit fold of `sum`: the value a checksum field holds.
uint16_t checksum_fold(uint32_t sum);
/// Pseudo-header sum (unfolded) for a TCP/UDP/ICMPv6 checksum over `len`
/// bytes of protocol `proto` (RFC 9293 §3.1, RFC 8200 §8.1).
uint32_t pseudo_sum(const IpAddress& src, const IpAddress& dst, uint8_t proto, size_t len);

/// Builds the RST|ACK that refuses a SYN (RFC 9293 §3.10.7.1: seq 0,
/// ack = SYN's seq + 1), from the SYN's destination back to its source.
/// The client's connect() then fails with ECONNREFUSED.
std::vector<uint8_t> make_rst_for_syn(const Parsed& syn);

/// Builds an ICMP "host unreachable" (IPv4 type 3 code 1) or ICMPv6
/// "address unreachable" (type 1 code 3) quoting `pkt`, sent from the
/// packet's destination to its source. A SYN_SENT socket fails with
/// EHOSTUNREACH (Linux tcp_v4_err / tcp_v6_err treat these as hard errors).
std::vector<uint8_t> make_unreachable(std::span<const uint8_t> pkt, const Parsed& p);

/// Builds a UDP datagram answering `req` (addresses and ports swapped)
/// carrying `payload`, with a valid checksum (RFC 768; mandatory for IPv6,
/// RFC 8200 §8.1).
std::vector<uint8_t> make_udp_reply(const Parsed& req, std::span<const uint8_t> payload);

/// Builds the echo reply for an ICMP/ICMPv6 echo request (RFC 792, RFC 4443
/// §4.2): same id, sequence and data, addresses swapped.
std::vector<uint8_t> make_echo_reply(std::span<const uint8_t> pkt, const Parsed& p);

}  // namespace osh::stack

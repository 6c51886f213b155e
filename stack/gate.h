// The packet gate: what the stack does with one packet, decided from the
// packet bytes and the address tables alone. It never calls lwIP and holds
// no connection state: the verdict says which counter a drop goes to, which
// packets the tunnel answers itself (DNS, ICMP echo), and which TCP segments
// go on to the connection table (a SYN: the SYN gate, conn.h) or straight to
// lwIP (everything else). Also the output filter for what lwIP writes.
// Thread: the stack thread (pure functions; the tables are the caller's).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "stack/packet.h"

namespace osh::stack {

/// Served address -> sandbox key (Route::sandbox).
using RouteTable = std::unordered_map<IpAddress, std::string, IpAddressHash>;

/// What to do with one packet from the TUN.
struct Verdict {
  enum class Kind {
    kDropMalformed,    ///< drop_malformed: truncated, bad checksum, LAND-like source, SYN+FIN/RST
    kDropFragment,     ///< drop_fragment: IPv4 fragment / IPv6 fragment header
    kDropNotSandbox,   ///< drop_not_sandbox: destination not a served address
    kDropUnsupported,  ///< drop_unsupported: neither TCP nor ICMP echo nor DNS
    kDns,              ///< a DNS query to a DNS address: hand the UDP payload to the handler
    kEcho,             ///< ICMP/ICMPv6 echo to a served address: answer it (make_echo_reply)
    kSyn,              ///< a SYN (no ACK) to a served address: the SYN gate (Connections::on_syn)
    kSegment,          ///< any other TCP segment to a served address: lwIP (I2 path)
  };
  Kind kind = Kind::kDropMalformed;
  Parsed p;  ///< classify()'s result (valid unless a drop for malformation)
};

/// judge() - the verdict for one packet from the TUN.
/// @pkt:       one IP packet as read (any length; never read past it)
/// @routes:    the served addresses
/// @dns_addrs: addresses answering UDP port 53
/// @dns_on:    whether a DNS handler is configured (otherwise DNS is unsupported)
/// Checksums are verified only where the tunnel acts on a packet before lwIP
/// would check it: a SYN (the gate opens a stream), ICMP (answered here), UDP
/// (DNS); the IPv4 header checksum always (the I2 input path skips lwIP's
/// ip4_input, which would have checked it). Other TCP segments are checked
/// by lwIP (CHECKSUM_CHECK_TCP), not twice. Nothing legitimate comes *from*
/// a served or DNS address (a "LAND" packet would make lwIP answer itself
/// through the kernel): malformed.
Verdict judge(std::span<const uint8_t> pkt, const RouteTable& routes,
              const std::vector<IpAddress>& dns_addrs, bool dns_on);

/// judge_output() - the output filter for a packet lwIP wrote. Loop
/// prevention and noise filter: only packets from a served address leave
/// (lwIP's own router solicitations, MLD reports etc. do not); the source
/// address is read at the header's fixed offset, since lwIP's output is
/// well-formed by construction and is not classified again (issue 16.4). Large
/// segments (lwip-notes.md "Run-time workarounds"): lwIP advertises at most
/// TCP_MSS (1460); with an MTU above 1500 the MSS option of a SYN-ACK is
/// rewritten in place to what the link carries (MTU - 40, IPv6: - 60), so
/// that the kernel sends MTU-sized segments.
/// @pkt: the packet, modified in place (at least its IP and TCP headers: the
/// first pbuf of a chain; a SYN-ACK whole); @mtu: link MTU, bytes.
/// Return: true if the packet may be written to the TUN (false: count it as
/// drop_unsupported).
bool judge_output(std::span<uint8_t> pkt, const RouteTable& routes, uint32_t mtu);

}  // namespace osh::stack

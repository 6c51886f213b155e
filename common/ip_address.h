// One IPv4/IPv6 address type and one host:port formatter for the whole tree
// (issue 13.5): the TUN's own addresses and prefixes (tun/ip_prefix.h), the
// stack's packet and flow keys (stack/packet.h), the relay's endpoints and
// the mini peers all use these. Plain values: no socket or lwIP types.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <sys/socket.h>  // AF_INET, AF_INET6

namespace osh {

/// An IPv4 or IPv6 address in network byte order.
///
/// Invariant: `family` is AF_INET (bytes[0..3] used, bytes[4..15] zero),
/// AF_INET6 (all 16 bytes used), or AF_UNSPEC (0) for a default-constructed,
/// unset value (all bytes zero). Comparison orders by family, then bytes.
struct IpAddress {
  int family = 0;  ///< AF_INET, AF_INET6, or 0 (unset)
  std::array<uint8_t, 16> bytes{};

  /// Parses a numeric literal ("198.18.0.1", "fd00:6f73:6800::1").
  /// Returns nullopt for anything else: host names, zone ids ("%eth0"),
  /// prefixes, brackets, surrounding whitespace, leading zeros in IPv4
  /// octets (inet_pton's rules).
  static std::optional<IpAddress> parse(std::string_view text);

  /// Builds an IPv4 address from its 4 bytes in network order.
  static IpAddress v4(const std::array<uint8_t, 4>& b);
  /// Builds an IPv6 address from its 16 bytes in network order.
  static IpAddress v6(const std::array<uint8_t, 16>& b);
  /// Builds an IPv4 address from 4 bytes at @p (network order), e.g. the
  /// source field of a packet header. @p must point at 4 readable bytes.
  static IpAddress v4(const uint8_t* p);
  /// Builds an IPv6 address from 16 bytes at @p (network order).
  static IpAddress v6(const uint8_t* p);

  bool is_v4() const { return family == AF_INET; }
  bool is_v6() const { return family == AF_INET6; }
  /// Length of the address in bytes: 4, 16, or 0 when unset.
  std::size_t size() const { return is_v4() ? 4 : is_v6() ? 16 : 0; }
  /// Length of the address in bits: 32, 128, or 0 when unset.
  unsigned bits() const { return static_cast<unsigned>(size() * 8); }

  /// Fills @out with this address and @port (host order) as a sockaddr_in
  /// or sockaddr_in6. Return: the length to pass to bind()/connect(), or 0
  /// (and @out zeroed) when the address is unset.
  socklen_t to_sockaddr(uint16_t port, sockaddr_storage* out) const;

  /// Canonical text (inet_ntop form: "198.18.0.1", "fd00:6f73:6800::1");
  /// "" when unset.
  std::string to_string() const;

  friend bool operator==(const IpAddress&, const IpAddress&) = default;
  friend auto operator<=>(const IpAddress&, const IpAddress&) = default;
};

/// Hash for unordered containers keyed by IpAddress (FNV-1a over family and
/// the used bytes).
struct IpAddressHash {
  std::size_t operator()(const IpAddress& a) const noexcept;
};

/// host_port() - "HOST:PORT", with an IPv6 literal in brackets
/// ("[fd00::1]:22", RFC 3986 §3.2.2); a host containing ':' is taken as an
/// IPv6 literal. Names and IPv4 literals are written as given.
std::string host_port(std::string_view host, uint16_t port);
/// The same for an address; an unset address is written as "?".
std::string host_port(const IpAddress& addr, uint16_t port);

}  // namespace osh

// IPv4/IPv6 addresses and prefixes as plain values (no socket or libnl types),
// used for the tunnel's own addresses, the sandbox prefixes and routes.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <sys/socket.h>  // AF_INET, AF_INET6

namespace osh::tun {

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
  /// prefixes, surrounding whitespace, leading zeros in IPv4 octets.
  static std::optional<IpAddress> parse(std::string_view text);

  /// Builds an IPv4 address from its 4 bytes in network order.
  static IpAddress v4(const std::array<uint8_t, 4>& b);
  /// Builds an IPv6 address from its 16 bytes in network order.
  static IpAddress v6(const std::array<uint8_t, 16>& b);

  bool is_v4() const { return family == AF_INET; }
  bool is_v6() const { return family == AF_INET6; }
  /// Length of the address in bytes: 4, 16, or 0 when unset.
  std::size_t size() const { return is_v4() ? 4 : is_v6() ? 16 : 0; }
  /// Length of the address in bits: 32, 128, or 0 when unset.
  unsigned bits() const { return static_cast<unsigned>(size() * 8); }

  /// Canonical text (inet_ntop form: "198.18.0.1", "fd00:6f73:6800::1");
  /// "" when unset.
  std::string to_string() const;

  friend bool operator==(const IpAddress&, const IpAddress&) = default;
  friend auto operator<=>(const IpAddress&, const IpAddress&) = default;
};

/// An address with a prefix length, e.g. a network ("198.18.0.0/16") or an
/// interface address with its on-link prefix ("198.18.0.1/16").
///
/// Host bits of `addr` are kept as given (so the same type describes an
/// interface address); use network() to clear them.
struct IpPrefix {
  IpAddress addr;
  uint8_t len = 0;  ///< prefix length in bits, 0..32 (v4) or 0..128 (v6)

  /// Parses "<address>/<len>" ("198.18.0.0/16", "fd00:6f73:6800::/64").
  /// The length is mandatory, decimal, and at most 32 (v4) or 128 (v6).
  /// Returns nullopt on any malformed input.
  static std::optional<IpPrefix> parse(std::string_view text);

  /// The same prefix with all host bits cleared ("198.18.0.1/16" ->
  /// "198.18.0.0/16").
  IpPrefix network() const;

  /// True if `a` has the same family and its first `len` bits equal ours.
  bool contains(const IpAddress& a) const;

  /// The address at offset `host_index` from the network address:
  /// nth(0) is the network address itself, nth(1) the first host, ...
  /// Throws std::out_of_range if `host_index` does not fit in the host bits
  /// (e.g. nth(65536) of a /16), or std::invalid_argument if the prefix is
  /// unset.
  IpAddress nth(uint64_t host_index) const;

  /// "<address>/<len>" with the address as stored (host bits kept).
  std::string to_string() const;

  friend bool operator==(const IpPrefix&, const IpPrefix&) = default;
  friend auto operator<=>(const IpPrefix&, const IpPrefix&) = default;
};

}  // namespace osh::tun

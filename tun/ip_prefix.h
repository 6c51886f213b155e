// IPv4/IPv6 addresses and prefixes as plain values (no socket or libnl types),
// used for the tunnel's own addresses, the sandbox prefixes and routes.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/ip_address.h"

namespace osh::tun {

/// The tree's one address type (common/ip_address.h), under tun's name.
using osh::IpAddress;

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

  /// True if the two prefixes share at least one address: same family and
  /// one of them contains the other's network (prefixes nest or are
  /// disjoint; they never partly overlap). Host bits are ignored, so an
  /// interface address with its on-link length ("198.18.5.1/24") stands for
  /// its subnet. False for different families or an unset prefix.
  bool overlaps(const IpPrefix& other) const;

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

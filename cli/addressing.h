// Address plan (design.md §4): the tunnel takes the first address of each
// prefix, the DNS responder the second, lwIP's netif the third; sandboxes
// get addresses derived from their id, so they are stable across restarts
// for the same set of sandboxes, and never shared.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "tun/ip_prefix.h"

namespace osh::cli {

struct SandboxAddresses {
  tun::IpAddress v4, v6;
};

/// Not thread-safe; owned by the command that runs the tunnel.
class AddressPlan {
 public:
  /// @param p4  IPv4 prefix, e.g. 198.18.0.0/16 (at most /24)
  /// @param p6  IPv6 prefix, e.g. fd00:6f73:6800::/64 (at most /112)
  /// Throws std::invalid_argument for a prefix that is too small.
  AddressPlan(const tun::IpPrefix& p4, const tun::IpPrefix& p6);

  tun::IpAddress tunnel4() const { return p4_.nth(1); }
  tun::IpAddress dns4() const { return p4_.nth(2); }
  tun::IpAddress netif4() const { return p4_.nth(3); }
  tun::IpAddress tunnel6() const { return p6_.nth(1); }
  tun::IpAddress dns6() const { return p6_.nth(2); }
  tun::IpAddress netif6() const { return p6_.nth(3); }
  const tun::IpPrefix& prefix4() const { return p4_; }
  const tun::IpPrefix& prefix6() const { return p6_; }

  /// The addresses of sandbox `id`: the same id always gets the same pair
  /// from one plan; a hash collision moves the later id to the next free
  /// address (linear probing).
  /// @return nullopt (nothing reserved) when either prefix has no free
  ///         sandbox address left (issue 14.8: the caller skips the sandbox;
  ///         a full prefix is not an exception of the refresh loop).
  std::optional<SandboxAddresses> assign(const std::string& id);
  /// How many sandboxes the plan can hold: the smaller of the two ranges.
  uint64_t capacity() const;
  /// Gives `id` the addresses it had before (from the state file), if both
  /// are inside the prefixes, in the sandbox range, and still free.
  /// @return false (and nothing reserved) otherwise.
  bool restore(const std::string& id, const tun::IpAddress& v4, const tun::IpAddress& v6);
  /// Forgets `id`, freeing its addresses.
  void release(const std::string& id);

 private:
  tun::IpPrefix p4_, p6_;
  uint64_t hosts4_, hosts6_;
  std::map<std::string, SandboxAddresses> by_id_;
  std::map<uint64_t, std::string> used4_, used6_;
};

}  // namespace osh::cli

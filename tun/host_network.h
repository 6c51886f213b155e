// A snapshot of the machine's interfaces, addresses and main-table routes as
// plain values (no libnl type here), read through rtnetlink, and whether the
// host has IPv6 turned off. `up` feeds it to its setup check
// (cli/setup_check.h), which is a pure function of this snapshot.
#pragma once

#include <string>
#include <vector>

#include "tun/ip_prefix.h"

namespace osh::tun {

/// One network interface.
struct HostLink {
  int index = 0;
  std::string name;
  std::string kind;      ///< IFLA_INFO_KIND: "tun", "dummy", "veth", ... ("" if none)
  bool carrier = false;  ///< IFLA_CARRIER; a TUN has none while no process holds it
};

/// One interface address with its on-link prefix length ("198.18.5.1/24").
struct HostAddress {
  int ifindex = 0;
  IpPrefix addr;
};

/// One route of the main table (RT_TABLE_MAIN) of type unicast, blackhole,
/// unreachable or prohibit. `ifindex` is the first nexthop's interface (0
/// for a route without one, e.g. blackhole).
struct HostRoute {
  int ifindex = 0;
  IpPrefix dst;  ///< destination prefix, host bits clear ("0.0.0.0/0" for a default route)
};

struct HostNetwork {
  std::vector<HostLink> links;
  std::vector<HostAddress> addresses;
  std::vector<HostRoute> routes;

  /// The name of interface `index`, or its number in decimal if unknown.
  std::string link_name(int index) const;
};

/// read_host_network() - dumps links, addresses (IPv4 and IPv6) and main-table
/// routes of the calling thread's network namespace over one NETLINK_ROUTE
/// socket (three libnl cache fills, each one dump round trip).
/// Return: the snapshot. Thread: any; blocking (typically about a millisecond).
/// @throws TunError if the socket cannot be opened or a dump fails.
HostNetwork read_host_network();

/// ipv6_disabled_on_host() - true when the host has IPv6 turned off: the
/// kernel has no IPv6 (booted with ipv6.disable=1: no /proc/sys/net/ipv6), or
/// /proc/sys/net/ipv6/conf/all/disable_ipv6 is 1 (net sysctls are those of
/// the calling thread's network namespace). A per-interface setting (e.g.
/// `default` = 1 with `all` = 0) does not count: the TUN's own is set by
/// LinkConfig::add_address.
/// Thread: any. Never throws: an unreadable file means "not disabled".
bool ipv6_disabled_on_host();

}  // namespace osh::tun

// Theory of operation: read_host_network() opens one NETLINK_ROUTE socket and
// fills three libnl caches (links, addresses, routes: one RTM_GET* dump each),
// then copies what the setup check needs into plain values and frees the
// caches. Routes are kept from the main table only (the local table holds
// the per-address local/broadcast routes, which the address list already
// covers; policy tables are someone else's) and only of the types that steer
// unicast traffic (unicast, blackhole, unreachable, prohibit).
// ipv6_disabled_on_host() reads two procfs paths; nothing here changes the
// system.
#include "tun/host_network.h"

#include <fcntl.h>
#include <linux/rtnetlink.h>
#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "tun/scoped_fd.h"
#include "tun/tun_error.h"

namespace osh::tun {
namespace {

using SockPtr = std::unique_ptr<nl_sock, decltype(&nl_socket_free)>;
using CachePtr = std::unique_ptr<nl_cache, decltype(&nl_cache_free)>;

// The address in a libnl nl_addr with `len` as its prefix length; nullopt for
// a family other than IPv4/IPv6 or a malformed length.
std::optional<IpPrefix> to_prefix(nl_addr* a, unsigned len) {
  if (a == nullptr) return std::nullopt;
  const int family = nl_addr_get_family(a);
  const unsigned size = nl_addr_get_len(a);
  IpAddress ip;
  if (family == AF_INET && size == 4) {
    ip = IpAddress::v4(static_cast<const uint8_t*>(nl_addr_get_binary_addr(a)));
  } else if (family == AF_INET6 && size == 16) {
    ip = IpAddress::v6(static_cast<const uint8_t*>(nl_addr_get_binary_addr(a)));
  } else if ((family == AF_INET || family == AF_INET6) && size == 0 && len == 0) {
    // A default route's destination carries no bytes.
    ip = family == AF_INET ? IpAddress::v4(std::array<uint8_t, 4>{})
                           : IpAddress::v6(std::array<uint8_t, 16>{});
  } else {
    return std::nullopt;
  }
  if (len > ip.bits()) return std::nullopt;
  return IpPrefix{ip, static_cast<uint8_t>(len)};
}

CachePtr fill(const char* what, int rc, nl_cache* cache) {
  CachePtr c(cache, &nl_cache_free);
  if (rc < 0) throw TunError(std::string("dump ") + what, 0, nl_geterror(rc));
  return c;
}

}  // namespace

std::string HostNetwork::link_name(int index) const {
  for (const HostLink& l : links)
    if (l.index == index) return l.name;
  return std::to_string(index);
}

HostNetwork read_host_network() {
  SockPtr sk(nl_socket_alloc(), &nl_socket_free);
  if (!sk) throw TunError("allocate netlink socket", ENOMEM);
  if (int rc = nl_connect(sk.get(), NETLINK_ROUTE); rc < 0)
    throw TunError("connect NETLINK_ROUTE socket", 0, nl_geterror(rc));

  HostNetwork net;
  nl_cache* raw = nullptr;
  int rc = rtnl_link_alloc_cache(sk.get(), AF_UNSPEC, &raw);
  CachePtr links = fill("links", rc, raw);
  for (nl_object* o = nl_cache_get_first(links.get()); o != nullptr; o = nl_cache_get_next(o)) {
    auto* l = reinterpret_cast<rtnl_link*>(o);
    const char* name = rtnl_link_get_name(l);
    const char* kind = rtnl_link_get_type(l);
    net.links.push_back({rtnl_link_get_ifindex(l), name != nullptr ? name : "",
                         kind != nullptr ? kind : "", rtnl_link_get_carrier(l) != 0});
  }

  raw = nullptr;
  rc = rtnl_addr_alloc_cache(sk.get(), &raw);
  CachePtr addrs = fill("addresses", rc, raw);
  for (nl_object* o = nl_cache_get_first(addrs.get()); o != nullptr; o = nl_cache_get_next(o)) {
    auto* a = reinterpret_cast<rtnl_addr*>(o);
    const auto p = to_prefix(rtnl_addr_get_local(a), static_cast<unsigned>(rtnl_addr_get_prefixlen(a)));
    if (p) net.addresses.push_back({rtnl_addr_get_ifindex(a), *p});
  }

  raw = nullptr;
  rc = rtnl_route_alloc_cache(sk.get(), AF_UNSPEC, 0, &raw);
  CachePtr routes = fill("routes", rc, raw);
  for (nl_object* o = nl_cache_get_first(routes.get()); o != nullptr; o = nl_cache_get_next(o)) {
    auto* r = reinterpret_cast<rtnl_route*>(o);
    if (rtnl_route_get_table(r) != RT_TABLE_MAIN) continue;
    const uint8_t type = rtnl_route_get_type(r);
    if (type != RTN_UNICAST && type != RTN_BLACKHOLE && type != RTN_UNREACHABLE && type != RTN_PROHIBIT)
      continue;
    nl_addr* dst = rtnl_route_get_dst(r);
    const auto p = to_prefix(dst, dst != nullptr ? nl_addr_get_prefixlen(dst) : 0);
    if (!p) continue;
    int ifindex = 0;
    if (rtnl_route_get_nnexthops(r) > 0) ifindex = rtnl_route_nh_get_ifindex(rtnl_route_nexthop_n(r, 0));
    net.routes.push_back({ifindex, p->network()});
  }
  return net;
}

bool ipv6_disabled_on_host() {
  // Booted with ipv6.disable=1: the net sysctls exist, IPv6's do not.
  if (::access("/proc/sys/net", F_OK) == 0 && ::access("/proc/sys/net/ipv6", F_OK) != 0) return true;
  ScopedFd fd(::open("/proc/sys/net/ipv6/conf/all/disable_ipv6", O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  char c = '0';
  return ::read(fd.get(), &c, 1) == 1 && c == '1';
}

}  // namespace osh::tun

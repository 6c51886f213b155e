// read_host_network() and ipv6_disabled_on_host() against a fresh network
// namespace (forked child) set up with `ip`: what the setup check
// (cli/setup_check.h) gets to see. Nothing runs in the machine's namespace.
#include "tun/host_network.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "netns_child.h"
#include "tun/tun_device.h"

namespace osh::tun {
namespace {

using testing::Failures;
using testing::run_command;

std::string ip(const std::string& args) {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
    if (::access(p, X_OK) == 0) return run_command(std::string(p) + " " + args + " 2>&1");
  return run_command("ip " + args + " 2>&1");
}

const HostLink* find_link(const HostNetwork& n, const std::string& name) {
  auto it = std::find_if(n.links.begin(), n.links.end(), [&](const HostLink& l) { return l.name == name; });
  return it == n.links.end() ? nullptr : &*it;
}

bool has_address(const HostNetwork& n, int ifindex, const char* prefix) {
  return std::any_of(n.addresses.begin(), n.addresses.end(), [&](const HostAddress& a) {
    return a.ifindex == ifindex && a.addr == *IpPrefix::parse(prefix);
  });
}

bool has_route(const HostNetwork& n, const char* dst) {
  return std::any_of(n.routes.begin(), n.routes.end(),
                     [&](const HostRoute& r) { return r.dst == *IpPrefix::parse(dst); });
}

TEST(HostNetworkTest, ReadsLinksAddressesAndMainRoutes) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    // One statement each: the operands of + are evaluated in no fixed order.
    std::string out;
    for (const char* cmd : {"link add osh-d0 type veth peer name osh-d1", "link set osh-d0 up", "link set lo up",
                            "addr add 198.18.5.1/24 dev osh-d0", "route add 198.18.64.0/18 dev osh-d0",
                            "route add default dev osh-d0",
                            "tuntap add dev osh7 mode tun"})  // persistent, no process: no carrier
      out += ip(cmd);
    if (::access("/proc/sys/net/ipv6", F_OK) == 0)
      out += ip("-6 addr add fd00:6f73:6800::abcd/64 dev osh-d0 nodad");
    CHECK_IN_CHILD(f, out.empty(), out);
    TunDevice held = TunDevice::open("osh8");  // held by this process: carrier

    const HostNetwork n = read_host_network();
    const HostLink* d0 = find_link(n, "osh-d0");
    const HostLink* stale = find_link(n, "osh7");
    const HostLink* live = find_link(n, "osh8");
    CHECK_IN_CHILD(f, d0 && stale && live && find_link(n, "lo"), "links missing");
    if (!d0 || !stale || !live) return f.str();
    CHECK_IN_CHILD(f, d0->kind == "veth", d0->kind);
    CHECK_IN_CHILD(f, stale->kind == "tun" && !stale->carrier, stale->kind);
    CHECK_IN_CHILD(f, live->kind == "tun" && live->carrier, "an open TUN has carrier, even while down");
    CHECK_IN_CHILD(f, live->index == held.ifindex());
    CHECK_IN_CHILD(f, has_address(n, d0->index, "198.18.5.1/24"));
    CHECK_IN_CHILD(f, has_address(n, 1, "127.0.0.1/8"));
    if (::access("/proc/sys/net/ipv6", F_OK) == 0)
      CHECK_IN_CHILD(f, has_address(n, d0->index, "fd00:6f73:6800::abcd/64"));
    CHECK_IN_CHILD(f, has_route(n, "198.18.5.0/24"), "the connected route (main table)");
    CHECK_IN_CHILD(f, has_route(n, "198.18.64.0/18"));
    CHECK_IN_CHILD(f, has_route(n, "0.0.0.0/0"), "the default route, with length 0");
    CHECK_IN_CHILD(f, !has_route(n, "198.18.5.1/32"), "a local-table route was read");
    CHECK_IN_CHILD(f, n.link_name(d0->index) == "osh-d0");
    CHECK_IN_CHILD(f, n.link_name(9999) == "9999");
    return f.str();
  });
}

TEST(HostNetworkTest, Ipv6DisabledFollowsAllDisableIpv6) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    const char* all = "/proc/sys/net/ipv6/conf/all/disable_ipv6";
    if (::access(all, F_OK) != 0) {  // a kernel without IPv6
      CHECK_IN_CHILD(f, ipv6_disabled_on_host());
      return f.str();
    }
    CHECK_IN_CHILD(f, !ipv6_disabled_on_host(), "a fresh namespace has IPv6");
    std::ofstream(std::string("/proc/sys/net/ipv6/conf/default/disable_ipv6")) << "1\n";
    CHECK_IN_CHILD(f, !ipv6_disabled_on_host(), "default = 1 alone is not 'off on the host'");
    std::ofstream(std::string(all)) << "1\n";  // this namespace only
    CHECK_IN_CHILD(f, ipv6_disabled_on_host());
    return f.str();
  });
}

}  // namespace
}  // namespace osh::tun

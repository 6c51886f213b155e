// The setup check's decisions (cli/setup_check.h, issue 15.5) on made-up
// snapshots of a machine: gateway inside a prefix, prefixes overlapping
// addresses and routes, the exceptions (default routes, a stale TUN of our
// own), and IPv6 left out when it is off. Both families.
#include "cli/setup_check.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "relay/endpoint.h"

namespace osh::cli {
namespace {

tun::IpPrefix P(const char* s) { return *tun::IpPrefix::parse(s); }
IpAddress A(const char* s) { return *IpAddress::parse(s); }

SetupPlan default_plan() { return {P("198.18.0.0/16"), P("fd00:6f73:6800::/64"), "osh0"}; }

// A client machine: lo, eth0 192.0.2.1/24 with a default route, eth0's IPv6.
tun::HostNetwork machine() {
  tun::HostNetwork n;
  n.links = {{1, "lo", "", true}, {2, "eth0", "veth", true}};
  n.addresses = {{1, P("127.0.0.1/8")}, {1, P("::1/128")}, {2, P("192.0.2.1/24")}, {2, P("2001:db8::1/64")},
                 {2, P("fe80::1/64")}};
  n.routes = {{2, P("192.0.2.0/24")}, {2, P("0.0.0.0/0")}, {2, P("2001:db8::/64")}, {2, P("fe80::/64")},
              {2, P("::/0")}};
  return n;
}

TEST(SetupCheckTest, CleanMachinePasses) {
  EXPECT_TRUE(host_conflicts(machine(), default_plan()).empty());
  EXPECT_TRUE(gateway_conflicts({A("192.0.2.2"), A("2001:db8::2")}, "http://gw:17670", default_plan()).empty());
  EXPECT_TRUE(stale_links_to_remove(machine(), default_plan()).empty());
  EXPECT_EQ(refusal_line({}), "");
}

TEST(SetupCheckTest, GatewayInsideAPrefixIsRefused) {
  // The case: a gateway at 198.18.77.7 with the default 198.18.0.0/16.
  auto c = gateway_conflicts({A("198.18.77.7")}, "http://198.18.77.7:17670", default_plan());
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0], "the gateway http://198.18.77.7:17670 (198.18.77.7) is inside --prefix4 198.18.0.0/16");
  // Every address a name resolves to counts, not only the first.
  c = gateway_conflicts({A("192.0.2.2"), A("fd00:6f73:6800::9")}, "http://gw.test:17670", default_plan());
  ASSERT_EQ(c.size(), 1u);
  EXPECT_NE(c[0].find("fd00:6f73:6800::9"), std::string::npos);
  EXPECT_NE(c[0].find("--prefix6 fd00:6f73:6800::/64"), std::string::npos);
  // IPv6 off: the IPv6 prefix is not claimed, so it cannot conflict.
  SetupPlan v4only = default_plan();
  v4only.prefix6.reset();
  EXPECT_TRUE(gateway_conflicts({A("fd00:6f73:6800::9")}, "http://gw.test:17670", v4only).empty());
  // A prefix given with host bits is compared as its network.
  SetupPlan odd = default_plan();
  odd.prefix4 = P("198.18.7.7/16");
  EXPECT_EQ(gateway_conflicts({A("198.18.200.1")}, "e", odd).size(), 1u);
}

TEST(SetupCheckTest, AddressOnAnotherInterfaceIsRefused) {
  tun::HostNetwork n = machine();
  n.links.push_back({3, "dum0", "dummy", true});
  n.addresses.push_back({3, P("198.18.5.1/24")});
  n.routes.push_back({3, P("198.18.5.0/24")});
  const auto c = host_conflicts(n, default_plan());
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0], "--prefix4 198.18.0.0/16 overlaps address 198.18.5.1/24 on dum0");
  EXPECT_EQ(c[1], "--prefix4 198.18.0.0/16 overlaps route 198.18.5.0/24 dev dum0");
  const std::string line = refusal_line(c);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.rfind("--prefix4 198.18.0.0/16 overlaps address 198.18.5.1/24 on dum0; and 1 more", 0), 0u)
      << line;
  EXPECT_NE(line.find("--prefix4/--prefix6"), std::string::npos);
}

TEST(SetupCheckTest, Ipv6AddressAndCoveringRouteAreRefused) {
  tun::HostNetwork n = machine();
  n.links.push_back({3, "dum0", "dummy", true});
  n.addresses.push_back({3, P("fd00:6f73:6800::abcd/64")});
  auto c = host_conflicts(n, default_plan());
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0], "--prefix6 fd00:6f73:6800::/64 overlaps address fd00:6f73:6800::abcd/64 on dum0");
  SetupPlan v4only = default_plan();
  v4only.prefix6.reset();
  EXPECT_TRUE(host_conflicts(n, v4only).empty());

  // A route that covers the prefix (a VPN's 198.0.0.0/8) overlaps it too,
  // and so does a blackhole route without an interface.
  n = machine();
  n.routes.push_back({2, P("198.0.0.0/8")});
  n.routes.push_back({0, P("fd00::/8")});
  c = host_conflicts(n, default_plan());
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0], "--prefix4 198.18.0.0/16 overlaps route 198.0.0.0/8 dev eth0");
  EXPECT_EQ(c[1], "--prefix6 fd00:6f73:6800::/64 overlaps route fd00::/8");
}

TEST(SetupCheckTest, DefaultRoutesAndTheirHalvesAreExcepted) {
  tun::HostNetwork n = machine();
  n.links.push_back({4, "tun9", "tun", true});  // OpenVPN's def1
  n.routes.push_back({4, P("0.0.0.0/1")});
  n.routes.push_back({4, P("128.0.0.0/1")});
  n.routes.push_back({4, P("::/1")});
  n.routes.push_back({4, P("8000::/1")});
  EXPECT_TRUE(host_conflicts(n, default_plan()).empty());
  n.routes.push_back({4, P("192.0.0.0/2")});  // narrower than a half: a real route
  EXPECT_EQ(host_conflicts(n, default_plan()).size(), 1u);
}

TEST(SetupCheckTest, StaleTunOfOurOwnIsExceptedAndRemoved) {
  tun::HostNetwork n = machine();
  n.links.push_back({5, "osh0", "tun", false});  // left over: no process, no carrier
  n.links.push_back({6, "osh1", "tun", false});
  n.links.push_back({7, "osh2", "tun", false});  // stale, but on another range: left alone
  for (int i : {5, 6}) {
    n.addresses.push_back({i, P("198.18.0.1/16")});
    n.addresses.push_back({i, P("fd00:6f73:6800::1/64")});
    n.routes.push_back({i, P("198.18.0.0/16")});
  }
  n.addresses.push_back({7, P("10.99.0.1/16")});
  EXPECT_TRUE(host_conflicts(n, default_plan()).empty());
  EXPECT_EQ(stale_links_to_remove(n, default_plan()), (std::vector<std::string>{"osh0", "osh1"}));

  // Our own name is removed even when it carries nothing (TUNSETIFF would
  // attach to it and inherit its persistence).
  tun::HostNetwork bare = machine();
  bare.links.push_back({5, "osh0", "tun", false});
  EXPECT_EQ(stale_links_to_remove(bare, default_plan()), (std::vector<std::string>{"osh0"}));
}

// The crash cleanup (cleanup_stale) deletes the state file's TUN only while
// it is one no process holds: the name may be a live tunnel's by now.
TEST(SetupCheckTest, RecordedLinkIsDeletedOnlyWhileStale) {
  tun::HostNetwork n = machine();
  EXPECT_FALSE(recorded_link_is_stale(n, "osh0"));  // gone (the kernel removed it)
  EXPECT_FALSE(recorded_link_is_stale(n, ""));      // no TUN recorded
  n.links.push_back({5, "osh0", "tun", false});
  EXPECT_TRUE(recorded_link_is_stale(n, "osh0"));   // a persistent leftover
  EXPECT_FALSE(recorded_link_is_stale(n, "osh1"));  // same stem, but not the recorded name
  n.links.back().carrier = true;
  EXPECT_FALSE(recorded_link_is_stale(n, "osh0"));  // another tunnel's live TUN
  n.links.back() = {5, "osh0", "dummy", false};
  EXPECT_FALSE(recorded_link_is_stale(n, "osh0"));  // not a TUN
  n.links.back() = {5, "osh0", "veth", true};
  EXPECT_FALSE(recorded_link_is_stale(n, "osh0"));
}

TEST(SetupCheckTest, LiveOrForeignInterfacesAreNotStale) {
  using tun::HostLink;
  EXPECT_TRUE(is_stale_own_link({5, "osh0", "tun", false}, "osh0"));
  EXPECT_TRUE(is_stale_own_link({5, "osh12", "tun", false}, "osh0"));
  EXPECT_TRUE(is_stale_own_link({5, "osh3", "tun", false}, "osh%d"));
  EXPECT_FALSE(is_stale_own_link({5, "osh0", "tun", true}, "osh0"));      // a live tunnel's
  EXPECT_FALSE(is_stale_own_link({5, "osh1", "dummy", false}, "osh0"));   // not a TUN
  EXPECT_FALSE(is_stale_own_link({5, "tun0", "tun", false}, "osh0"));     // another program's
  EXPECT_FALSE(is_stale_own_link({5, "osh", "tun", false}, "osh0"));      // no number
  EXPECT_FALSE(is_stale_own_link({5, "oshx1", "tun", false}, "osh0"));
  EXPECT_FALSE(is_stale_own_link({5, "tunnel1", "tun", false}, "tunnel"));  // no stem: exact name only
  EXPECT_TRUE(is_stale_own_link({5, "tunnel", "tun", false}, "tunnel"));

  // A live tunnel's TUN on the same range is a conflict, named as such.
  tun::HostNetwork n = machine();
  n.links.push_back({5, "osh0", "tun", true});
  n.addresses.push_back({5, P("198.18.0.1/16")});
  const auto c = host_conflicts(n, default_plan());
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0], "--prefix4 198.18.0.0/16 overlaps address 198.18.0.1/16 on osh0");
  EXPECT_TRUE(stale_links_to_remove(n, default_plan()).empty());
}

// The gateway's side of the check: literals are taken as they are, names
// through the system resolver (localhost: the hosts file, no DNS needed).
TEST(SetupCheckTest, GatewayAddressesAreResolved) {
  std::string err;
  auto a = relay::resolve_host("198.18.77.7", &err);
  ASSERT_TRUE(a) << err;
  EXPECT_EQ(*a, std::vector<IpAddress>{A("198.18.77.7")});
  a = relay::resolve_host("fd00:6f73:6800::9", &err);
  ASSERT_TRUE(a) << err;
  EXPECT_EQ(*a, std::vector<IpAddress>{A("fd00:6f73:6800::9")});
  a = relay::resolve_host("localhost", &err);
  ASSERT_TRUE(a) << err;
  EXPECT_TRUE(std::find(a->begin(), a->end(), A("127.0.0.1")) != a->end() ||
              std::find(a->begin(), a->end(), A("::1")) != a->end());
  EXPECT_EQ(std::set<IpAddress>(a->begin(), a->end()).size(), a->size()) << "duplicates kept";
}

}  // namespace
}  // namespace osh::cli

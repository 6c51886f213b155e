// LinkConfig tests: configure a TUN in a fresh network namespace (forked
// child), check the result independently with `ip -j`, roll back, check that
// everything is gone. Nothing here runs in the machine's own namespace.
#include "tun/link_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <memory>
#include <sstream>

#include "netns_child.h"
#include "tun/tun_device.h"

namespace osh::tun {
namespace {

using testing::Failures;
using testing::json_object_with;
using testing::run_command;

const char* const kDev = "osh-test0";

std::string ip_tool() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
    if (::access(p, X_OK) == 0) return p;
  return "ip";
}

std::string ip_json(const std::string& args) { return run_command(ip_tool() + " -j " + args + " 2>&1"); }

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

void write_text(const std::string& path, const std::string& value) {
  std::ofstream out(path);
  out << value << "\n";
}

IpPrefix P(const char* s) {
  auto p = IpPrefix::parse(s);
  if (!p) throw std::invalid_argument(s);
  return *p;
}

TEST(LinkConfigTest, ConfigureVerifyRollback) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    TunDevice tun = TunDevice::open(kDev);
    LinkConfig cfg(tun.ifindex());
    CHECK_IN_CHILD(f, cfg.name() == kDev, cfg.name());
    CHECK_IN_CHILD(f, cfg.ifindex() == tun.ifindex());

    cfg.set_mtu(9000);
    cfg.set_up();
    cfg.add_address(P("198.18.0.1/16"));
    cfg.add_address(P("fd00:6f73:6800::1/64"));
    cfg.add_route(P("198.19.0.0/16"));
    cfg.add_route(P("fd00:6f73:6900::/48"));
    CHECK_IN_CHILD(f, cfg.pending_undo_steps() == 6, std::to_string(cfg.pending_undo_steps()));

    const std::string link = ip_json(std::string("link show dev ") + kDev);
    CHECK_IN_CHILD(f, link.find("\"mtu\":9000") != std::string::npos, link);
    CHECK_IN_CHILD(f, link.find("\"UP\"") != std::string::npos, link);

    const std::string addr = ip_json(std::string("addr show dev ") + kDev);
    const std::string v4 = json_object_with(addr, "\"local\":\"198.18.0.1\"");
    CHECK_IN_CHILD(f, v4.find("\"prefixlen\":16") != std::string::npos, addr);
    const std::string v6 = json_object_with(addr, "\"local\":\"fd00:6f73:6800::1\"");
    CHECK_IN_CHILD(f, v6.find("\"prefixlen\":64") != std::string::npos, addr);
    CHECK_IN_CHILD(f, v6.find("\"nodad\":true") != std::string::npos, v6);
    CHECK_IN_CHILD(f, v6.find("tentative") == std::string::npos, v6);

    const std::string r4 = ip_json(std::string("-4 route show dev ") + kDev);
    const std::string route4 = json_object_with(r4, "\"dst\":\"198.19.0.0/16\"");
    CHECK_IN_CHILD(f, route4.find("\"scope\":\"link\"") != std::string::npos, r4);
    CHECK_IN_CHILD(f, route4.find("\"protocol\":\"static\"") != std::string::npos, r4);
    // The kernel's prefix route for the address (noprefixroute = false).
    CHECK_IN_CHILD(f, r4.find("\"dst\":\"198.18.0.0/16\"") != std::string::npos, r4);
    const std::string r6 = ip_json(std::string("-6 route show dev ") + kDev);
    CHECK_IN_CHILD(f, r6.find("\"dst\":\"fd00:6f73:6900::/48\"") != std::string::npos, r6);
    CHECK_IN_CHILD(f, r6.find("\"dst\":\"fd00:6f73:6800::/64\"") != std::string::npos, r6);

    cfg.rollback();
    CHECK_IN_CHILD(f, cfg.pending_undo_steps() == 0);

    const std::string link2 = ip_json(std::string("link show dev ") + kDev);
    CHECK_IN_CHILD(f, link2.find("\"mtu\":1500") != std::string::npos, link2);
    CHECK_IN_CHILD(f, link2.find("\"UP\"") == std::string::npos, link2);
    const std::string addr2 = ip_json(std::string("addr show dev ") + kDev);
    CHECK_IN_CHILD(f, addr2.find("198.18.0.1") == std::string::npos, addr2);
    CHECK_IN_CHILD(f, addr2.find("fd00:6f73:6800::1") == std::string::npos, addr2);
    const std::string routes2 = ip_json("-4 route show") + ip_json("-6 route show");
    CHECK_IN_CHILD(f, routes2.find("198.19.0.0") == std::string::npos, routes2);
    CHECK_IN_CHILD(f, routes2.find("198.18.0.0") == std::string::npos, routes2);
    CHECK_IN_CHILD(f, routes2.find("fd00:6f73:6900") == std::string::npos, routes2);

    cfg.rollback();  // second rollback: nothing left to do
    return f.str();
  });
}

TEST(LinkConfigTest, DestructorRollsBack) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    TunDevice tun = TunDevice::open(kDev);
    {
      LinkConfig cfg(tun.ifindex());
      cfg.set_up();
      cfg.add_address(P("198.18.0.1/16"), AddrFlags{.nodad = true, .noprefixroute = true});
      cfg.add_route(P("198.18.0.0/16"));  // possible because noprefixroute
      const std::string r = ip_json(std::string("-4 route show dev ") + kDev);
      CHECK_IN_CHILD(f, json_object_with(r, "\"dst\":\"198.18.0.0/16\"").find("static") !=
                            std::string::npos, r);
    }
    const std::string addr = ip_json(std::string("addr show dev ") + kDev);
    CHECK_IN_CHILD(f, addr.find("198.18.0.1") == std::string::npos, addr);
    const std::string r = ip_json(std::string("-4 route show dev ") + kDev);
    CHECK_IN_CHILD(f, r.find("198.18.0.0") == std::string::npos, r);
    return f.str();
  });
}

TEST(LinkConfigTest, NoChangeRecordsNoUndo) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    TunDevice tun = TunDevice::open(kDev);
    LinkConfig first(tun.ifindex());
    first.set_up();
    first.set_mtu(1500);  // already 1500
    CHECK_IN_CHILD(f, first.pending_undo_steps() == 1);
    {
      LinkConfig second(tun.ifindex());
      second.set_up();  // already up: must not set it down on rollback
      CHECK_IN_CHILD(f, second.pending_undo_steps() == 0);
    }
    CHECK_IN_CHILD(f, ip_json(std::string("link show dev ") + kDev).find("\"UP\"") != std::string::npos);
    return f.str();
  });
}

TEST(LinkConfigTest, ErrorsAreTunErrorsWithErrno) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    TunDevice tun = TunDevice::open(kDev);
    LinkConfig cfg(tun.ifindex());

    try {
      cfg.add_route(P("198.19.0.0/16"));  // IPv4 route on a down link
      f.add("route on down link accepted", __LINE__);
    } catch (const TunError& e) {
      CHECK_IN_CHILD(f, e.error_code() == ENETDOWN, e.what());
      CHECK_IN_CHILD(f, std::string(e.what()).rfind("add route 198.19.0.0/16 dev osh-test0: Network is down", 0) == 0,
                     e.what());
    }

    cfg.set_up();
    cfg.add_address(P("198.18.0.1/16"));
    const std::size_t steps = cfg.pending_undo_steps();
    try {
      cfg.add_address(P("198.18.0.1/16"));
      f.add("duplicate address accepted", __LINE__);
    } catch (const TunError& e) {
      CHECK_IN_CHILD(f, e.error_code() == EEXIST, e.what());
      CHECK_IN_CHILD(f, std::string(e.what()).rfind("add address 198.18.0.1/16 to osh-test0: File exists", 0) == 0,
                     e.what());
    }
    try {
      cfg.add_route(P("198.18.0.0/16"));  // the kernel's prefix route exists
      f.add("duplicate route accepted", __LINE__);
    } catch (const TunError& e) {
      CHECK_IN_CHILD(f, e.error_code() == EEXIST, e.what());
    }
    try {
      cfg.set_mtu(10);
      f.add("MTU 10 accepted", __LINE__);
    } catch (const TunError& e) {
      CHECK_IN_CHILD(f, e.error_code() == EINVAL, e.what());
      CHECK_IN_CHILD(f, std::string(e.what()).rfind("set MTU 10 on osh-test0: Invalid argument", 0) == 0,
                     e.what());
    }
    CHECK_IN_CHILD(f, cfg.pending_undo_steps() == steps, "a failed step recorded an undo");

    try {
      LinkConfig none(123456);
      f.add("LinkConfig on a missing index", __LINE__);
    } catch (const TunError& e) {
      CHECK_IN_CHILD(f, e.error_code() == ENODEV, e.what());
    }
    return f.str();
  });
}

TEST(LinkConfigTest, RollbackAfterTunClosedIsQuiet) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    auto tun = std::make_unique<TunDevice>(TunDevice::open(kDev));
    LinkConfig cfg(tun->ifindex());
    cfg.set_mtu(9000);
    cfg.set_up();
    cfg.add_address(P("198.18.0.1/16"));
    cfg.add_address(P("fd00:6f73:6800::1/64"));
    cfg.add_route(P("198.19.0.0/16"));
    tun.reset();  // the link disappears with everything on it
    CHECK_IN_CHILD(f, !link_index(kDev).has_value());
    cfg.rollback();  // must not throw; "already gone" is not an error
    CHECK_IN_CHILD(f, cfg.pending_undo_steps() == 0);
    return f.str();
  });
}

TEST(LinkConfigTest, EnablesIpv6WhenDisabled) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    const std::string def = "/proc/sys/net/ipv6/conf/default/disable_ipv6";
    if (::access(def.c_str(), F_OK) != 0) return std::string();  // kernel without IPv6
    write_text(def, "1");  // this namespace only: new links start with IPv6 off
    TunDevice tun = TunDevice::open(kDev);
    const std::string dev = std::string("/proc/sys/net/ipv6/conf/") + kDev + "/disable_ipv6";
    CHECK_IN_CHILD(f, read_text(dev) == "1", read_text(dev));
    {
      LinkConfig cfg(tun.ifindex());
      cfg.set_mtu(9000);
      cfg.add_address(P("fd00:6f73:6800::1/64"));
      CHECK_IN_CHILD(f, read_text(dev) == "0", read_text(dev));
      const std::string addr = ip_json(std::string("addr show dev ") + kDev);
      CHECK_IN_CHILD(f, addr.find("fd00:6f73:6800::1") != std::string::npos, addr);
    }
    CHECK_IN_CHILD(f, read_text(dev) == "1", "rollback did not restore disable_ipv6");
    return f.str();
  });
}

TEST(LinkConfigTest, RemoveStaleLinkAndLinkIndex) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    CHECK_IN_CHILD(f, !link_index(kDev).has_value());
    CHECK_IN_CHILD(f, link_index("lo") == 1);
    CHECK_IN_CHILD(f, !link_index("").has_value());
    CHECK_IN_CHILD(f, !remove_stale_link(kDev), "removed a link that did not exist");
    TunDevice tun = TunDevice::open(kDev);
    CHECK_IN_CHILD(f, link_index(kDev) == tun.ifindex());
    CHECK_IN_CHILD(f, remove_stale_link(kDev));
    CHECK_IN_CHILD(f, !link_index(kDev).has_value());
    CHECK_IN_CHILD(f, !remove_stale_link(kDev));
    return f.str();
  });
}

}  // namespace
}  // namespace osh::tun

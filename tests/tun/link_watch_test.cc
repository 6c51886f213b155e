// LinkWatch tests: parse_rtnetlink() on crafted rtnetlink datagrams (which
// notifications count as a loss of our configuration and which are ignored),
// Debounce on injected times, and the watch itself on a TUN in a fresh
// network namespace (forked child): a link flap, a deleted address and a
// deleted route are repaired, one repair each; the link's deletion calls the
// handler; disable_ipv6 = 1 is undone with the address; a failed repair
// (injected through the RepairHook seam) is retried on its timer.
#include "tun/link_watch.h"

#include <gtest/gtest.h>
#include <linux/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "netns_child.h"
#include "tun/tun_device.h"

namespace osh::tun {
namespace {

using namespace std::chrono_literals;

IpPrefix P(const char* s) {
  auto p = IpPrefix::parse(s);
  if (!p) throw std::invalid_argument(s);
  return *p;
}

// Builds one rtnetlink message: header, fixed struct, attributes.
class Msg {
 public:
  template <typename Fixed>
  Msg(uint16_t type, const Fixed& fixed) : type_(type) {
    body_.resize(NLMSG_ALIGN(sizeof(Fixed)));
    std::memcpy(body_.data(), &fixed, sizeof fixed);
  }
  Msg& attr(uint16_t type, const void* data, size_t len) {
    rtattr a{static_cast<unsigned short>(RTA_LENGTH(len)), type};
    const size_t at = body_.size();
    body_.resize(at + RTA_ALIGN(a.rta_len));
    std::memcpy(body_.data() + at, &a, sizeof a);
    std::memcpy(body_.data() + at + RTA_LENGTH(0), data, len);
    return *this;
  }
  Msg& addr(uint16_t type, const IpAddress& a) { return attr(type, a.bytes.data(), a.size()); }
  Msg& u32(uint16_t type, uint32_t v) { return attr(type, &v, sizeof v); }
  // Appends the message to @out (a datagram may hold several).
  void append_to(std::vector<uint8_t>* out) const {
    nlmsghdr h{};
    h.nlmsg_len = static_cast<uint32_t>(NLMSG_HDRLEN + body_.size());
    h.nlmsg_type = type_;
    const size_t at = out->size();
    out->resize(at + NLMSG_ALIGN(h.nlmsg_len));
    std::memcpy(out->data() + at, &h, sizeof h);
    std::memcpy(out->data() + at + NLMSG_HDRLEN, body_.data(), body_.size());
  }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> v;
    append_to(&v);
    return v;
  }

 private:
  uint16_t type_;
  std::vector<uint8_t> body_;
};

constexpr int kIf = 7;
WatchedLink watched() {
  WatchedLink w;
  w.ifindex = kIf;
  w.addresses = {P("198.18.0.1/16"), P("fd00:6f73:6800::1/64")};
  return w;
}

Msg link_msg(uint16_t type, int ifindex, unsigned flags) {
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = ifindex;
  ifi.ifi_flags = flags;
  return Msg(type, ifi);
}

Msg addr_msg(uint16_t type, int ifindex, const IpPrefix& p) {
  ifaddrmsg ifa{};
  ifa.ifa_family = static_cast<uint8_t>(p.addr.family);
  ifa.ifa_prefixlen = p.len;
  ifa.ifa_index = static_cast<uint32_t>(ifindex);
  Msg m(type, ifa);
  m.addr(IFA_ADDRESS, p.addr);
  if (p.addr.is_v4()) m.addr(IFA_LOCAL, p.addr);
  return m;
}

Msg route_msg(uint16_t type, int oif, const IpPrefix& dst, uint8_t table = RT_TABLE_MAIN) {
  rtmsg rt{};
  rt.rtm_family = static_cast<uint8_t>(dst.addr.family);
  rt.rtm_dst_len = dst.len;
  rt.rtm_table = table;
  Msg m(type, rt);
  m.u32(RTA_TABLE, table);
  m.addr(RTA_DST, dst.addr);
  m.u32(RTA_OIF, static_cast<uint32_t>(oif));
  return m;
}

std::vector<LinkEvent::Kind> kinds(const std::vector<uint8_t>& d) {
  std::vector<LinkEvent::Kind> k;
  for (const auto& e : parse_rtnetlink(d, watched())) k.push_back(e.kind);
  return k;
}

using K = LinkEvent::Kind;

TEST(ParseRtnetlinkTest, LinkDownAndGoneCountOnlyForOurInterface) {
  EXPECT_EQ(kinds(link_msg(RTM_NEWLINK, kIf, 0).bytes()), std::vector<K>{K::kLinkDown});
  EXPECT_TRUE(kinds(link_msg(RTM_NEWLINK, kIf, IFF_UP | IFF_RUNNING).bytes()).empty());  // our own set-up
  EXPECT_TRUE(kinds(link_msg(RTM_NEWLINK, kIf + 1, 0).bytes()).empty());
  EXPECT_EQ(kinds(link_msg(RTM_DELLINK, kIf, 0).bytes()), std::vector<K>{K::kLinkGone});
  EXPECT_TRUE(kinds(link_msg(RTM_DELLINK, kIf + 1, 0).bytes()).empty());
}

TEST(ParseRtnetlinkTest, OurAddressRemovedInBothFamilies) {
  EXPECT_EQ(kinds(addr_msg(RTM_DELADDR, kIf, P("198.18.0.1/16")).bytes()), std::vector<K>{K::kAddressRemoved});
  const auto ev = parse_rtnetlink(addr_msg(RTM_DELADDR, kIf, P("fd00:6f73:6800::1/64")).bytes(), watched());
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, K::kAddressRemoved);
  EXPECT_EQ(ev[0].what, "address fd00:6f73:6800::1/64 removed");
}

TEST(ParseRtnetlinkTest, AdditionsAndOtherAddressesAreIgnored) {
  EXPECT_TRUE(kinds(addr_msg(RTM_NEWADDR, kIf, P("198.18.0.1/16")).bytes()).empty());  // a repair's own echo
  EXPECT_TRUE(kinds(addr_msg(RTM_DELADDR, kIf, P("fe80::1/64")).bytes()).empty());     // link-local
  EXPECT_TRUE(kinds(addr_msg(RTM_DELADDR, kIf, P("198.18.0.1/24")).bytes()).empty());  // other length
  EXPECT_TRUE(kinds(addr_msg(RTM_DELADDR, kIf + 1, P("198.18.0.1/16")).bytes()).empty());
}

TEST(ParseRtnetlinkTest, OurPrefixRouteRemoved) {
  EXPECT_EQ(kinds(route_msg(RTM_DELROUTE, kIf, P("fd00:6f73:6800::/64")).bytes()), std::vector<K>{K::kRouteRemoved});
  EXPECT_EQ(kinds(route_msg(RTM_DELROUTE, kIf, P("198.18.0.0/16")).bytes()), std::vector<K>{K::kRouteRemoved});
  EXPECT_TRUE(kinds(route_msg(RTM_NEWROUTE, kIf, P("198.18.0.0/16")).bytes()).empty());
  EXPECT_TRUE(kinds(route_msg(RTM_DELROUTE, kIf + 1, P("198.18.0.0/16")).bytes()).empty());
  EXPECT_TRUE(kinds(route_msg(RTM_DELROUTE, kIf, P("198.18.0.0/24")).bytes()).empty());
  EXPECT_TRUE(kinds(route_msg(RTM_DELROUTE, kIf, P("fe80::/64")).bytes()).empty());
  // The local table's host route for our own address is not the prefix route.
  EXPECT_TRUE(kinds(route_msg(RTM_DELROUTE, kIf, P("198.18.0.1/32"), RT_TABLE_LOCAL).bytes()).empty());
}

TEST(ParseRtnetlinkTest, SeveralMessagesInOneDatagramAndTruncation) {
  std::vector<uint8_t> d;
  link_msg(RTM_NEWLINK, kIf, 0).append_to(&d);
  addr_msg(RTM_DELADDR, kIf, P("fd00:6f73:6800::1/64")).append_to(&d);
  route_msg(RTM_DELROUTE, kIf, P("fd00:6f73:6800::/64")).append_to(&d);
  link_msg(RTM_NEWLINK, kIf, IFF_UP).append_to(&d);
  EXPECT_EQ(kinds(d), (std::vector<K>{K::kLinkDown, K::kAddressRemoved, K::kRouteRemoved}));
  // A cut datagram ends the parse at the cut message, without reading past it.
  for (size_t n = 0; n < d.size(); ++n) {
    const std::vector<uint8_t> cut(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_LE(parse_rtnetlink(cut, watched()).size(), 3u);
  }
  EXPECT_TRUE(parse_rtnetlink({}, watched()).empty());
}

TEST(DebounceTest, BurstIsDueAfterQuietPeriodCappedByMaxDelay) {
  using C = Debounce::Clock;
  Debounce d(150ms, 1000ms);
  const C::time_point t0{};
  EXPECT_FALSE(d.deadline());
  EXPECT_FALSE(d.take_if_due(t0));
  EXPECT_EQ(d.on_event(t0), t0 + 150ms);
  EXPECT_EQ(d.on_event(t0 + 100ms), t0 + 250ms);  // the quiet period restarts
  EXPECT_FALSE(d.take_if_due(t0 + 200ms));
  const auto first = d.take_if_due(t0 + 250ms);
  ASSERT_TRUE(first);
  EXPECT_EQ(*first, t0);  // the burst's first event: "repaired N ms after"
  EXPECT_FALSE(d.deadline());
  // Events every 100 ms keep it quiet-free: the cap makes it due after 1 s.
  for (int i = 0; i <= 12; ++i) d.on_event(t0 + 2s + i * 100ms);
  EXPECT_EQ(*d.deadline(), t0 + 3s);
  EXPECT_TRUE(d.take_if_due(t0 + 3s));
}

// ---- the watch on a real TUN (forked child in a fresh netns) ----

const char* const kDev = "osh-watch0";

std::string ip(const std::string& args) {
  return testing::run_command("ip " + args + " 2>&1");
}

// Polls @pred every 10 ms for up to @limit; true if it held.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 5000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

const char* const kV4 = "198.18.0.1/16";
const char* const kV6 = "fd00:6f73:6800::1/64";

// Both the address and its prefix route are on kDev.
bool has_v4() {
  const std::string dev = kDev;
  return ip("-4 route show dev " + dev).find("198.18.0.0/16") != std::string::npos &&
         ip("-4 addr show dev " + dev).find(kV4) != std::string::npos;
}
bool has_v6() {
  const std::string dev = kDev;
  return ip("-6 route show dev " + dev).find("fd00:6f73:6800::/64") != std::string::npos &&
         ip("-6 addr show dev " + dev).find(kV6) != std::string::npos;
}

// Adds @addrs to @cfg's link, sets it up; the WatchedLink for them.
WatchedLink configure(LinkConfig& cfg, const std::vector<const char*>& addrs) {
  WatchedLink w;
  w.ifindex = cfg.ifindex();
  for (const char* a : addrs) {
    cfg.add_address(P(a));
    w.addresses.push_back(P(a));
  }
  cfg.set_up();
  return w;
}

TEST(LinkWatchTest, RepairsFlapAddressAndRouteAndReportsDeletion) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    testing::Failures f;
    TunDevice tun = TunDevice::open(kDev);
    LinkConfig cfg(tun.ifindex());
    cfg.set_mtu(65000);
    std::atomic<int> gone{0};
    LinkWatch watch(configure(cfg, {kV4, kV6}), [&](const std::string& name) {
      if (name == kDev) gone++;
    });
    const std::string dev = kDev;
    CHECK_IN_CHILD(f, has_v4() && has_v6(), ip("addr"));

    ip("link set " + dev + " down");
    ip("link set " + dev + " up");
    CHECK_IN_CHILD(f, eventually([&] { return watch.repairs() == 1 && has_v6() && has_v4(); }),
                   std::to_string(watch.repairs()) + "\n" + ip("addr") + ip("-6 route"));

    ip("link set " + dev + " down");  // nobody sets it up again: the watch does
    CHECK_IN_CHILD(f, eventually([&] {
      return watch.repairs() == 2 && ip("link show dev " + dev).find(",UP") != std::string::npos && has_v6();
    }), ip("link show dev " + dev));

    ip("addr del 198.18.0.1/16 dev " + dev);
    CHECK_IN_CHILD(f, eventually([&] { return watch.repairs() == 3 && has_v4(); }), ip("-4 addr") + ip("-4 route"));

    ip("-6 route del fd00:6f73:6800::/64 dev " + dev);
    CHECK_IN_CHILD(f, eventually([&] { return watch.repairs() == 4 && has_v6(); }), ip("-6 route"));
    // Exactly one metric-256 route: the repair re-added the kernel's, no twin.
    const std::string r6 = ip("-6 route show fd00:6f73:6800::/64 dev " + dev);
    CHECK_IN_CHILD(f, r6.find("metric 256") != std::string::npos && r6.find('\n') == r6.rfind('\n'), r6);

    // Someone else's route on the link going away is not our business.
    ip("route add 203.0.113.0/24 dev " + dev);
    ip("route del 203.0.113.0/24 dev " + dev);
    std::this_thread::sleep_for(400ms);
    CHECK_IN_CHILD(f, watch.repairs() == 4, std::to_string(watch.repairs()));

    ip("link del " + dev);
    CHECK_IN_CHILD(f, eventually([&] { return gone.load() == 1; }), std::to_string(gone.load()));
    return f.str();
  });
}

// disable_ipv6 = 1 on the TUN removes its IPv6 address and makes the kernel
// refuse it again: the repair turns IPv6 back on first.
TEST(LinkWatchTest, RepairsDisabledIpv6) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    testing::Failures f;
    TunDevice tun = TunDevice::open(kDev);
    LinkConfig cfg(tun.ifindex());
    LinkWatch watch(configure(cfg, {kV4, kV6}), {});
    const size_t undo_steps = cfg.pending_undo_steps();
    const std::string sysctl = std::string("/proc/sys/net/ipv6/conf/") + kDev + "/disable_ipv6";
    CHECK_IN_CHILD(f, has_v6(), ip("addr"));
    testing::run_command("echo 1 > " + sysctl);
    CHECK_IN_CHILD(f, eventually([&] { return watch.repairs() == 1 && has_v6(); }),
                   std::to_string(watch.repairs()) + " " + std::to_string(watch.repair_failures()) + "\n" +
                       ip("-6 addr"));
    CHECK_IN_CHILD(f, testing::run_command("cat " + sysctl).find('0') == 0, testing::run_command("cat " + sysctl));
    CHECK_IN_CHILD(f, watch.repair_failures() == 0, std::to_string(watch.repair_failures()));
    CHECK_IN_CHILD(f, cfg.pending_undo_steps() == undo_steps, std::to_string(cfg.pending_undo_steps()));
    return f.str();
  });
}

// A repair that fails is tried again on a timer, with no further event.
TEST(LinkWatchTest, RetriesAFailedRepairWithoutANewEvent) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    testing::Failures f;
    TunDevice tun = TunDevice::open(kDev);
    LinkConfig cfg(tun.ifindex());
    const WatchedLink w = configure(cfg, {kV4});
    std::atomic<int> fail_left{2};  // the first two attempts fail
    std::atomic<int> attempts{0};
    LinkWatch watch(w, {}, [&] {
      attempts++;
      if (fail_left.fetch_sub(1) > 0) throw TunError("injected repair failure", EBUSY);
    });
    const std::string dev = kDev;
    const auto t0 = std::chrono::steady_clock::now();
    ip("addr del 198.18.0.1/16 dev " + dev);  // the only event of the test
    CHECK_IN_CHILD(f, eventually([&] { return watch.repair_failures() == 1; }, 2000ms),
                   std::to_string(watch.repair_failures()));
    CHECK_IN_CHILD(f, watch.repairs() == 0 && !has_v4(), ip("-4 addr"));
    // Retried after 0.5 s (fails again), then after 1 s more (succeeds).
    CHECK_IN_CHILD(f, eventually([&] { return watch.repairs() == 1 && has_v4(); }, 5000ms),
                   std::to_string(watch.repairs()) + " " + std::to_string(watch.repair_failures()) + " " +
                       std::to_string(attempts.load()) + "\n" + ip("-4 addr"));
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK_IN_CHILD(f, watch.repair_failures() == 2 && attempts.load() == 3,
                   std::to_string(watch.repair_failures()) + " " + std::to_string(attempts.load()));
    CHECK_IN_CHILD(f, took >= 1500ms, std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
    // Nothing is retried once it succeeded.
    std::this_thread::sleep_for(1200ms);
    CHECK_IN_CHILD(f, attempts.load() == 3 && watch.repairs() == 1, std::to_string(attempts.load()));
    return f.str();
  });
}

}  // namespace
}  // namespace osh::tun

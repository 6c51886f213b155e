// Theory of operation.
//
// Goal: anything else on the machine (a network manager, a user, a script)
// that takes the TUN's configuration away is undone, visibly. The classic
// case: `ip link set osh0 down; ip link set osh0 up` drops the IPv6 address
// and its route for good (the kernel removes IPv6 addresses when a link goes
// down unless keep_addr_on_down is set; IPv4 addresses survive and their
// prefix routes come back on up), so every IPv6 connection then fails with
// ENETUNREACH.
//
// Events: a plain NETLINK_ROUTE socket (non-blocking, 1 MiB receive buffer)
// joined to RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR,
// RTNLGRP_IPV4_ROUTE and RTNLGRP_IPV6_ROUTE (rtnetlink(7)). It is read on the
// watch thread's osh::EventLoop; parse_rtnetlink() keeps only the losses of
// our interface: link down, one of our addresses deleted, one of our prefix
// routes deleted, notifications lost (ENOBUFS), and the link deleted. Our own
// repairs only add things, so they never count as losses (IPv4 routes the
// kernel flushes on link down are not notified; the link-down event covers
// them).
//
// Repair: the first loss starts a burst (Debounce: due 150 ms after its last
// event, at most 1 s after its first), so one flap (link down, address and
// route deletions, link up: a few notifications) is one repair. When due, the
// desired configuration is re-applied through LinkConfig's ensure_* calls, in
// dependency order: link up (IPv4 routes need it), addresses (the kernel adds
// their prefix routes), prefix routes. Each call is idempotent (EEXIST /
// already up = nothing to do), so a burst whose losses someone else already
// undid costs a few round trips and no repair. A repair that changed
// something is counted and logged once; one that failed is counted
// (tun_repair_failures), logged as an error and retried on a timer without
// waiting for another event: 0.5 s after the failure, the delay doubling up
// to 10 s while it keeps failing (a persistent failure costs one error line
// every 10 s). An event burst that comes due meanwhile repairs at once; a
// success ends the retries.
//
// Deletion: RTM_DELLINK of our ifindex calls the owner's handler at once (no
// debounce) and ends all further work; the owner tears down (cli/up.cc).
//
// Timing: a repair takes a few netlink round trips (well under a millisecond
// each) after the debounce window. Thread: everything after construction runs
// on the watch thread; only repairs() is read from elsewhere.
#include "tun/link_watch.h"

#include <linux/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "common/event_loop.h"
#include "tun/scoped_fd.h"
#include "tun/tun_error.h"
#include "tun/tun_log.h"

namespace osh::tun {

namespace {

constexpr auto kQuiet = std::chrono::milliseconds(150);
constexpr auto kMaxDelay = std::chrono::milliseconds(1000);
constexpr int kRecvBufferBytes = 1 << 20;
constexpr auto kRetryFirst = std::chrono::milliseconds(500);
constexpr auto kRetryMax = std::chrono::milliseconds(10'000);

// The payload of attribute @type in [attrs, attrs + len), or an empty span.
std::span<const uint8_t> find_attr(const uint8_t* attrs, size_t len, unsigned type) {
  size_t off = 0;
  while (off + sizeof(rtattr) <= len) {
    rtattr a;
    std::memcpy(&a, attrs + off, sizeof a);
    if (a.rta_len < sizeof(rtattr) || off + a.rta_len > len) break;
    if (a.rta_type == type) return {attrs + off + RTA_LENGTH(0), a.rta_len - RTA_LENGTH(0)};
    off += RTA_ALIGN(a.rta_len);
  }
  return {};
}

std::optional<IpAddress> addr_from(std::span<const uint8_t> b, int family) {
  if (family == AF_INET && b.size() == 4) return IpAddress::v4(b.data());
  if (family == AF_INET6 && b.size() == 16) return IpAddress::v6(b.data());
  return std::nullopt;
}

std::string join(const std::vector<std::string>& parts) {
  std::string s;
  for (const auto& p : parts) {
    if (!s.empty()) s += ", ";
    s += p;
  }
  return s;
}

}  // namespace

std::vector<LinkEvent> parse_rtnetlink(std::span<const uint8_t> datagram, const WatchedLink& w) {
  std::vector<LinkEvent> out;
  size_t off = 0;
  while (off + sizeof(nlmsghdr) <= datagram.size()) {
    nlmsghdr h;
    std::memcpy(&h, datagram.data() + off, sizeof h);
    if (h.nlmsg_len < sizeof(nlmsghdr) || off + h.nlmsg_len > datagram.size()) break;
    const uint8_t* body = datagram.data() + off + NLMSG_HDRLEN;
    const size_t body_len = h.nlmsg_len - NLMSG_HDRLEN;
    off += NLMSG_ALIGN(h.nlmsg_len);

    if ((h.nlmsg_type == RTM_NEWLINK || h.nlmsg_type == RTM_DELLINK) && body_len >= sizeof(ifinfomsg)) {
      ifinfomsg ifi;
      std::memcpy(&ifi, body, sizeof ifi);
      if (ifi.ifi_index != w.ifindex) continue;
      if (h.nlmsg_type == RTM_DELLINK)
        out.push_back({LinkEvent::Kind::kLinkGone, "interface deleted"});
      else if ((ifi.ifi_flags & IFF_UP) == 0)
        out.push_back({LinkEvent::Kind::kLinkDown, "link set down"});
    } else if (h.nlmsg_type == RTM_DELADDR && body_len >= sizeof(ifaddrmsg)) {
      ifaddrmsg ifa;
      std::memcpy(&ifa, body, sizeof ifa);
      if (static_cast<int>(ifa.ifa_index) != w.ifindex) continue;
      const uint8_t* attrs = body + NLMSG_ALIGN(sizeof(ifaddrmsg));
      const size_t attrs_len = body_len > NLMSG_ALIGN(sizeof(ifaddrmsg)) ? body_len - NLMSG_ALIGN(sizeof(ifaddrmsg)) : 0;
      // IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's on
      // point-to-point IPv4 links, and the only one IPv6 sends.
      auto bytes = find_attr(attrs, attrs_len, IFA_LOCAL);
      if (bytes.empty()) bytes = find_attr(attrs, attrs_len, IFA_ADDRESS);
      const auto a = addr_from(bytes, ifa.ifa_family);
      if (!a) continue;
      for (const IpPrefix& want : w.addresses)
        if (want.addr == *a && want.len == ifa.ifa_prefixlen) {
          out.push_back({LinkEvent::Kind::kAddressRemoved, "address " + want.to_string() + " removed"});
          break;
        }
    } else if (h.nlmsg_type == RTM_DELROUTE && body_len >= sizeof(rtmsg)) {
      rtmsg rt;
      std::memcpy(&rt, body, sizeof rt);
      const uint8_t* attrs = body + NLMSG_ALIGN(sizeof(rtmsg));
      const size_t attrs_len = body_len > NLMSG_ALIGN(sizeof(rtmsg)) ? body_len - NLMSG_ALIGN(sizeof(rtmsg)) : 0;
      uint32_t table = rt.rtm_table;
      if (auto t = find_attr(attrs, attrs_len, RTA_TABLE); t.size() == 4) std::memcpy(&table, t.data(), 4);
      if (table != RT_TABLE_MAIN) continue;
      auto oif_b = find_attr(attrs, attrs_len, RTA_OIF);
      if (oif_b.size() != 4) continue;
      int32_t oif;
      std::memcpy(&oif, oif_b.data(), 4);
      if (oif != w.ifindex) continue;
      const auto dst = addr_from(find_attr(attrs, attrs_len, RTA_DST), rt.rtm_family);
      if (!dst) continue;
      const IpPrefix got{*dst, rt.rtm_dst_len};
      for (const IpPrefix& want : w.addresses)
        if (want.network() == got) {
          out.push_back({LinkEvent::Kind::kRouteRemoved, "route " + got.to_string() + " removed"});
          break;
        }
    }
  }
  return out;
}

Debounce::Clock::time_point Debounce::on_event(Clock::time_point now) {
  if (!first_) first_ = now;
  last_ = now;
  return *deadline();
}

std::optional<Debounce::Clock::time_point> Debounce::deadline() const {
  if (!first_) return std::nullopt;
  return std::min(*last_ + quiet_, *first_ + max_delay_);
}

std::optional<Debounce::Clock::time_point> Debounce::take_if_due(Clock::time_point now) {
  const auto d = deadline();
  if (!d || now < *d) return std::nullopt;
  const auto first = *first_;
  first_.reset();
  last_.reset();
  return first;
}

struct LinkWatch::Impl {
  WatchedLink watched;
  GoneHandler on_gone;
  RepairHook before_repair;
  LinkConfig config;  // its own netlink socket; used on the watch thread only
  ScopedFd sock;      // the notification socket
  Debounce debounce{kQuiet, kMaxDelay};
  bool timer_armed = false;
  bool gone = false;
  std::vector<std::string> seen;  // what the pending burst took away
  std::atomic<uint64_t> repairs{0};
  std::atomic<uint64_t> repair_failures{0};
  // Retry of a failed repair: what the failed bursts took away, the pending
  // timer (if any) and the delay of the next one.
  std::string retry_lost;
  std::optional<Debounce::Clock::time_point> retry_first;
  std::optional<EventLoop::TimerId> retry_timer;
  Debounce::Clock::duration retry_delay = kRetryFirst;
  alignas(nlmsghdr) std::array<uint8_t, 64 * 1024> buf;  // one datagram
  EventLoop loop;  // last: stopped (destroyed) before the members it uses

  Impl(WatchedLink w, GoneHandler g, RepairHook h)
      : watched(std::move(w)), on_gone(std::move(g)), before_repair(std::move(h)), config(watched.ifindex) {}

  void open_socket() {
    sock.reset(::socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!sock) throw TunError("open NETLINK_ROUTE socket for watching " + config.name(), errno);
    // Root may go past net.core.rmem_max; otherwise the plain limit applies.
    if (::setsockopt(sock.get(), SOL_SOCKET, SO_RCVBUFFORCE, &kRecvBufferBytes, sizeof kRecvBufferBytes) != 0)
      (void)::setsockopt(sock.get(), SOL_SOCKET, SO_RCVBUF, &kRecvBufferBytes, sizeof kRecvBufferBytes);
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
      throw TunError("bind NETLINK_ROUTE socket", errno);
    for (int group : {RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV4_ROUTE,
                      RTNLGRP_IPV6_ROUTE})
      if (::setsockopt(sock.get(), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) != 0)
        throw TunError("join rtnetlink group " + std::to_string(group), errno);
  }

  // The watch thread: drain the socket, collect losses, arm the burst timer.
  void on_readable() {
    for (;;) {
      const ssize_t n = ::recv(sock.get(), buf.data(), buf.size(), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == ENOBUFS) {
          note({{LinkEvent::Kind::kOverrun, "notifications lost (receive buffer full)"}});
          continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK)
          tun_log().warn("{}: reading link notifications: {}", config.name(), std::strerror(errno));
        return;
      }
      if (n == 0) return;
      note(parse_rtnetlink({buf.data(), static_cast<size_t>(n)}, watched));
      if (gone) return;
    }
  }

  void note(const std::vector<LinkEvent>& events) {
    if (events.empty() || gone) return;
    for (const LinkEvent& e : events) {
      if (e.kind == LinkEvent::Kind::kLinkGone) {
        gone = true;
        loop.unwatch(sock.get());
        cancel_retry();
        tun_log().error("{} (index {}) was deleted by something else on the machine", config.name(),
                          watched.ifindex);
        if (on_gone) on_gone(config.name());
        return;
      }
      if (std::find(seen.begin(), seen.end(), e.what) == seen.end()) seen.push_back(e.what);
    }
    const auto now = Debounce::Clock::now();
    const auto due = debounce.on_event(now);
    if (!timer_armed) arm(due - now);
  }

  void arm(Debounce::Clock::duration delay) {
    timer_armed = true;
    loop.add_timer(std::max(delay, Debounce::Clock::duration::zero()), [this] { on_timer(); });
  }

  void on_timer() {
    timer_armed = false;
    if (gone) return;
    const auto now = Debounce::Clock::now();
    const auto first = debounce.take_if_due(now);
    if (!first) {
      if (auto d = debounce.deadline()) arm(*d - now);
      return;
    }
    repair(*first);
  }

  void cancel_retry() {
    if (retry_timer) loop.cancel_timer(*retry_timer);
    retry_timer.reset();
  }

  void on_retry() {
    retry_timer.reset();
    if (gone) return;
    repair(retry_first.value_or(Debounce::Clock::now()));
  }

  // Re-applies the whole configuration; one log line for the burst (or the
  // retry of a failed one).
  void repair(Debounce::Clock::time_point first) {
    cancel_retry();
    if (!retry_lost.empty()) {  // earlier losses not repaired yet
      std::vector<std::string> all{retry_lost};
      for (auto& w : seen)
        if (retry_lost.find(w) == std::string::npos) all.push_back(std::move(w));
      seen = std::move(all);
    }
    if (retry_first) first = std::min(first, *retry_first);
    const std::string lost = join(seen);
    seen.clear();
    std::vector<std::string> done;
    try {
      if (before_repair) before_repair();
      if (config.ensure_up()) done.push_back("link set up");
      for (const IpPrefix& a : watched.addresses)
        if (config.ensure_address(a, watched.flags)) done.push_back("address " + a.to_string() + " added");
      for (const IpPrefix& a : watched.addresses)
        if (!watched.flags.noprefixroute && config.ensure_prefix_route(a))
          done.push_back("route " + a.network().to_string() + " added");
    } catch (const TunError& e) {
      if (e.error_code() == ENODEV) return;  // being deleted: RTM_DELLINK follows
      const uint64_t n = repair_failures.fetch_add(1) + 1;
      const auto delay = retry_delay;
      retry_delay = std::min<Debounce::Clock::duration>(retry_delay * 2, kRetryMax);
      retry_lost = lost;
      retry_first = first;
      retry_timer = loop.add_timer(delay, [this] { on_retry(); });
      tun_log().error("{}: {}; could not repair: {} (tun_repair_failures {}; trying again in {} ms)",
                      config.name(), lost, e.what(), n,
                      std::chrono::duration_cast<std::chrono::milliseconds>(delay).count());
      return;
    }
    const bool retried = !retry_lost.empty();
    retry_lost.clear();
    retry_first.reset();
    retry_delay = kRetryFirst;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Debounce::Clock::now() - first).count();
    if (done.empty()) {
      if (retried)
        tun_log().info("{}: {}; already put back by something else, nothing left to repair", config.name(), lost);
      else
        tun_log().debug("{}: {}; nothing to repair", config.name(), lost);
      return;
    }
    const uint64_t n = repairs.fetch_add(1) + 1;
    tun_log().warn("{}: {} by something else on the machine; repaired {} ms after the first change: {} "
                     "(tun_repairs {})",
                     config.name(), lost, ms, join(done), n);
  }
};

LinkWatch::LinkWatch(WatchedLink watched, GoneHandler on_gone, RepairHook before_repair)
    : impl_(std::make_unique<Impl>(std::move(watched), std::move(on_gone), std::move(before_repair))) {
  impl_->open_socket();
  if (const int e = impl_->loop.watch(impl_->sock.get(), EPOLLIN, [im = impl_.get()](uint32_t) { im->on_readable(); });
      e != 0)
    throw TunError("watch the netlink socket (epoll_ctl)", e);
  impl_->loop.start();
}

LinkWatch::~LinkWatch() {
  if (!impl_) return;
  impl_->loop.stop();
  impl_->loop.unwatch(impl_->sock.get());
}

uint64_t LinkWatch::repairs() const noexcept { return impl_->repairs.load(); }

uint64_t LinkWatch::repair_failures() const noexcept { return impl_->repair_failures.load(); }

}  // namespace osh::tun

// Watching the TUN's own configuration (issue 15.4): rtnetlink notifications
// about its link, addresses and routes; what someone else took away is put
// back (link up, addresses, their on-link routes); the interface's deletion
// is reported. No libnl type appears here (see link_watch.cc).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tun/ip_prefix.h"
#include "tun/link_config.h"

namespace osh::tun {

/// The configuration a LinkWatch keeps on one interface.
struct WatchedLink {
  int ifindex = 0;
  /// Addresses with their on-link prefix length (e.g. 198.18.0.1/16); each
  /// implies the kernel's prefix route to its network (main table).
  std::vector<IpPrefix> addresses;
  /// Flags the addresses were added with (IFA_F_NODAD for IPv6).
  AddrFlags flags;
};

/// One rtnetlink notification that matters for a WatchedLink.
struct LinkEvent {
  enum class Kind {
    kLinkDown,        ///< RTM_NEWLINK for our ifindex without IFF_UP
    kAddressRemoved,  ///< RTM_DELADDR of one of our addresses
    kRouteRemoved,    ///< RTM_DELROUTE of one of our prefix routes
    kOverrun,         ///< ENOBUFS: notifications were lost, state unknown
    kLinkGone,        ///< RTM_DELLINK for our ifindex
  };
  Kind kind;
  std::string what;  ///< for the log, e.g. "address fd00:6f73:6800::1/64 removed"
};

/// parse_rtnetlink() - the notifications in one datagram from a NETLINK_ROUTE
/// socket that take something of @watched away (rtnetlink(7): ifinfomsg,
/// ifaddrmsg, rtmsg and their attributes). Everything else is ignored:
/// other interfaces, additions (our own repairs cause only those), RTM_NEWLINK
/// with IFF_UP, addresses and routes that are not ours (link-local, local
/// table). A truncated or malformed message ends the parse. Pure function.
/// @datagram: the bytes of one recv()
/// Return: the relevant events, in order (empty: nothing to do).
std::vector<LinkEvent> parse_rtnetlink(std::span<const uint8_t> datagram, const WatchedLink& watched);

/// Groups a burst of events into one repair: due @quiet after the last event
/// of the burst, but at most @max_delay after its first (a link flap is a
/// handful of notifications within microseconds to milliseconds). Pure;
/// time is passed in.
class Debounce {
 public:
  using Clock = std::chrono::steady_clock;
  Debounce(Clock::duration quiet, Clock::duration max_delay) : quiet_(quiet), max_delay_(max_delay) {}

  /// Records an event at @now. Return: when the burst is due now.
  Clock::time_point on_event(Clock::time_point now);
  /// When the pending burst is due; nullopt when none is pending.
  std::optional<Clock::time_point> deadline() const;
  /// If a burst is pending and due at @now: ends it and returns the time of
  /// its first event; else nullopt (nothing changes).
  std::optional<Clock::time_point> take_if_due(Clock::time_point now);

 private:
  Clock::duration quiet_, max_delay_;
  std::optional<Clock::time_point> first_, last_;
};

/// Keeps a WatchedLink configured while it runs.
///
/// A NETLINK_ROUTE socket subscribed to RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR,
/// RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV4_ROUTE and RTNLGRP_IPV6_ROUTE is watched
/// by an osh::EventLoop on a thread of its own. Events from parse_rtnetlink()
/// start a burst (Debounce, 150 ms quiet, 1 s at most); when it is due, the
/// whole configuration is re-applied idempotently (LinkConfig::ensure_up,
/// ensure_address, ensure_prefix_route, through a netlink socket of its own):
/// if anything had to be put back, that is one repair, counted in repairs()
/// and logged once (logger "tun", warning: what went away, what was put back,
/// milliseconds since the burst's first event). A failed repair (a TunError
/// other than ENODEV) is counted in repair_failures(), logged as an error and
/// tried again on the watch thread's loop without waiting for another event:
/// after 0.5 s, the delay doubling up to 10 s while it keeps failing; a
/// success (or a new burst's repair) ends the retries. kLinkGone calls
/// @on_gone at once, on the watch thread, and the watch stops acting.
///
/// Network namespace: the calling thread's at construction.
class LinkWatch {
 public:
  /// Called once, on the watch thread, when the interface was deleted
  /// (RTM_DELLINK, also a move to another namespace). Must not block.
  using GoneHandler = std::function<void(const std::string& ifname)>;
  /// Test seam: called on the watch thread at the start of every repair
  /// attempt (burst or retry); a TunError it throws fails that attempt
  /// exactly like a failed netlink request.
  using RepairHook = std::function<void()>;

  /// Opens both netlink sockets and starts the watch thread.
  /// @before_repair: empty in production (see RepairHook).
  /// @throws TunError if a socket cannot be opened or subscribed, or the
  ///         interface does not exist (ENODEV).
  LinkWatch(WatchedLink watched, GoneHandler on_gone, RepairHook before_repair = {});
  /// Stops the thread (a repair in progress finishes first).
  ~LinkWatch();
  LinkWatch(const LinkWatch&) = delete;
  LinkWatch& operator=(const LinkWatch&) = delete;

  /// Repairs made so far. Thread: any.
  uint64_t repairs() const noexcept;
  /// Repair attempts that failed so far (each retry that fails counts
  /// again). Thread: any.
  uint64_t repair_failures() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace osh::tun

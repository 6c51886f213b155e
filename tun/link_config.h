// Configuration of a network interface (normally the TUN) through rtnetlink:
// MTU, link up, addresses, routes. Every change is undone in reverse order by
// rollback() or the destructor (after OpenVPN 3 tunnetlink's create/destroy
// action lists). No libnl type appears here: the netlink socket is private.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "tun/ip_prefix.h"
#include "tun/tun_error.h"

namespace osh::tun {

/// Options for LinkConfig::add_address().
struct AddrFlags {
  /// IPv6 only: skip duplicate address detection (IFA_F_NODAD), so the
  /// address is usable at once instead of "tentative" for about a second.
  bool nodad = true;
  /// Do not install the on-link prefix route for the address
  /// (IFA_F_NOPREFIXROUTE); with false the kernel adds e.g.
  /// "198.18.0.0/16 dev osh0 proto kernel scope link".
  bool noprefixroute = false;
};

/// Applies configuration to one interface and remembers how to undo it.
///
/// Every method that changes the system records the inverse step (restore the
/// old MTU, set the link down, delete the address, delete the route, restore
/// the IPv6 sysctl) only after the change succeeded; a step that changes
/// nothing (MTU already right, link already up) records nothing. rollback()
/// and the destructor run the recorded steps newest first.
///
/// Works in the network namespace of the thread that constructed it (the
/// netlink socket is bound there). Not thread-safe: use one object from one
/// thread at a time. All calls block for one netlink round trip (typically
/// well under a millisecond).
class LinkConfig {
 public:
  /// Opens a NETLINK_ROUTE socket for configuring interface `ifindex`.
  /// @throws TunError if the socket cannot be opened or no interface has
  ///         that index (ENODEV).
  explicit LinkConfig(int ifindex);
  /// Calls rollback().
  ~LinkConfig();

  LinkConfig(LinkConfig&&) noexcept;
  /// Rolls back this object's changes, then takes over `other`'s.
  LinkConfig& operator=(LinkConfig&&) noexcept;
  LinkConfig(const LinkConfig&) = delete;
  LinkConfig& operator=(const LinkConfig&) = delete;

  /// The interface name as it was at construction (for messages).
  const std::string& name() const;
  /// The interface index given at construction.
  int ifindex() const;

  /// Sets the MTU. Undo: restore the previous MTU.
  /// @param bytes  layer-3 MTU in bytes (68..65535 for a TUN; IPv6 needs >= 1280)
  /// @throws TunError (e.g. EINVAL for an out-of-range MTU)
  void set_mtu(uint32_t bytes);

  /// Sets the link administratively up. Undo: set it down (only if it was
  /// down before).
  /// @throws TunError
  void set_up();

  /// Sets the transmit queue length, packets: how many packets the kernel
  /// queues towards the TUN reader before it drops (a connection storm
  /// overflows the default 500). Undone by rollback(). @throws TunError.
  void set_txqueuelen(uint32_t packets);

  /// Adds an address with its on-link prefix length, e.g. 198.18.0.1/16 or
  /// fd00:6f73:6800::1/64. For IPv6 it first sets
  /// /proc/sys/net/ipv6/conf/<name>/disable_ipv6 to 0 if that file exists and
  /// says 1 (undo: set it back to 1). Undo: delete the address.
  /// @throws TunError, e.g. "add address 198.18.0.1/16 to osh0: File exists"
  void add_address(const IpPrefix& addr_with_prefix_len, AddrFlags flags = {});

  /// Adds a unicast route to `dst` through this link (main table, scope link,
  /// proto static, no gateway). Host bits of `dst` are ignored. IPv4 routes
  /// need the link to be up (ENETDOWN otherwise). Fails with EEXIST if the
  /// same route exists (also one the kernel added for an address prefix).
  /// Undo: delete the route.
  /// @throws TunError
  void add_route(const IpPrefix& dst);

  // ---- repair (tun/link_watch.h): re-apply the configuration without
  // recording undo steps. Each is idempotent: it changes nothing and
  // returns false when the kernel already has what it asks for, so running
  // all of them after any change by someone else restores the set-up.

  /// Sets the link up if it is down. Records no undo step (the one set_up()
  /// recorded, if any, still applies).
  /// @return true if the link was down and is now up.
  /// @throws TunError (ENODEV when the interface is gone)
  bool ensure_up();

  /// Adds the address (as add_address(): IFA_F_NODAD for IPv6, the kernel's
  /// on-link prefix route unless @flags says otherwise) if the interface
  /// lacks it; NLM_F_EXCL, and EEXIST means "already there" (rtnetlink(7)).
  /// For IPv6 it first sets /proc/sys/net/ipv6/conf/<name>/disable_ipv6 to 0
  /// if that file exists and says otherwise (someone setting it to 1 removes
  /// every IPv6 address of the link and makes the kernel refuse new ones).
  /// Records no undo step, neither for the address nor for the sysctl (the
  /// one add_address() recorded, if any, still applies). Thread: the one
  /// using this object. @return true if the address was missing and is now
  /// added. @throws TunError on any other failure (also when the sysctl
  /// cannot be written; ENODEV when the interface is gone).
  bool ensure_address(const IpPrefix& addr_with_prefix_len, AddrFlags flags = {});

  /// Adds the on-link prefix route the kernel installs for an address
  /// (ip-address(8): "proto kernel scope link", main table; IPv4 with
  /// "src <address>" and metric 0, IPv6 with metric 256, the kernel's
  /// IP6_RT_PRIO_ADDRCONF) if it is missing: the same key, so an existing
  /// route makes the kernel answer EEXIST, which means "already there".
  /// Records no undo step (the route goes with its address).
  /// @param addr_with_prefix_len  the address, e.g. 198.18.0.1/16
  /// @return true if the route was missing and is now added.
  /// @throws TunError on any other failure.
  bool ensure_prefix_route(const IpPrefix& addr_with_prefix_len);

  /// Runs the undo steps newest first and forgets them. Never throws: errors
  /// are logged (spdlog logger "tun"); ENODEV, ESRCH, ENOENT and
  /// EADDRNOTAVAIL are ignored silently because the interface (and with it
  /// its addresses and routes) may already be gone, e.g. after the TUN
  /// descriptor was closed. Safe to call more than once.
  void rollback() noexcept;

  /// Number of recorded undo steps (for tests and diagnostics).
  std::size_t pending_undo_steps() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Deletes the interface called `name` in the calling thread's network
/// namespace if it exists (crash recovery: a persistent leftover).
/// @return true if an interface was deleted, false if none had that name.
/// @throws TunError on any other failure (e.g. EPERM, EOPNOTSUPP).
bool remove_stale_link(std::string_view name);

/// The index of interface `name` in the calling thread's network namespace,
/// or nullopt if there is none.
/// @throws TunError on failures other than "no such device".
std::optional<int> link_index(std::string_view name);

}  // namespace osh::tun

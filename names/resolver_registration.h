// Registers the tunnel's DNS responder with systemd-resolved as the resolver
// for "~<domain>" on the tunnel link, and takes the registration back.
// Speaks resolved's D-Bus API (org.freedesktop.resolve1.Manager on the system
// bus) through libsystemd's sd-bus; no program is started, and nothing is
// registered when resolved is not on the bus.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace osh::names {

/// A D-Bus call to systemd-resolved failed, or the system bus could not be
/// reached (message: the method, the D-Bus error name and its text).
class ResolverError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// One DNS server address as resolved's SetLinkDNS takes it: an address
/// family (AF_INET or AF_INET6) and the address in network byte order
/// (4 or 16 bytes; D-Bus signature "(iay)").
struct ResolvedDnsAddress {
  int family = 0;
  std::vector<uint8_t> bytes;
  bool operator==(const ResolvedDnsAddress&) const = default;
};

/// While it lives, systemd-resolved sends queries for names under `domain`
/// to `dns_addresses` over `link` (systemd-resolved.service(8), "Protocols
/// and Routing": a routing-only domain "~domain" on a link). Calls, in order,
/// on org.freedesktop.resolve1 /org/freedesktop/resolve1
/// org.freedesktop.resolve1.Manager (org.freedesktop.resolve1(5)):
///
///     SetLinkDNS(i ifindex, a(iay) addresses)
///     SetLinkDomains(i ifindex, a(sb) [(domain, true)])   -- routing-only
///     SetLinkDefaultRoute(i ifindex, b false)
///
/// The last one keeps every other name off the tunnel link even on resolved
/// versions whose heuristics would make it a default route. The destructor
/// calls RevertLink(i ifindex), which drops all per-link settings (the link
/// belongs to the tunnel, so there are none of anyone else's). resolved
/// allows these calls to a caller with CAP_NET_ADMIN (root); others go
/// through polkit.
///
/// If available() is false, construction does nothing and active() is
/// false. Thread: construct and destroy on one thread (each opens its own
/// system-bus connection and closes it again); not copyable.
class ResolverRegistration {
 public:
  /// True if the D-Bus system bus answers ($DBUS_SYSTEM_BUS_ADDRESS, else
  /// /run/dbus/system_bus_socket) and the name org.freedesktop.resolve1 has
  /// an owner (NameHasOwner: asks the bus, never activates resolved).
  static bool available();

  /// The addresses as SetLinkDNS takes them (pure).
  /// @throws std::invalid_argument for a string that is not a numeric IPv4
  ///         or IPv6 address.
  static std::vector<ResolvedDnsAddress> dns_addresses(const std::vector<std::string>& numeric);

  /// The routing-only domain registered for `domain` (pure): trailing dots
  /// dropped, e.g. "local" for "local." (sent as ("local", true), which
  /// resolvectl shows as "~local").
  static std::string routing_domain(const std::string& domain);

  /// Registers (see the class comment) if available(); otherwise a no-op.
  /// @param link           interface name, e.g. "osh0" (its index is looked
  ///                       up in this network namespace: if_nametoindex)
  /// @param dns_addresses  numeric server addresses, e.g. {"198.18.0.2"}
  /// @param domain         e.g. "local"; a trailing '.' is dropped
  /// @throws std::invalid_argument if link, dns_addresses or domain is empty
  ///         or an address is not numeric; ResolverError if the link does not
  ///         exist or a call fails (anything already applied is reverted
  ///         first).
  ResolverRegistration(std::string link, std::vector<std::string> dns_addresses,
                       std::string domain);

  /// Reverts the link's resolved settings if active(); a failure is logged,
  /// not thrown.
  ~ResolverRegistration();

  ResolverRegistration(const ResolverRegistration&) = delete;
  ResolverRegistration& operator=(const ResolverRegistration&) = delete;

  /// True if the registration was made (and is reverted on destruction).
  bool active() const noexcept { return active_; }

 private:
  std::string link_;
  int ifindex_ = 0;
  bool active_ = false;
};

}  // namespace osh::names

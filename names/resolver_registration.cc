// Theory of operation.
//
// systemd-resolved keeps per-link DNS settings that a link manager (here: the
// tunnel) sets over D-Bus (org.freedesktop.resolve1(5)); RevertLink drops
// them again. The tunnel's responder only knows "<sandbox>.<domain>", so the
// link gets the routing-only domain "~<domain>" and default-route=false:
// resolved then sends exactly the names under <domain> to our server and
// nothing else.
//
// Every operation opens its own connection to the system bus (sd-bus), makes
// its calls synchronously with a 10 s timeout, and closes it: registration
// and revert are rare, happen on the main thread, and a bus that restarted in
// between must not leave the revert with a dead connection.
//
// The constructor applies the calls in order; on the first failure it calls
// RevertLink (best effort) and throws, so a half-made registration never
// outlives the constructor. The destructor reverts and logs a failure.
#include "names/resolver_registration.h"

#include <net/if.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string_view>
#include <utility>

#include "common/ip_address.h"

namespace osh::names {

namespace {

constexpr const char* kService = "org.freedesktop.resolve1";
constexpr const char* kPath = "/org/freedesktop/resolve1";
constexpr const char* kManager = "org.freedesktop.resolve1.Manager";
constexpr uint64_t kCallTimeoutUs = 10'000'000;  // per D-Bus call

struct BusUnref {
  void operator()(sd_bus* b) const noexcept { sd_bus_flush_close_unref(b); }
};
using Bus = std::unique_ptr<sd_bus, BusUnref>;
struct MessageUnref {
  void operator()(sd_bus_message* m) const noexcept { sd_bus_message_unref(m); }
};
using Message = std::unique_ptr<sd_bus_message, MessageUnref>;

// sd_bus_error with its free.
class BusError {
 public:
  BusError() = default;
  ~BusError() { sd_bus_error_free(&e_); }
  BusError(const BusError&) = delete;
  BusError& operator=(const BusError&) = delete;
  sd_bus_error* get() noexcept { return &e_; }
  // "<name>: <message>", or strerror(-rc) when the bus gave no error.
  std::string text(int rc) const {
    if (sd_bus_error_is_set(&e_))
      return std::string(e_.name) + (e_.message ? std::string(": ") + e_.message : "");
    return std::strerror(-rc);
  }

 private:
  sd_bus_error e_ = SD_BUS_ERROR_NULL;
};

// The system bus, or ResolverError.
Bus open_system_bus() {
  sd_bus* raw = nullptr;
  if (int rc = sd_bus_open_system(&raw); rc < 0)
    throw ResolverError(std::string("cannot connect to the D-Bus system bus: ") + std::strerror(-rc));
  Bus bus(raw);
  (void)sd_bus_set_method_call_timeout(bus.get(), kCallTimeoutUs);
  return bus;
}

// Throws ResolverError naming the method when rc < 0.
void check_call(int rc, const char* method, const BusError& err) {
  if (rc < 0) throw ResolverError(std::string("resolved ") + method + ": " + err.text(rc));
}

// Throws ResolverError when building a message failed.
void check_build(int rc, const char* method) {
  if (rc < 0) throw ResolverError(std::string("building the ") + method + " call: " + std::strerror(-rc));
}

void set_link_dns(sd_bus* bus, int ifindex, const std::vector<ResolvedDnsAddress>& addrs) {
  sd_bus_message* raw = nullptr;
  check_build(sd_bus_message_new_method_call(bus, &raw, kService, kPath, kManager, "SetLinkDNS"), "SetLinkDNS");
  Message m(raw);
  check_build(sd_bus_message_append(m.get(), "i", ifindex), "SetLinkDNS");
  check_build(sd_bus_message_open_container(m.get(), 'a', "(iay)"), "SetLinkDNS");
  for (const ResolvedDnsAddress& a : addrs) {
    check_build(sd_bus_message_open_container(m.get(), 'r', "iay"), "SetLinkDNS");
    check_build(sd_bus_message_append(m.get(), "i", a.family), "SetLinkDNS");
    check_build(sd_bus_message_append_array(m.get(), 'y', a.bytes.data(), a.bytes.size()), "SetLinkDNS");
    check_build(sd_bus_message_close_container(m.get()), "SetLinkDNS");
  }
  check_build(sd_bus_message_close_container(m.get()), "SetLinkDNS");
  BusError err;
  check_call(sd_bus_call(bus, m.get(), kCallTimeoutUs, err.get(), nullptr), "SetLinkDNS", err);
}

void set_link_domain(sd_bus* bus, int ifindex, const std::string& domain) {
  BusError err;
  const int rc = sd_bus_call_method(bus, kService, kPath, kManager, "SetLinkDomains", err.get(), nullptr,
                                    "ia(sb)", ifindex, 1, domain.c_str(), 1 /* routing only */);
  check_call(rc, "SetLinkDomains", err);
}

void set_link_default_route(sd_bus* bus, int ifindex, bool enable) {
  BusError err;
  const int rc = sd_bus_call_method(bus, kService, kPath, kManager, "SetLinkDefaultRoute", err.get(),
                                    nullptr, "ib", ifindex, enable ? 1 : 0);
  check_call(rc, "SetLinkDefaultRoute", err);
}

void revert_link(int ifindex) {
  Bus bus = open_system_bus();
  BusError err;
  const int rc = sd_bus_call_method(bus.get(), kService, kPath, kManager, "RevertLink", err.get(), nullptr,
                                    "i", ifindex);
  check_call(rc, "RevertLink", err);
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& a : v) s += (s.empty() ? "" : " ") + a;
  return s;
}

}  // namespace

bool ResolverRegistration::available() {
  sd_bus* raw = nullptr;
  if (sd_bus_open_system(&raw) < 0) return false;
  Bus bus(raw);
  (void)sd_bus_set_method_call_timeout(bus.get(), kCallTimeoutUs);
  BusError err;
  sd_bus_message* reply = nullptr;
  const int rc = sd_bus_call_method(bus.get(), "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                    "org.freedesktop.DBus", "NameHasOwner", err.get(), &reply, "s", kService);
  if (rc < 0) {
    spdlog::debug("D-Bus system bus: NameHasOwner({}): {}", kService, err.text(rc));
    return false;
  }
  Message m(reply);
  int has_owner = 0;
  if (sd_bus_message_read(m.get(), "b", &has_owner) < 0) return false;
  return has_owner != 0;
}

std::vector<ResolvedDnsAddress> ResolverRegistration::dns_addresses(const std::vector<std::string>& numeric) {
  std::vector<ResolvedDnsAddress> out;
  for (const std::string& s : numeric) {
    const auto ip = IpAddress::parse(s);
    if (!ip) throw std::invalid_argument("resolver registration: '" + s + "' is not a numeric IP address");
    ResolvedDnsAddress a;
    a.family = ip->family;
    a.bytes.assign(ip->bytes.begin(), ip->bytes.begin() + static_cast<std::ptrdiff_t>(ip->size()));
    out.push_back(std::move(a));
  }
  return out;
}

std::string ResolverRegistration::routing_domain(const std::string& domain) {
  std::string s = domain;
  while (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

ResolverRegistration::ResolverRegistration(std::string link, std::vector<std::string> dns_addresses_text,
                                           std::string domain)
    : link_(std::move(link)) {
  if (link_.empty()) throw std::invalid_argument("resolver registration: empty link name");
  if (dns_addresses_text.empty()) throw std::invalid_argument("resolver registration: no DNS server address");
  const std::string routing = routing_domain(domain);
  if (routing.empty()) throw std::invalid_argument("resolver registration: empty domain");
  const std::vector<ResolvedDnsAddress> addrs = dns_addresses(dns_addresses_text);
  if (!available()) {
    spdlog::debug("systemd-resolved is not on the D-Bus system bus; ~{} not registered on {}", routing, link_);
    return;
  }
  ifindex_ = static_cast<int>(::if_nametoindex(link_.c_str()));
  if (ifindex_ == 0) throw ResolverError("resolver registration: no link " + link_ + ": " + std::strerror(errno));
  try {
    Bus bus = open_system_bus();
    set_link_dns(bus.get(), ifindex_, addrs);
    set_link_domain(bus.get(), ifindex_, routing);
    set_link_default_route(bus.get(), ifindex_, false);
  } catch (...) {
    try {
      revert_link(ifindex_);
    } catch (const std::exception& e) {
      spdlog::warn("undoing a partial resolver registration: {}", e.what());
    }
    throw;
  }
  active_ = true;
  spdlog::info("systemd-resolved: names under {} go to {} on {} (ifindex {}, D-Bus)", routing,
               join(dns_addresses_text), link_, ifindex_);
}

ResolverRegistration::~ResolverRegistration() {
  if (!active_) return;
  try {
    revert_link(ifindex_);
    spdlog::info("systemd-resolved: registration on {} reverted", link_);
  } catch (const std::exception& e) {
    spdlog::error("removing the resolver registration: {}", e.what());
  }
}

}  // namespace osh::names

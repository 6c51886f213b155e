// ResolverRegistration's pure parts (what SetLinkDNS and SetLinkDomains are
// given) and its behaviour without systemd-resolved on the bus. The D-Bus
// calls themselves run against a real systemd-resolved in the vm-test
// vm_resolved (vm-tests/test_resolved.sh).
#include "names/resolver_registration.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace osh::names {
namespace {

TEST(ResolverRegistration, DnsAddressesAsSetLinkDnsTakesThem) {
  const auto a = ResolverRegistration::dns_addresses({"198.18.0.2", "fd00:6f73:6800::2"});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0], (ResolvedDnsAddress{AF_INET, {198, 18, 0, 2}}));
  EXPECT_EQ(a[1], (ResolvedDnsAddress{AF_INET6, {0xfd, 0x00, 0x6f, 0x73, 0x68, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}}));
  EXPECT_THROW(ResolverRegistration::dns_addresses({"demo.local"}), std::invalid_argument);
  EXPECT_THROW(ResolverRegistration::dns_addresses({"198.18.0.2/16"}), std::invalid_argument);
}

TEST(ResolverRegistration, RoutingDomainDropsTrailingDots) {
  EXPECT_EQ(ResolverRegistration::routing_domain("local"), "local");
  EXPECT_EQ(ResolverRegistration::routing_domain("sbx.example."), "sbx.example");
  EXPECT_EQ(ResolverRegistration::routing_domain(".."), "");
}

TEST(ResolverRegistration, RejectsBadArguments) {
  EXPECT_THROW(ResolverRegistration("", {"198.18.0.2"}, "local"), std::invalid_argument);
  EXPECT_THROW(ResolverRegistration("osh0", {}, "local"), std::invalid_argument);
  EXPECT_THROW(ResolverRegistration("osh0", {"198.18.0.2"}, "."), std::invalid_argument);
  EXPECT_THROW(ResolverRegistration("osh0", {"not-an-address"}, "local"), std::invalid_argument);
}

// Points sd-bus at a system bus that does not exist for the scope's life.
class NoSystemBus {
 public:
  NoSystemBus() {
    if (const char* v = std::getenv("DBUS_SYSTEM_BUS_ADDRESS")) old_ = v;
    ::setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/osh-test-no-bus", 1);
  }
  ~NoSystemBus() {
    if (old_) ::setenv("DBUS_SYSTEM_BUS_ADDRESS", old_->c_str(), 1);
    else ::unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
  }

 private:
  std::optional<std::string> old_;
};

TEST(ResolverRegistration, InactiveWithoutSystemBus) {
  NoSystemBus no_bus;
  EXPECT_FALSE(ResolverRegistration::available());
  ResolverRegistration reg("osh-test-none", {"198.18.0.2"}, "local");
  EXPECT_FALSE(reg.active());
}

}  // namespace
}  // namespace osh::names

// The address plan (cli/addressing): stable, unique addresses, and a full
// prefix is a "no address" answer, not an exception out of up's refresh loop
// (issue 14.8). Pure logic.
#include "cli/addressing.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace osh::cli {
namespace {

AddressPlan plan(const char* p4, const char* p6) {
  return AddressPlan(*tun::IpPrefix::parse(p4), *tun::IpPrefix::parse(p6));
}

TEST(AddressPlan, SameIdSameAddressesAndNeverShared) {
  AddressPlan p = plan("198.18.0.0/16", "fd00:6f73:6800::/64");
  std::set<std::string> v4, v6;
  for (int i = 0; i < 500; ++i) {
    const auto a = p.assign("sandbox-" + std::to_string(i));
    ASSERT_TRUE(a);
    EXPECT_TRUE(v4.insert(a->v4.to_string()).second);
    EXPECT_TRUE(v6.insert(a->v6.to_string()).second);
  }
  EXPECT_EQ(p.assign("sandbox-7")->v4, p.assign("sandbox-7")->v4);
}

TEST(AddressPlan, AFullPrefixAnswersNoAddressAndAReleaseMakesRoom) {
  AddressPlan p = plan("198.18.0.0/24", "fd00:6f73:6800::/64");
  // A /24: indexes 16..254 are sandboxes' (.255 is the broadcast address).
  ASSERT_EQ(p.capacity(), 239u);
  for (uint64_t i = 0; i < p.capacity(); ++i) ASSERT_TRUE(p.assign("sb-" + std::to_string(i))) << i;
  std::optional<SandboxAddresses> none;
  ASSERT_NO_THROW(none = p.assign("one-too-many"));
  EXPECT_FALSE(none);
  EXPECT_TRUE(p.assign("sb-3"));  // the ones that have addresses keep them
  p.release("sb-3");
  EXPECT_TRUE(p.assign("one-too-many"));
}

TEST(AddressPlan, AFullIpv6RangeEndsTooInsteadOfProbingForever) {
  // The IPv6 range (/112: 65520 sandboxes) is the smaller one here.
  AddressPlan p = plan("10.0.0.0/8", "fd00:6f73:6800::/112");
  EXPECT_EQ(p.capacity(), 65536u - 16u);
  for (uint64_t i = 0; i < p.capacity(); ++i) ASSERT_TRUE(p.assign("sb-" + std::to_string(i))) << i;
  EXPECT_FALSE(p.assign("one-too-many"));
}

}  // namespace
}  // namespace osh::cli

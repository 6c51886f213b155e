#include "tun/ip_prefix.h"

#include <gtest/gtest.h>

#include <set>
#include <stdexcept>

namespace osh::tun {
namespace {

TEST(IpAddressTest, ParsesV4AndV6) {
  auto a = IpAddress::parse("198.18.0.1");
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->is_v4());
  EXPECT_EQ(a->family, AF_INET);
  EXPECT_EQ(a->size(), 4u);
  EXPECT_EQ(a->bytes[0], 198);
  EXPECT_EQ(a->bytes[3], 1);
  EXPECT_EQ(a->bytes[4], 0);
  EXPECT_EQ(a->to_string(), "198.18.0.1");

  auto b = IpAddress::parse("FD00:6f73:6800:0:0:0:0:1");
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->is_v6());
  EXPECT_EQ(b->size(), 16u);
  EXPECT_EQ(b->bytes[0], 0xfd);
  EXPECT_EQ(b->bytes[15], 1);
  EXPECT_EQ(b->to_string(), "fd00:6f73:6800::1");  // canonical form

  auto m = IpAddress::parse("::ffff:1.2.3.4");
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->is_v6());
}

TEST(IpAddressTest, RejectsBadInput) {
  for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", " 1.2.3.4",
                          "1.2.3.4 ", "host.local", "fe80::1%eth0", "1.2.3.4/32", ":::",
                          "fd00::1::2", "gggg::1",
                          "0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000"}) {
    EXPECT_FALSE(IpAddress::parse(bad)) << bad;
  }
}

TEST(IpAddressTest, UnsetAndOrdering) {
  IpAddress unset;
  EXPECT_EQ(unset.to_string(), "");
  EXPECT_EQ(unset.size(), 0u);
  EXPECT_EQ(IpAddress::v4({10, 0, 0, 1}), *IpAddress::parse("10.0.0.1"));
  EXPECT_LT(*IpAddress::parse("10.0.0.1"), *IpAddress::parse("10.0.0.2"));
  EXPECT_LT(*IpAddress::parse("255.255.255.255"), *IpAddress::parse("::"));  // v4 before v6
  std::set<IpAddress> s{*IpAddress::parse("::1"), *IpAddress::parse("::1")};
  EXPECT_EQ(s.size(), 1u);
}

TEST(IpPrefixTest, ParsesAndPrints) {
  auto p = IpPrefix::parse("198.18.0.0/16");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->len, 16);
  EXPECT_EQ(p->addr.to_string(), "198.18.0.0");
  EXPECT_EQ(p->to_string(), "198.18.0.0/16");

  auto q = IpPrefix::parse("fd00:6f73:6800::/64");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->len, 64);
  EXPECT_EQ(q->to_string(), "fd00:6f73:6800::/64");

  // Host bits are kept (interface address with its prefix length).
  auto h = IpPrefix::parse("198.18.0.1/16");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->to_string(), "198.18.0.1/16");
  EXPECT_EQ(h->network().to_string(), "198.18.0.0/16");
  EXPECT_NE(*h, *p);
  EXPECT_EQ(h->network(), *p);

  EXPECT_TRUE(IpPrefix::parse("0.0.0.0/0"));
  EXPECT_TRUE(IpPrefix::parse("1.2.3.4/32"));
  EXPECT_TRUE(IpPrefix::parse("::/0"));
  EXPECT_TRUE(IpPrefix::parse("::1/128"));
}

TEST(IpPrefixTest, RejectsBadInput) {
  for (const char* bad : {"", "/", "198.18.0.0", "198.18.0.0/", "198.18.0.0/33", "::/129",
                          "198.18.0.0/-1", "198.18.0.0/+8", "198.18.0.0/16 ", "198.18.0.0/ 16",
                          "198.18.0.0/1a", "198.18.0.0/16/16", "/16", "x/16", "198.18.0.0/0016",
                          "fd00::/64%eth0"}) {
    EXPECT_FALSE(IpPrefix::parse(bad)) << bad;
  }
}

TEST(IpPrefixTest, ContainsV4) {
  const auto p = *IpPrefix::parse("198.18.0.0/16");
  EXPECT_TRUE(p.contains(*IpAddress::parse("198.18.0.0")));
  EXPECT_TRUE(p.contains(*IpAddress::parse("198.18.255.255")));
  EXPECT_FALSE(p.contains(*IpAddress::parse("198.19.0.0")));
  EXPECT_FALSE(p.contains(*IpAddress::parse("198.17.255.255")));
  EXPECT_FALSE(p.contains(*IpAddress::parse("::ffff:198.18.0.1")));  // other family
  EXPECT_FALSE(p.contains(IpAddress{}));

  const auto odd = *IpPrefix::parse("10.0.0.128/25");
  EXPECT_TRUE(odd.contains(*IpAddress::parse("10.0.0.255")));
  EXPECT_FALSE(odd.contains(*IpAddress::parse("10.0.0.127")));

  EXPECT_TRUE(IpPrefix::parse("0.0.0.0/0")->contains(*IpAddress::parse("8.8.8.8")));
  const auto host = *IpPrefix::parse("1.2.3.4/32");
  EXPECT_TRUE(host.contains(*IpAddress::parse("1.2.3.4")));
  EXPECT_FALSE(host.contains(*IpAddress::parse("1.2.3.5")));
}

TEST(IpPrefixTest, ContainsV6) {
  const auto p = *IpPrefix::parse("fd00:6f73:6800::/64");
  EXPECT_TRUE(p.contains(*IpAddress::parse("fd00:6f73:6800::1")));
  EXPECT_TRUE(p.contains(*IpAddress::parse("fd00:6f73:6800:0:ffff:ffff:ffff:ffff")));
  EXPECT_FALSE(p.contains(*IpAddress::parse("fd00:6f73:6800:1::")));
  EXPECT_FALSE(p.contains(*IpAddress::parse("198.18.0.1")));
  const auto p61 = *IpPrefix::parse("fd00:0:0:8::/61");
  EXPECT_TRUE(p61.contains(*IpAddress::parse("fd00:0:0:f::1")));
  EXPECT_FALSE(p61.contains(*IpAddress::parse("fd00:0:0:10::1")));
}

TEST(IpPrefixTest, NthV4) {
  const auto p = *IpPrefix::parse("198.18.0.0/16");
  EXPECT_EQ(p.nth(0).to_string(), "198.18.0.0");
  EXPECT_EQ(p.nth(1).to_string(), "198.18.0.1");
  EXPECT_EQ(p.nth(2).to_string(), "198.18.0.2");
  EXPECT_EQ(p.nth(256).to_string(), "198.18.1.0");
  EXPECT_EQ(p.nth(65535).to_string(), "198.18.255.255");
  EXPECT_THROW(p.nth(65536), std::out_of_range);
  // Host bits of the stored address do not shift the result.
  EXPECT_EQ(IpPrefix::parse("198.18.7.7/16")->nth(1).to_string(), "198.18.0.1");
  EXPECT_EQ(IpPrefix::parse("1.2.3.4/32")->nth(0).to_string(), "1.2.3.4");
  EXPECT_THROW(IpPrefix::parse("1.2.3.4/32")->nth(1), std::out_of_range);
  EXPECT_EQ(IpPrefix::parse("0.0.0.0/0")->nth(0xffffffffu).to_string(), "255.255.255.255");
  EXPECT_THROW(IpPrefix::parse("0.0.0.0/0")->nth(0x100000000ull), std::out_of_range);
  EXPECT_THROW(IpPrefix{}.nth(0), std::invalid_argument);
}

TEST(IpPrefixTest, Overlaps) {
  const auto p = *IpPrefix::parse("198.18.0.0/16");
  auto ov = [&](const char* other) { return p.overlaps(*IpPrefix::parse(other)); };
  EXPECT_TRUE(ov("198.18.0.0/16"));    // the same
  EXPECT_TRUE(ov("198.18.5.1/24"));    // inside (an interface address: host bits ignored)
  EXPECT_TRUE(ov("198.18.77.7/32"));
  EXPECT_TRUE(ov("198.0.0.0/8"));      // covers it
  EXPECT_TRUE(ov("0.0.0.0/0"));
  EXPECT_FALSE(ov("198.19.0.0/16"));   // next to it
  EXPECT_FALSE(ov("198.17.255.255/32"));
  EXPECT_FALSE(ov("192.0.2.1/24"));
  EXPECT_FALSE(ov("::/0"));            // other family
  EXPECT_TRUE(IpPrefix::parse("198.18.5.1/24")->overlaps(p));  // symmetric
  EXPECT_TRUE(IpPrefix::parse("198.0.0.0/8")->overlaps(p));
  EXPECT_FALSE(IpPrefix{}.overlaps(IpPrefix{}));  // unset

  const auto q = *IpPrefix::parse("fd00:6f73:6800::/64");
  EXPECT_TRUE(q.overlaps(*IpPrefix::parse("fd00:6f73:6800::abcd/64")));
  EXPECT_TRUE(q.overlaps(*IpPrefix::parse("fd00::/8")));
  EXPECT_TRUE(q.overlaps(*IpPrefix::parse("fd00:6f73:6800:0:8000::/65")));
  EXPECT_FALSE(q.overlaps(*IpPrefix::parse("fd00:6f73:6800:1::/64")));
  EXPECT_FALSE(q.overlaps(*IpPrefix::parse("fe80::1/64")));
}

TEST(IpPrefixTest, NthV6) {
  const auto p = *IpPrefix::parse("fd00:6f73:6800::/64");
  EXPECT_EQ(p.nth(1).to_string(), "fd00:6f73:6800::1");
  EXPECT_EQ(p.nth(0x10000).to_string(), "fd00:6f73:6800::1:0");
  EXPECT_EQ(p.nth(UINT64_MAX).to_string(), "fd00:6f73:6800:0:ffff:ffff:ffff:ffff");
  EXPECT_TRUE(p.contains(p.nth(UINT64_MAX)));
  const auto p120 = *IpPrefix::parse("fd00::/120");
  EXPECT_EQ(p120.nth(255).to_string(), "fd00::ff");
  EXPECT_THROW(p120.nth(256), std::out_of_range);
  // Wider than 64 host bits: any 64-bit index fits.
  EXPECT_EQ(IpPrefix::parse("fd00::/48")->nth(UINT64_MAX).to_string(),
            "fd00::ffff:ffff:ffff:ffff");
}

}  // namespace
}  // namespace osh::tun

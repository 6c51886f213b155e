// common/ip_address.h: the tree's one address type and host:port formatter
// (parsing rules are tested with tun's prefix tests, tests/tun).
#include "common/ip_address.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <unordered_set>

namespace osh {
namespace {

TEST(IpAddress, BuildsFromHeaderBytes) {
  const uint8_t v4[] = {198, 18, 0, 1};
  const IpAddress a = IpAddress::v4(v4);
  EXPECT_TRUE(a.is_v4());
  EXPECT_EQ(a.size(), 4u);
  EXPECT_EQ(a.to_string(), "198.18.0.1");
  EXPECT_EQ(a, *IpAddress::parse("198.18.0.1"));
  EXPECT_EQ(a, IpAddress::v4(std::array<uint8_t, 4>{198, 18, 0, 1}));
  uint8_t v6[16] = {0xfd, 0x00, 0x6f, 0x73, 0x68, 0x00};
  v6[15] = 1;
  const IpAddress b = IpAddress::v6(v6);
  EXPECT_TRUE(b.is_v6());
  EXPECT_EQ(b.to_string(), "fd00:6f73:6800::1");
  EXPECT_EQ(IpAddress{}.to_string(), "");
}

TEST(IpAddress, RejectsWhatIsNotANumericLiteral) {
  EXPECT_FALSE(IpAddress::parse("demo.local"));
  EXPECT_FALSE(IpAddress::parse("[::1]"));
  EXPECT_FALSE(IpAddress::parse("198.18.0.1:80"));
  EXPECT_FALSE(IpAddress::parse(""));
}

TEST(IpAddress, HashesEqualAddressesAlikeAndFamiliesApart) {
  std::unordered_set<IpAddress, IpAddressHash> set;
  set.insert(*IpAddress::parse("198.18.0.1"));
  set.insert(*IpAddress::parse("198.18.0.1"));
  set.insert(*IpAddress::parse("::ffff:198.18.0.1"));  // another family, same low bytes
  set.insert(*IpAddress::parse("::1"));
  EXPECT_EQ(set.size(), 3u);
}

TEST(IpAddress, FillsASockaddrForBindAndConnect) {
  sockaddr_storage ss;
  ASSERT_EQ(IpAddress::parse("127.0.0.1")->to_sockaddr(8080, &ss), sizeof(sockaddr_in));
  const auto* a4 = reinterpret_cast<const sockaddr_in*>(&ss);
  EXPECT_EQ(a4->sin_family, AF_INET);
  EXPECT_EQ(ntohs(a4->sin_port), 8080);
  EXPECT_EQ(ntohl(a4->sin_addr.s_addr), 0x7f000001u);
  ASSERT_EQ(IpAddress::parse("::1")->to_sockaddr(22, &ss), sizeof(sockaddr_in6));
  const auto* a6 = reinterpret_cast<const sockaddr_in6*>(&ss);
  EXPECT_EQ(a6->sin6_family, AF_INET6);
  EXPECT_EQ(ntohs(a6->sin6_port), 22);
  EXPECT_EQ(a6->sin6_addr.s6_addr[15], 1);
  EXPECT_EQ(IpAddress{}.to_sockaddr(1, &ss), 0u);
}

TEST(HostPort, BracketsIpv6Only) {
  EXPECT_EQ(host_port("127.0.0.1", 8080), "127.0.0.1:8080");
  EXPECT_EQ(host_port("::1", 22), "[::1]:22");
  EXPECT_EQ(host_port("gateway.example", 17670), "gateway.example:17670");
  EXPECT_EQ(host_port(*IpAddress::parse("fd00::2"), 53), "[fd00::2]:53");
  EXPECT_EQ(host_port(*IpAddress::parse("198.18.0.2"), 53), "198.18.0.2:53");
  EXPECT_EQ(host_port(IpAddress{}, 1), "?:1");
}

}  // namespace
}  // namespace osh

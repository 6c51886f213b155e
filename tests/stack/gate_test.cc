// The packet gate (stack/gate.h): one verdict per packet from the bytes and
// the address tables alone, and the output filter. No lwIP.
#include "stack/gate.h"

#include <gtest/gtest.h>

#include "test_packets.h"

namespace osh::stack {
namespace {

using testing::addr;
using testing::TcpSpec;
using K = Verdict::Kind;

class Gate : public ::testing::Test {
 protected:
  RouteTable routes{{addr("198.18.0.10"), "sb"}, {addr("fd00::10"), "sb"}};
  std::vector<IpAddress> dns{addr("198.18.0.2")};
  K verdict(const std::vector<uint8_t>& pkt, bool dns_on = true) { return judge(pkt, routes, dns, dns_on).kind; }
};

TEST_F(Gate, SynToAServedAddressGoesToTheSynGateInBothFamilies) {
  EXPECT_EQ(verdict(testing::tcp({})), K::kSyn);
  TcpSpec v6;
  v6.src = addr("fd00::1");
  v6.dst = addr("fd00::10");
  const Verdict v = judge(testing::tcp(v6), routes, dns, true);
  EXPECT_EQ(v.kind, K::kSyn);
  EXPECT_EQ(v.p.dst, addr("fd00::10"));
}

TEST_F(Gate, OtherTcpGoesToLwipEvenWithABadTcpChecksum) {
  TcpSpec s;
  s.flags = kAck;
  s.payload = "data";
  auto pkt = testing::tcp(s);
  EXPECT_EQ(verdict(pkt), K::kSegment);
  pkt.back() ^= 0xff;  // lwIP checks TCP checksums of segments itself
  EXPECT_EQ(verdict(pkt), K::kSegment);
  s.flags = kSyn | kAck;
  EXPECT_EQ(verdict(testing::tcp(s)), K::kSegment);
}

TEST_F(Gate, SynWithABadChecksumOrWithFinOrRstIsMalformed) {
  auto pkt = testing::tcp({});
  pkt[36] ^= 0x01;  // the TCP checksum
  EXPECT_EQ(verdict(pkt), K::kDropMalformed);
  TcpSpec s;
  s.flags = kSyn | kFin;
  EXPECT_EQ(verdict(testing::tcp(s)), K::kDropMalformed);
  s.flags = kSyn | kRst;
  EXPECT_EQ(verdict(testing::tcp(s)), K::kDropMalformed);
}

TEST_F(Gate, BadIpv4HeaderChecksumIsMalformedForEverySegment) {
  TcpSpec s;
  s.flags = kAck;
  auto pkt = testing::tcp(s);
  pkt[10] ^= 0x01;
  EXPECT_EQ(verdict(pkt), K::kDropMalformed);
}

TEST_F(Gate, PacketsFromAServedOrDnsAddressAreMalformed) {
  TcpSpec land;
  land.src = addr("198.18.0.10");
  EXPECT_EQ(verdict(testing::tcp(land)), K::kDropMalformed);
  land.src = addr("198.18.0.2");
  EXPECT_EQ(verdict(testing::tcp(land)), K::kDropMalformed);
}

TEST_F(Gate, UnservedDestinationIsNotSandbox) {
  TcpSpec s;
  s.dst = addr("198.18.0.99");
  EXPECT_EQ(verdict(testing::tcp(s)), K::kDropNotSandbox);
}

TEST_F(Gate, DnsQueryToTheDnsAddressOnlyWithAHandler) {
  const auto q = testing::udp(addr("198.18.0.1"), addr("198.18.0.2"), 53, "query");
  const Verdict v = judge(q, routes, dns, true);
  EXPECT_EQ(v.kind, K::kDns);
  EXPECT_EQ(v.p.udp_payload_len, 5u);
  EXPECT_EQ(verdict(q, /*dns_on=*/false), K::kDropNotSandbox);
  // UDP to a served address is not DNS: unsupported.
  EXPECT_EQ(verdict(testing::udp(addr("198.18.0.1"), addr("198.18.0.10"), 53, "q")), K::kDropUnsupported);
}

TEST_F(Gate, EchoToAServedAddressIsAnswered) {
  EXPECT_EQ(verdict(testing::echo_request(addr("198.18.0.1"), addr("198.18.0.10"))), K::kEcho);
  EXPECT_EQ(verdict(testing::echo_request(addr("fd00::1"), addr("fd00::10"))), K::kEcho);
  EXPECT_EQ(verdict(testing::echo_request(addr("198.18.0.1"), addr("198.18.0.99"))), K::kDropNotSandbox);
}

TEST_F(Gate, TruncatedAndFragmentsAreDropped) {
  auto pkt = testing::tcp({});
  EXPECT_EQ(verdict({pkt.begin(), pkt.begin() + 30}), K::kDropMalformed);
  EXPECT_EQ(verdict({}), K::kDropMalformed);
  pkt[6] = 0x20;  // IPv4 "more fragments"
  pkt[10] = pkt[11] = 0;
  testing::put16(&pkt[10], checksum_fold(checksum_add(0, {pkt.data(), 20})));
  EXPECT_EQ(verdict(pkt), K::kDropFragment);
}

TEST_F(Gate, OutputLeavesOnlyFromAServedAddress) {
  TcpSpec synack;
  synack.src = addr("198.18.0.10");
  synack.dst = addr("198.18.0.1");
  synack.flags = kSyn | kAck;
  synack.mss = 1460;
  auto pkt = testing::tcp(synack);
  EXPECT_TRUE(judge_output(pkt, routes, 1500));
  EXPECT_EQ(tcp_mss_option(pkt, classify(pkt)), 1460);  // MTU 1500: unchanged
  synack.src = addr("198.18.0.3");  // lwIP's own netif address (ND, MLD ...)
  auto noise = testing::tcp(synack);
  EXPECT_FALSE(judge_output(noise, routes, 1500));
  std::vector<uint8_t> junk{1, 2, 3};
  EXPECT_FALSE(judge_output(junk, routes, 1500));
}

TEST_F(Gate, OutputRaisesTheSynAckMssToTheLinkWithValidChecksums) {
  TcpSpec synack;
  synack.src = addr("198.18.0.10");
  synack.dst = addr("198.18.0.1");
  synack.flags = kSyn | kAck;
  synack.mss = 1460;
  auto pkt = testing::tcp(synack);
  ASSERT_TRUE(judge_output(pkt, routes, 9000));
  const Parsed p = classify(pkt);
  EXPECT_EQ(tcp_mss_option(pkt, p), 8960);
  EXPECT_TRUE(checksums_ok(pkt, p));
  synack.src = addr("fd00::10");
  synack.dst = addr("fd00::1");
  auto v6 = testing::tcp(synack);
  ASSERT_TRUE(judge_output(v6, routes, 9000));
  EXPECT_EQ(tcp_mss_option(v6, classify(v6)), 8940);
}

}  // namespace
}  // namespace osh::stack

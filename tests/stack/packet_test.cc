// Unit tests for stack/packet: classification of hostile and normal packets,
// and the packets the tunnel crafts itself (checksums verified).
#include "stack/packet.h"

#include <gtest/gtest.h>

#include <vector>

namespace osh::stack {
namespace {

// A minimal IPv4/TCP SYN from 198.18.0.1:40000 to 198.18.5.5:80.
std::vector<uint8_t> syn_v4(uint32_t seq = 1000) {
  std::vector<uint8_t> p(40, 0);
  p[0] = 0x45; p[3] = 40; p[8] = 64; p[9] = 6;
  p[12] = 198; p[13] = 18; p[14] = 0; p[15] = 1;
  p[16] = 198; p[17] = 18; p[18] = 5; p[19] = 5;
  p[20] = 0x9c; p[21] = 0x40; p[22] = 0; p[23] = 80;
  p[24] = seq >> 24; p[25] = seq >> 16; p[26] = seq >> 8; p[27] = seq;
  p[32] = 5 << 4; p[33] = kSyn;
  return p;
}

std::vector<uint8_t> syn_v6() {
  std::vector<uint8_t> p(60, 0);
  p[0] = 0x60; p[5] = 20; p[6] = 6; p[7] = 64;
  p[8] = 0xfd; p[23] = 1;   // src fd00::1
  p[24] = 0xfd; p[39] = 9;  // dst fd00::9
  p[40] = 0x9c; p[41] = 0x40; p[43] = 22;
  p[47] = 7;  // seq 7
  p[52] = 5 << 4; p[53] = kSyn;
  return p;
}

// Verifies the transport checksum of a crafted packet (sum over pseudo
// header + segment must fold to 0).
bool transport_checksum_ok(const std::vector<uint8_t>& pkt) {
  Parsed p = classify(pkt);
  const size_t l4 = p.ip_header_len;
  uint32_t sum = checksum_add(0, {p.src.bytes.data(), p.src.size()});
  sum = checksum_add(sum, {p.dst.bytes.data(), p.dst.size()});
  sum += p.protocol;
  sum += static_cast<uint32_t>(p.total_len - l4);
  if (p.protocol == 1) sum = 0;  // ICMPv4 has no pseudo-header
  sum = checksum_add(sum, {pkt.data() + l4, p.total_len - l4});
  return checksum_fold(sum) == 0;
}

TEST(Classify, Ipv4Syn) {
  auto pkt = syn_v4();
  Parsed p = classify(pkt);
  ASSERT_EQ(p.kind, Parsed::Kind::kTcp);
  EXPECT_EQ(p.src.to_string(), "198.18.0.1");
  EXPECT_EQ(p.dst.to_string(), "198.18.5.5");
  EXPECT_EQ(p.sport, 40000);
  EXPECT_EQ(p.dport, 80);
  EXPECT_EQ(p.seq, 1000u);
  EXPECT_EQ(p.tcp_flags, kSyn);
}

TEST(Classify, Ipv6Syn) {
  auto pkt = syn_v6();
  Parsed p = classify(pkt);
  ASSERT_EQ(p.kind, Parsed::Kind::kTcp);
  EXPECT_EQ(p.dst.to_string(), "fd00::9");
  EXPECT_EQ(p.dport, 22);
}

TEST(Classify, TruncatedAndInconsistentAreMalformed) {
  auto pkt = syn_v4();
  for (size_t n = 0; n < pkt.size(); ++n) {
    Parsed p = classify({pkt.data(), n});
    EXPECT_EQ(p.kind, Parsed::Kind::kMalformed) << "length " << n;
  }
  auto bad = syn_v4();
  bad[0] = 0x44;  // IHL 16 bytes < 20
  EXPECT_EQ(classify(bad).kind, Parsed::Kind::kMalformed);
  bad = syn_v4();
  bad[32] = 15 << 4;  // TCP data offset past the packet
  EXPECT_EQ(classify(bad).kind, Parsed::Kind::kMalformed);
  bad = syn_v4();
  bad[0] = 0x55;  // version 5
  EXPECT_EQ(classify(bad).kind, Parsed::Kind::kMalformed);
  auto v6 = syn_v6();
  v6[5] = 200;  // payload length past the buffer
  EXPECT_EQ(classify(v6).kind, Parsed::Kind::kMalformed);
}

TEST(Classify, FragmentsAreReported) {
  auto pkt = syn_v4();
  pkt[6] = 0x20;  // MF
  EXPECT_EQ(classify(pkt).kind, Parsed::Kind::kFragment);
  auto v6 = syn_v6();
  v6[6] = 44;  // fragment header
  EXPECT_EQ(classify(v6).kind, Parsed::Kind::kFragment);
}

TEST(Craft, RstForSynRefusesWithAckSeqPlusOne) {
  for (auto pkt : {syn_v4(0xfffffffe), syn_v6()}) {
    Parsed syn = classify(pkt);
    auto rst = make_rst_for_syn(syn);
    Parsed r = classify(rst);
    ASSERT_EQ(r.kind, Parsed::Kind::kTcp);
    EXPECT_EQ(r.src, syn.dst);
    EXPECT_EQ(r.dst, syn.src);
    EXPECT_EQ(r.sport, syn.dport);
    EXPECT_EQ(r.dport, syn.sport);
    EXPECT_EQ(r.tcp_flags, kRst | kAck);
    EXPECT_EQ(r.ack, syn.seq + 1);
    EXPECT_TRUE(transport_checksum_ok(rst));
  }
}

TEST(Craft, UnreachableQuotesThePacket) {
  for (auto pkt : {syn_v4(), syn_v6()}) {
    Parsed syn = classify(pkt);
    auto icmp = make_unreachable(pkt, syn);
    Parsed r = classify(icmp);
    EXPECT_EQ(r.kind, Parsed::Kind::kOther);
    EXPECT_EQ(r.src, syn.dst);
    EXPECT_EQ(r.dst, syn.src);
    EXPECT_TRUE(transport_checksum_ok(icmp));
    const size_t l4 = r.ip_header_len;
    EXPECT_EQ(icmp[l4], syn.src.is_v4() ? 3 : 1);
    EXPECT_EQ(icmp[l4 + 1], syn.src.is_v4() ? 1 : 3);
    EXPECT_TRUE(std::equal(pkt.begin(), pkt.end(), icmp.begin() + static_cast<long>(l4 + 8)));
  }
}

TEST(MssOption, ReadAndRewriteWithValidChecksum) {
  auto pkt = syn_v4();
  // Data offset 6 words: one option block "MSS 1460".
  pkt.insert(pkt.end(), {2, 4, 0x05, 0xb4});
  pkt[3] = 44;
  pkt[32] = 6 << 4;
  Parsed p = classify(pkt);
  ASSERT_EQ(p.kind, Parsed::Kind::kTcp);
  EXPECT_EQ(tcp_mss_option(pkt, p), 1460);
  ASSERT_TRUE(rewrite_tcp_mss(pkt, p, 64960));
  EXPECT_EQ(tcp_mss_option(pkt, classify(pkt)), 64960);
  EXPECT_TRUE(transport_checksum_ok(pkt));
  auto plain = syn_v4();  // no options
  Parsed q = classify(plain);
  EXPECT_EQ(tcp_mss_option(plain, q), 0);
  EXPECT_FALSE(rewrite_tcp_mss(plain, q, 1000));
  // A malformed option list (length running past the header) is ignored.
  pkt[41] = 40;
  EXPECT_EQ(tcp_mss_option(pkt, classify(pkt)), 0);
}

TEST(Craft, UdpReplySwapsPortsWithValidChecksum) {
  std::vector<uint8_t> q(28 + 3, 0);
  q[0] = 0x45; q[3] = 31; q[8] = 64; q[9] = 17;
  q[12] = 198; q[13] = 18; q[15] = 1;
  q[16] = 198; q[17] = 18; q[19] = 2;
  q[20] = 0xc0; q[21] = 0x01; q[23] = 53; q[25] = 11;  // ports 49153 -> 53, length 11
  Parsed p = classify(q);
  ASSERT_EQ(p.kind, Parsed::Kind::kUdp);
  EXPECT_EQ(p.udp_payload_len, 3u);
  EXPECT_EQ(p.udp_payload_off, 28u);
  const uint8_t payload[] = {1, 2, 3, 4, 5};
  auto r = make_udp_reply(p, payload);
  Parsed rp = classify(r);
  ASSERT_EQ(rp.kind, Parsed::Kind::kUdp);
  EXPECT_EQ(rp.sport, 53);
  EXPECT_EQ(rp.dport, 49153);
  EXPECT_EQ(rp.src, p.dst);
  EXPECT_EQ(rp.udp_payload_len, 5u);
  EXPECT_TRUE(transport_checksum_ok(r));
  q[25] = 200;  // UDP length past the packet
  EXPECT_EQ(classify(q).kind, Parsed::Kind::kMalformed);
}

TEST(Craft, EchoReplySwapsAndKeepsPayload) {
  std::vector<uint8_t> ping(28 + 4, 0);
  ping[0] = 0x45; ping[3] = 32; ping[8] = 64; ping[9] = 1;
  ping[12] = 198; ping[13] = 18; ping[15] = 1;
  ping[16] = 198; ping[17] = 18; ping[18] = 9; ping[19] = 9;
  ping[20] = 8;  // echo request
  ping[24] = 0x12; ping[25] = 0x34; ping[28] = 'p'; ping[31] = 'g';
  Parsed p = classify(ping);
  ASSERT_EQ(p.kind, Parsed::Kind::kIcmpEcho);
  auto reply = make_echo_reply(ping, p);
  Parsed r = classify(reply);
  EXPECT_EQ(r.src, p.dst);
  EXPECT_EQ(reply[20], 0);  // echo reply
  EXPECT_EQ(reply[24], 0x12);
  EXPECT_EQ(reply[28], 'p');
  EXPECT_TRUE(transport_checksum_ok(reply));
}

}  // namespace
}  // namespace osh::stack

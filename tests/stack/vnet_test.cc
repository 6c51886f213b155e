// The virtio-net header and the partial checksums of the TUN's checksum
// offload (stack/vnet.h, issue 16.5). No lwIP, no TUN: plain bytes.
#include "stack/vnet.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>

#include "stack/gate.h"
#include "test_packets.h"

namespace osh::stack {
namespace {

using testing::addr;
using testing::TcpSpec;

constexpr uint8_t kGsoTcpV4 = 1;  // VIRTIO_NET_HDR_GSO_TCPV4

/// @pkt behind a header with @h.
std::vector<uint8_t> with_header(const VnetHeader& h, const std::vector<uint8_t>& pkt) {
  std::vector<uint8_t> out(VnetHeader::kSize);
  h.write(std::span<uint8_t, VnetHeader::kSize>(out.data(), VnetHeader::kSize));
  out.insert(out.end(), pkt.begin(), pkt.end());
  return out;
}

/// What the kernel hands over for a segment it sends CHECKSUM_PARTIAL:
/// the pseudo-header sum in the field, NEEDS_CSUM with its offsets.
std::vector<uint8_t> partial_read(std::vector<uint8_t> pkt) {
  const VnetHeader h = partial_tcp_checksum(pkt);
  EXPECT_EQ(h.flags, VnetHeader::kNeedsCsum);
  return with_header(h, pkt);
}

size_t l4_of(const std::vector<uint8_t>& pkt) { return (pkt[0] >> 4) == 4 ? 20 : 40; }

TEST(Vnet, HeaderIsTheKernelsTenBytesInHostOrder) {
  VnetHeader h;
  h.flags = VnetHeader::kNeedsCsum;
  h.gso_type = kGsoTcpV4;
  h.hdr_len = 0x0102;
  h.gso_size = 0x0304;
  h.csum_start = 20;
  h.csum_offset = 16;
  std::array<uint8_t, VnetHeader::kSize> raw{};
  h.write(raw);
  EXPECT_EQ(raw[0], 1);
  EXPECT_EQ(raw[1], kGsoTcpV4);
  uint16_t start = 0, offset = 0;
  std::memcpy(&start, &raw[6], 2);
  std::memcpy(&offset, &raw[8], 2);
  EXPECT_EQ(start, 20);
  EXPECT_EQ(offset, 16);
  const VnetHeader back = VnetHeader::parse(raw);
  EXPECT_EQ(back.flags, h.flags);
  EXPECT_EQ(back.gso_type, h.gso_type);
  EXPECT_EQ(back.hdr_len, h.hdr_len);
  EXPECT_EQ(back.gso_size, h.gso_size);
  EXPECT_EQ(back.csum_start, h.csum_start);
  EXPECT_EQ(back.csum_offset, h.csum_offset);
}

// Completing the partial sum the way skb_checksum_help does must give the
// very checksum packet.cc computes over the whole segment, in both families,
// for even and odd lengths.
TEST(Vnet, CompletedPartialChecksumEqualsTheFullOne) {
  for (const char* src : {"198.18.0.1", "fd00::1"}) {
    for (const std::string& payload : std::vector<std::string>{"", "x", "0123456789abcdef", std::string(1001, '\xa5')}) {
      TcpSpec s;
      s.src = addr(src);
      s.dst = addr(src[0] == 'f' ? "fd00::10" : "198.18.0.10");
      s.flags = kAck | kPsh;
      s.seq = 0xfffffff0u;
      s.ack = 0x12345678u;
      s.payload = payload;
      const std::vector<uint8_t> full = testing::tcp(s);
      std::vector<uint8_t> pkt = full;
      const size_t l4 = l4_of(pkt);
      pkt[l4 + 16] = 0xde;  // whatever lwIP left there
      pkt[l4 + 17] = 0xad;
      const VnetHeader h = partial_tcp_checksum(pkt);
      ASSERT_EQ(h.flags, VnetHeader::kNeedsCsum) << src;
      EXPECT_EQ(h.gso_type, VnetHeader::kGsoNone);
      EXPECT_EQ(h.csum_start, l4);
      EXPECT_EQ(h.csum_offset, 16);
      EXPECT_NE(pkt, full) << "the field holds the pseudo-header sum only";
      ASSERT_TRUE(complete_partial_checksum(pkt, h.csum_start, h.csum_offset));
      EXPECT_EQ(pkt, full) << src << " payload " << payload.size();
      EXPECT_TRUE(checksums_ok(pkt, classify(pkt)));
    }
  }
  // And against packet.cc's own builder (make_rst_for_syn).
  const std::vector<uint8_t> rst = make_rst_for_syn(classify(testing::tcp({})));
  std::vector<uint8_t> pkt = rst;
  const VnetHeader h = partial_tcp_checksum(pkt);
  ASSERT_TRUE(complete_partial_checksum(pkt, h.csum_start, h.csum_offset));
  EXPECT_EQ(pkt, rst);
}

TEST(Vnet, PartialChecksumOnlyForTcp) {
  std::vector<uint8_t> u = testing::udp(addr("198.18.0.1"), addr("198.18.0.2"), 53, "query");
  const std::vector<uint8_t> before = u;
  EXPECT_EQ(partial_tcp_checksum(u).flags, 0);
  EXPECT_EQ(u, before);
  std::vector<uint8_t> tiny(10, 0x45);
  EXPECT_EQ(partial_tcp_checksum(tiny).flags, 0);
  // An IPv4 fragment (MF set, or a fragment offset): its checksum covers
  // the reassembled segment, so no partial sum from one fragment.
  for (const uint16_t frag : {uint16_t{0x2000}, uint16_t{0x0010}}) {
    TcpSpec spec;
    spec.payload = "fragment";
    std::vector<uint8_t> f = testing::tcp(spec);
    f[6] = static_cast<uint8_t>(frag >> 8);
    f[7] = static_cast<uint8_t>(frag);
    const std::vector<uint8_t> unchanged = f;
    EXPECT_EQ(partial_tcp_checksum(f).flags, 0) << std::hex << frag;
    EXPECT_EQ(f, unchanged);
  }
}

TEST(Vnet, NeedsCsumSynIsCompletedAndPassesTheGate) {
  RouteTable routes{{addr("198.18.0.10"), "sb"}, {addr("fd00::10"), "sb"}};
  const std::vector<IpAddress> dns{addr("198.18.0.2")};
  for (const char* src : {"198.18.0.1", "fd00::1"}) {
    TcpSpec s;
    s.src = addr(src);
    s.dst = addr(src[0] == 'f' ? "fd00::10" : "198.18.0.10");
    s.mss = 1460;
    const std::vector<uint8_t> full = testing::tcp(s);
    std::vector<uint8_t> read = partial_read(full);
    // As read: the partial checksum is not a valid one, the gate would drop it.
    const std::span<const uint8_t> raw(read.data() + VnetHeader::kSize, read.size() - VnetHeader::kSize);
    EXPECT_EQ(judge(raw, routes, dns, true).kind, Verdict::Kind::kDropMalformed);
    const VnetInput in = vnet_input(read);
    ASSERT_EQ(in.kind, VnetInput::Kind::kPacket);
    EXPECT_FALSE(in.l4_vouched) << "a SYN is completed and checked, not vouched";
    EXPECT_TRUE(std::equal(in.packet.begin(), in.packet.end(), full.begin(), full.end()));
    EXPECT_EQ(judge(in.packet, routes, dns, true).kind, Verdict::Kind::kSyn) << src;
  }
}

TEST(Vnet, SynWithoutNeedsCsumAndABadChecksumIsStillDropped) {
  RouteTable routes{{addr("198.18.0.10"), "sb"}};
  const std::vector<IpAddress> dns;
  std::vector<uint8_t> syn = testing::tcp({});
  syn[20 + 16] ^= 0x5a;
  for (const uint8_t flags : {uint8_t{0}, VnetHeader::kDataValid}) {
    VnetHeader h;
    h.flags = flags;
    std::vector<uint8_t> read = with_header(h, syn);
    const VnetInput in = vnet_input(read);
    ASSERT_EQ(in.kind, VnetInput::Kind::kPacket);
    EXPECT_FALSE(in.l4_vouched);
    EXPECT_EQ(judge(in.packet, routes, dns, true).kind, Verdict::Kind::kDropMalformed);
  }
}

TEST(Vnet, NeedsCsumSegmentIsVouchedAndLeftAsItCame) {
  TcpSpec s;
  s.flags = kAck;
  s.payload = "upload bytes";
  std::vector<uint8_t> read = partial_read(testing::tcp(s));
  const std::vector<uint8_t> before = read;
  const VnetInput in = vnet_input(read);
  ASSERT_EQ(in.kind, VnetInput::Kind::kPacket);
  EXPECT_TRUE(in.l4_vouched);
  EXPECT_EQ(read, before) << "no checksum work on the data path";
  EXPECT_EQ(in.packet.size(), before.size() - VnetHeader::kSize);

  VnetHeader valid;
  valid.flags = VnetHeader::kDataValid;
  std::vector<uint8_t> dv = with_header(valid, testing::tcp(s));
  EXPECT_TRUE(vnet_input(dv).l4_vouched);
  VnetHeader none;
  std::vector<uint8_t> plain = with_header(none, testing::tcp(s));
  EXPECT_FALSE(vnet_input(plain).l4_vouched) << "no flag: lwIP checks it as without offload";
}

TEST(Vnet, NeedsCsumUdpIsCompleted) {
  std::vector<uint8_t> full = testing::udp(addr("198.18.0.1"), addr("198.18.0.2"), 53, "abc");
  std::vector<uint8_t> pkt = full;
  pkt[20 + 6] = 0x12;
  pkt[20 + 7] = 0x34;
  VnetHeader h;
  h.flags = VnetHeader::kNeedsCsum;
  h.csum_start = 20;
  h.csum_offset = 6;
  // The partial field the kernel would leave: the folded pseudo-header sum.
  const uint16_t folded = static_cast<uint16_t>(~checksum_fold(pseudo_sum(addr("198.18.0.1"), addr("198.18.0.2"), 17,
                                                                          pkt.size() - 20)));
  pkt[26] = static_cast<uint8_t>(folded >> 8);
  pkt[27] = static_cast<uint8_t>(folded);
  std::vector<uint8_t> read = with_header(h, pkt);
  const VnetInput in = vnet_input(read);
  ASSERT_EQ(in.kind, VnetInput::Kind::kPacket);
  EXPECT_FALSE(in.l4_vouched);
  EXPECT_TRUE(std::equal(in.packet.begin(), in.packet.end(), full.begin(), full.end()));
}

TEST(Vnet, BadReadsAreRefused) {
  std::vector<uint8_t> shorter(VnetHeader::kSize - 1, 0);
  EXPECT_EQ(vnet_input(shorter).kind, VnetInput::Kind::kMalformed);

  TcpSpec s;
  s.flags = kAck;
  VnetHeader gso;
  gso.gso_type = kGsoTcpV4;
  gso.gso_size = 1448;
  std::vector<uint8_t> g = with_header(gso, testing::tcp(s));
  EXPECT_EQ(vnet_input(g).kind, VnetInput::Kind::kGso);

  VnetHeader past;
  past.flags = VnetHeader::kNeedsCsum;
  past.csum_start = 20;
  past.csum_offset = 1000;  // past the end
  std::vector<uint8_t> p = with_header(past, testing::udp(addr("198.18.0.1"), addr("198.18.0.2"), 53, "q"));
  EXPECT_EQ(vnet_input(p).kind, VnetInput::Kind::kMalformed);
  past.csum_start = 5000;
  past.csum_offset = 0;
  std::vector<uint8_t> q = with_header(past, testing::udp(addr("198.18.0.1"), addr("198.18.0.2"), 53, "q"));
  EXPECT_EQ(vnet_input(q).kind, VnetInput::Kind::kMalformed);
}

}  // namespace
}  // namespace osh::stack

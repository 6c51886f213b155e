// ParseDataFrame / EncodeDataFrame against protobuf's own encoding (every
// split of the header across slices; frames that must be left to protobuf),
// and FramePool's reuse of its buffers (issue 16.2: no allocation per frame).
#include <gtest/gtest.h>

#include <grpcpp/support/byte_buffer.h>

#include <string>
#include <vector>

#include "openshell.pb.h"
#include "openshell_0_1.pb.h"
#include "relay/data_frame.h"
#include "peers/common/frame_pool.h"
#include "relay/message_buffer.h"

namespace osh::peers {
namespace {

using relay::DataFrameView;
using relay::EncodeDataFrame;
using relay::ParseDataFrame;
using relay::ParseFromBuffer;

namespace v1 = openshell::v1;

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 7 + 3);
  return s;
}

// @wire as a ByteBuffer whose first slice ends after @split bytes.
grpc::ByteBuffer Split(const std::string& wire, size_t split) {
  split = std::min(split, wire.size());
  std::vector<grpc::Slice> slices;
  if (split > 0) slices.emplace_back(wire.data(), split);
  if (split < wire.size()) slices.emplace_back(wire.data() + split, wire.size() - split);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

std::string Payload(const DataFrameView& view) {
  std::string all;
  for (const grpc::Slice& s : view.slices) all.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return all.substr(view.header, view.size);
}

TEST(DataFrame, FindsThePayloadOfProtobufsEncoding) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{127}, size_t{128}, size_t{16383}, size_t{16384},
                      size_t{65536}}) {
    v1::RelayFrame frame;
    frame.set_data(Pattern(size));
    const std::string wire = frame.SerializeAsString();
    for (size_t split = 0; split <= 5; ++split) {
      DataFrameView view;
      ASSERT_TRUE(ParseDataFrame(Split(wire, split), &view)) << size << " split " << split;
      EXPECT_EQ(view.size, size);
      EXPECT_EQ(Payload(view), frame.data()) << size << " split " << split;
    }
  }
}

TEST(DataFrame, TcpForwardFramesOfBothGenerationsAreTheSameBytes) {
  v1::TcpForwardFrame f00;
  f00.set_data("abc");
  openshell::v1::g01::TcpForwardFrame f01;
  f01.set_data("abc");
  v1::RelayFrame relay;
  relay.set_data("abc");
  EXPECT_EQ(f00.SerializeAsString(), relay.SerializeAsString());
  EXPECT_EQ(f01.SerializeAsString(), relay.SerializeAsString());
}

TEST(DataFrame, LeavesEveryOtherFrameToProtobuf) {
  DataFrameView view;
  v1::RelayFrame init;
  init.mutable_init()->set_channel_id("c");
  EXPECT_FALSE(ParseDataFrame(Split(init.SerializeAsString(), 1), &view)) << "init";
  EXPECT_FALSE(ParseDataFrame(Split(std::string(), 0), &view)) << "no field at all";
  v1::RelayFrame data;
  data.set_data("xyz");
  const std::string wire = data.SerializeAsString();
  EXPECT_FALSE(ParseDataFrame(Split(wire + wire, 2), &view)) << "two data fields (the last wins)";
  EXPECT_FALSE(ParseDataFrame(Split(wire + init.SerializeAsString(), 2), &view)) << "data, then init";
  EXPECT_FALSE(ParseDataFrame(Split(wire.substr(0, wire.size() - 1), 2), &view)) << "truncated";
  EXPECT_FALSE(ParseDataFrame(Split(std::string("\x12\x80", 2), 2), &view)) << "unterminated length";
  EXPECT_FALSE(ParseDataFrame(Split(std::string("\x12\x05" "ab", 4), 2), &view)) << "length past the end";
  EXPECT_FALSE(ParseDataFrame(grpc::ByteBuffer(), &view)) << "no buffer";
}

TEST(DataFrame, EncodesWhatProtobufDecodes) {
  for (size_t size : {size_t{0}, size_t{5}, size_t{300}, size_t{65536}}) {
    const std::string data = Pattern(size);
    grpc::ByteBuffer buffer = EncodeDataFrame(grpc::Slice(data.data(), data.size()));
    v1::RelayFrame frame;
    ASSERT_TRUE(ParseFromBuffer(buffer, &frame)) << size;
    ASSERT_TRUE(frame.has_data()) << size;
    EXPECT_EQ(frame.data(), data) << size;
    DataFrameView view;
    ASSERT_TRUE(ParseDataFrame(buffer, &view)) << size;
    EXPECT_EQ(Payload(view), data) << size;
  }
}

// The tunnel's relay sends its frames' strings as slices (relay/forward.cc):
// the slice is the string's own buffer, not a copy, and stays valid after
// the string object is gone.
TEST(DataFrame, SliceOfKeepsTheStringsBytesWhereTheyAre) {
  std::string frame = Pattern(65536);
  const char* where = frame.data();
  grpc::Slice slice = relay::SliceOf(std::move(frame));
  EXPECT_EQ(reinterpret_cast<const char*>(slice.begin()), where);
  grpc::ByteBuffer buffer = EncodeDataFrame(slice);
  slice = grpc::Slice();
  DataFrameView view;
  ASSERT_TRUE(ParseDataFrame(buffer, &view));
  EXPECT_EQ(Payload(view), Pattern(65536));
}

TEST(FramePool, ReusesOneBufferForFrameAfterFrame) {
  FramePool pool(4096, 4);
  for (int i = 0; i < 100; ++i) {
    FramePool::Buffer buffer = pool.Take();
    FramePool::Data(buffer)[0] = static_cast<char>(i);
    grpc::Slice slice = FramePool::ToSlice(std::move(buffer), 1);
    grpc::ByteBuffer frame = EncodeDataFrame(slice);  // gRPC's references, as a write holds them
    ASSERT_EQ(slice.begin()[0], static_cast<uint8_t>(i));
  }  // the last reference goes: the buffer is back
  EXPECT_EQ(pool.allocations(), 1u);
  EXPECT_EQ(pool.idle(), 1u);
}

TEST(FramePool, KeepsAtMostItsBoundIdle) {
  FramePool pool(4096, 2);
  std::vector<FramePool::Buffer> held;
  for (int i = 0; i < 5; ++i) held.push_back(pool.Take());
  EXPECT_EQ(pool.allocations(), 5u);
  held.clear();
  EXPECT_EQ(pool.idle(), 2u) << "the rest was freed";
}

}  // namespace
}  // namespace osh::peers

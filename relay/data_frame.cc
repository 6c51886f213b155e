// Theory of operation: data frames without protobuf
//
// TcpForwardFrame (0.0 and 0.1) and RelayFrame are `oneof payload { init = 1;
// bytes data = 2; }`, so a frame carrying bytes is, on the wire, 0x12, the
// length as a base-128 varint, then the bytes (protobuf encoding). The peers
// relay bytes between such frames and sockets, and between the two calls,
// and the tunnel's relay sends the frames its callers made, so they need
// only to find the payload in a received ByteBuffer and to put a header in
// front of bytes to send:
//   - ParseDataFrame() reads the header across the frame's slices and checks
//     that the payload ends exactly where the frame ends; anything else
//     (init frames, unknown or repeated fields, where the last one wins)
//     is left to the protobuf decoder, so no frame protobuf accepts is
//     misread. The payload stays in gRPC's slices: no copy.
//   - EncodeDataFrame() is a ByteBuffer of an inline header slice and the
//     payload slice: no copy, no protobuf serialisation.
// With protobuf, every frame's bytes were copied into a fresh std::string
// (a oneof field is destroyed by the Clear() that each parse starts with)
// and copied again into a fresh slice when serialised.
#include "relay/data_frame.h"

namespace osh::relay {
namespace {

constexpr uint8_t kDataTag = 0x12;   // field 2, wire type 2 (length-delimited)
constexpr size_t kMaxVarintBytes = 10;
constexpr size_t kMaxHeaderBytes = 1 + kMaxVarintBytes;

}  // namespace

bool ParseDataFrame(const grpc::ByteBuffer& frame, DataFrameView* view) {
  view->Clear();
  if (!frame.Dump(&view->slices).ok()) return false;
  // The first bytes (at most one tag and one varint), across slices.
  uint8_t head[kMaxHeaderBytes];
  size_t have = 0;
  size_t total = 0;
  for (const grpc::Slice& s : view->slices) {
    total += s.size();
    for (size_t i = 0; i < s.size() && have < kMaxHeaderBytes; ++i) head[have++] = s.begin()[i];
  }
  if (have < 2 || head[0] != kDataTag) return false;
  uint64_t length = 0;
  size_t pos = 1;
  for (unsigned shift = 0;; shift += 7) {
    if (pos >= have || shift >= 64) return false;
    const uint8_t b = head[pos++];
    length |= uint64_t{b & 0x7fu} << shift;
    if ((b & 0x80u) == 0) break;
  }
  if (length != total - pos) return false;  // shorter or longer: not exactly one data field
  view->header = pos;
  view->size = static_cast<size_t>(length);
  return true;
}

grpc::ByteBuffer EncodeDataFrame(grpc::Slice payload) {
  uint8_t head[kMaxHeaderBytes];
  size_t n = 0;
  head[n++] = kDataTag;
  for (uint64_t v = payload.size();; v >>= 7) {
    const auto low = static_cast<uint8_t>(v & 0x7fu);
    if (v < 0x80u) {
      head[n++] = low;
      break;
    }
    head[n++] = low | 0x80u;
  }
  const size_t count = payload.size() == 0 ? 1 : 2;  // an empty frame: the header alone
  const grpc::Slice slices[2] = {grpc::Slice(head, n), std::move(payload)};
  return grpc::ByteBuffer(slices, count);
}

grpc::Slice SliceOf(std::string bytes) {
  auto* owned = new std::string(std::move(bytes));
  return grpc::Slice(owned->data(), owned->size(), [](void* p) { delete static_cast<std::string*>(p); }, owned);
}

}  // namespace osh::relay

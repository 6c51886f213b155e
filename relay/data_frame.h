// Data frames as wire bytes, without protobuf: what the tunnel's relay
// writes (issue 16.4: no serialisation copy per frame) and the peers' bulk
// path reads and writes (issue 16.2: no parse, copy or allocation per
// frame). Library osh_wire (gRPC only, no protobuf). See data_frame.cc for
// the theory of operation.
#pragma once

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace osh::relay {

/// DataFrameView - where a data frame's payload sits in its ByteBuffer:
/// bytes [header, header + size) of the concatenated @slices. Reused from
/// frame to frame (the vector keeps its capacity).
struct DataFrameView {
  std::vector<grpc::Slice> slices;  ///< the frame's slices (references, no copy)
  size_t header = 0;                ///< bytes before the payload (tag and length)
  size_t size = 0;                  ///< payload bytes; 0: an empty data frame

  /// Drops the slice references (keeps the vector's capacity).
  void Clear() {
    slices.clear();
    header = size = 0;
  }
};

/// ParseDataFrame() - whether @frame is exactly one data field - tag 0x12
/// (field 2, length-delimited: `bytes data = 2` of TcpForwardFrame in both
/// generations and of RelayFrame), a length, that many bytes, nothing more -
/// and where its payload is (@view, overwritten). Return: false for
/// anything else (an init, another field, several fields, a malformed
/// length): decode those with protobuf. Thread: any.
bool ParseDataFrame(const grpc::ByteBuffer& frame, DataFrameView* view);

/// EncodeDataFrame() - the data frame carrying @payload, as a ByteBuffer
/// of two slices: the tag and length (inline, no allocation) and @payload
/// itself (a reference, no copy). Thread: any.
grpc::ByteBuffer EncodeDataFrame(grpc::Slice payload);

/// SliceOf() - a slice of @bytes without a copy: the string moves to the
/// heap and is deleted when gRPC drops the slice's last reference (on any
/// of its threads, possibly after the write that carried it completed).
/// Thread: any.
grpc::Slice SliceOf(std::string bytes);

}  // namespace osh::relay

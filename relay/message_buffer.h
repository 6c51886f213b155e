// Protobuf message <-> grpc::ByteBuffer, for raw (generation-dependent)
// calls: the peers', and the init frame of the tunnel's ForwardTcp streams
// (relay/forward.cc). Header-only (library osh_wire); include it only from
// code that links gRPC and protobuf.
#pragma once

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>

namespace osh::relay {

/// SerializeToBuffer() - @msg as a ByteBuffer. Thread: any.
template <class Message>
grpc::ByteBuffer SerializeToBuffer(const Message& msg) {
  grpc::ByteBuffer out;
  bool own = false;
  grpc::SerializationTraits<Message>::Serialize(msg, &out, &own);
  return out;
}

/// ParseFromBuffer() - parses a copy of @buffer into @msg (@buffer itself is
/// left alone). Return: false if it does not parse. Thread: any.
template <class Message>
bool ParseFromBuffer(const grpc::ByteBuffer& buffer, Message* msg) {
  grpc::ByteBuffer copy(buffer);  // Deserialize consumes its input
  return grpc::SerializationTraits<Message>::Deserialize(&copy, msg).ok();
}

}  // namespace osh::relay

// Protobuf message <-> grpc::ByteBuffer, for the peers' raw (generation-
// dependent) calls. Header-only; include it only from code that links gRPC.
#pragma once

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>

namespace osh::peers {

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

}  // namespace osh::peers

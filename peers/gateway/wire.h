// The mini-gateway's generation-dependent wire: decoding and encoding of the
// ForwardTcp frames and the ConnectSupervisor messages with the message types
// of one generation (protocol-0.1 §2: never decode one generation's bytes
// with the other's types). Unary calls use typed helpers in mini_gateway.cc.
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "openshell.pb.h"
#include "relay/message_buffer.h"
#include "peers/common/protocol.h"

namespace osh::peers {

using relay::ParseFromBuffer;
using relay::SerializeToBuffer;

/// Frames of at most this many data bytes go out on ForwardTcp and
/// RelayStream (protocol §2.5: TCP_FORWARD_CHUNK_SIZE, 64 KiB each way).
inline constexpr size_t kMaxDataFrameBytes = 64 * 1024;

/// TcpForwardInit of either generation, as the gateway uses it.
struct ForwardInit {
  enum class Target { kNone, kSsh, kTcp };
  /// 0.0: TcpForwardInit.sandbox_id (the UUID); 0.1: .sandbox (the NAME).
  std::string sandbox;
  /// 0.1: TcpForwardInit.workspace (a plain string); 0.0: always "".
  std::string workspace;
  std::string service_id;
  Target target = Target::kNone;
  std::string host;   // kTcp only, as sent
  uint32_t port = 0;  // kTcp only, as sent
  std::string authorization_token;  // as sent (not trimmed)
};

/// One decoded client frame of ForwardTcp.
struct ClientFrame {
  enum class Kind { kInit, kData, kOther };  // kOther: payload not set
  Kind kind = Kind::kOther;
  ForwardInit init;  // kInit
  std::string data;  // kData (may be empty)
};

/// DecodeClientFrame() - parses @buffer as @protocol's TcpForwardFrame
/// (consumes it). Return: false if the bytes do not parse. Thread: any.
bool DecodeClientFrame(Protocol protocol, grpc::ByteBuffer* buffer, ClientFrame* out);

/// EncodeClientData() - @protocol's TcpForwardFrame{data: @data}. Thread: any.
grpc::ByteBuffer EncodeClientData(Protocol protocol, std::string data);

/// One decoded SupervisorMessage (ConnectSupervisor, supervisor -> gateway).
struct SupervisorEvent {
  enum class Kind { kHello, kHeartbeat, kRelayOpenResult, kRelayClose, kNone };
  Kind kind = Kind::kNone;
  // kHello (0.1 adds connection_epoch; protocol-0.1 §4)
  std::string sandbox_id;
  std::string instance_id;
  uint64_t connection_epoch = 0;
  openshell::v1::RelayOpenResult result;  // kRelayOpenResult (same type in both)
  openshell::v1::RelayClose close;        // kRelayClose (same type in both)
};

/// DecodeSupervisorMessage() - parses @buffer as @protocol's
/// SupervisorMessage (consumes it). Return: false if it does not parse.
bool DecodeSupervisorMessage(Protocol protocol, grpc::ByteBuffer* buffer, SupervisorEvent* out);

/// EncodeSessionAccepted() - GatewayMessage{session_accepted}: 0.0 carries
/// heartbeat_interval_secs (2), 0.1 the heartbeat_interval Duration (102)
/// (protocol-0.1 §4). Thread: any.
grpc::ByteBuffer EncodeSessionAccepted(Protocol protocol, const std::string& session_id,
                                       std::chrono::seconds heartbeat_interval);

/// EncodeRelayOpen() - GatewayMessage{relay_open: @open} of @protocol.
grpc::ByteBuffer EncodeRelayOpen(Protocol protocol, const openshell::v1::RelayOpen& open);

/// EncodeGatewayHeartbeat() - GatewayMessage{heartbeat} of @protocol.
grpc::ByteBuffer EncodeGatewayHeartbeat(Protocol protocol);

}  // namespace osh::peers

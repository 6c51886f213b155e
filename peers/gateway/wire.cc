#include "peers/gateway/wire.h"

#include <utility>

#include "openshell_0_1.pb.h"

namespace osh::peers {
namespace {

namespace v1 = openshell::v1;
namespace g01 = openshell::v1::g01;

/// The fields both generations' TcpForwardInit share (4-7).
template <class Init>
void FillCommon(const Init& init, ForwardInit* out) {
  out->service_id = init.service_id();
  out->authorization_token = init.authorization_token();
  if (init.has_ssh()) {
    out->target = ForwardInit::Target::kSsh;
  } else if (init.has_tcp()) {
    out->target = ForwardInit::Target::kTcp;
    out->host = init.tcp().host();
    out->port = init.tcp().port();
  }
}

void FillInit(const v1::TcpForwardInit& init, ForwardInit* out) {
  out->sandbox = init.sandbox_id();
  FillCommon(init, out);
}

void FillInit(const g01::TcpForwardInit& init, ForwardInit* out) {
  out->sandbox = init.sandbox();
  out->workspace = init.workspace();
  FillCommon(init, out);
}

template <class Frame>
bool DecodeFrame(grpc::ByteBuffer* buffer, ClientFrame* out) {
  Frame frame;
  if (!grpc::SerializationTraits<Frame>::Deserialize(buffer, &frame).ok()) return false;
  if (frame.has_init()) {
    out->kind = ClientFrame::Kind::kInit;
    FillInit(frame.init(), &out->init);
  } else if (frame.has_data()) {
    out->kind = ClientFrame::Kind::kData;
    out->data = std::move(*frame.mutable_data());
  } else {
    out->kind = ClientFrame::Kind::kOther;
  }
  return true;
}

template <class Frame>
grpc::ByteBuffer EncodeData(std::string data) {
  Frame frame;
  frame.set_data(std::move(data));
  return SerializeToBuffer(frame);
}

template <class Message>
bool DecodeSupervisor(grpc::ByteBuffer* buffer, SupervisorEvent* out, Message* msg) {
  if (!grpc::SerializationTraits<Message>::Deserialize(buffer, msg).ok()) return false;
  if (msg->has_hello()) {
    out->kind = SupervisorEvent::Kind::kHello;
    out->sandbox_id = msg->hello().sandbox_id();
    out->instance_id = msg->hello().instance_id();
  } else if (msg->has_heartbeat()) {
    out->kind = SupervisorEvent::Kind::kHeartbeat;
  } else if (msg->has_relay_open_result()) {
    out->kind = SupervisorEvent::Kind::kRelayOpenResult;
    out->result = msg->relay_open_result();
  } else if (msg->has_relay_close()) {
    out->kind = SupervisorEvent::Kind::kRelayClose;
    out->close = msg->relay_close();
  } else {
    out->kind = SupervisorEvent::Kind::kNone;
  }
  return true;
}

}  // namespace

bool DecodeClientFrame(Protocol protocol, grpc::ByteBuffer* buffer, ClientFrame* out) {
  return protocol == Protocol::kV0_0 ? DecodeFrame<v1::TcpForwardFrame>(buffer, out)
                                     : DecodeFrame<g01::TcpForwardFrame>(buffer, out);
}

grpc::ByteBuffer EncodeClientData(Protocol protocol, std::string data) {
  return protocol == Protocol::kV0_0 ? EncodeData<v1::TcpForwardFrame>(std::move(data))
                                     : EncodeData<g01::TcpForwardFrame>(std::move(data));
}

bool DecodeSupervisorMessage(Protocol protocol, grpc::ByteBuffer* buffer, SupervisorEvent* out) {
  if (protocol == Protocol::kV0_0) {
    v1::SupervisorMessage msg;
    return DecodeSupervisor(buffer, out, &msg);
  }
  g01::SupervisorMessage msg;
  if (!DecodeSupervisor(buffer, out, &msg)) return false;
  if (msg.has_hello()) out->connection_epoch = msg.hello().connection_epoch();
  return true;
}

grpc::ByteBuffer EncodeSessionAccepted(Protocol protocol, const std::string& session_id,
                                       std::chrono::seconds heartbeat_interval) {
  if (protocol == Protocol::kV0_0) {
    v1::GatewayMessage msg;
    msg.mutable_session_accepted()->set_session_id(session_id);
    msg.mutable_session_accepted()->set_heartbeat_interval_secs(
        static_cast<uint32_t>(heartbeat_interval.count()));
    return SerializeToBuffer(msg);
  }
  g01::GatewayMessage msg;
  msg.mutable_session_accepted()->set_session_id(session_id);
  msg.mutable_session_accepted()->mutable_heartbeat_interval()->set_seconds(heartbeat_interval.count());
  return SerializeToBuffer(msg);
}

grpc::ByteBuffer EncodeRelayOpen(Protocol protocol, const v1::RelayOpen& open) {
  if (protocol == Protocol::kV0_0) {
    v1::GatewayMessage msg;
    *msg.mutable_relay_open() = open;
    return SerializeToBuffer(msg);
  }
  g01::GatewayMessage msg;
  *msg.mutable_relay_open() = open;
  return SerializeToBuffer(msg);
}

grpc::ByteBuffer EncodeGatewayHeartbeat(Protocol protocol) {
  if (protocol == Protocol::kV0_0) {
    v1::GatewayMessage msg;
    msg.mutable_heartbeat();
    return SerializeToBuffer(msg);
  }
  g01::GatewayMessage msg;
  msg.mutable_heartbeat();
  return SerializeToBuffer(msg);
}

}  // namespace osh::peers

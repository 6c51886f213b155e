// relay-internal: the gRPC objects behind GatewayClient.
#pragma once

#include <grpcpp/grpcpp.h>

#include "openshell.grpc.pb.h"
#include "relay/gateway_client.h"

namespace osh::relay {

struct GatewayClient::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<openshell::v1::OpenShell::Stub> stub;
};

CallStatus from_grpc(const grpc::Status& s);

}  // namespace osh::relay

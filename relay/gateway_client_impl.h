// relay-internal: the gRPC objects behind GatewayClient.
#pragma once

#include <grpcpp/grpcpp.h>

#include "openshell.grpc.pb.h"
#include "relay/gateway_client.h"

namespace osh::relay {

struct GatewayClient::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<openshell::v1::OpenShell::Stub> stub;
  /// "Bearer <token>", or "" when no bearer token is configured.
  std::string authorization;

  /// prepare() - adds the per-call credentials to @ctx: the
  /// "authorization: Bearer <token>" metadata (protocol §4.3). Must run on
  /// every ClientContext before its call starts: the unary calls and each
  /// ForwardTcp stream (relay/forward.cc). Metadata rather than gRPC call
  /// credentials, because gRPC refuses call credentials on h2c channels and
  /// upstream sends the header on http:// endpoints too. Thread: any.
  void prepare(grpc::ClientContext& ctx) const {
    if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
  }
};

CallStatus from_grpc(const grpc::Status& s);

/// make_channel_credentials() - channel credentials for @opts: insecure for
/// http://; for https:// TLS with the CA (or system roots) and the optional
/// client pair, or a verifier that accepts anything when opts.insecure_tls.
std::shared_ptr<grpc::ChannelCredentials> make_channel_credentials(const GatewayOptions& opts);

}  // namespace osh::relay

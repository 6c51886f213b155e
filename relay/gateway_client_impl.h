// relay-internal: the gRPC objects behind GatewayClient.
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>

#include "openshell.grpc.pb.h"
#include "openshell_0_1.pb.h"
#include "relay/gateway_client.h"
#include "relay/h2_channel.h"

namespace osh::relay {

/// Method paths. They are the same in both generations (protocol-0.1 §5);
/// gRPC keeps a pointer to them for the life of each call, so they are
/// static storage.
namespace method {
inline constexpr char kHealth[] = "/openshell.v1.OpenShell/Health";
inline constexpr char kGetSandbox[] = "/openshell.v1.OpenShell/GetSandbox";
inline constexpr char kListSandboxes[] = "/openshell.v1.OpenShell/ListSandboxes";
inline constexpr char kCreateSshSession[] = "/openshell.v1.OpenShell/CreateSshSession";
inline constexpr char kRevokeSshSession[] = "/openshell.v1.OpenShell/RevokeSshSession";
inline constexpr char kForwardTcp[] = "/openshell.v1.OpenShell/ForwardTcp";
}  // namespace method

struct GatewayClient::Impl {
  std::shared_ptr<grpc::Channel> channel;
  /// 0.0 calls: the generated stub (openshell.proto's service).
  std::unique_ptr<openshell::v1::OpenShell::Stub> stub;
  /// ForwardTcp streams, one stub per generation (the same method path):
  /// frames are written as wire bytes (relay/data_frame.h: the frame's
  /// string is the payload slice, no serialisation copy) and read as the
  /// generation's message type.
  std::unique_ptr<grpc::TemplatedGenericStub<grpc::ByteBuffer, openshell::v1::TcpForwardFrame>> forward00;
  std::unique_ptr<grpc::TemplatedGenericStub<grpc::ByteBuffer, openshell::v1::g01::TcpForwardFrame>>
      forward01;
  /// The channel's memory quota (every received slice is charged to it;
  /// chttp2 shrinks its flow-control windows as it fills); only when
  /// GatewayOptions::grpc_memory_quota > 0. ForwardManager may resize it.
  std::optional<grpc::ResourceQuota> quota;
  /// The ForwardTcp streams' own HTTP/2 channel (relay/h2_channel.h), when
  /// GatewayOptions::forward_transport is kH2; null: they use `channel`.
  std::unique_ptr<h2::Channel> h2;
  /// Set by GatewayClient::health(); read by every call and each stream.
  std::atomic<Generation> generation{Generation::kUnknown};

  /// prepare() - adds the per-call credentials to @ctx: the
  /// "authorization: Bearer <token>" metadata (protocol §4.3). Must run on
  /// every ClientContext before its call starts: the unary calls and each
  /// ForwardTcp stream (relay/forward.cc). Metadata rather than gRPC call
  /// credentials, because gRPC refuses call credentials on h2c channels and
  /// upstream sends the header on http:// endpoints too. Re-reads the OIDC
  /// token file when it changed (GatewayOptions::bearer_token_file).
  /// Thread: any.
  void prepare(grpc::ClientContext& ctx);
  /// The same for a stream on the h2 channel (relay/h2_reactor.h).
  template <class Context>
  void prepare(Context& ctx) {
    const std::string auth = authorization_value();
    if (!auth.empty()) ctx.AddMetadata("authorization", auth);
  }
  /// "Bearer <token>" (the token file re-read when it changed), or "".
  std::string authorization_value();

  // Bearer token state (guarded by auth_mu).
  std::mutex auth_mu;
  std::string authorization;  ///< "Bearer <token>", or "" when none is configured
  std::string token_file;     ///< "" = the token is fixed
  std::optional<uid_t> token_file_owner;  ///< GatewayOptions::bearer_token_file_owner
  int64_t token_file_mtime_ns = 0;
  std::chrono::steady_clock::time_point token_checked{};
  std::function<std::string(const std::string&)> parse_token;

  /// Re-reads token_file when its mtime changed, at most once a second.
  void reload_token_locked();
};

CallStatus from_grpc(const grpc::Status& s);

/// channel_arguments() - the gateway channel's arguments for @opts: keepalive,
/// receive limits (per-method service config), reconnect back-off, TLS name,
/// and no retry filter (its per-call state made an idle connection cost 31
/// KiB of RSS instead of 21-23, issue 16.6). The memory quota
/// (GatewayOptions::grpc_memory_quota) is added by GatewayClient, which
/// keeps it for ForwardManager. Pure; unit-tested (relay_unit_test).
grpc::ChannelArguments channel_arguments(const GatewayOptions& opts);

/// h2_channel_options() - the ForwardTcp streams' h2 channel settings for
/// @opts (ForwardTransport::kH2): the endpoint and TLS material as for the
/// gRPC channel, the windows, the receive limit. Pure.
h2::ChannelOptions h2_channel_options(const GatewayOptions& opts);

/// make_channel_credentials() - channel credentials for @opts: insecure for
/// http://; for https:// TLS with the CA (or system roots) and the optional
/// client pair, or a verifier that accepts anything when opts.insecure_tls.
std::shared_ptr<grpc::ChannelCredentials> make_channel_credentials(const GatewayOptions& opts);

}  // namespace osh::relay

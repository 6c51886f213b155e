#include "relay/gateway_client.h"

#include <grpcpp/grpcpp.h>

#include "relay/gateway_client_impl.h"

namespace osh::relay {

namespace {
const char* code_name(int code) {
  static const char* const kNames[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN";
}

std::unique_ptr<grpc::ClientContext> make_context(std::chrono::milliseconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}
}  // namespace

std::string CallStatus::to_string() const {
  return message.empty() ? code_name(code) : std::string(code_name(code)) + ": " + message;
}

CallStatus from_grpc(const grpc::Status& s) {
  return CallStatus{static_cast<int>(s.error_code()), s.error_message()};
}

GatewayClient::GatewayClient(GatewayOptions opts) : opts_(std::move(opts)), impl_(new Impl) {
  grpc::ChannelArguments args;
  // HTTP/2 keepalive so a dead gateway is noticed on idle connections
  // (the upstream CLI pings every 10 s, protocol §2.7).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetMaxReceiveMessageSize(4 * 1024 * 1024);
  // Fail fast and come back quickly after a gateway outage.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  std::shared_ptr<grpc::ChannelCredentials> creds =
      opts_.endpoint.tls ? grpc::SslCredentials(grpc::SslCredentialsOptions{})
                         : grpc::InsecureChannelCredentials();
  impl_->channel = grpc::CreateCustomChannel(opts_.endpoint.grpc_target(), creds, args);
  impl_->stub = openshell::v1::OpenShell::NewStub(impl_->channel);
}

GatewayClient::~GatewayClient() = default;

CallStatus GatewayClient::health(std::string* version) {
  auto ctx = make_context(opts_.rpc_timeout);
  openshell::v1::HealthRequest req;
  openshell::v1::HealthResponse resp;
  grpc::Status s = impl_->stub->Health(ctx.get(), req, &resp);
  if (s.ok() && version) *version = resp.version();
  return from_grpc(s);
}

CallStatus GatewayClient::list_sandboxes(std::vector<SandboxInfo>* out) {
  out->clear();
  constexpr uint32_t kPage = 1000;  // server clamps to 1000 (protocol §1.3)
  for (uint32_t offset = 0;; offset += kPage) {
    auto ctx = make_context(opts_.rpc_timeout);
    openshell::v1::ListSandboxesRequest req;
    req.set_limit(kPage);
    req.set_offset(offset);
    openshell::v1::ListSandboxesResponse resp;
    grpc::Status s = impl_->stub->ListSandboxes(ctx.get(), req, &resp);
    if (!s.ok()) return from_grpc(s);
    for (const auto& sb : resp.sandboxes()) {
      SandboxInfo info;
      info.id = sb.metadata().id();
      info.name = sb.metadata().name();
      // status.phase since v0.0.53; Sandbox field 4 before (protocol §1.3).
      info.phase = sb.status().phase() != 0 ? sb.status().phase() : sb.legacy_phase();
      out->push_back(std::move(info));
    }
    if (static_cast<uint32_t>(resp.sandboxes_size()) < kPage) break;
  }
  return {};
}

CallStatus GatewayClient::create_ssh_session(const std::string& sandbox_id, SshSession* out) {
  auto ctx = make_context(opts_.rpc_timeout);
  openshell::v1::CreateSshSessionRequest req;
  req.set_sandbox_id(sandbox_id);
  openshell::v1::CreateSshSessionResponse resp;
  grpc::Status s = impl_->stub->CreateSshSession(ctx.get(), req, &resp);
  if (s.ok()) {
    out->token = resp.token();
    out->expires_at_ms = resp.expires_at_ms();
  }
  return from_grpc(s);
}

CallStatus GatewayClient::revoke_ssh_session(const std::string& token) {
  auto ctx = make_context(opts_.rpc_timeout);
  openshell::v1::RevokeSshSessionRequest req;
  req.set_token(token);
  openshell::v1::RevokeSshSessionResponse resp;
  return from_grpc(impl_->stub->RevokeSshSession(ctx.get(), req, &resp));
}

}  // namespace osh::relay

// Theory of operation: GatewayClient owns one gRPC channel to the gateway.
// Transport (protocol §4.2): http:// is h2c (insecure channel credentials);
// https:// is TLS via grpc::SslCredentials with the configured CA (or the
// system roots) and, for mTLS, the client certificate and key; insecure mode
// uses the experimental TLS credentials with a verifier that accepts any
// server certificate. Per-call credentials (§4.3): Impl::prepare() adds
// "authorization: Bearer <token>" to every ClientContext, the unary calls
// here and each ForwardTcp stream (relay/forward.cc). Failures come back as
// CallStatus; describe_failure() turns the common transport and auth
// failures into one line a user can act on. Unary calls block for at most
// rpc_timeout.
#include "relay/gateway_client.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <string_view>

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

// A unary call's context: deadline plus the per-call credentials.
std::unique_ptr<grpc::ClientContext> make_context(std::chrono::milliseconds timeout,
                                                  const GatewayClient::Impl& impl) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  impl.prepare(*ctx);
  return ctx;
}

bool contains(std::string_view text, std::string_view what) {
  return text.find(what) != std::string_view::npos;
}

std::string describe(const CallStatus& st, const Endpoint& ep, const GatewayOptions* opts) {
  const std::string where = ep.to_string();
  const std::string& m = st.message;
  constexpr int kDeadlineExceeded = 4, kUnauthenticated = 16, kPermissionDenied = 7;
  constexpr int kUnavailable = 14;
  const bool has_ca = opts && !opts->ca_pem.empty();
  const bool has_cert = opts && !opts->client_cert_pem.empty();
  const bool has_token = opts && !opts->bearer_token.empty();
  // Transport failures (UNAVAILABLE, or UNKNOWN from a handshake).
  if (contains(m, "certificate verify failed") || contains(m, "CERTIFICATE_VERIFY_FAILED")) {
    std::string hint;
    if (has_ca && !opts->ca_source.empty())
      hint = "is the CA in " + opts->ca_source + " right?";
    else if (has_ca)
      hint = "is the CA right?";
    else
      hint = "no CA configured and the system roots do not trust the gateway's certificate: put "
             "its CA in mtls/ca.crt of the gateway's config directory";
    return "TLS handshake with " + where + " failed: certificate verify failed (" + hint + ")";
  }
  if (contains(m, "Peer name") && contains(m, "is not in peer certificate")) {
    return "TLS handshake with " + where + " failed: the server certificate is not valid for '" +
           (opts && !opts->tls_server_name.empty() ? opts->tls_server_name : ep.host) +
           "' (the certificate's subject alternative names must include it)";
  }
  if (contains(m, "certificate required") || contains(m, "CERTIFICATE_REQUIRED") ||
      contains(m, "peer did not return a certificate") || contains(m, "handshake failure") ||
      contains(m, "HANDSHAKE_FAILURE")) {
    if (!has_cert)
      return "TLS handshake with " + where +
             " failed: the gateway requires a client certificate and none is configured "
             "(mtls/tls.crt and mtls/tls.key of the gateway's config directory)";
    return "TLS handshake with " + where + " failed: the gateway rejected the client certificate" +
           (opts->client_cert_source.empty() ? std::string()
                                             : " from " + opts->client_cert_source) +
           " (is it signed by the CA the gateway trusts?)";
  }
  if (contains(m, "unknown ca") || contains(m, "UNKNOWN_CA") || contains(m, "bad certificate") ||
      contains(m, "BAD_CERTIFICATE")) {
    return "TLS handshake with " + where + " failed: the gateway rejected the client certificate" +
           (opts && !opts->client_cert_source.empty() ? " from " + opts->client_cert_source
                                                      : std::string()) +
           " (is it signed by the CA the gateway trusts?)";
  }
  if (contains(m, "wrong version number") || contains(m, "WRONG_VERSION_NUMBER") ||
      contains(m, "packet length too long") || contains(m, "http request")) {
    return "TLS handshake with " + where +
           " failed: the gateway does not speak TLS there (use http:// for an h2c gateway)";
  }
  if (contains(m, "Ssl handshake failed") || contains(m, "Handshake failed") ||
      contains(m, "SSL_ERROR")) {
    return "TLS handshake with " + where + " failed: " + m;
  }
  if (st.code == kUnauthenticated) {
    if (contains(m, "client certificate"))  // upstream's mtls_auth without require_client_auth
      return "gateway " + where + " refused the call: " + m +
             " (put tls.crt and tls.key in mtls/ of the gateway's config directory)";
    if (contains(m, "missing authorization"))
      return "gateway " + where + " refused the call: " + m +
             " (it needs a bearer token: auth_mode \"oidc\" and oidc_token.json in the gateway's "
             "config directory)";
    return "gateway " + where + " refused the credentials: " + m +
           (has_token ? " (the bearer token" +
                            (opts->token_source.empty() ? std::string()
                                                        : " from " + opts->token_source) +
                            " is wrong or expired: run `openshell gateway login`)"
                      : std::string(" (no bearer token configured)"));
  }
  if (st.code == kPermissionDenied) return "gateway " + where + " denied the call: " + m;
  if (st.code == kUnavailable) {
    // With TLS 1.3 a server that refuses the client certificate does so
    // after the client's Finished: the client only sees the socket close.
    if (ep.tls && (contains(m, "Socket closed") || contains(m, "Connection reset") ||
                   contains(m, "Broken pipe"))) {
      if (!has_cert)
        return "TLS handshake with " + where +
               " failed: the gateway closed the connection; it probably requires a client "
               "certificate and none is configured (mtls/tls.crt and mtls/tls.key in the "
               "gateway's config directory)";
      return "TLS handshake with " + where +
             " failed: the gateway closed the connection; it probably rejected the client "
             "certificate" +
             (opts->client_cert_source.empty() ? std::string()
                                               : " from " + opts->client_cert_source) +
             " (is it signed by the CA the gateway trusts?)";
    }
    if (!ep.tls && (contains(m, "Socket closed") || contains(m, "Connection reset")))
      return "gateway " + where + " is not reachable: " + st.to_string() +
             " (does the gateway serve TLS? then use https://)";
    return "gateway " + where + " is not reachable: " + st.to_string();
  }
  if (st.code == kDeadlineExceeded)
    return "gateway " + where + " did not answer in time: " + st.to_string();
  return "gateway " + where + ": " + st.to_string();
}
}  // namespace

std::string describe_failure(const CallStatus& status, const GatewayOptions& opts) {
  return describe(status, opts.endpoint, &opts);
}

std::string describe_failure(const CallStatus& status, const Endpoint& endpoint) {
  return describe(status, endpoint, nullptr);
}

std::shared_ptr<grpc::ChannelCredentials> make_channel_credentials(const GatewayOptions& o) {
  if (!o.endpoint.tls) return grpc::InsecureChannelCredentials();
  if (o.insecure_tls) {
    // Upstream's insecure mode (protocol §4.2): any server certificate, no
    // client certificate.
    grpc::experimental::TlsChannelCredentialsOptions t;
    t.set_verify_server_certs(false);
    t.set_check_call_host(false);
    t.set_certificate_verifier(std::make_shared<grpc::experimental::NoOpCertificateVerifier>());
    return grpc::experimental::TlsCredentials(t);
  }
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = o.ca_pem;  // "" = gRPC's default roots (the system's)
  ssl.pem_cert_chain = o.client_cert_pem;
  ssl.pem_private_key = o.client_key_pem;
  return grpc::SslCredentials(ssl);
}

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
  if (opts_.endpoint.tls && !opts_.tls_server_name.empty())
    args.SetSslTargetNameOverride(opts_.tls_server_name);
  impl_->channel =
      grpc::CreateCustomChannel(opts_.endpoint.grpc_target(), make_channel_credentials(opts_), args);
  impl_->stub = openshell::v1::OpenShell::NewStub(impl_->channel);
  if (!opts_.bearer_token.empty()) impl_->authorization = "Bearer " + opts_.bearer_token;
}

GatewayClient::~GatewayClient() = default;

CallStatus GatewayClient::health(std::string* version) {
  auto ctx = make_context(opts_.rpc_timeout, *impl_);
  openshell::v1::HealthRequest req;
  openshell::v1::HealthResponse resp;
  grpc::Status s = impl_->stub->Health(ctx.get(), req, &resp);
  if (s.ok() && version) *version = resp.version();
  return from_grpc(s);
}

namespace {
SandboxInfo to_info(const openshell::v1::Sandbox& sb) {
  SandboxInfo info;
  info.id = sb.metadata().id();
  info.name = sb.metadata().name();
  // status.phase since v0.0.53; Sandbox field 4 before (protocol §1.3).
  info.phase = sb.status().phase() != 0 ? sb.status().phase() : sb.legacy_phase();
  return info;
}
}  // namespace

CallStatus GatewayClient::list_sandboxes(std::vector<SandboxInfo>* out) {
  out->clear();
  constexpr uint32_t kPage = 1000;  // server clamps to 1000 (protocol §1.3)
  for (uint32_t offset = 0;; offset += kPage) {
    auto ctx = make_context(opts_.rpc_timeout, *impl_);
    openshell::v1::ListSandboxesRequest req;
    req.set_limit(kPage);
    req.set_offset(offset);
    if (!opts_.workspace.empty()) req.set_workspace(opts_.workspace);
    openshell::v1::ListSandboxesResponse resp;
    grpc::Status s = impl_->stub->ListSandboxes(ctx.get(), req, &resp);
    if (!s.ok()) return from_grpc(s);
    for (const auto& sb : resp.sandboxes()) out->push_back(to_info(sb));
    if (static_cast<uint32_t>(resp.sandboxes_size()) < kPage) break;
  }
  return {};
}

CallStatus GatewayClient::get_sandbox(const std::string& name, SandboxInfo* out) {
  auto ctx = make_context(opts_.rpc_timeout, *impl_);
  openshell::v1::GetSandboxRequest req;
  req.set_name(name);
  if (!opts_.workspace.empty()) req.set_workspace(opts_.workspace);
  openshell::v1::SandboxResponse resp;
  grpc::Status s = impl_->stub->GetSandbox(ctx.get(), req, &resp);
  if (!s.ok()) return from_grpc(s);
  *out = to_info(resp.sandbox());
  return {};
}

CallStatus GatewayClient::create_ssh_session(const std::string& sandbox_id, SshSession* out) {
  auto ctx = make_context(opts_.rpc_timeout, *impl_);
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
  auto ctx = make_context(opts_.rpc_timeout, *impl_);
  openshell::v1::RevokeSshSessionRequest req;
  req.set_token(token);
  openshell::v1::RevokeSshSessionResponse resp;
  return from_grpc(impl_->stub->RevokeSshSession(ctx.get(), req, &resp));
}

}  // namespace osh::relay

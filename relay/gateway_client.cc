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
//
// Generations (protocol-0.1 §2): health() reads the gateway's version and
// picks the 0.0 or the 0.1 encoding (probing with an empty ListSandboxes
// when the version says nothing); every later call uses that generation's
// message types, never both: 0.0 through the generated stub, 0.1 through a
// TemplatedGenericStub on the same method path (call01). The bearer token is
// re-read from its OIDC token file when the openshell CLI rewrites it.
#include "relay/gateway_client.h"

#include <fcntl.h>

#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <future>
#include <sstream>
#include <string_view>

#include "common/log_limiter.h"
#include "common/log_escape.h"
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
                                                  GatewayClient::Impl& impl) {
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

bool CallStatus::not_found() const { return code == static_cast<int>(grpc::StatusCode::NOT_FOUND); }

std::string CallStatus::to_string() const {
  return message.empty() ? code_name(code) : std::string(code_name(code)) + ": " + message;
}

CallStatus from_grpc(const grpc::Status& s) {
  return CallStatus{static_cast<int>(s.error_code()), s.error_message()};
}

const char* to_string(Generation g) {
  switch (g) {
    case Generation::k0_0: return "0.0";
    case Generation::k0_1: return "0.1";
    case Generation::kUnknown: break;
  }
  return "unknown";
}

const char* phase_name(int phase) {
  static const char* const kNames[] = {"UNSPECIFIED", "PROVISIONING", "READY",   "ERROR",
                                       "DELETING",    "UNKNOWN",      "STOPPING", "STOPPED",
                                       "STARTING",    "COMPLETED"};
  return phase >= 0 && phase <= 9 ? kNames[phase] : "UNKNOWN";
}

Generation generation_from_version(std::string_view v) {
  // The first "MAJOR.MINOR" in the string: "0.1.5", "v0.1.6-dev.3+gabc",
  // "openshell 0.0.111".
  size_t i = 0;
  while (i < v.size() && !(v[i] >= '0' && v[i] <= '9')) ++i;
  auto number = [&](uint64_t* out) {
    const size_t begin = i;
    uint64_t n = 0;
    while (i < v.size() && v[i] >= '0' && v[i] <= '9' && i - begin < 9) n = n * 10 + (v[i++] - '0');
    *out = n;
    return i > begin;
  };
  uint64_t major = 0, minor = 0, patch = 0;
  if (!number(&major) || i >= v.size() || v[i] != '.') return Generation::kUnknown;
  ++i;
  if (!number(&minor)) return Generation::kUnknown;
  const bool has_patch = i < v.size() && v[i] == '.' && (++i, number(&patch));
  if (major == 0 && minor == 0) {
    // 0.0.0 is upstream's version for a build without git metadata
    // (protocol-0.1 §2): it says nothing about the wire.
    if (!has_patch || patch == 0) return Generation::kUnknown;
    return Generation::k0_0;
  }
  return Generation::k0_1;
}

namespace {

namespace g01 = openshell::v1::g01;

constexpr int kInvalidArgument = 3, kFailedPrecondition = 9, kUnknownCode = 2;

// A 0.1 unary call: the generation's own message types on the shared
// method path. Blocks until the call ends (the context carries a deadline).
template <class Req, class Resp>
grpc::Status call01(GatewayClient::Impl& impl, const char* path, grpc::ClientContext* ctx,
                    const Req& req, Resp* resp) {
  grpc::TemplatedGenericStub<Req, Resp> stub(impl.channel);
  std::promise<grpc::Status> done;
  stub.UnaryCall(ctx, path, grpc::StubOptions(), &req, resp,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  return done.get_future().get();
}

int64_t to_ms(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1000 + t.nanos() / 1000000;
}

SandboxInfo to_info(const openshell::v1::Sandbox& sb) {
  SandboxInfo info;
  info.id = sb.metadata().id();
  info.name = sb.metadata().name();
  // status.phase since v0.0.53; Sandbox field 4 before (protocol §1.3).
  info.phase = sb.status().phase() != 0 ? sb.status().phase() : sb.legacy_phase();
  return info;
}

SandboxInfo to_info(const g01::Sandbox& sb) {
  SandboxInfo info;
  info.id = sb.metadata().id();
  info.name = sb.metadata().name();
  info.phase = sb.status().phase();
  info.host_key_fingerprint = sb.host_key_fingerprint();
  return info;
}

}  // namespace

std::string GatewayClient::Impl::authorization_value() {
  std::lock_guard lk(auth_mu);
  reload_token_locked();
  return authorization;
}

void GatewayClient::Impl::prepare(grpc::ClientContext& ctx) {
  const std::string auth = authorization_value();
  if (!auth.empty()) ctx.AddMetadata("authorization", auth);
}

namespace {
// Modification time of @path in ns, or 0 when it cannot be read.
int64_t mtime_ns(const std::string& path) {
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return 0;
  return int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
}
}  // namespace

void GatewayClient::Impl::reload_token_locked() {
  if (token_file.empty() || !parse_token) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - token_checked < std::chrono::seconds(1)) return;
  token_checked = now;
  const int64_t mtime = mtime_ns(token_file);
  if (mtime == 0 || mtime == token_file_mtime_ns) return;  // 0: kept, it may be mid-rewrite
  const int fd = ::open(token_file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || (token_file_owner && st.st_uid != *token_file_owner)) {
    ::close(fd);
    OSH_LOG_LIMITED(spdlog::level::warn, "{} is now owned by uid {}, not uid {}: ignored, keeping the previous token",
                    log_escape(token_file), st.st_uid, token_file_owner ? *token_file_owner : 0);
    token_file_mtime_ns = mtime;
    return;
  }
  std::string text;
  char buf[8192];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) != 0 && text.size() <= (1u << 20);) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  const std::string token = parse_token(text);
  if (token.empty()) {
    spdlog::warn("{} changed but holds no usable access token; keeping the previous one",
                 log_escape(token_file));
    return;
  }
  token_file_mtime_ns = mtime;
  if ("Bearer " + token != authorization) {
    authorization = "Bearer " + token;
    spdlog::info("re-read the bearer token from {}", log_escape(token_file));
  }
}

grpc::ChannelArguments channel_arguments(const GatewayOptions& opts) {
  grpc::ChannelArguments args;
  // HTTP/2 keepalive so a dead gateway is noticed on idle connections
  // (the upstream CLI pings every 10 s, protocol §2.7).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Receive limits per method (gateway_client.h kMax*): the channel's is
  // the largest one (a list page), each method's own comes from a default
  // service config, which gRPC applies as min(channel, method) per call. No
  // service config from DNS: the gateway's name must not lift the limits.
  const size_t list_max = max_list_page_bytes(opts.list_page_size);
  args.SetMaxReceiveMessageSize(static_cast<int>(list_max));
  args.SetInt(GRPC_ARG_SERVICE_CONFIG_DISABLE_RESOLUTION, 1);
  args.SetServiceConfigJSON(fmt::format(
      R"({{"methodConfig":[)"
      R"({{"name":[{{"service":"openshell.v1.OpenShell","method":"ForwardTcp"}}],"maxResponseMessageBytes":{}}},)"
      R"({{"name":[{{"service":"openshell.v1.OpenShell","method":"ListSandboxes"}}],"maxResponseMessageBytes":{}}},)"
      R"({{"name":[{{"service":"openshell.v1.OpenShell","method":"GetSandbox"}}],"maxResponseMessageBytes":{}}},)"
      R"({{"name":[{{"service":"openshell.v1.OpenShell"}}],"maxResponseMessageBytes":{}}}]}})",
      kMaxForwardFrameBytes, list_max, 2 * kMaxSandboxRecordBytes, kMaxSmallAnswerBytes));
  // No retry filter (issue 16.6, docs/ARCHITECTURE.md "Memory bounds"): our
  // service config has no retry policy, yet with retries enabled every call
  // carries the retry filter's state, 4.3 KiB more in each call's arena
  // (16.1 instead of 20.4 KiB, measured with uprobes on grpc_core::Arena)
  // plus about 3 KiB of heap per ForwardTcp stream: an idle connection cost
  // 31 KiB of the tunnel's RSS instead of 21-23. What that gives up is
  // gRPC's transparent retry of a call the gateway never saw (a stream
  // refused by a GOAWAY that crossed it): such a call now fails
  // UNAVAILABLE, an open the client sees refused, as when the gateway is
  // unreachable; a ListSandboxes refresh fails once and the next one (2 s
  // later) succeeds.
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  // Fail fast and come back quickly after a gateway outage.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  if (opts.endpoint.tls && !opts.tls_server_name.empty())
    args.SetSslTargetNameOverride(opts.tls_server_name);
  return args;
}

GatewayClient::GatewayClient(GatewayOptions opts) : opts_(std::move(opts)), impl_(new Impl) {
  if (opts_.workspace.empty()) opts_.workspace = "default";
  grpc::ChannelArguments args = channel_arguments(opts_);
  // An optional memory quota for the channel's buffers (gRPC shrinks its
  // HTTP/2 flow-control windows under pressure, and cancels calls under
  // extreme pressure; see GatewayOptions::grpc_memory_quota).
  // Sized before the channel exists: a quota created unlimited and shrunk
  // once the channel had allocated from it reported "Buffers full" at once
  // (gRPC 1.51). ForwardManager may resize it (finite to finite).
  if (opts_.grpc_memory_quota > 0) {
    impl_->quota.emplace("osh-gateway-channel");
    impl_->quota->Resize(opts_.grpc_memory_quota);
    args.SetResourceQuota(*impl_->quota);
  }
  impl_->channel =
      grpc::CreateCustomChannel(opts_.endpoint.grpc_target(), make_channel_credentials(opts_), args);
  impl_->stub = openshell::v1::OpenShell::NewStub(impl_->channel);
  impl_->forward00 = std::make_unique<decltype(impl_->forward00)::element_type>(impl_->channel);
  impl_->forward01 = std::make_unique<decltype(impl_->forward01)::element_type>(impl_->channel);
  if (opts_.forward_transport == ForwardTransport::kH2) {
    impl_->h2 = std::make_unique<h2::Channel>(h2_channel_options(opts_));
  }
  set_bearer_token(opts_.bearer_token, opts_.bearer_token_file, opts_.parse_bearer_token_file);
  {
    std::lock_guard lk(impl_->auth_mu);
    impl_->token_file_owner = opts_.bearer_token_file_owner;
  }
  impl_->generation = opts_.force_generation;
}

GatewayClient::~GatewayClient() = default;

h2::ChannelOptions h2_channel_options(const GatewayOptions& o) {
  h2::ChannelOptions h;
  h.endpoint = o.endpoint;
  h.ca_pem = o.ca_pem;
  h.client_cert_pem = o.client_cert_pem;
  h.client_key_pem = o.client_key_pem;
  h.tls_server_name = o.tls_server_name;
  h.insecure_tls = o.insecure_tls;
  h.stream_window = o.h2_stream_window;
  h.stream_window_max = std::max(o.h2_stream_window_max, o.h2_stream_window);
  if (o.grpc_memory_quota > 0)
    h.window_budget = o.grpc_memory_quota;
  h.max_message_bytes = kMaxForwardFrameBytes;
  return h;
}

const char* to_string(ForwardTransport t) { return t == ForwardTransport::kH2 ? "h2" : "grpc"; }

bool GatewayClient::set_bearer_token(const std::string& token, const std::string& token_file,
                                     std::function<std::string(const std::string&)> parse_token_file) {
  std::lock_guard lk(impl_->auth_mu);
  const std::string before = impl_->authorization;
  impl_->authorization = token.empty() ? std::string() : "Bearer " + token;
  impl_->token_file = token_file;
  impl_->parse_token = std::move(parse_token_file);
  impl_->token_file_mtime_ns = mtime_ns(impl_->token_file);
  impl_->token_checked = std::chrono::steady_clock::now();
  return impl_->authorization != before;
}

Generation GatewayClient::generation() const { return impl_->generation.load(); }

CallStatus GatewayClient::health(std::string* version) {
  auto ctx = make_context(opts_.rpc_timeout, *impl_);
  openshell::v1::HealthRequest req;  // Health is the same in both generations
  openshell::v1::HealthResponse resp;
  grpc::Status s = impl_->stub->Health(ctx.get(), req, &resp);
  if (!s.ok()) return from_grpc(s);
  if (version) *version = resp.version();
  if (opts_.force_generation != Generation::kUnknown) return {};
  Generation g = generation_from_version(resp.version());
  if (g == Generation::kUnknown) {
    CallStatus probe = probe_generation(&g);
    if (!probe.ok()) return probe;
  }
  const Generation before = impl_->generation.exchange(g);
  if (before != g)
    spdlog::info("gateway {} speaks the {} protocol generation (version '{}'{})",
                 opts_.endpoint.to_string(), to_string(g), log_escape(resp.version()),
                 generation_from_version(resp.version()) == Generation::kUnknown ? ", probed" : "");
  return {};
}

CallStatus GatewayClient::probe_generation(Generation* out) {
  // protocol-0.1 §2: an empty ListSandboxesRequest is valid bytes in both
  // schemas. 0.0 normalises the empty workspace to "default" and lists; 0.1
  // checks the selector before membership.
  auto ctx = make_context(opts_.rpc_timeout, *impl_);
  openshell::v1::ListSandboxesRequest req;
  openshell::v1::ListSandboxesResponse resp;
  grpc::Status s = impl_->stub->ListSandboxes(ctx.get(), req, &resp);
  if (s.ok()) {
    *out = Generation::k0_0;
    return {};
  }
  if (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
      s.error_message().find("workspace_scope is required") != std::string::npos) {
    *out = Generation::k0_1;
    return {};
  }
  CallStatus st = from_grpc(s);
  st.message = "could not tell the gateway's protocol generation (its version is 0.0.0 or "
               "unparseable, and the ListSandboxes probe answered " +
               st.to_string() + ")";
  return st;
}

CallStatus GatewayClient::ensure_generation(Generation* g) {
  *g = impl_->generation.load();
  if (*g != Generation::kUnknown) return {};
  CallStatus s = health(nullptr);
  if (!s.ok()) return s;
  *g = impl_->generation.load();
  if (*g == Generation::kUnknown)
    return CallStatus{kFailedPrecondition, "gateway protocol generation unknown"};
  return {};
}

CallStatus GatewayClient::list_sandboxes(std::vector<SandboxInfo>* out) {
  out->clear();
  Generation g;
  if (CallStatus s = ensure_generation(&g); !s.ok()) return s;
  if (g == Generation::k0_1) {
    // protocol-0.1 §3: page tokens; resend every other parameter unchanged.
    const auto page_size = static_cast<int32_t>(std::clamp<uint32_t>(opts_.list_page_size, 1, 1000));
    constexpr int kMaxPages = 100000;  // a gateway that never ends the list
    std::string token;
    for (int page = 0;; ++page) {
      if (page == kMaxPages)
        return CallStatus{kUnknownCode, "ListSandboxes: the gateway returned more than " +
                                            std::to_string(kMaxPages) + " pages"};
      auto ctx = make_context(opts_.rpc_timeout, *impl_);
      g01::ListSandboxesRequest req;
      req.set_page_size(page_size);
      req.set_page_token(token);
      req.mutable_workspace_scope()->set_workspace(opts_.workspace);
      g01::ListSandboxesResponse resp;
      grpc::Status s = call01(*impl_, method::kListSandboxes, ctx.get(), req, &resp);
      if (!s.ok()) return from_grpc(s);
      for (const auto& sb : resp.sandboxes()) out->push_back(to_info(sb));
      if (resp.next_page_token().empty()) break;
      if (resp.next_page_token() == token)
        return CallStatus{kUnknownCode, "ListSandboxes: the gateway returned the same page token twice"};
      token = resp.next_page_token();
    }
    return {};
  }
  // The server clamps the limit to 1000 (protocol §1.3).
  const uint32_t page = std::clamp<uint32_t>(opts_.list_page_size, 1, 1000);
  for (uint32_t offset = 0;; offset += page) {
    auto ctx = make_context(opts_.rpc_timeout, *impl_);
    openshell::v1::ListSandboxesRequest req;
    req.set_limit(page);
    req.set_offset(offset);
    req.set_workspace(opts_.workspace);
    openshell::v1::ListSandboxesResponse resp;
    grpc::Status s = impl_->stub->ListSandboxes(ctx.get(), req, &resp);
    if (!s.ok()) return from_grpc(s);
    for (const auto& sb : resp.sandboxes()) out->push_back(to_info(sb));
    if (static_cast<uint32_t>(resp.sandboxes_size()) < page) break;
  }
  return {};
}

CallStatus GatewayClient::get_sandbox(const std::string& name, SandboxInfo* out) {
  Generation g;
  if (CallStatus s = ensure_generation(&g); !s.ok()) return s;
  auto ctx = make_context(opts_.rpc_timeout, *impl_);
  if (g == Generation::k0_1) {
    g01::GetSandboxRequest req;
    req.set_name(name);
    req.mutable_workspace_scope()->set_workspace(opts_.workspace);
    g01::SandboxResponse resp;
    grpc::Status s = call01(*impl_, method::kGetSandbox, ctx.get(), req, &resp);
    if (!s.ok()) return from_grpc(s);
    *out = to_info(resp.sandbox());
    return {};
  }
  openshell::v1::GetSandboxRequest req;
  req.set_name(name);
  req.set_workspace(opts_.workspace);
  openshell::v1::SandboxResponse resp;
  grpc::Status s = impl_->stub->GetSandbox(ctx.get(), req, &resp);
  if (!s.ok()) return from_grpc(s);
  *out = to_info(resp.sandbox());
  return {};
}

CallStatus GatewayClient::create_ssh_session(const SandboxRef& sandbox, SshSession* out) {
  Generation g;
  if (CallStatus s = ensure_generation(&g); !s.ok()) return s;
  auto ctx = make_context(opts_.rpc_timeout, *impl_);
  if (g == Generation::k0_1) {
    g01::CreateSshSessionRequest req;
    req.set_sandbox(sandbox.name);
    req.mutable_workspace_scope()->set_workspace(opts_.workspace);
    g01::CreateSshSessionResponse resp;
    grpc::Status s = call01(*impl_, method::kCreateSshSession, ctx.get(), req, &resp);
    if (!s.ok()) return from_grpc(s);
    out->token = resp.token();
    out->expires_at_ms = resp.has_expiration_time() ? to_ms(resp.expiration_time()) : 0;
    out->host_key_fingerprint = resp.host_key_fingerprint();
    return {};
  }
  openshell::v1::CreateSshSessionRequest req;
  req.set_sandbox_id(sandbox.id);
  openshell::v1::CreateSshSessionResponse resp;
  grpc::Status s = impl_->stub->CreateSshSession(ctx.get(), req, &resp);
  if (!s.ok()) return from_grpc(s);
  out->token = resp.token();
  out->expires_at_ms = resp.expires_at_ms();
  out->host_key_fingerprint = resp.host_key_fingerprint();
  return {};
}

CallStatus GatewayClient::revoke_ssh_session(const std::string& token) {
  Generation g;
  if (CallStatus s = ensure_generation(&g); !s.ok()) return s;
  auto ctx = make_context(opts_.rpc_timeout, *impl_);
  if (g == Generation::k0_1) {
    g01::RevokeSshSessionRequest req;
    req.set_token(token);
    req.set_allow_missing(true);
    g01::RevokeSshSessionResponse resp;
    grpc::Status s = call01(*impl_, method::kRevokeSshSession, ctx.get(), req, &resp);
    if (!s.ok()) return from_grpc(s);
    // protocol-0.1 §3: COMPLETED (revoked now or before) and ALREADY_ABSENT
    // are done; ACCEPTED is for sandbox deletes, UNSPECIFIED never success.
    if (resp.outcome() == g01::DELETION_OUTCOME_COMPLETED ||
        resp.outcome() == g01::DELETION_OUTCOME_ALREADY_ABSENT)
      return {};
    return CallStatus{kUnknownCode, "RevokeSshSession answered outcome " +
                                        g01::DeletionOutcome_Name(resp.outcome())};
  }
  openshell::v1::RevokeSshSessionRequest req;
  req.set_token(token);
  openshell::v1::RevokeSshSessionResponse resp;
  return from_grpc(impl_->stub->RevokeSshSession(ctx.get(), req, &resp));
}

}  // namespace osh::relay

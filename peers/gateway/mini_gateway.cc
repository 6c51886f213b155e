// Theory of operation: the mini-gateway
// ======================================
//
// What it is. A gRPC server that implements the gateway side of the
// OpenShell protocol for a fixed set of declared sandboxes: Health,
// ListSandboxes, GetSandbox, CreateSshSession, RevokeSshSession, ForwardTcp,
// ConnectSupervisor and RelayStream (protocol §1-§3). The few, short or
// long-lived-but-rare RPCs (the unary ones and ConnectSupervisor, one per
// sandbox) use the sync API. The many ones, ForwardTcp and RelayStream (one
// of each per tunnelled TCP connection), use the callback API: no thread per
// stream, so 10,000+ concurrent streams cost memory, not threads
// (forward_call.cc has their state machine). All gateway-wide state lives in
// GatewayService under one mutex (mu_); nothing blocking ever runs with mu_
// held, and mu_ is never held while calling into a ForwardCall (lock order:
// ForwardCall::mu_, then mu_).
//
// Sandboxes and READY. A sandbox is READY exactly while a supervisor control
// session (ConnectSupervisor) for its id is registered, else PROVISIONING
// (protocol §1.3). A newer session for the same sandbox supersedes the older
// one, whose stream is cancelled.
//
// Control session (ConnectSupervisor, protocol §3.1). First message must be
// hello{sandbox_id}; the gateway answers session_accepted{session_id,
// heartbeat_interval_secs} from the handler thread, then registers the
// session and wakes the ForwardTcp calls waiting for one. From then on a
// writer thread per session (ControlSession) sends queued relay_open messages
// and a heartbeat every 15 s; the handler thread alone reads. It hands each
// RelayOpenResult to the call registered under its channel id. When the read
// side ends the session is unregistered (if still current) and calls still
// waiting for their RelayOpenResult fail with UNAVAILABLE "supervisor relay
// failed: supervisor session disconnected".
//
// ForwardTcp and RelayStream (protocol §2.1 order, both deliberate
// differences from upstream, the half-close extension): see forward_call.cc.
// GatewayService is their ForwardHub: it admits calls (sandbox, READY, token,
// per-token and per-sandbox slots), keeps the session waiters per sandbox and
// the registered relays per channel id, and tells calls about sessions,
// results and shutdown.
//
// Transport security and client authentication (protocol §4.2, §4.3, §2.3):
// with --tls-cert/--tls-key the `listen` address serves TLS (gRPC's
// SslServerCredentials, ALPN h2); with --client-ca it also requires and
// verifies a client certificate during the handshake, as upstream does with
// require_client_auth, so a client without one never gets to call anything.
// With --bearer-token every client method except Health checks the
// "authorization: Bearer <token>" metadata first, before reading any request
// (upstream's router authenticates before the handler runs, §2.1 step 1):
// missing or not Bearer -> UNAUTHENTICATED "missing authorization header",
// wrong -> UNAUTHENTICATED "invalid token". Supervisor methods are exempt
// (the sandbox principal is out of scope). The mini-supervisor speaks h2c
// only, so a TLS gateway may open a second, plaintext listener
// (--supervisor-listen); client methods that arrive on a plaintext connection
// of a TLS gateway fail UNAUTHENTICATED, so that listener cannot bypass TLS.
//
// Shutdown (MiniGateway::Shutdown): stop accepting calls; BeginShutdown()
// ends every ForwardTcp call that still waits (CANCELLED) and cancels the
// supervisor sessions; running bridges get the grace period (2 s in the
// binary), then gRPC cancels what is left, and every reactor's OnCancel or
// failing operation finishes it, so Server::Shutdown(), which waits for all
// callback reactors to be done, returns.
//
// Limits and timeouts: frames are forwarded as they come (<= 64 KiB from our
// peers, up to 1 MiB + 1 KiB accepted); per-token and per-sandbox stream caps
// (default 3 and 20, protocol §2.8); supervisor wait 15 s; relay open and
// claim 10 s each (§2.7), each a grpc::Alarm, not a sleeping thread.

#include "peers/gateway/mini_gateway.h"

#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>

#include <grpc/grpc_security_constants.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "openshell.grpc.pb.h"
#include "peers/common/address.h"
#include "peers/common/log.h"
#include "peers/common/uuid.h"
#include "peers/gateway/control_session.h"
#include "peers/gateway/forward_call.h"

namespace osh::peers {
namespace {

namespace v1 = openshell::v1;
using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
using SessionStream = ControlSession::Stream;

/// Upstream decodes messages up to 1 MiB (protocol §2.5); allow the framing.
constexpr int kMaxReceiveMessageBytes = (1 << 20) + 1024;

std::shared_ptr<spdlog::logger> Log() {
  static const auto logger = PeerLogger("mini-gateway");
  return logger;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct TokenRecord {
  std::string sandbox_id;
  int64_t expires_at_ms = 0;  // 0: never
  bool revoked = false;
};

/// Whether the call arrived over TLS (gRPC's auth context says "ssl").
bool IsTlsCall(const grpc::ServerContextBase& ctx) {
  const auto auth = ctx.auth_context();
  if (!auth) return false;
  for (const auto& v : auth->FindPropertyValues(GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME)) {
    if (std::string_view(v.data(), v.size()) == GRPC_SSL_TRANSPORT_SECURITY_TYPE) return true;
  }
  return false;
}

/// Length-independent-time comparison, so the bearer check does not leak
/// how many leading characters of a guess were right.
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

/// ForwardTcp and RelayStream on the callback API, everything else sync.
using MixedService = v1::OpenShell::WithCallbackMethod_ForwardTcp<
    v1::OpenShell::WithCallbackMethod_RelayStream<v1::OpenShell::Service>>;

class GatewayService final : public MixedService, public ForwardHub {
 public:
  GatewayService(const GatewayConfig& config, std::string advertised_host)
      : config_(config),
        advertised_host_(std::move(advertised_host)),
        tls_(!config.tls_cert_file.empty()) {
    for (const auto& sb : config_.sandboxes) {
      by_id_.emplace(sb.id, sb);
      id_by_name_.emplace(sb.name, sb.id);
    }
    sandboxes_ = config_.sandboxes;
  }

  /// Replaces the declared sandboxes (SIGHUP reload). A sandbox that is no
  /// longer declared loses its supervisor session (cancelled) and is
  /// NOT_FOUND from now on; streams already running are left alone.
  void SetSandboxes(const std::vector<SandboxDecl>& sandboxes) {
    std::vector<std::shared_ptr<ControlSession>> dropped;
    {
      std::lock_guard lock(mu_);
      by_id_.clear();
      id_by_name_.clear();
      for (const auto& sb : sandboxes) {
        by_id_.emplace(sb.id, sb);
        id_by_name_.emplace(sb.name, sb.id);
      }
      sandboxes_ = sandboxes;
      for (auto& [id, sess] : sessions_)
        if (!by_id_.count(id)) dropped.push_back(sess);
    }
    for (auto& sess : dropped) sess->Cancel();
  }

  void set_port(uint16_t port) { port_ = port; }

  bool IsSupervisorConnected(const std::string& sandbox_id) const {
    std::lock_guard lock(mu_);
    return sessions_.count(sandbox_id) > 0;
  }

  /// Ends every waiting ForwardTcp call (CANCELLED) and cancels every
  /// control session so supervisors see the gateway go away promptly.
  /// Bridges keep running. Thread: any (never with a ForwardCall lock held).
  void BeginShutdown() {
    std::vector<std::shared_ptr<ControlSession>> sessions;
    std::vector<std::shared_ptr<ForwardCall>> calls;
    {
      std::lock_guard lock(mu_);
      shutting_down_ = true;
      for (auto& [id, s] : sessions_) sessions.push_back(s);
      for (auto& [sandbox, waiters] : session_waiters_)
        for (auto& [channel, call] : waiters) calls.push_back(call);
      for (auto& [channel, entry] : relays_) calls.push_back(entry.call);
    }
    for (auto& call : calls) call->OnShutdown();
    for (auto& s : sessions) s->Cancel();
  }

  // ---- ForwardHub (see forward_call.h) ----

  /// Authorize() - the client-method check of the theory of operation:
  /// TLS connection when the gateway serves TLS, then the bearer token.
  /// Return: OK, or the UNAUTHENTICATED status to end the call with.
  /// Thread: any handler thread or reaction.
  Status Authorize(const grpc::ServerContextBase& ctx) const override {
    if (tls_ && !IsTlsCall(ctx)) {
      return Status(StatusCode::UNAUTHENTICATED,
                    "client calls must use the gateway's TLS listener");
    }
    if (config_.bearer_token.empty()) return Status::OK;
    const auto& md = ctx.client_metadata();
    const auto it = md.find("authorization");
    if (it == md.end()) return Status(StatusCode::UNAUTHENTICATED, "missing authorization header");
    std::string_view value(it->second.data(), it->second.size());
    constexpr std::string_view kScheme = "bearer ";
    if (value.size() < kScheme.size() ||
        !std::equal(kScheme.begin(), kScheme.end(), value.begin(),
                    [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); })) {
      return Status(StatusCode::UNAUTHENTICATED, "missing authorization header");
    }
    value.remove_prefix(kScheme.size());
    if (!ConstantTimeEquals(TrimAscii(value), config_.bearer_token)) {
      Log()->info("rejected a call with an invalid bearer token from {}", ctx.peer());
      return Status(StatusCode::UNAUTHENTICATED, "invalid token");
    }
    return Status::OK;
  }

  Status Admit(const std::string& sandbox_id, const std::string& token) override {
    std::lock_guard lock(mu_);
    if (by_id_.count(sandbox_id) == 0) return Status(StatusCode::NOT_FOUND, "sandbox not found");
    if (sessions_.count(sandbox_id) == 0) {
      return Status(StatusCode::FAILED_PRECONDITION, "sandbox is not ready");
    }
    if (Status st = CheckTokenLocked(token, sandbox_id); !st.ok()) return st;
    return AcquireSlotsLocked(token, sandbox_id);
  }

  void ReleaseSlots(const std::string& sandbox_id, const std::string& token) override {
    std::lock_guard lock(mu_);
    if (--streams_per_token_[token] == 0) streams_per_token_.erase(token);
    if (--streams_per_sandbox_[sandbox_id] == 0) streams_per_sandbox_.erase(sandbox_id);
  }

  Registration RegisterRelay(const std::shared_ptr<ForwardCall>& call,
                             const std::string& sandbox_id,
                             std::shared_ptr<ControlSession>* session) override {
    std::lock_guard lock(mu_);
    if (shutting_down_) return Registration::kShuttingDown;
    const auto it = sessions_.find(sandbox_id);
    if (it == sessions_.end()) {
      session_waiters_[sandbox_id][call->channel_id()] = call;
      return Registration::kWaiting;
    }
    EraseWaiterLocked(call->channel_id(), sandbox_id);
    relays_[call->channel_id()] = RelayEntry{call, it->second};
    *session = it->second;
    return Registration::kRegistered;
  }

  void Forget(const std::string& channel_id, const std::string& sandbox_id) override {
    std::lock_guard lock(mu_);
    relays_.erase(channel_id);
    EraseWaiterLocked(channel_id, sandbox_id);
  }

  std::shared_ptr<ForwardCall> FindRelay(const std::string& channel_id) const override {
    std::lock_guard lock(mu_);
    const auto it = relays_.find(channel_id);
    return it == relays_.end() ? nullptr : it->second.call;
  }

  std::chrono::milliseconds supervisor_wait() const override { return config_.supervisor_wait; }
  std::chrono::milliseconds relay_claim_timeout() const override {
    return config_.relay_claim_timeout;
  }

  // ---- unary RPCs ----

  Status Health(ServerContext*, const v1::HealthRequest*, v1::HealthResponse* resp) override {
    resp->set_status(v1::SERVICE_STATUS_HEALTHY);
    resp->set_version(config_.version);
    return Status::OK;
  }

  Status ListSandboxes(ServerContext* ctx, const v1::ListSandboxesRequest*,
                       v1::ListSandboxesResponse* resp) override {
    if (Status st = Authorize(*ctx); !st.ok()) return st;
    std::lock_guard lock(mu_);
    for (const auto& sb : sandboxes_) FillSandboxLocked(sb, resp->add_sandboxes());
    return Status::OK;
  }

  Status GetSandbox(ServerContext* ctx, const v1::GetSandboxRequest* req,
                    v1::SandboxResponse* resp) override {
    if (Status st = Authorize(*ctx); !st.ok()) return st;
    std::lock_guard lock(mu_);
    const auto it = id_by_name_.find(req->name());
    if (it == id_by_name_.end()) return Status(StatusCode::NOT_FOUND, "sandbox not found");
    FillSandboxLocked(by_id_.at(it->second), resp->mutable_sandbox());
    return Status::OK;
  }

  Status CreateSshSession(ServerContext* ctx, const v1::CreateSshSessionRequest* req,
                          v1::CreateSshSessionResponse* resp) override {
    if (Status st = Authorize(*ctx); !st.ok()) return st;
    if (req->sandbox_id().empty()) {
      return Status(StatusCode::INVALID_ARGUMENT, "sandbox_id is required");
    }
    std::lock_guard lock(mu_);
    if (by_id_.count(req->sandbox_id()) == 0) {
      return Status(StatusCode::NOT_FOUND, "sandbox not found");
    }
    if (sessions_.count(req->sandbox_id()) == 0) {
      return Status(StatusCode::FAILED_PRECONDITION, "sandbox is not ready");
    }
    TokenRecord record;
    record.sandbox_id = req->sandbox_id();
    if (config_.token_ttl.count() > 0) {
      record.expires_at_ms = NowUnixMs() + config_.token_ttl.count();
    }
    const std::string token = NewUuidV4();
    tokens_.emplace(token, record);
    if (!config_.record_tokens_file.empty()) {
      // Test hook (--record-tokens): lets a test grep every log for tokens.
      std::ofstream(config_.record_tokens_file, std::ios::app) << token << "\n";
    }
    resp->set_sandbox_id(req->sandbox_id());
    resp->set_token(token);
    resp->set_gateway_host(advertised_host_);
    resp->set_gateway_port(port_);
    resp->set_gateway_scheme(tls_ ? "https" : "http");
    resp->set_expires_at_ms(record.expires_at_ms);
    Log()->debug("ssh session token minted for sandbox {}", req->sandbox_id());
    return Status::OK;
  }

  Status RevokeSshSession(ServerContext* ctx, const v1::RevokeSshSessionRequest* req,
                          v1::RevokeSshSessionResponse* resp) override {
    if (Status st = Authorize(*ctx); !st.ok()) return st;
    std::lock_guard lock(mu_);
    const auto it = tokens_.find(req->token());
    const bool revoked = it != tokens_.end() && !it->second.revoked;
    if (revoked) it->second.revoked = true;
    resp->set_revoked(revoked);
    return Status::OK;
  }

  // ---- ForwardTcp (protocol §2) and RelayStream (§3.3): callback API ----

  ForwardTcpReactor* ForwardTcp(grpc::CallbackServerContext* ctx) override {
    return NewForwardTcpReactor(*this, ctx);
  }

  RelayStreamReactor* RelayStream(grpc::CallbackServerContext* ctx) override {
    return NewRelayStreamReactor(*this, ctx);
  }

  // ---- supervisor control session (protocol §1.6, §3.1): sync API ----

  Status ConnectSupervisor(ServerContext* ctx, SessionStream* stream) override {
    v1::SupervisorMessage msg;
    if (!stream->Read(&msg)) {
      return Status(StatusCode::INVALID_ARGUMENT, "empty ConnectSupervisor stream");
    }
    if (!msg.has_hello()) {
      return Status(StatusCode::INVALID_ARGUMENT, "first SupervisorMessage must be hello");
    }
    const std::string sandbox_id = msg.hello().sandbox_id();
    {
      std::lock_guard lock(mu_);
      if (by_id_.count(sandbox_id) == 0) return Status(StatusCode::NOT_FOUND, "sandbox not found");
      if (shutting_down_) return Status(StatusCode::UNAVAILABLE, "gateway is shutting down");
    }
    auto session = std::make_shared<ControlSession>(sandbox_id, NewUuidV4(), ctx, stream,
                                                    config_.heartbeat_interval);

    // Accept before registering, so relay_open can never overtake
    // session_accepted on the stream.
    v1::GatewayMessage accepted;
    accepted.mutable_session_accepted()->set_session_id(session->session_id());
    accepted.mutable_session_accepted()->set_heartbeat_interval_secs(
        static_cast<uint32_t>(config_.heartbeat_interval.count()));
    if (!session->WriteNow(accepted)) {
      session->Detach();
      return Status(StatusCode::CANCELLED, "supervisor stream closed");
    }
    session->StartWriter();
    std::shared_ptr<ControlSession> superseded;
    std::map<std::string, std::shared_ptr<ForwardCall>> waiters;
    bool late = false;  // shutdown began after the first check: not registered, ended below
    {
      std::lock_guard lock(mu_);
      late = shutting_down_;
      if (!late) {
        auto& slot = sessions_[sandbox_id];
        superseded = std::exchange(slot, session);
        if (auto node = session_waiters_.extract(sandbox_id)) waiters = std::move(node.mapped());
      }
    }
    if (late) session->Cancel();
    if (superseded) superseded->Cancel();
    Log()->info("supervisor session {} connected for sandbox {} (instance {}){}",
                session->session_id(), sandbox_id, msg.hello().instance_id(),
                superseded ? ", superseding " + superseded->session_id() : std::string());
    for (auto& [channel, call] : waiters) call->OnSessionAvailable();

    while (stream->Read(&msg)) {
      switch (msg.payload_case()) {
        case v1::SupervisorMessage::kHeartbeat:
          break;
        case v1::SupervisorMessage::kRelayOpenResult:
          OnRelayOpenResult(session, msg.relay_open_result());
          break;
        case v1::SupervisorMessage::kRelayClose:
          Log()->info("supervisor closed relay {}: {}", msg.relay_close().channel_id(),
                      msg.relay_close().reason());
          break;
        case v1::SupervisorMessage::kHello:
          Log()->warn("session {}: ignoring a second hello", session->session_id());
          break;
        case v1::SupervisorMessage::PAYLOAD_NOT_SET:
          break;
      }
    }

    // The read side is over: make sure the writer does not stay blocked on a
    // stream nobody reads any more, then stop it.
    const bool cancelled = ctx->IsCancelled();
    ctx->TryCancel();
    session->Close();
    std::vector<std::shared_ptr<ForwardCall>> waiting;
    {
      std::lock_guard lock(mu_);
      const auto it = sessions_.find(sandbox_id);
      if (it != sessions_.end() && it->second == session) sessions_.erase(it);
      for (auto& [channel, entry] : relays_) {
        if (entry.session == session) waiting.push_back(entry.call);
      }
    }
    for (auto& call : waiting) call->OnSessionLost();  // only those still awaiting a result
    session->Detach();
    Log()->info("supervisor session {} for sandbox {} ended ({})", session->session_id(),
                sandbox_id, cancelled ? "cancelled or broken" : "supervisor closed it");
    return Status::CANCELLED;
  }

 private:
  /// A call registered for its relay, and the session relay_open went to.
  struct RelayEntry {
    std::shared_ptr<ForwardCall> call;
    std::shared_ptr<ControlSession> session;
  };

  void EraseWaiterLocked(const std::string& channel_id, const std::string& sandbox_id) {
    const auto it = session_waiters_.find(sandbox_id);
    if (it == session_waiters_.end()) return;
    it->second.erase(channel_id);
    if (it->second.empty()) session_waiters_.erase(it);
  }

  void FillSandboxLocked(const SandboxDecl& sb, v1::Sandbox* out) const {
    out->mutable_metadata()->set_id(sb.id);
    out->mutable_metadata()->set_name(sb.name);
    out->mutable_status()->set_sandbox_name(sb.name);
    out->mutable_status()->set_phase(sessions_.count(sb.id) > 0 ? v1::SANDBOX_PHASE_READY
                                                                  : v1::SANDBOX_PHASE_PROVISIONING);
  }

  /// Token rules of protocol §2.1 step 6 / §1.4 (token already trimmed).
  Status CheckTokenLocked(const std::string& token, const std::string& sandbox_id) const {
    if (token.empty()) {
      return Status(StatusCode::UNAUTHENTICATED, "authorization_token is required for ForwardTcp");
    }
    const auto it = tokens_.find(token);
    if (it == tokens_.end()) {
      return Status(StatusCode::UNAUTHENTICATED, "SSH session token not found");
    }
    if (it->second.revoked || it->second.sandbox_id != sandbox_id) {
      return Status(StatusCode::UNAUTHENTICATED, "SSH session token is not valid");
    }
    if (it->second.expires_at_ms != 0 && NowUnixMs() > it->second.expires_at_ms) {
      return Status(StatusCode::UNAUTHENTICATED, "SSH session token expired");
    }
    return Status::OK;
  }

  /// Takes a per-token and a per-sandbox slot, or neither (protocol §2.8).
  Status AcquireSlotsLocked(const std::string& token, const std::string& sandbox_id) {
    const auto per_token = streams_per_token_.find(token);
    if (per_token != streams_per_token_.end() &&
        per_token->second >= config_.max_streams_per_token) {
      return Status(StatusCode::RESOURCE_EXHAUSTED, "SSH session connection limit reached");
    }
    const auto per_sandbox = streams_per_sandbox_.find(sandbox_id);
    if (per_sandbox != streams_per_sandbox_.end() &&
        per_sandbox->second >= config_.max_streams_per_sandbox) {
      return Status(StatusCode::RESOURCE_EXHAUSTED, "sandbox SSH connection limit reached");
    }
    ++streams_per_token_[token];
    ++streams_per_sandbox_[sandbox_id];
    return Status::OK;
  }

  /// Hands a RelayOpenResult from @session to the call it belongs to.
  /// Thread: the session's handler thread.
  void OnRelayOpenResult(const std::shared_ptr<ControlSession>& session,
                         const v1::RelayOpenResult& result) {
    std::shared_ptr<ForwardCall> call;
    {
      std::lock_guard lock(mu_);
      const auto it = relays_.find(result.channel_id());
      if (it == relays_.end()) {
        Log()->debug("RelayOpenResult for unknown or expired channel {}", result.channel_id());
        return;
      }
      if (it->second.session != session) {
        Log()->warn("RelayOpenResult for channel {} from the wrong session", result.channel_id());
        return;
      }
      call = it->second.call;
    }
    call->OnRelayOpenResult(result);
  }

  const GatewayConfig config_;
  const std::string advertised_host_;
  const bool tls_;  // `listen` serves TLS
  std::atomic<uint16_t> port_{0};

  mutable std::mutex mu_;
  std::map<std::string, SandboxDecl> by_id_;        // guarded by mu_ (SetSandboxes)
  std::map<std::string, std::string> id_by_name_;   // guarded by mu_
  std::vector<SandboxDecl> sandboxes_;              // guarded by mu_; ListSandboxes order
  bool shutting_down_ = false;                                          // guarded by mu_
  std::map<std::string, std::shared_ptr<ControlSession>> sessions_;    // by sandbox id; mu_
  // Calls waiting for a session: sandbox id -> channel id -> call; mu_.
  std::map<std::string, std::map<std::string, std::shared_ptr<ForwardCall>>> session_waiters_;
  std::map<std::string, RelayEntry> relays_;                           // by channel id; mu_
  std::map<std::string, TokenRecord> tokens_;                          // mu_
  std::map<std::string, int> streams_per_token_;                       // mu_
  std::map<std::string, int> streams_per_sandbox_;                     // mu_
};

}  // namespace

class MiniGateway::Impl {
 public:
  explicit Impl(GatewayConfig config) : config_(std::move(config)) {}

  void Start() {
    std::lock_guard lock(mu_);
    if (server_ || stopped_) throw std::runtime_error("mini-gateway already started");
    const HostPort listen = ParseHostPort(config_.listen).value();
    auto listen_creds = MakeListenCredentials();  // reads the PEM files; may throw
    service_ = std::make_unique<GatewayService>(config_, listen.host);
    int selected_port = 0;
    int supervisor_port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort(config_.listen, listen_creds, &selected_port);
    if (!config_.supervisor_listen.empty()) {
      builder.AddListeningPort(config_.supervisor_listen, grpc::InsecureServerCredentials(),
                               &supervisor_port);
    }
    builder.RegisterService(service_.get());
    builder.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    // Let clients and supervisors keep the connection alive with pings
    // (protocol §2.7), and ping them as upstream does (20 s / 10 s).
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
    server_ = builder.BuildAndStart();
    if (!server_ || selected_port == 0 || (!config_.supervisor_listen.empty() && supervisor_port == 0)) {
      server_.reset();
      service_.reset();
      throw std::runtime_error("mini-gateway cannot listen on " + config_.listen +
                               (config_.supervisor_listen.empty()
                                    ? std::string()
                                    : " and " + config_.supervisor_listen));
    }
    port_ = static_cast<uint16_t>(selected_port);
    supervisor_port_ = static_cast<uint16_t>(supervisor_port);
    service_->set_port(port_);
    bound_ = FormatHostPort(listen.host, port_);
  }

  uint16_t port() const {
    std::lock_guard lock(mu_);
    return port_;
  }

  std::string bound_address() const {
    std::lock_guard lock(mu_);
    return bound_;
  }

  uint16_t supervisor_port() const {
    std::lock_guard lock(mu_);
    return supervisor_port_;
  }

  bool IsSupervisorConnected(const std::string& sandbox_id) const {
    std::lock_guard lock(mu_);
    return service_ && service_->IsSupervisorConnected(sandbox_id);
  }

  void SetSandboxes(const std::vector<SandboxDecl>& sandboxes) {
    std::lock_guard lock(mu_);
    if (!service_) throw std::logic_error("SetSandboxes() before Start()");
    service_->SetSandboxes(sandboxes);
  }

  /// Credentials of the `listen` address: TLS (and mTLS) or plaintext.
  /// @throws std::invalid_argument if a PEM file cannot be read.
  std::shared_ptr<grpc::ServerCredentials> MakeListenCredentials() const {
    if (config_.tls_cert_file.empty()) return grpc::InsecureServerCredentials();
    grpc::SslServerCredentialsOptions opts(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    opts.pem_key_cert_pairs.push_back({ReadPemFile(config_.tls_key_file, "--tls-key"),
                                       ReadPemFile(config_.tls_cert_file, "--tls-cert")});
    if (!config_.client_ca_file.empty()) {
      opts.pem_root_certs = ReadPemFile(config_.client_ca_file, "--client-ca");
      opts.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    return grpc::SslServerCredentials(opts);
  }

  void Shutdown(std::chrono::milliseconds grace) {
    std::unique_lock lock(mu_);
    if (!server_ || stopped_) return;
    stopped_ = true;
    lock.unlock();
    Log()->info("mini-gateway shutting down");
    service_->BeginShutdown();
    server_->Shutdown(std::chrono::system_clock::now() + grace);
    server_->Wait();
  }

 private:
  const GatewayConfig config_;
  mutable std::mutex mu_;
  std::unique_ptr<GatewayService> service_;
  std::unique_ptr<grpc::Server> server_;
  bool stopped_ = false;
  uint16_t port_ = 0;
  uint16_t supervisor_port_ = 0;
  std::string bound_;
};

MiniGateway::MiniGateway(GatewayConfig config) {
  ValidateGatewayConfig(config);
  impl_ = std::make_unique<Impl>(std::move(config));
}

MiniGateway::~MiniGateway() { Shutdown(std::chrono::milliseconds(0)); }

void MiniGateway::Start() { impl_->Start(); }
uint16_t MiniGateway::port() const { return impl_->port(); }
uint16_t MiniGateway::supervisor_port() const { return impl_->supervisor_port(); }
std::string MiniGateway::bound_address() const { return impl_->bound_address(); }
bool MiniGateway::IsSupervisorConnected(const std::string& sandbox_id) const {
  return impl_->IsSupervisorConnected(sandbox_id);
}
void MiniGateway::SetSandboxes(const std::vector<SandboxDecl>& sandboxes) {
  impl_->SetSandboxes(sandboxes);
}
void MiniGateway::Shutdown(std::chrono::milliseconds grace) { impl_->Shutdown(grace); }

}  // namespace osh::peers

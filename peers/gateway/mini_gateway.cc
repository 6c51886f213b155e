// Theory of operation: the mini-gateway
// ======================================
//
// What it is. A gRPC sync-API server that implements the gateway side of the
// OpenShell protocol for a fixed set of declared sandboxes: Health,
// ListSandboxes, GetSandbox, CreateSshSession, RevokeSshSession, ForwardTcp,
// ConnectSupervisor and RelayStream (protocol §1-§3). Every RPC runs on its
// own gRPC server thread; a bridge adds one thread. All shared state lives in
// GatewayService under one mutex (mu_); nothing blocking (stream I/O) ever
// runs with mu_ held.
//
// Sandboxes and READY. A sandbox is READY exactly while a supervisor control
// session (ConnectSupervisor) for its id is registered, else PROVISIONING
// (protocol §1.3). A newer session for the same sandbox supersedes the older
// one, whose stream is cancelled.
//
// Control session (ConnectSupervisor, protocol §3.1). First message must be
// hello{sandbox_id}; the gateway answers session_accepted{session_id,
// heartbeat_interval_secs} and then sends a heartbeat every 15 s from a
// helper thread. Many threads write to the control stream (heartbeats,
// relay_open from ForwardTcp handlers), so ControlSession serializes Write()
// with a mutex; the handler thread alone reads (one concurrent Read and one
// Write are allowed by gRPC). When the read side ends the session is
// unregistered (if still current) and relays still waiting for their
// RelayOpenResult fail with UNAVAILABLE "supervisor relay failed: supervisor
// session disconnected".
//
// ForwardTcp (protocol §2.1 order): read init -> validate -> sandbox exists
// -> READY -> token -> connection slots (held until the handler returns) ->
// wait <= supervisor_wait for a session -> register a PendingRelay under a
// fresh channel_id and push relay_open onto the control stream.
//   DELIBERATE DIFFERENCE 1 from upstream (§2.1 step 8, §2.4): upstream sends
//   response headers right after queueing relay_open, before the target is
//   dialled. Here the handler first waits (<= relay_claim_timeout) for the
//   supervisor's RelayOpenResult: failure -> UNAVAILABLE with the
//   supervisor's error text verbatim, as a trailers-only response (no
//   headers); success -> SendInitialMetadata(), so response headers mean
//   "target connected". Then it waits (<= relay_claim_timeout again) for the
//   RelayStream claim (else DEADLINE_EXCEEDED "relay open timed out").
//
// PendingRelay lifecycle (all fields under mu_):
//   registered (result kWaiting) --RelayOpenResult--> kOpened | kFailed
//                                 --session ends----> kSessionLost
//   claimed (a RelayStream handler parked its stream here; may happen before
//   the result is seen, the two travel on different HTTP/2 streams)
//   --> bridging --> bridge_done (RelayStream handler returns relay_status).
//   When the ForwardTcp handler leaves for any reason, RelayRegistration
//   removes the entry, marks it abandoned (later claims get NOT_FOUND "relay
//   channel not found") and releases a parked RelayStream handler.
//
// Bridge and half-close (our extension, implemented by the tunnel client):
//   client->target thread (spawned): TcpForwardFrame.data -> RelayFrame.data;
//     empty frames skipped; client WritesDone or a non-data frame = client
//     FIN -> ONE EMPTY RelayFrame.data to the supervisor (it shuts down the
//     target's write side).
//   target->client (handler thread): RelayFrame.data -> TcpForwardFrame.data;
//     when the supervisor's read side ends cleanly (its WritesDone = target
//     FIN) -> ONE EMPTY TcpForwardFrame.data to the client. Upstream never
//     sends it; upstream clients skip empty frames, so it is compatible.
//   Both RPCs end OK only after both directions ended. Client cancel ->
//   TryCancel the RelayStream (the supervisor resets the target) and
//   ForwardTcp ends CANCELLED.
//   DELIBERATE DIFFERENCE 2 (upstream returns OK, §2.6): a lost relay
//   (RelayStream cancelled or failed, supervisor died) ends ForwardTcp with
//   UNAVAILABLE "relay lost", so the client resets its connection instead of
//   faking a clean close. If the client->target thread is still blocked in
//   Read, the ForwardTcp call is cancelled *with that status*
//   (grpc_call_cancel_with_status), which both wakes the thread and delivers
//   the status to the client. No handler returns while another thread still
//   uses its stream: the bridge joins its thread first, and a RelayStream
//   handler blocks until its bridge is done.
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
// Limits and timeouts: frames are forwarded as they come (<= 64 KiB from our
// peers, up to 1 MiB + 1 KiB accepted); per-token and per-sandbox stream caps
// (default 3 and 20, protocol §2.8); supervisor wait 15 s; relay open and
// claim 10 s each (§2.7). Waits poll ServerContext::IsCancelled() every
// 50 ms so a cancelled client or a shutdown ends them early.

#include "peers/gateway/mini_gateway.h"

#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>

#include <grpc/grpc_security_constants.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include "openshell.grpc.pb.h"
#include "peers/common/address.h"
#include "peers/common/log.h"
#include "peers/common/uuid.h"

namespace osh::peers {
namespace {

namespace v1 = openshell::v1;
using Clock = std::chrono::steady_clock;
using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
using ForwardStream = grpc::ServerReaderWriter<v1::TcpForwardFrame, v1::TcpForwardFrame>;
using SessionStream = grpc::ServerReaderWriter<v1::GatewayMessage, v1::SupervisorMessage>;
using RelayServerStream = grpc::ServerReaderWriter<v1::RelayFrame, v1::RelayFrame>;

/// How often blocked waits re-check for client cancellation / shutdown.
constexpr auto kCancelPoll = std::chrono::milliseconds(50);
/// Upstream decodes messages up to 1 MiB (protocol §2.5); allow the framing.
constexpr int kMaxReceiveMessageBytes = (1 << 20) + 1024;

const char kSupervisorNotConnected[] = "supervisor relay failed: supervisor session not connected";
const char kSupervisorDisconnected[] = "supervisor relay failed: supervisor session disconnected";

std::shared_ptr<spdlog::logger> Log() {
  static const auto logger = PeerLogger("mini-gateway");
  return logger;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// One supervisor control stream (ConnectSupervisor). Writes may come from
/// any thread and are serialized; the owning handler thread reads.
class ControlSession {
 public:
  ControlSession(std::string sandbox_id, std::string session_id, ServerContext* ctx,
                 SessionStream* stream)
      : sandbox_id_(std::move(sandbox_id)),
        session_id_(std::move(session_id)),
        ctx_(ctx),
        stream_(stream) {}

  const std::string& sandbox_id() const { return sandbox_id_; }
  const std::string& session_id() const { return session_id_; }

  /// Writes @msg; false once the stream is closed for writing or broken.
  /// Thread: any; blocks under HTTP/2 flow control.
  bool Write(const v1::GatewayMessage& msg) {
    std::lock_guard lock(write_mu_);
    if (!writable_) return false;
    return stream_->Write(msg);
  }

  /// Cancels the stream (a newer session superseded it, or shutdown).
  /// No-op once the handler detached. Thread: any.
  void Cancel() {
    std::lock_guard lock(life_mu_);
    if (ctx_ != nullptr) ctx_->TryCancel();
  }

  /// Refuses further writes and waits for an in-flight one to finish.
  /// Thread: the handler thread, after its stream was cancelled.
  void CloseWrites() {
    std::lock_guard lock(write_mu_);
    writable_ = false;
  }

  /// Forgets the server context; call before the handler returns.
  void Detach() {
    std::lock_guard lock(life_mu_);
    ctx_ = nullptr;
  }

 private:
  const std::string sandbox_id_;
  const std::string session_id_;
  std::mutex write_mu_;
  bool writable_ = true;  // guarded by write_mu_
  std::mutex life_mu_;
  ServerContext* ctx_;  // guarded by life_mu_; null after Detach()
  SessionStream* const stream_;
};

/// A relay between RelayOpen and the end of its bridge; see the lifecycle in
/// the theory of operation. Every field is guarded by GatewayService::mu_.
struct PendingRelay {
  enum class Result { kWaiting, kOpened, kFailed, kSessionLost };

  std::string channel_id;
  std::string sandbox_id;
  std::shared_ptr<ControlSession> session;  // the session relay_open went to
  Result result = Result::kWaiting;
  std::string error;  // supervisor's error text for kFailed

  bool claimed = false;    // a RelayStream handler parked its stream here
  ServerContext* relay_ctx = nullptr;
  RelayServerStream* relay_stream = nullptr;
  bool abandoned = false;    // the ForwardTcp handler has left
  bool bridge_done = false;  // nobody uses relay_stream any more
  Status relay_status;       // what the RelayStream handler returns

  std::condition_variable cv;  // waited on with GatewayService::mu_
};

struct TokenRecord {
  std::string sandbox_id;
  int64_t expires_at_ms = 0;  // 0: never
  bool revoked = false;
};

/// A validated ForwardTcp target (protocol §2.2).
struct ForwardTarget {
  bool tcp = false;  // false: the SSH target
  std::string host;  // normalized loopback host (tcp only)
  uint32_t port = 0;
};

/// Per-direction facts of one bridge, shared by its two threads.
struct BridgeState {
  std::atomic<bool> client_cancelled{false};
  std::atomic<bool> relay_lost{false};
  std::atomic<bool> upload_done{false};
};

struct BridgeOutcome {
  Status forward;  // ForwardTcp's status
  Status relay;    // RelayStream's status
};

enum class WaitOutcome { kReady, kTimeout, kCancelled };

Status ValidateForwardInit(const v1::TcpForwardInit& init, ForwardTarget* out) {
  if (init.sandbox_id().empty()) {
    return Status(StatusCode::INVALID_ARGUMENT, "sandbox_id is required");
  }
  switch (init.target_case()) {
    case v1::TcpForwardInit::kSsh:
      out->tcp = false;
      return Status::OK;
    case v1::TcpForwardInit::kTcp: {
      const auto& tcp = init.tcp();
      if (tcp.port() < 1 || tcp.port() > 65535) {
        return Status(StatusCode::INVALID_ARGUMENT, "tcp target port must be between 1 and 65535");
      }
      LoopbackHost host = NormalizeLoopbackHost(tcp.host());
      if (host.check != LoopbackCheck::kOk) {
        return Status(StatusCode::INVALID_ARGUMENT, LoopbackCheckMessage(host.check));
      }
      out->tcp = true;
      out->host = std::move(host.host);
      out->port = tcp.port();
      return Status::OK;
    }
    case v1::TcpForwardInit::TARGET_NOT_SET:
      break;
  }
  return Status(StatusCode::INVALID_ARGUMENT, "tcp forward target is required");
}

/// Whether the call arrived over TLS (gRPC's auth context says "ssl").
bool IsTlsCall(const ServerContext* ctx) {
  const auto auth = ctx->auth_context();
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

class GatewayService final : public v1::OpenShell::Service {
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

  /// Ends every waiting ForwardTcp (they poll the flag) and cancels every
  /// control session so supervisors see the gateway go away promptly.
  void BeginShutdown() {
    std::vector<std::shared_ptr<ControlSession>> sessions;
    {
      std::lock_guard lock(mu_);
      shutting_down_ = true;
      for (auto& [id, s] : sessions_) sessions.push_back(s);
      sessions_cv_.notify_all();
    }
    for (auto& s : sessions) s->Cancel();
  }

  /// Authorize() - the client-method check of the theory of operation:
  /// TLS connection when the gateway serves TLS, then the bearer token.
  /// Return: OK, or the UNAUTHENTICATED status to end the call with.
  /// Thread: any handler thread.
  Status Authorize(const ServerContext* ctx) const {
    if (tls_ && !IsTlsCall(ctx)) {
      return Status(StatusCode::UNAUTHENTICATED,
                    "client calls must use the gateway's TLS listener");
    }
    if (config_.bearer_token.empty()) return Status::OK;
    const auto& md = ctx->client_metadata();
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
      Log()->info("rejected a call with an invalid bearer token from {}", ctx->peer());
      return Status(StatusCode::UNAUTHENTICATED, "invalid token");
    }
    return Status::OK;
  }

  // ---- unary RPCs ----

  Status Health(ServerContext*, const v1::HealthRequest*, v1::HealthResponse* resp) override {
    resp->set_status(v1::SERVICE_STATUS_HEALTHY);
    resp->set_version(config_.version);
    return Status::OK;
  }

  Status ListSandboxes(ServerContext* ctx, const v1::ListSandboxesRequest*,
                       v1::ListSandboxesResponse* resp) override {
    if (Status st = Authorize(ctx); !st.ok()) return st;
    std::lock_guard lock(mu_);
    for (const auto& sb : sandboxes_) FillSandboxLocked(sb, resp->add_sandboxes());
    return Status::OK;
  }

  Status GetSandbox(ServerContext* ctx, const v1::GetSandboxRequest* req,
                    v1::SandboxResponse* resp) override {
    if (Status st = Authorize(ctx); !st.ok()) return st;
    std::lock_guard lock(mu_);
    const auto it = id_by_name_.find(req->name());
    if (it == id_by_name_.end()) return Status(StatusCode::NOT_FOUND, "sandbox not found");
    FillSandboxLocked(by_id_.at(it->second), resp->mutable_sandbox());
    return Status::OK;
  }

  Status CreateSshSession(ServerContext* ctx, const v1::CreateSshSessionRequest* req,
                          v1::CreateSshSessionResponse* resp) override {
    if (Status st = Authorize(ctx); !st.ok()) return st;
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
    if (Status st = Authorize(ctx); !st.ok()) return st;
    std::lock_guard lock(mu_);
    const auto it = tokens_.find(req->token());
    const bool revoked = it != tokens_.end() && !it->second.revoked;
    if (revoked) it->second.revoked = true;
    resp->set_revoked(revoked);
    return Status::OK;
  }

  // ---- ForwardTcp (protocol §2) ----

  Status ForwardTcp(ServerContext* ctx, ForwardStream* stream) override {
    if (Status st = Authorize(ctx); !st.ok()) return st;
    v1::TcpForwardFrame first;
    if (!stream->Read(&first)) {
      return Status(StatusCode::INVALID_ARGUMENT, "empty ForwardTcp stream");
    }
    if (!first.has_init()) {
      return Status(StatusCode::INVALID_ARGUMENT, "first TcpForwardFrame must be init");
    }
    const v1::TcpForwardInit& init = first.init();
    ForwardTarget target;
    if (Status st = ValidateForwardInit(init, &target); !st.ok()) return st;

    const std::string& sandbox_id = init.sandbox_id();
    const std::string token(TrimAscii(init.authorization_token()));
    std::optional<SlotGuard> slots;
    {
      std::lock_guard lock(mu_);
      if (by_id_.count(sandbox_id) == 0) return Status(StatusCode::NOT_FOUND, "sandbox not found");
      if (sessions_.count(sandbox_id) == 0) {
        return Status(StatusCode::FAILED_PRECONDITION, "sandbox is not ready");
      }
      if (Status st = CheckTokenLocked(token, sandbox_id); !st.ok()) return st;
      if (Status st = AcquireSlotsLocked(token, sandbox_id); !st.ok()) return st;
      slots.emplace(this, token, sandbox_id);
    }
    return OpenRelayAndBridge(ctx, stream, init, target);
  }

  // ---- supervisor side (protocol §1.6, §3) ----

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
    auto session = std::make_shared<ControlSession>(sandbox_id, NewUuidV4(), ctx, stream);

    // Accept before registering, so relay_open can never overtake
    // session_accepted on the stream.
    v1::GatewayMessage accepted;
    accepted.mutable_session_accepted()->set_session_id(session->session_id());
    accepted.mutable_session_accepted()->set_heartbeat_interval_secs(
        static_cast<uint32_t>(config_.heartbeat_interval.count()));
    if (!session->Write(accepted)) {
      session->Detach();
      return Status(StatusCode::CANCELLED, "supervisor stream closed");
    }
    std::shared_ptr<ControlSession> superseded;
    {
      std::lock_guard lock(mu_);
      auto& slot = sessions_[sandbox_id];
      superseded = std::exchange(slot, session);
      sessions_cv_.notify_all();
    }
    if (superseded) superseded->Cancel();
    Log()->info("supervisor session {} connected for sandbox {} (instance {}){}",
                session->session_id(), sandbox_id, msg.hello().instance_id(),
                superseded ? ", superseding " + superseded->session_id() : std::string());

    std::mutex hb_mu;
    std::condition_variable hb_cv;
    bool hb_stop = false;
    std::thread heartbeat([&] {
      std::unique_lock lock(hb_mu);
      while (!hb_cv.wait_for(lock, config_.heartbeat_interval, [&] { return hb_stop; })) {
        lock.unlock();
        v1::GatewayMessage hb;
        hb.mutable_heartbeat();
        const bool ok = session->Write(hb);
        lock.lock();
        if (!ok) break;
      }
    });

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

    // The read side is over: make sure no writer stays blocked on a stream
    // nobody reads any more, then stop writing.
    const bool cancelled = ctx->IsCancelled();
    ctx->TryCancel();
    session->CloseWrites();
    {
      std::lock_guard lock(hb_mu);
      hb_stop = true;
    }
    hb_cv.notify_all();
    heartbeat.join();
    {
      std::lock_guard lock(mu_);
      const auto it = sessions_.find(sandbox_id);
      if (it != sessions_.end() && it->second == session) {
        sessions_.erase(it);
        sessions_cv_.notify_all();
      }
      for (auto& [channel, relay] : relays_) {
        if (relay->session == session && relay->result == PendingRelay::Result::kWaiting) {
          relay->result = PendingRelay::Result::kSessionLost;
          relay->cv.notify_all();
        }
      }
    }
    session->Detach();
    Log()->info("supervisor session {} for sandbox {} ended ({})", session->session_id(),
                sandbox_id, cancelled ? "cancelled or broken" : "supervisor closed it");
    return Status::CANCELLED;
  }

  Status RelayStream(ServerContext* ctx, RelayServerStream* stream) override {
    v1::RelayFrame first;
    if (!stream->Read(&first)) {
      return Status(StatusCode::INVALID_ARGUMENT, "empty RelayStream");
    }
    if (!first.has_init()) {
      return Status(StatusCode::INVALID_ARGUMENT, "first RelayFrame must be init");
    }
    std::unique_lock lock(mu_);
    const auto it = relays_.find(first.init().channel_id());
    if (it == relays_.end() || it->second->abandoned || it->second->claimed ||
        it->second->result == PendingRelay::Result::kFailed ||
        it->second->result == PendingRelay::Result::kSessionLost) {
      return Status(StatusCode::NOT_FOUND, "relay channel not found");
    }
    std::shared_ptr<PendingRelay> relay = it->second;
    relay->claimed = true;
    relay->relay_ctx = ctx;
    relay->relay_stream = stream;
    relay->cv.notify_all();
    // The ForwardTcp handler owns this stream from now on; it always sets
    // bridge_done before it returns (RelayRegistration).
    relay->cv.wait(lock, [&] { return relay->bridge_done; });
    return relay->relay_status;
  }

 private:
  /// Holds one per-token and one per-sandbox connection slot; releases them
  /// on destruction (protocol §2.8: held until the ForwardTcp handler ends).
  class SlotGuard {
   public:
    SlotGuard(GatewayService* svc, std::string token, std::string sandbox_id)
        : svc_(svc), token_(std::move(token)), sandbox_id_(std::move(sandbox_id)) {}
    ~SlotGuard() {
      std::lock_guard lock(svc_->mu_);
      if (--svc_->streams_per_token_[token_] == 0) svc_->streams_per_token_.erase(token_);
      if (--svc_->streams_per_sandbox_[sandbox_id_] == 0) {
        svc_->streams_per_sandbox_.erase(sandbox_id_);
      }
    }
    SlotGuard(const SlotGuard&) = delete;
    SlotGuard& operator=(const SlotGuard&) = delete;

   private:
    GatewayService* const svc_;
    const std::string token_;
    const std::string sandbox_id_;
  };

  /// Owns a PendingRelay's registration for the ForwardTcp handler; on
  /// destruction removes it, refuses later claims and releases a parked
  /// RelayStream handler with the status given to Finish() (else CANCELLED).
  class RelayRegistration {
   public:
    RelayRegistration(GatewayService* svc, std::shared_ptr<PendingRelay> relay)
        : svc_(svc), relay_(std::move(relay)) {}
    ~RelayRegistration() {
      std::lock_guard lock(svc_->mu_);
      svc_->relays_.erase(relay_->channel_id);
      relay_->abandoned = true;
      if (!relay_->bridge_done) {
        relay_->relay_status = status_.value_or(Status(StatusCode::CANCELLED, "relay abandoned"));
        relay_->bridge_done = true;
      }
      relay_->cv.notify_all();
    }
    RelayRegistration(const RelayRegistration&) = delete;
    RelayRegistration& operator=(const RelayRegistration&) = delete;
    /// The status the RelayStream handler should return.
    void Finish(Status status) { status_ = std::move(status); }

   private:
    GatewayService* const svc_;
    std::shared_ptr<PendingRelay> relay_;
    std::optional<Status> status_;
  };

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

  /// Waits on @cv (with mu_ held through @lock) until @ready(), @deadline,
  /// or the call @ctx is cancelled / the gateway shuts down.
  template <class Pred>
  WaitOutcome WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                        ServerContext* ctx, Clock::time_point deadline, Pred ready) {
    for (;;) {
      if (ready()) return WaitOutcome::kReady;
      if (shutting_down_ || ctx->IsCancelled()) return WaitOutcome::kCancelled;
      const auto now = Clock::now();
      if (now >= deadline) return WaitOutcome::kTimeout;
      cv.wait_until(lock, std::min(deadline, now + kCancelPoll));
    }
  }

  void OnRelayOpenResult(const std::shared_ptr<ControlSession>& session,
                         const v1::RelayOpenResult& result) {
    std::lock_guard lock(mu_);
    const auto it = relays_.find(result.channel_id());
    if (it == relays_.end()) {
      Log()->debug("RelayOpenResult for unknown or expired channel {}", result.channel_id());
      return;
    }
    PendingRelay& relay = *it->second;
    if (relay.session != session) {
      Log()->warn("RelayOpenResult for channel {} from the wrong session", result.channel_id());
      return;
    }
    if (relay.result != PendingRelay::Result::kWaiting) return;
    if (result.success()) {
      relay.result = PendingRelay::Result::kOpened;
    } else {
      relay.result = PendingRelay::Result::kFailed;
      relay.error = result.error().empty() ? "relay open failed" : result.error();
    }
    relay.cv.notify_all();
  }

  Status OpenRelayAndBridge(ServerContext* ctx, ForwardStream* stream,
                            const v1::TcpForwardInit& init, const ForwardTarget& target) {
    const std::string& sandbox_id = init.sandbox_id();
    auto relay = std::make_shared<PendingRelay>();
    relay->channel_id = NewUuidV4();
    relay->sandbox_id = sandbox_id;
    std::shared_ptr<ControlSession> session;
    {
      std::unique_lock lock(mu_);
      const auto outcome =
          WaitUntil(lock, sessions_cv_, ctx, Clock::now() + config_.supervisor_wait,
                    [&] { return sessions_.count(sandbox_id) > 0; });
      if (outcome == WaitOutcome::kCancelled) return Status::CANCELLED;
      if (outcome == WaitOutcome::kTimeout) {
        return Status(StatusCode::UNAVAILABLE, kSupervisorNotConnected);
      }
      session = sessions_.at(sandbox_id);
      relay->session = session;
      relays_.emplace(relay->channel_id, relay);
    }
    RelayRegistration registration(this, relay);
    const std::string& channel = relay->channel_id;
    const std::string what = target.tcp ? "tcp " + FormatHostPort(target.host, static_cast<uint16_t>(target.port))
                                        : std::string("ssh");

    v1::GatewayMessage open_msg;
    v1::RelayOpen* open = open_msg.mutable_relay_open();
    open->set_channel_id(channel);
    if (target.tcp) {
      open->mutable_tcp()->set_host(target.host);
      open->mutable_tcp()->set_port(target.port);
    } else {
      open->mutable_ssh();
    }
    open->set_service_id(init.service_id());
    if (!session->Write(open_msg)) return Status(StatusCode::UNAVAILABLE, kSupervisorDisconnected);
    Log()->debug("relay {} ({}) requested from sandbox {}", channel, what, sandbox_id);

    // Difference 1: wait for the dial result before any response header.
    {
      std::unique_lock lock(mu_);
      const auto outcome =
          WaitUntil(lock, relay->cv, ctx, Clock::now() + config_.relay_claim_timeout,
                    [&] { return relay->result != PendingRelay::Result::kWaiting; });
      if (outcome == WaitOutcome::kCancelled) return Status::CANCELLED;
      if (outcome == WaitOutcome::kTimeout) {
        return Status(StatusCode::DEADLINE_EXCEEDED, "relay open timed out");
      }
      if (relay->result == PendingRelay::Result::kFailed) {
        Log()->info("relay {} ({}) failed: {}", channel, what, relay->error);
        return Status(StatusCode::UNAVAILABLE, relay->error);
      }
      if (relay->result == PendingRelay::Result::kSessionLost) {
        return Status(StatusCode::UNAVAILABLE, kSupervisorDisconnected);
      }
    }
    stream->SendInitialMetadata();  // headers now mean "target connected"

    ServerContext* relay_ctx = nullptr;
    RelayServerStream* relay_stream = nullptr;
    {
      std::unique_lock lock(mu_);
      const auto outcome = WaitUntil(lock, relay->cv, ctx,
                                     Clock::now() + config_.relay_claim_timeout,
                                     [&] { return relay->claimed; });
      if (outcome == WaitOutcome::kCancelled) return Status::CANCELLED;
      if (outcome == WaitOutcome::kTimeout) {
        return Status(StatusCode::DEADLINE_EXCEEDED, "relay open timed out");
      }
      relay_ctx = relay->relay_ctx;
      relay_stream = relay->relay_stream;
    }
    Log()->info("relay {} ({}) to sandbox {} established", channel, what, sandbox_id);
    BridgeOutcome outcome = Bridge(ctx, stream, relay_ctx, relay_stream);
    registration.Finish(outcome.relay);
    Log()->info("relay {} ended: {}{}{}", channel, StatusCodeName(outcome.forward.error_code()),
                outcome.forward.ok() ? "" : ": ", outcome.forward.error_message());
    return outcome.forward;
  }

  /// Bridges one claimed relay; see "Bridge and half-close" above.
  /// Thread: the ForwardTcp handler thread; spawns and joins one thread.
  static BridgeOutcome Bridge(ServerContext* fctx, ForwardStream* fstream, ServerContext* rctx,
                              RelayServerStream* rstream) {
    BridgeState st;
    // client -> target
    std::thread upload([&] {
      v1::TcpForwardFrame in;
      v1::RelayFrame out;
      for (;;) {
        if (!fstream->Read(&in)) {
          if (fctx->IsCancelled()) {
            if (!st.relay_lost) {
              st.client_cancelled = true;
              rctx->TryCancel();
            }
            st.upload_done = true;
            return;
          }
          break;  // client WritesDone
        }
        if (!in.has_data()) break;  // a non-data frame after init is a half-close (§2.5)
        if (in.data().empty()) continue;
        out.set_data(std::move(*in.mutable_data()));
        if (!rstream->Write(out)) {
          st.relay_lost = true;
          st.upload_done = true;
          return;
        }
      }
      out.set_data(std::string());  // client FIN
      if (!rstream->Write(out)) st.relay_lost = true;
      st.upload_done = true;
    });

    // target -> client (this thread)
    v1::RelayFrame in;
    v1::TcpForwardFrame out;
    bool client_gone = false;
    while (rstream->Read(&in)) {
      if (!in.has_data() || in.data().empty()) continue;
      out.set_data(std::move(*in.mutable_data()));
      if (!fstream->Write(out)) {
        client_gone = true;
        break;
      }
    }
    if (!client_gone) {
      if (rctx->IsCancelled()) {
        if (!st.client_cancelled) {
          st.relay_lost = true;
          // Wake the upload thread if it still waits for the client, and
          // deliver the status in the same step (difference 2).
          if (!st.upload_done) {
            grpc_call_cancel_with_status(fctx->c_call(), GRPC_STATUS_UNAVAILABLE, "relay lost",
                                         nullptr);
          }
        }
      } else {
        out.set_data(std::string());  // target FIN
        if (!fstream->Write(out)) client_gone = true;
      }
    }
    if (client_gone && !st.relay_lost) {
      st.client_cancelled = true;
      rctx->TryCancel();
    }
    upload.join();

    if (st.relay_lost) {
      return {Status(StatusCode::UNAVAILABLE, "relay lost"), Status(StatusCode::UNAVAILABLE, "relay lost")};
    }
    if (st.client_cancelled) {
      return {Status::CANCELLED, Status(StatusCode::CANCELLED, "client cancelled")};
    }
    return {Status::OK, Status::OK};
  }

  const GatewayConfig config_;
  const std::string advertised_host_;
  const bool tls_;  // `listen` serves TLS
  std::atomic<uint16_t> port_{0};
  std::map<std::string, SandboxDecl> by_id_;        // guarded by mu_ (SetSandboxes)
  std::map<std::string, std::string> id_by_name_;   // guarded by mu_
  std::vector<SandboxDecl> sandboxes_;              // guarded by mu_; ListSandboxes order

  mutable std::mutex mu_;
  bool shutting_down_ = false;                                          // guarded by mu_
  std::map<std::string, std::shared_ptr<ControlSession>> sessions_;    // by sandbox id; mu_
  std::condition_variable sessions_cv_;                                // with mu_
  std::map<std::string, std::shared_ptr<PendingRelay>> relays_;        // by channel id; mu_
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

// Theory of operation: the mini-gateway
// ======================================
//
// What it is. A gRPC server that implements the gateway side of the
// OpenShell protocol for a set of declared sandboxes: Health,
// ListSandboxes, GetSandbox, CreateSshSession, RevokeSshSession, ForwardTcp,
// ConnectSupervisor and RelayStream (protocol §1-§3), in ONE generation of
// upstream's wire, chosen by config.protocol: 0.0 (openshell.proto,
// openshell::v1; UUID addressing, limit/offset, *_ms times) or 0.1
// (openshell_0_1.proto, openshell::v1::g01; names + WorkspaceSelector, page
// tokens, Timestamps, DeletionOutcome; protocol-0.1 §3). The generated
// service is typed with 0.0 messages, so every method whose messages differ
// is registered raw (ByteBuffer, callback API) and decoded with the chosen
// generation's types only; RelayStream (identical) is raw too, so that data
// frames pass through as bytes (forward_call.cc), and Health (identical) is
// typed on the sync API. No thread per call or stream
// (forward_call.cc, control_session.cc). All gateway-wide state lives in
// GatewayService under one mutex (mu_); nothing blocking ever runs with mu_
// held, and mu_ is never held while calling into a ForwardCall or a
// ControlSession (lock order: ForwardCall::mu_, then ControlSession::mu_ or
// mu_).
//
// Sandboxes and phases. A sandbox has an id, a name unique in its workspace
// ("default" unless declared) and optionally a fixed phase and a host key
// fingerprint. Without a fixed phase it is READY exactly while a supervisor
// control session (ConnectSupervisor) for its id is registered, else
// PROVISIONING (protocol §1.3). A newer session for the same sandbox
// supersedes the older one, whose stream is cancelled. The readiness gate of
// CreateSshSession and ForwardTcp: READY (0.0); READY, or COMPLETED/ERROR
// with a live session (0.1).
//
// Unary calls (0.1 rules, protocol-0.1 §3): a missing selector ->
// INVALID_ARGUMENT "workspace_scope is required"; all_workspaces ->
// INVALID_ARGUMENT "all_workspaces is not supported by this request"
// (ListSandboxes: PERMISSION_DENIED "platform admin role required for
// cross-workspace operations": the mini-gateway has no admins); unknown
// sandbox or another workspace -> NOT_FOUND "sandbox not found". Lists are
// ordered by name and paged by an opaque token carrying a request
// fingerprint and the last name returned. 0.0 keeps its behaviour (limit
// and offset over the declaration order of the workspace, empty = default).
//
// Control sessions (ConnectSupervisor, protocol §3.1): control_session.cc.
// The hub side here: the hello's sandbox must be declared (NOT_FOUND), the
// session is registered after session_accepted was queued, and calls waiting
// for it are woken; when its read side ends it is unregistered (if still
// current) and calls still waiting for their RelayOpenResult fail with
// UNAVAILABLE "supervisor relay failed: supervisor session disconnected".
//
// ForwardTcp and RelayStream (protocol §2.1 order, upstream's behaviour by
// default, the negotiated extensions of tunnel_ext.h): see forward_call.cc.
// GatewayService is their ForwardHub: it admits calls (rate limit,
// authorization, sandbox, readiness, token, per-token and per-sandbox
// slots), keeps the session waiters per sandbox, the registered relays per
// channel id and the pending-relay counts (32 per sandbox, 256 in all,
// §2.8), and tells calls about sessions, results and shutdown.
//
// Rate limit (optional, protocol-0.1 §3): a token bucket over every client
// method except Health, checked first; over it -> RESOURCE_EXHAUSTED "gRPC
// rate limit exceeded".
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
// Limits and timeouts: frames of up to 1 MiB + 1 KiB are accepted and
// forwarded in chunks of at most 64 KiB each way (§2.5); per-token and
// per-sandbox stream caps (default 3 and 20, §2.8); supervisor wait 15 s;
// relay open and claim 10 s each (§2.7), each a grpc::Alarm, not a sleeping
// thread.

#include "peers/gateway/mini_gateway.h"

#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>

#include <grpc/grpc_security_constants.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "openshell.grpc.pb.h"
#include "openshell_0_1.pb.h"
#include "peers/common/address.h"
#include "peers/common/log.h"
#include "peers/common/uuid.h"
#include "peers/gateway/control_session.h"
#include "peers/gateway/forward_call.h"
#include "peers/gateway/rate_limiter.h"
#include "peers/gateway/wire.h"

namespace osh::peers {
namespace {

namespace v1 = openshell::v1;
namespace g01 = openshell::v1::g01;
using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;

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

/// Every method whose messages differ between the generations is raw
/// (ByteBuffer, decoded with the configured generation's types); RelayStream
/// is raw too (data frames pass through, forward_call.cc); Health, identical
/// in both, stays sync.
using MixedService = v1::OpenShell::WithRawCallbackMethod_ListSandboxes<
    v1::OpenShell::WithRawCallbackMethod_GetSandbox<
        v1::OpenShell::WithRawCallbackMethod_CreateSshSession<
            v1::OpenShell::WithRawCallbackMethod_RevokeSshSession<
                v1::OpenShell::WithRawCallbackMethod_ForwardTcp<
                    v1::OpenShell::WithRawCallbackMethod_ConnectSupervisor<
                        v1::OpenShell::WithRawCallbackMethod_RelayStream<v1::OpenShell::Service>>>>>>>;

/// ListSandboxes page sizes (protocol §1.3, protocol-0.1 §3).
constexpr int kDefaultPageSize = 100;
constexpr int kMaxPageSize = 1000;

google::protobuf::Timestamp TimestampFromMs(int64_t ms) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(ms / 1000);
  ts.set_nanos(static_cast<int32_t>((ms % 1000) * 1000000));
  return ts;
}

std::string HexEncode(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

bool HexDecode(std::string_view hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

/// The request fingerprint inside a 0.1 page token: every parameter but
/// page_size and page_token (protocol-0.1 §3 ListSandboxes "Paging").
std::string ListFingerprint(const g01::ListSandboxesRequest& req, const std::string& workspace) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (const unsigned char c : "ListSandboxes\n" + req.label_selector() + "\n" + workspace) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

/// Opaque 0.1 page token "v1.<fingerprint>.<hex cursor>": the cursor is
/// the last name returned (a store position, not an offset).
std::string EncodePageToken(const std::string& fingerprint, const std::string& cursor) {
  return "v1." + fingerprint + "." + HexEncode(cursor);
}

/// One declared sandbox and what the gateway adds to it.
struct SandboxEntry {
  SandboxDecl decl;
  int64_t created_ms = 0;  // when this gateway first declared it
};

class GatewayService final : public MixedService, public ForwardHub, public SessionHub {
 public:
  GatewayService(const GatewayConfig& config, std::string advertised_host)
      : config_(config),
        advertised_host_(std::move(advertised_host)),
        tls_(!config.tls_cert_file.empty()),
        limiter_(config.rate_limit) {
    SetSandboxesLocked(config_.sandboxes);
  }

  /// Replaces the declared sandboxes (SIGHUP reload). A sandbox that is no
  /// longer declared loses its supervisor session (cancelled) and is
  /// NOT_FOUND from now on; streams already running are left alone.
  void SetSandboxes(const std::vector<SandboxDecl>& sandboxes) {
    std::vector<std::shared_ptr<ControlSession>> dropped;
    {
      std::lock_guard lock(mu_);
      SetSandboxesLocked(sandboxes);
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

  // ---- shared by ForwardHub and SessionHub ----

  Protocol protocol() const override { return config_.protocol; }
  bool tunnel_extensions() const override { return config_.tunnel_extensions; }

  // ---- ForwardHub (see forward_call.h) ----

  /// AdmitClientCall() - the client-method checks of the theory of
  /// operation: the global rate limit, then the TLS listener and the bearer
  /// token. Return: OK, or the status to end the call with.
  /// Thread: any handler thread or reaction.
  Status AdmitClientCall(const grpc::ServerContextBase& ctx) override {
    if (!limiter_.TryAcquire()) {
      return Status(StatusCode::RESOURCE_EXHAUSTED, "gRPC rate limit exceeded");
    }
    return Authorize(ctx);
  }

  Status Admit(const ForwardInit& init, const std::string& token, std::string* sandbox_id) override {
    std::lock_guard lock(mu_);
    const SandboxEntry* sb = config_.protocol == Protocol::kV0_0
                                 ? FindByIdLocked(init.sandbox)
                                 : FindByNameLocked(init.workspace, init.sandbox);
    if (sb == nullptr) return Status(StatusCode::NOT_FOUND, "sandbox not found");
    if (!PassesReadinessGateLocked(*sb)) {
      return Status(StatusCode::FAILED_PRECONDITION, "sandbox is not ready");
    }
    if (Status st = CheckTokenLocked(token, sb->decl.id); !st.ok()) return st;
    if (Status st = AcquireSlotsLocked(token, sb->decl.id); !st.ok()) return st;
    *sandbox_id = sb->decl.id;
    return Status::OK;
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
    const auto pending = pending_per_sandbox_.find(sandbox_id);
    if ((pending != pending_per_sandbox_.end() &&
         pending->second >= config_.max_pending_relays_per_sandbox) ||
        pending_total_ >= config_.max_pending_relays) {
      return Registration::kCapacity;
    }
    relays_[call->channel_id()] = RelayEntry{call, it->second, sandbox_id, false};
    ++pending_per_sandbox_[sandbox_id];
    ++pending_total_;
    *session = it->second;
    return Registration::kRegistered;
  }

  void MarkClaimed(const std::string& channel_id) override {
    std::lock_guard lock(mu_);
    const auto it = relays_.find(channel_id);
    if (it == relays_.end() || it->second.claimed) return;
    it->second.claimed = true;
    ReleasePendingLocked(it->second.sandbox_id);
  }

  void Forget(const std::string& channel_id, const std::string& sandbox_id) override {
    std::lock_guard lock(mu_);
    if (const auto it = relays_.find(channel_id); it != relays_.end()) {
      if (!it->second.claimed) ReleasePendingLocked(it->second.sandbox_id);
      relays_.erase(it);
    }
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

  // ---- SessionHub (see control_session.h) ----

  std::chrono::seconds heartbeat_interval() const override { return config_.heartbeat_interval; }

  Status CheckHello(const SupervisorEvent& hello) override {
    std::lock_guard lock(mu_);
    if (by_id_.count(hello.sandbox_id) == 0) return Status(StatusCode::NOT_FOUND, "sandbox not found");
    if (shutting_down_) return Status(StatusCode::UNAVAILABLE, "gateway is shutting down");
    return Status::OK;
  }

  void RegisterSession(const std::shared_ptr<ControlSession>& session,
                       const SupervisorEvent& hello) override {
    std::shared_ptr<ControlSession> superseded;
    std::map<std::string, std::shared_ptr<ForwardCall>> waiters;
    bool late = false;  // shutdown began after CheckHello(): not registered, cancelled
    {
      std::lock_guard lock(mu_);
      late = shutting_down_ || by_id_.count(hello.sandbox_id) == 0;
      if (!late) {
        superseded = std::exchange(sessions_[hello.sandbox_id], session);
        if (auto node = session_waiters_.extract(hello.sandbox_id)) waiters = std::move(node.mapped());
      }
    }
    if (late) session->Cancel();
    if (superseded) {
      Log()->info("supervisor session {} supersedes {}", session->session_id(),
                  superseded->session_id());
      superseded->Cancel();
    }
    for (auto& [channel, call] : waiters) call->OnSessionAvailable();
  }

  void OnRelayOpenResult(const std::shared_ptr<ControlSession>& session,
                         const v1::RelayOpenResult& result) override {
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

  void OnSessionEnded(const std::shared_ptr<ControlSession>& session) override {
    std::vector<std::shared_ptr<ForwardCall>> waiting;
    {
      std::lock_guard lock(mu_);
      const auto it = sessions_.find(session->sandbox_id());
      if (it != sessions_.end() && it->second == session) sessions_.erase(it);
      for (auto& [channel, entry] : relays_) {
        if (entry.session == session) waiting.push_back(entry.call);
      }
    }
    for (auto& call : waiting) call->OnSessionLost();  // only those still awaiting a result
  }

  // ---- Health (protocol §1.5; identical in both generations): sync ----

  Status Health(ServerContext*, const v1::HealthRequest*, v1::HealthResponse* resp) override {
    resp->set_status(v1::SERVICE_STATUS_HEALTHY);
    resp->set_version(config_.version.empty() ? DefaultHealthVersion(config_.protocol)
                                               : config_.version);
    return Status::OK;
  }

  // ---- generation-dependent unary RPCs: raw callback handlers ----

  grpc::ServerUnaryReactor* ListSandboxes(grpc::CallbackServerContext* ctx,
                                          const grpc::ByteBuffer* req,
                                          grpc::ByteBuffer* resp) override {
    return config_.protocol == Protocol::kV0_0 ? Unary(ctx, req, resp, &GatewayService::ListV00)
                                               : Unary(ctx, req, resp, &GatewayService::ListV01);
  }

  grpc::ServerUnaryReactor* GetSandbox(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                       grpc::ByteBuffer* resp) override {
    return config_.protocol == Protocol::kV0_0 ? Unary(ctx, req, resp, &GatewayService::GetV00)
                                               : Unary(ctx, req, resp, &GatewayService::GetV01);
  }

  grpc::ServerUnaryReactor* CreateSshSession(grpc::CallbackServerContext* ctx,
                                             const grpc::ByteBuffer* req,
                                             grpc::ByteBuffer* resp) override {
    return config_.protocol == Protocol::kV0_0
               ? Unary(ctx, req, resp, &GatewayService::CreateSessionV00)
               : Unary(ctx, req, resp, &GatewayService::CreateSessionV01);
  }

  grpc::ServerUnaryReactor* RevokeSshSession(grpc::CallbackServerContext* ctx,
                                             const grpc::ByteBuffer* req,
                                             grpc::ByteBuffer* resp) override {
    return config_.protocol == Protocol::kV0_0
               ? Unary(ctx, req, resp, &GatewayService::RevokeSessionV00)
               : Unary(ctx, req, resp, &GatewayService::RevokeSessionV01);
  }

  // ---- streams: ForwardTcp (protocol §2), RelayStream (§3.3) and
  //      ConnectSupervisor (§3.1), all on the callback API ----

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ForwardTcp(
      grpc::CallbackServerContext* ctx) override {
    return NewForwardTcpReactor(*this, ctx);
  }

  RelayStreamReactor* RelayStream(grpc::CallbackServerContext* ctx) override {
    return NewRelayStreamReactor(*this, ctx);
  }

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ConnectSupervisor(
      grpc::CallbackServerContext* ctx) override {
    return NewControlSessionReactor(*this, ctx);
  }

 private:
  /// A call registered for its relay, the session relay_open went to, and
  /// whether its RelayStream claimed it (else it counts as pending, §2.8).
  struct RelayEntry {
    std::shared_ptr<ForwardCall> call;
    std::shared_ptr<ControlSession> session;
    std::string sandbox_id;
    bool claimed = false;
  };

  /// Runs @handler on the decoded request of a unary call after the
  /// client-call checks, and encodes its response. A request that does not
  /// parse with this generation's type fails INTERNAL, as tonic's decoder
  /// does (protocol-0.1 §2). Thread: a gRPC callback thread; never blocks.
  template <class Req, class Resp>
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                  grpc::ByteBuffer* out,
                                  Status (GatewayService::*handler)(const Req&, Resp*)) {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    Status st = AdmitClientCall(*ctx);
    if (st.ok()) {
      Req req;
      Resp resp;
      if (!ParseFromBuffer(*in, &req)) {
        st = Status(StatusCode::INTERNAL, "failed to decode Protobuf message");
      } else if (st = (this->*handler)(req, &resp); st.ok()) {
        *out = SerializeToBuffer(resp);
      }
    }
    reactor->Finish(st);
    return reactor;
  }

  /// Authorize() - TLS connection when the gateway serves TLS, then the
  /// bearer token. Return: OK, or the UNAUTHENTICATED status.
  Status Authorize(const grpc::ServerContextBase& ctx) const {
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

  // ---- 0.0 generation (protocol §1.3, §1.4): UUID addressing, offsets ----

  Status ListV00(const v1::ListSandboxesRequest& req, v1::ListSandboxesResponse* resp) {
    if (req.all_workspaces() && !req.workspace().empty()) {
      return Status(StatusCode::INVALID_ARGUMENT, "workspace and all_workspaces are mutually exclusive");
    }
    if (req.all_workspaces()) {
      return Status(StatusCode::PERMISSION_DENIED,
                    "platform admin role required for cross-workspace operations");
    }
    const std::string workspace = req.workspace().empty() ? kDefaultWorkspace : req.workspace();
    const uint32_t limit = req.limit() == 0 ? kDefaultPageSize
                                            : std::min<uint32_t>(req.limit(), kMaxPageSize);
    std::lock_guard lock(mu_);
    uint32_t index = 0;
    for (const auto& id : order_) {
      const SandboxEntry& sb = by_id_.at(id);
      if (sb.decl.workspace != workspace) continue;
      if (index++ < req.offset()) continue;
      if (static_cast<uint32_t>(resp->sandboxes_size()) >= limit) break;
      FillSandboxLocked(sb, resp->add_sandboxes());
    }
    return Status::OK;
  }

  Status GetV00(const v1::GetSandboxRequest& req, v1::SandboxResponse* resp) {
    std::lock_guard lock(mu_);
    const std::string workspace = req.workspace().empty() ? kDefaultWorkspace : req.workspace();
    const SandboxEntry* sb = FindByNameLocked(workspace, req.name());
    if (sb == nullptr) return Status(StatusCode::NOT_FOUND, "sandbox not found");
    FillSandboxLocked(*sb, resp->mutable_sandbox());
    return Status::OK;
  }

  Status CreateSessionV00(const v1::CreateSshSessionRequest& req, v1::CreateSshSessionResponse* resp) {
    if (req.sandbox_id().empty()) {
      return Status(StatusCode::INVALID_ARGUMENT, "sandbox_id is required");
    }
    std::lock_guard lock(mu_);
    const SandboxEntry* sb = FindByIdLocked(req.sandbox_id());
    if (sb == nullptr) return Status(StatusCode::NOT_FOUND, "sandbox not found");
    if (!PassesReadinessGateLocked(*sb)) {
      return Status(StatusCode::FAILED_PRECONDITION, "sandbox is not ready");
    }
    const auto& [token, record] = MintTokenLocked(sb->decl.id);
    FillSessionCommon(*sb, token, resp);
    resp->set_expires_at_ms(record.expires_at_ms);
    return Status::OK;
  }

  Status RevokeSessionV00(const v1::RevokeSshSessionRequest& req, v1::RevokeSshSessionResponse* resp) {
    std::lock_guard lock(mu_);
    const auto it = tokens_.find(req.token());
    const bool revoked = it != tokens_.end() && !it->second.revoked;
    if (revoked) it->second.revoked = true;
    resp->set_revoked(revoked);
    return Status::OK;
  }

  // ---- 0.1 generation (protocol-0.1 §3): names + workspace selectors ----

  /// The workspace a 0.1 selector names (protocol-0.1 §3 common rules).
  /// @all_allowed: ListSandboxes answers all_workspaces itself.
  static Status SelectWorkspace(bool has_scope, const g01::WorkspaceSelector& scope,
                                std::string* workspace) {
    if (!has_scope || scope.selection_case() == g01::WorkspaceSelector::SELECTION_NOT_SET) {
      return Status(StatusCode::INVALID_ARGUMENT, "workspace_scope is required");
    }
    if (scope.has_all_workspaces()) {
      return Status(StatusCode::INVALID_ARGUMENT, "all_workspaces is not supported by this request");
    }
    if (scope.workspace().empty()) {
      return Status(StatusCode::INVALID_ARGUMENT, "workspace name is required");
    }
    *workspace = scope.workspace();
    return Status::OK;
  }

  Status ListV01(const g01::ListSandboxesRequest& req, g01::ListSandboxesResponse* resp) {
    if (req.has_workspace_scope() && req.workspace_scope().has_all_workspaces()) {
      return Status(StatusCode::PERMISSION_DENIED,
                    "platform admin role required for cross-workspace operations");
    }
    std::string workspace;
    if (Status st = SelectWorkspace(req.has_workspace_scope(), req.workspace_scope(), &workspace);
        !st.ok()) {
      return st;
    }
    if (req.page_size() < 0) return Status(StatusCode::INVALID_ARGUMENT, "page_size must not be negative");
    const int page_size = req.page_size() == 0 ? kDefaultPageSize : std::min(req.page_size(), kMaxPageSize);
    const std::string fingerprint = ListFingerprint(req, workspace);
    std::string cursor;
    if (!req.page_token().empty()) {
      const std::string& token = req.page_token();
      const std::string prefix = "v1." + fingerprint + ".";
      if (token.rfind("v1.", 0) != 0 || token.size() < prefix.size()) {
        return Status(StatusCode::INVALID_ARGUMENT, "invalid page_token");
      }
      if (token.compare(0, prefix.size(), prefix) != 0) {
        return Status(StatusCode::INVALID_ARGUMENT, "page_token does not match the request");
      }
      if (!HexDecode(std::string_view(token).substr(prefix.size()), &cursor) || cursor.empty()) {
        return Status(StatusCode::INVALID_ARGUMENT, "invalid page_token");
      }
    }
    std::lock_guard lock(mu_);
    auto it = cursor.empty() ? by_key_.lower_bound({workspace, std::string()})
                             : by_key_.upper_bound({workspace, cursor});
    for (; it != by_key_.end() && it->first.first == workspace; ++it) {
      if (resp->sandboxes_size() == page_size) {
        resp->set_next_page_token(EncodePageToken(fingerprint, resp->sandboxes().rbegin()->metadata().name()));
        break;
      }
      FillSandboxLocked(by_id_.at(it->second), resp->add_sandboxes());
    }
    return Status::OK;
  }

  Status GetV01(const g01::GetSandboxRequest& req, g01::SandboxResponse* resp) {
    std::string workspace;
    if (Status st = SelectWorkspace(req.has_workspace_scope(), req.workspace_scope(), &workspace);
        !st.ok()) {
      return st;
    }
    if (req.name().empty()) return Status(StatusCode::INVALID_ARGUMENT, "sandbox is required");
    std::lock_guard lock(mu_);
    const SandboxEntry* sb = FindByNameLocked(workspace, req.name());
    if (sb == nullptr) return Status(StatusCode::NOT_FOUND, "sandbox not found");
    FillSandboxLocked(*sb, resp->mutable_sandbox());
    return Status::OK;
  }

  Status CreateSessionV01(const g01::CreateSshSessionRequest& req, g01::CreateSshSessionResponse* resp) {
    std::string workspace;
    if (Status st = SelectWorkspace(req.has_workspace_scope(), req.workspace_scope(), &workspace);
        !st.ok()) {
      return st;
    }
    if (req.sandbox().empty()) return Status(StatusCode::INVALID_ARGUMENT, "sandbox is required");
    std::lock_guard lock(mu_);
    const SandboxEntry* sb = FindByNameLocked(workspace, req.sandbox());
    if (sb == nullptr) return Status(StatusCode::NOT_FOUND, "sandbox not found");
    if (!PassesReadinessGateLocked(*sb)) {
      return Status(StatusCode::FAILED_PRECONDITION, "sandbox is not ready");
    }
    const auto& [token, record] = MintTokenLocked(sb->decl.id);
    FillSessionCommon(*sb, token, resp);
    if (record.expires_at_ms != 0) *resp->mutable_expiration_time() = TimestampFromMs(record.expires_at_ms);
    return Status::OK;
  }

  Status RevokeSessionV01(const g01::RevokeSshSessionRequest& req, g01::RevokeSshSessionResponse* resp) {
    if (req.token().empty()) return Status(StatusCode::INVALID_ARGUMENT, "token is required");
    std::lock_guard lock(mu_);
    const auto it = tokens_.find(req.token());
    if (it == tokens_.end()) {
      if (!req.allow_missing()) return Status(StatusCode::NOT_FOUND, "SSH session not found");
      resp->set_outcome(g01::DELETION_OUTCOME_ALREADY_ABSENT);
      return Status::OK;
    }
    it->second.revoked = true;  // revoking a revoked token completes too
    resp->set_outcome(g01::DELETION_OUTCOME_COMPLETED);
    return Status::OK;
  }

  // ---- sandboxes (mu_ held) ----

  void SetSandboxesLocked(const std::vector<SandboxDecl>& sandboxes) {
    std::map<std::string, SandboxEntry> fresh;
    const int64_t now = NowUnixMs();
    order_.clear();
    by_key_.clear();
    for (const auto& decl : sandboxes) {
      const auto old = by_id_.find(decl.id);
      fresh[decl.id] = SandboxEntry{decl, old != by_id_.end() ? old->second.created_ms : now};
      by_key_[{decl.workspace, decl.name}] = decl.id;
      order_.push_back(decl.id);
    }
    by_id_ = std::move(fresh);
  }

  const SandboxEntry* FindByIdLocked(const std::string& id) const {
    const auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &it->second;
  }

  const SandboxEntry* FindByNameLocked(const std::string& workspace, const std::string& name) const {
    const auto it = by_key_.find({workspace, name});
    return it == by_key_.end() ? nullptr : &by_id_.at(it->second);
  }

  /// The SandboxPhase value reported for @sb: a declared phase, else READY
  /// while a supervisor session is registered and PROVISIONING otherwise
  /// (protocol §1.3 "What Ready means").
  int PhaseLocked(const SandboxEntry& sb) const {
    if (sb.decl.phase != 0) return sb.decl.phase;
    return sessions_.count(sb.decl.id) > 0 ? v1::SANDBOX_PHASE_READY : v1::SANDBOX_PHASE_PROVISIONING;
  }

  /// The readiness gate of CreateSshSession and ForwardTcp: 0.0 READY only
  /// (protocol §1.4, §2.1 step 5); 0.1 READY, or COMPLETED/ERROR with a live
  /// supervisor session (protocol-0.1 §3, §4).
  bool PassesReadinessGateLocked(const SandboxEntry& sb) const {
    const int phase = PhaseLocked(sb);
    if (phase == v1::SANDBOX_PHASE_READY) return true;
    if (config_.protocol == Protocol::kV0_0) return false;
    return (phase == g01::SANDBOX_PHASE_COMPLETED || phase == g01::SANDBOX_PHASE_ERROR) &&
           sessions_.count(sb.decl.id) > 0;
  }

  void FillSandboxLocked(const SandboxEntry& sb, v1::Sandbox* out) const {
    out->mutable_metadata()->set_id(sb.decl.id);
    out->mutable_metadata()->set_name(sb.decl.name);
    out->mutable_metadata()->set_workspace(sb.decl.workspace);
    out->mutable_metadata()->set_created_at_ms(sb.created_ms);
    out->mutable_status()->set_sandbox_name(sb.decl.name);
    out->mutable_status()->set_phase(static_cast<v1::SandboxPhase>(PhaseLocked(sb)));
  }

  void FillSandboxLocked(const SandboxEntry& sb, g01::Sandbox* out) const {
    out->mutable_metadata()->set_id(sb.decl.id);
    out->mutable_metadata()->set_name(sb.decl.name);
    out->mutable_metadata()->set_workspace(sb.decl.workspace);
    *out->mutable_metadata()->mutable_created_time() = TimestampFromMs(sb.created_ms);
    out->mutable_status()->set_phase(static_cast<g01::SandboxPhase>(PhaseLocked(sb)));
    out->set_host_key_fingerprint(sb.decl.host_key_fingerprint);
  }

  // ---- SSH-session tokens (mu_ held) ----

  /// Mints a token for sandbox @sandbox_id (protocol §1.4: a UUIDv4, TTL
  /// token_ttl, 0 = no expiry). Return: the token and its record.
  std::pair<const std::string, TokenRecord>& MintTokenLocked(const std::string& sandbox_id) {
    TokenRecord record;
    record.sandbox_id = sandbox_id;
    if (config_.token_ttl.count() > 0) record.expires_at_ms = NowUnixMs() + config_.token_ttl.count();
    auto [it, inserted] = tokens_.emplace(NewUuidV4(), record);
    if (!config_.record_tokens_file.empty()) {
      // Test hook (--record-tokens): lets a test grep every log for tokens.
      std::ofstream(config_.record_tokens_file, std::ios::app) << it->first << "\n";
    }
    Log()->debug("ssh session token minted for sandbox {}", sandbox_id);
    return *it;
  }

  /// The CreateSshSessionResponse fields both generations share (1-5, 7).
  template <class Resp>
  void FillSessionCommon(const SandboxEntry& sb, const std::string& token, Resp* resp) const {
    resp->set_sandbox_id(sb.decl.id);
    resp->set_token(token);
    resp->set_gateway_host(advertised_host_);
    resp->set_gateway_port(port_);
    resp->set_gateway_scheme(tls_ ? "https" : "http");
    resp->set_host_key_fingerprint(sb.decl.host_key_fingerprint);
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

  void ReleasePendingLocked(const std::string& sandbox_id) {
    if (--pending_per_sandbox_[sandbox_id] <= 0) pending_per_sandbox_.erase(sandbox_id);
    --pending_total_;
  }

  void EraseWaiterLocked(const std::string& channel_id, const std::string& sandbox_id) {
    const auto it = session_waiters_.find(sandbox_id);
    if (it == session_waiters_.end()) return;
    it->second.erase(channel_id);
    if (it->second.empty()) session_waiters_.erase(it);
  }

  const GatewayConfig config_;
  const std::string advertised_host_;
  const bool tls_;  // `listen` serves TLS
  std::atomic<uint16_t> port_{0};
  RateLimiter limiter_;

  mutable std::mutex mu_;
  std::map<std::string, SandboxEntry> by_id_;                         // mu_ (SetSandboxes)
  std::map<std::pair<std::string, std::string>, std::string> by_key_;  // (workspace, name) -> id; mu_
  std::vector<std::string> order_;                                    // ids, declaration order; mu_
  bool shutting_down_ = false;                                        // mu_
  std::map<std::string, std::shared_ptr<ControlSession>> sessions_;  // by sandbox id; mu_
  // Calls waiting for a session: sandbox id -> channel id -> call; mu_.
  std::map<std::string, std::map<std::string, std::shared_ptr<ForwardCall>>> session_waiters_;
  std::map<std::string, RelayEntry> relays_;                         // by channel id; mu_
  std::map<std::string, int> pending_per_sandbox_;                   // unclaimed relays; mu_
  int pending_total_ = 0;                                            // mu_
  std::map<std::string, TokenRecord> tokens_;                        // mu_
  std::map<std::string, int> streams_per_token_;                     // mu_
  std::map<std::string, int> streams_per_sandbox_;                   // mu_
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
    if (config_.max_buffer_bytes > 0) {
      grpc::ResourceQuota quota("osh-mini-gateway");
      quota.Resize(config_.max_buffer_bytes);
      builder.SetResourceQuota(quota);
    }
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
    bound_ = host_port(listen.host, port_);
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

// Theory of operation: the mini-supervisor
// =========================================
//
// What it is. The sandbox side of the OpenShell relay protocol (protocol §3).
// One grpc::Channel to the gateway carries the ConnectSupervisor control
// session and every RelayStream, so all relays ride one HTTP/2 connection as
// upstream's do (§3.1). Channel keepalive: ping after 10 s idle, 20 s
// timeout, also without calls (§2.7). The control session uses the gRPC
// sync API (there is one); the relays use the callback API with one event
// loop for all target sockets (relay_bridge.cc), so there is no thread per
// relay and 10,000 relays cost 10,000 sockets and reactors, not threads.
//
// Threads: the session thread, one writer thread per accepted session, the
// relays' event-loop thread, and gRPC's own threads (the callback reactions,
// which also do the relays' target reads and writes).
//
// Wire generation (protocol-0.1 §4). The generated stub is typed with the
// 0.0 messages, so ConnectSupervisor is opened raw (ByteBuffer) and every
// message is encoded and decoded with the configured generation's types:
// 0.0 hello{sandbox_id, instance_id} and heartbeat_interval_secs; 0.1 adds
// hello.connection_epoch (1, then +1 per reconnect) and reads the
// heartbeat_interval Duration. RelayStream is identical in both, typed.
//
// Session thread (RunSessions). Loop until Stop():
//   connect ConnectSupervisor -> write hello -> read
//   the first GatewayMessage, which must be session_accepted (a
//   session_rejected or anything else ends the attempt) -> log
//   "mini-supervisor: session accepted (sandbox ID)" -> start the session's
//   writer thread -> read loop: relay_open -> OpenRelay (below);
//   heartbeats are ignored; relay_close / session_rejected are logged. When
//   the stream ends, stop the writer, log the status, wait the backoff (1 s,
//   doubling to 30 s; back to 1 s after a session was accepted) and
//   reconnect.
//
// Writer thread (Session::WriterLoop). The only writer of the control stream
// after the hello: SupervisorHeartbeat every max(heartbeat interval, 5) s, and the queued relay_open_results in the order they were queued (a
// due heartbeat goes first). Queueing never blocks, so the event loop never
// waits for the control stream. Each result may carry a callback that learns
// whether it was written; a relay opens its RelayStream only after its
// success result was written, so the gateway sees result then claim, in that
// order, as before. When the session ends, the writer stops: the messages
// still queued, and any queued later, are reported unwritten.
//
// OpenRelay (§3.2), on the session thread. Validate the target again (tcp:
// port 1..65535, loopback host only, "localhost" -> 127.0.0.1; ssh or no
// target: the configured --ssh-target) and resolve it (getaddrinfo, here so
// a slow resolver never stalls the event loop). A rejected or unresolvable
// target -> relay_open_result{success=false, error=<text>}. Otherwise the
// relay goes to the RelayBridge, which dials without blocking (TCP_NODELAY;
// no dial timeout) and then, on its event loop:
//   dial failure -> relay_open_result{success=false, error="Connection
//     refused (os error 111)"} (OsErrorText of the errno), done.
//   success -> relay_open_result{success=true}; once written, RelayStream on
//     the same channel, first frame init{channel_id}, then bridge with
//     back-pressure both ways (at most one 64 KiB read or one received frame
//     buffered per direction):
//       target bytes -> one data frame per read() of up to 64 KiB, the next
//         read only after OnWriteDone; target EOF (FIN) -> WritesDone
//         (half-close; the other direction continues); read error -> cancel.
//       non-empty data frame -> written to the target; if the socket would
//         block the rest waits for EPOLLOUT before the next StartRead; an
//         EMPTY data frame is the client's FIN (the gateway's half-close
//         extension) -> shutdown(SHUT_WR); write error -> cancel.
//       OnDone -> close the target socket, after SO_LINGER 0 if the status
//         is not OK (the target sees an RST, not a clean FIN); OK after both
//         directions finished -> normal close.
//
// Stop() cancels the session context and wakes the backoff wait, joins the
// session thread (which stops its writer), then shuts the bridge down: it
// cancels every relay and returns only when every reactor's OnDone has been
// handled and the loop thread has ended.

#include "peers/supervisor/mini_supervisor.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "openshell.grpc.pb.h"
#include "openshell_0_1.pb.h"
#include "peers/common/address.h"
#include "relay/message_buffer.h"
#include "peers/common/log.h"
#include "peers/common/uuid.h"
#include "peers/supervisor/relay_bridge.h"
#include "peers/supervisor/target_dial.h"

namespace osh::peers {
namespace {

using relay::ParseFromBuffer;
using relay::SerializeToBuffer;

namespace v1 = openshell::v1;
namespace g01 = openshell::v1::g01;
using SessionClientStream = grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>;

/// Upstream's floor for the heartbeat period (protocol §3.1).
constexpr uint32_t kMinHeartbeatSecs = 5;
constexpr char kConnectSupervisorPath[] = "/openshell.v1.OpenShell/ConnectSupervisor";

/// OpenRawSession() - starts ConnectSupervisor on @channel with raw
/// (ByteBuffer) messages, through the same factory the generated stub uses,
/// so that each generation can encode its own messages. Thread: any.
std::unique_ptr<SessionClientStream> OpenRawSession(grpc::Channel* channel, grpc::ClientContext* ctx) {
  static const grpc::internal::RpcMethod method(kConnectSupervisorPath,
                                                grpc::internal::RpcMethod::BIDI_STREAMING);
  return std::unique_ptr<SessionClientStream>(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          channel, method, ctx));
}

/// SupervisorMessage{hello} of @protocol (0.1: with @epoch).
grpc::ByteBuffer EncodeHello(Protocol protocol, const std::string& sandbox_id,
                             const std::string& instance_id, uint64_t epoch) {
  if (protocol == Protocol::kV0_0) {
    v1::SupervisorMessage msg;
    msg.mutable_hello()->set_sandbox_id(sandbox_id);
    msg.mutable_hello()->set_instance_id(instance_id);
    return SerializeToBuffer(msg);
  }
  g01::SupervisorMessage msg;
  msg.mutable_hello()->set_sandbox_id(sandbox_id);
  msg.mutable_hello()->set_instance_id(instance_id);
  msg.mutable_hello()->set_connection_epoch(epoch);
  return SerializeToBuffer(msg);
}

/// SupervisorMessage{heartbeat} of @protocol.
grpc::ByteBuffer EncodeHeartbeat(Protocol protocol) {
  if (protocol == Protocol::kV0_0) {
    v1::SupervisorMessage msg;
    msg.mutable_heartbeat();
    return SerializeToBuffer(msg);
  }
  g01::SupervisorMessage msg;
  msg.mutable_heartbeat();
  return SerializeToBuffer(msg);
}

/// SupervisorMessage{relay_open_result} of @protocol.
grpc::ByteBuffer EncodeOpenResult(Protocol protocol, const v1::RelayOpenResult& result) {
  if (protocol == Protocol::kV0_0) {
    v1::SupervisorMessage msg;
    *msg.mutable_relay_open_result() = result;
    return SerializeToBuffer(msg);
  }
  g01::SupervisorMessage msg;
  *msg.mutable_relay_open_result() = result;
  return SerializeToBuffer(msg);
}

/// One GatewayMessage, decoded with the session's generation.
struct GatewayEvent {
  enum class Kind { kAccepted, kRejected, kHeartbeat, kRelayOpen, kRelayClose, kOther };
  Kind kind = Kind::kOther;
  std::string session_id;         // kAccepted
  uint32_t heartbeat_secs = 0;    // kAccepted: 0 when the gateway sent none
  std::string reason;             // kRejected, kRelayClose
  v1::RelayOpen open;             // kRelayOpen
  std::string channel_id;         // kRelayClose
};

/// Seconds of a Duration, rounded up (a 0.1 heartbeat_interval).
uint32_t DurationSecs(const google::protobuf::Duration& d) {
  if (d.seconds() < 0) return 0;
  return static_cast<uint32_t>(std::min<int64_t>(d.seconds() + (d.nanos() > 0 ? 1 : 0), UINT32_MAX));
}

template <class Message>
void FillGatewayEvent(const Message& msg, GatewayEvent* out) {
  if (msg.has_session_accepted()) {
    out->kind = GatewayEvent::Kind::kAccepted;
    out->session_id = msg.session_accepted().session_id();
  } else if (msg.has_session_rejected()) {
    out->kind = GatewayEvent::Kind::kRejected;
    out->reason = msg.session_rejected().reason();
  } else if (msg.has_heartbeat()) {
    out->kind = GatewayEvent::Kind::kHeartbeat;
  } else if (msg.has_relay_open()) {
    out->kind = GatewayEvent::Kind::kRelayOpen;
    out->open = msg.relay_open();
  } else if (msg.has_relay_close()) {
    out->kind = GatewayEvent::Kind::kRelayClose;
    out->channel_id = msg.relay_close().channel_id();
    out->reason = msg.relay_close().reason();
  }
}

/// DecodeGatewayMessage() - parses @buffer as @protocol's GatewayMessage.
/// Return: false if it does not parse (0.1's session_redirect and unknown
/// members decode as kOther and are ignored).
bool DecodeGatewayMessage(Protocol protocol, const grpc::ByteBuffer& buffer, GatewayEvent* out) {
  if (protocol == Protocol::kV0_0) {
    v1::GatewayMessage msg;
    if (!ParseFromBuffer(buffer, &msg)) return false;
    FillGatewayEvent(msg, out);
    if (msg.has_session_accepted()) out->heartbeat_secs = msg.session_accepted().heartbeat_interval_secs();
    return true;
  }
  g01::GatewayMessage msg;
  if (!ParseFromBuffer(buffer, &msg)) return false;
  FillGatewayEvent(msg, out);
  if (msg.has_session_accepted()) out->heartbeat_secs = DurationSecs(msg.session_accepted().heartbeat_interval());
  return true;
}

std::shared_ptr<spdlog::logger> Log() {
  static const auto logger = PeerLogger("mini-supervisor");
  return logger;
}

/// One ConnectSupervisor attempt: its context and stream, and the writer
/// thread that sends heartbeats and relay_open_results (protocol §3.1-3.2).
class Session final : public OpenResultSink {
 public:
  explicit Session(Protocol protocol) : protocol_(protocol) {}

  grpc::ClientContext ctx;
  std::unique_ptr<SessionClientStream> stream;

  /// Calls StopWriter().
  ~Session() override { StopWriter(); }

  /// WriteHello() - writes @msg directly, before the writer thread exists.
  /// Return: false if the stream is broken. Thread: the session thread.
  bool WriteHello(const grpc::ByteBuffer& msg) {
    grpc::ByteBuffer copy(msg);
    return stream->Write(copy);
  }

  /// StartWriter() - starts the writer thread: a heartbeat every @period,
  /// and the queued messages. Thread: the session thread, once.
  void StartWriter(std::chrono::seconds period) {
    writer_ = std::thread([this, period] { WriterLoop(period); });
  }

  /// StopWriter() - refuses further messages, waits for the writer thread
  /// (and its write in flight), and reports every message still queued as
  /// unwritten. Idempotent. Thread: the session thread (or the last owner).
  void StopWriter() {
    {
      std::lock_guard lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
    if (writer_.joinable()) writer_.join();
    FailQueued();
  }

  void SendOpenResult(const std::string& channel_id, bool success, const std::string& error,
                      std::function<void(bool written)> written) override {
    Outgoing out;
    v1::RelayOpenResult result;
    result.set_channel_id(channel_id);
    result.set_success(success);
    result.set_error(error);
    out.msg = EncodeOpenResult(protocol_, result);
    out.written = std::move(written);
    {
      std::lock_guard lock(mu_);
      if (!closed_) {
        queue_.push_back(std::move(out));
        cv_.notify_all();
        return;
      }
    }
    if (out.written) out.written(false);
  }

 private:
  struct Outgoing {
    grpc::ByteBuffer msg;
    std::function<void(bool written)> written;  // may be empty
  };

  void WriterLoop(std::chrono::seconds period) {
    using Clock = std::chrono::steady_clock;
    auto next_heartbeat = Clock::now() + period;
    std::unique_lock lock(mu_);
    while (!closed_) {
      const bool heartbeat_due = Clock::now() >= next_heartbeat;
      if (!heartbeat_due && queue_.empty()) {
        cv_.wait_until(lock, next_heartbeat, [&] { return closed_ || !queue_.empty(); });
        continue;
      }
      Outgoing out;
      if (heartbeat_due) {
        out.msg = EncodeHeartbeat(protocol_);
        next_heartbeat = Clock::now() + period;
      } else {
        out = std::move(queue_.front());
        queue_.pop_front();
      }
      lock.unlock();
      const bool ok = stream->Write(out.msg);
      if (out.written) out.written(ok);
      lock.lock();
      if (!ok) break;
    }
    closed_ = true;
    lock.unlock();
    FailQueued();
  }

  /// Reports every queued message as unwritten. Call with closed_ set.
  void FailQueued() {
    std::deque<Outgoing> rest;
    {
      std::lock_guard lock(mu_);
      rest.swap(queue_);
    }
    for (auto& out : rest) {
      if (out.written) out.written(false);
    }
  }

  const Protocol protocol_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Outgoing> queue_;  // mu_
  bool closed_ = false;         // mu_
  std::thread writer_;
};

}  // namespace

class MiniSupervisor::Impl {
 public:
  explicit Impl(SupervisorConfig config) : config_(std::move(config)) {
    if (config_.sandbox_id.empty()) throw std::invalid_argument("sandbox id is required");
    const std::string target = GrpcTargetFromEndpoint(config_.gateway_endpoint);
    const auto ssh = ParseHostPort(config_.ssh_target);
    if (!ssh || ssh->port == 0) {
      throw std::invalid_argument("ssh target '" + config_.ssh_target + "' must be HOST:PORT");
    }
    ssh_ = *ssh;
    if (config_.initial_backoff.count() <= 0 || config_.max_backoff < config_.initial_backoff) {
      throw std::invalid_argument("backoff must be positive and max >= initial");
    }
    if (config_.instance_id.empty()) config_.instance_id = NewUuidV4();
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    // The session's own backoff (1 s..30 s, above) is the only one, as with
    // upstream's supervisor, which dials afresh on each attempt: gRPC's
    // channel backoff (up to 120 s by default) would otherwise fail an
    // attempt fast while the gateway is already back (seen in vm_service).
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    if (config_.max_buffer_bytes > 0) {
      grpc::ResourceQuota quota("osh-mini-supervisor");
      quota.Resize(config_.max_buffer_bytes);
      args.SetResourceQuota(quota);
    }
    channel_ = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    bridge_ = std::make_unique<RelayBridge>(channel_);
  }

  ~Impl() { Stop(); }

  void Start() {
    std::lock_guard lock(mu_);
    if (started_) throw std::runtime_error("mini-supervisor already started");
    if (stopping_) throw std::runtime_error("mini-supervisor already stopped");
    started_ = true;
    bridge_->Start();
    session_thread_ = std::thread([this] { RunSessions(); });
  }

  void Stop() {
    {
      std::lock_guard lock(mu_);
      if (!stopping_) {
        stopping_ = true;
        if (current_) current_->ctx.TryCancel();
        cv_.notify_all();
      }
    }
    std::lock_guard join_lock(join_mu_);
    if (session_thread_.joinable()) session_thread_.join();
    bridge_->Shutdown();  // cancels every relay, waits for every OnDone
  }

  bool session_active() const {
    std::lock_guard lock(mu_);
    return active_;
  }
  uint64_t sessions_accepted() const {
    std::lock_guard lock(mu_);
    return accepted_;
  }
  std::string instance_id() const { return config_.instance_id; }
  uint32_t heartbeat_secs() const {
    std::lock_guard lock(mu_);
    return heartbeat_secs_;
  }

 private:
  void RunSessions() {
    auto backoff = config_.initial_backoff;
    for (;;) {
      const bool accepted = RunOneSession();
      if (accepted) backoff = config_.initial_backoff;
      std::unique_lock lock(mu_);
      if (stopping_) return;
      Log()->info("reconnecting to the gateway in {} ms", backoff.count());
      if (cv_.wait_for(lock, backoff, [&] { return stopping_; })) return;
      backoff = std::min(backoff * 2, config_.max_backoff);
    }
  }

  /// One control session from connect to end. Return: whether the gateway
  /// accepted it. Thread: the session thread.
  bool RunOneSession() {
    auto session = std::make_shared<Session>(config_.protocol);
    {
      std::lock_guard lock(mu_);
      if (stopping_) return false;
      current_ = session;
    }
    session->stream = OpenRawSession(channel_.get(), &session->ctx);

    bool accepted = false;
    uint32_t heartbeat_secs = kMinHeartbeatSecs;
    grpc::ByteBuffer raw;
    GatewayEvent event;
    if (session->WriteHello(EncodeHello(config_.protocol, config_.sandbox_id, config_.instance_id,
                                        ++connection_epoch_)) &&
        session->stream->Read(&raw)) {
      if (!DecodeGatewayMessage(config_.protocol, raw, &event)) {
        Log()->warn("gateway's first message does not decode as protocol {}; dropping the session",
                    ProtocolName(config_.protocol));
        session->ctx.TryCancel();
      } else if (event.kind == GatewayEvent::Kind::kAccepted) {
        accepted = true;
        // A gateway of the other generation leaves the interval 0: the 5 s floor.
        heartbeat_secs = std::max(event.heartbeat_secs, kMinHeartbeatSecs);
        std::lock_guard lock(mu_);
        active_ = true;
        ++accepted_;
      } else if (event.kind == GatewayEvent::Kind::kRejected) {
        Log()->warn("gateway rejected the session: {}", event.reason);
        session->ctx.TryCancel();
      } else {
        Log()->warn("gateway's first message is not session_accepted; dropping the session");
        session->ctx.TryCancel();
      }
    }

    if (accepted) {
      Log()->info("mini-supervisor: session accepted ({}) session_id={} heartbeat={}s protocol={}",
                  config_.sandbox_id, event.session_id, heartbeat_secs, ProtocolName(config_.protocol));
      {
        std::lock_guard lock(mu_);
        heartbeat_secs_ = heartbeat_secs;
      }
      session->StartWriter(std::chrono::seconds(heartbeat_secs));
      while (session->stream->Read(&raw)) {
        GatewayEvent msg;
        if (!DecodeGatewayMessage(config_.protocol, raw, &msg)) {
          Log()->warn("a GatewayMessage does not decode; ignoring it");
          continue;
        }
        switch (msg.kind) {
          case GatewayEvent::Kind::kRelayOpen:
            OpenRelay(session, msg.open);
            break;
          case GatewayEvent::Kind::kRelayClose:
            Log()->info("gateway closed relay {}: {}", msg.channel_id, msg.reason);
            break;
          case GatewayEvent::Kind::kRejected:
            Log()->warn("gateway rejected the session: {}", msg.reason);
            break;
          case GatewayEvent::Kind::kAccepted:
          case GatewayEvent::Kind::kHeartbeat:
          case GatewayEvent::Kind::kOther:
            break;
        }
      }
    }

    {
      std::lock_guard lock(mu_);
      active_ = false;
    }
    session->StopWriter();  // no writes after this: Finish() may run
    const grpc::Status status = session->stream->Finish();
    bool stopping;
    {
      std::lock_guard lock(mu_);
      current_.reset();
      stopping = stopping_;
    }
    if (stopping) {
      Log()->info("session ended: supervisor stopping");
    } else {
      Log()->warn("session ended: {}: {}", StatusCodeName(status.error_code()),
                  status.error_message().empty() ? "(no message)" : status.error_message());
    }
    return accepted;
  }

  /// Resolves and checks the target of @open (protocol §3.2).
  /// Return: an empty string and sets @out, or the rejection text.
  std::string ResolveTarget(const v1::RelayOpen& open, HostPort* out) const {
    if (!open.has_tcp()) {  // ssh, or no target at all (upstream: means SSH)
      *out = ssh_;
      return {};
    }
    if (open.tcp().port() < 1 || open.tcp().port() > 65535) {
      return "tcp target port must be between 1 and 65535";
    }
    const LoopbackHost host = NormalizeLoopbackHost(open.tcp().host());
    if (host.check != LoopbackCheck::kOk) return LoopbackCheckMessage(host.check);
    out->host = host.host;
    out->port = static_cast<uint16_t>(open.tcp().port());
    return {};
  }

  /// OpenRelay() - validates and resolves the target of @open, then hands
  /// the relay to the bridge, or answers relay_open_result{success=false}
  /// on @session. See the theory of operation. Thread: the session thread.
  void OpenRelay(const std::shared_ptr<Session>& session, const v1::RelayOpen& open) {
    const std::string& channel = open.channel_id();
    HostPort target;
    if (std::string reject = ResolveTarget(open, &target); !reject.empty()) {
      Log()->warn("relay {} rejected: {}", channel, reject);
      session->SendOpenResult(channel, false, reject, nullptr);
      return;
    }
    std::string where = host_port(target.host, target.port);
    ResolveResult resolved = ResolveTcpTarget(target.host, target.port);
    if (!resolved.ok()) {
      Log()->info("relay {}: dial {} failed: {}", channel, where, resolved.error);
      session->SendOpenResult(channel, false, resolved.error, nullptr);
      return;
    }
    bridge_->Open(RelayOpenRequest{channel, std::move(where), std::move(resolved.addresses), session});
  }

  SupervisorConfig config_;
  HostPort ssh_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<RelayBridge> bridge_;  // after channel_: destroyed before it

  mutable std::mutex mu_;
  std::condition_variable cv_;        // backoff wait; with mu_
  bool started_ = false;              // mu_
  bool stopping_ = false;             // mu_
  bool active_ = false;               // mu_
  uint64_t accepted_ = 0;             // mu_
  uint32_t heartbeat_secs_ = 0;       // mu_; of the last accepted session
  uint64_t connection_epoch_ = 0;     // session thread only; 0.1 hello
  std::shared_ptr<Session> current_;  // mu_
  std::mutex join_mu_;                // serializes joins in Stop()
  std::thread session_thread_;
};

MiniSupervisor::MiniSupervisor(SupervisorConfig config)
    : impl_(std::make_unique<Impl>(std::move(config))) {}
MiniSupervisor::~MiniSupervisor() { impl_->Stop(); }
void MiniSupervisor::Start() { impl_->Start(); }
void MiniSupervisor::Stop() { impl_->Stop(); }
bool MiniSupervisor::session_active() const { return impl_->session_active(); }
uint64_t MiniSupervisor::sessions_accepted() const { return impl_->sessions_accepted(); }
std::string MiniSupervisor::instance_id() const { return impl_->instance_id(); }
uint32_t MiniSupervisor::heartbeat_secs() const { return impl_->heartbeat_secs(); }

}  // namespace osh::peers

// Theory of operation: the mini-supervisor
// =========================================
//
// What it is. The sandbox side of the OpenShell relay protocol (protocol §3),
// with the gRPC sync API. One grpc::Channel to the gateway carries the
// ConnectSupervisor control session and every RelayStream, so all relays ride
// one HTTP/2 connection as upstream's do (§3.1). Channel keepalive: ping
// after 10 s idle, 20 s timeout, also without calls (§2.7).
//
// Session thread (RunSessions). Loop until Stop():
//   connect ConnectSupervisor -> write hello{sandbox_id, instance_id} -> read
//   the first GatewayMessage, which must be session_accepted (a
//   session_rejected or anything else ends the attempt) -> log
//   "mini-supervisor: session accepted (sandbox ID)" -> a heartbeat thread
//   writes SupervisorHeartbeat every max(heartbeat_interval_secs, 5) s ->
//   read loop: relay_open spawns one relay thread; heartbeats are ignored;
//   relay_close / session_rejected are logged. When the stream ends, log the
//   status, wait the backoff (1 s, doubling to 30 s; back to 1 s after a
//   session was accepted) and reconnect. Writes to the control stream come
//   from the heartbeat thread and from relay threads (relay_open_result), so
//   Session::Write serializes them with a mutex; the session thread alone
//   reads. Before Finish() the session refuses further writes.
//
// Relay thread (HandleRelay, §3.2). Validate the target again (tcp: port
// 1..65535, loopback host only, "localhost" -> 127.0.0.1; ssh or no target:
// the configured --ssh-target), then dial it (blocking connect, TCP_NODELAY).
// Dial failure -> relay_open_result{success=false, error="Connection refused
// (os error 111)"}, done. Success -> relay_open_result{success=true}, open
// RelayStream on the same channel, first frame init{channel_id}, then bridge:
//   socket reader thread: read() up to 64 KiB, send what it returned as one
//     data frame; socket EOF (target FIN) -> WritesDone(); socket error ->
//     TryCancel().
//   this thread: non-empty data -> write_all to the socket; an EMPTY data
//     frame is the client's FIN (the gateway's half-close extension) ->
//     shutdown(SHUT_WR); a socket write error -> TryCancel(). Read() false
//     means the RPC is over: shutdown(SHUT_RD) wakes the socket reader
//     without sending a FIN (SHUT_RDWR would send one), join it, Finish(),
//     and close the socket - after SO_LINGER 0 if the status is not OK, so
//     the target sees an RST rather than a clean FIN.
//
// Stop() cancels the session context and every relay's context (each relay
// registers its ClientContext under mu_ while the RPC lives), wakes the
// backoff wait, and joins the session thread and all relay threads. Finished
// relay threads are reaped whenever a new relay starts.

#include "peers/supervisor/mini_supervisor.h"

#include <sys/socket.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <list>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "openshell.grpc.pb.h"
#include "peers/common/address.h"
#include "peers/common/log.h"
#include "peers/common/socket.h"
#include "peers/common/uuid.h"

namespace osh::peers {
namespace {

namespace v1 = openshell::v1;
using SessionClientStream = grpc::ClientReaderWriter<v1::SupervisorMessage, v1::GatewayMessage>;
using RelayClientStream = grpc::ClientReaderWriter<v1::RelayFrame, v1::RelayFrame>;

/// Target read size per data frame (the tunnel's frames are <= 64 KiB).
constexpr size_t kRelayChunkBytes = 64 * 1024;
/// Upstream's floor for the heartbeat period (protocol §3.1).
constexpr uint32_t kMinHeartbeatSecs = 5;

std::shared_ptr<spdlog::logger> Log() {
  static const auto logger = PeerLogger("mini-supervisor");
  return logger;
}

/// One ConnectSupervisor attempt: its context, stream and write lock.
class Session {
 public:
  grpc::ClientContext ctx;
  std::unique_ptr<SessionClientStream> stream;

  /// Writes @msg unless writes were closed. Thread: any.
  bool Write(const v1::SupervisorMessage& msg) {
    std::lock_guard lock(write_mu_);
    if (!writable_ || !stream) return false;
    return stream->Write(msg);
  }
  /// Refuses further writes; waits for an in-flight one. Thread: session thread.
  void CloseWrites() {
    std::lock_guard lock(write_mu_);
    writable_ = false;
  }

 private:
  std::mutex write_mu_;
  bool writable_ = true;  // guarded by write_mu_
};

/// One relay thread and, while its RelayStream lives, that call's context.
struct RelayTask {
  std::thread thread;
  std::atomic<bool> done{false};
  grpc::ClientContext* ctx = nullptr;  // guarded by Impl::mu_
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
    channel_ = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    stub_ = v1::OpenShell::NewStub(channel_);
  }

  ~Impl() { Stop(); }

  void Start() {
    std::lock_guard lock(mu_);
    if (started_) throw std::runtime_error("mini-supervisor already started");
    started_ = true;
    session_thread_ = std::thread([this] { RunSessions(); });
  }

  void Stop() {
    std::list<std::shared_ptr<RelayTask>> relays;
    {
      std::lock_guard lock(mu_);
      if (!stopping_) {
        stopping_ = true;
        if (current_) current_->ctx.TryCancel();
        for (auto& relay : relays_) {
          if (relay->ctx != nullptr) relay->ctx->TryCancel();
        }
        cv_.notify_all();
      }
    }
    std::lock_guard join_lock(join_mu_);
    if (session_thread_.joinable()) session_thread_.join();
    {
      std::lock_guard lock(mu_);
      relays.swap(relays_);
    }
    for (auto& relay : relays) {
      if (relay->thread.joinable()) relay->thread.join();
    }
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
    auto session = std::make_shared<Session>();
    {
      std::lock_guard lock(mu_);
      if (stopping_) return false;
      current_ = session;
    }
    session->stream = stub_->ConnectSupervisor(&session->ctx);

    v1::SupervisorMessage hello;
    hello.mutable_hello()->set_sandbox_id(config_.sandbox_id);
    hello.mutable_hello()->set_instance_id(config_.instance_id);
    bool accepted = false;
    uint32_t heartbeat_secs = kMinHeartbeatSecs;
    v1::GatewayMessage msg;
    if (session->Write(hello) && session->stream->Read(&msg)) {
      if (msg.has_session_accepted()) {
        accepted = true;
        heartbeat_secs = std::max(msg.session_accepted().heartbeat_interval_secs(), kMinHeartbeatSecs);
        std::lock_guard lock(mu_);
        active_ = true;
        ++accepted_;
      } else if (msg.has_session_rejected()) {
        Log()->warn("gateway rejected the session: {}", msg.session_rejected().reason());
        session->ctx.TryCancel();
      } else {
        Log()->warn("gateway's first message is not session_accepted; dropping the session");
        session->ctx.TryCancel();
      }
    }

    std::mutex hb_mu;
    std::condition_variable hb_cv;
    bool hb_stop = false;
    std::thread heartbeat;
    if (accepted) {
      Log()->info("mini-supervisor: session accepted ({}) session_id={} heartbeat={}s",
                  config_.sandbox_id, msg.session_accepted().session_id(), heartbeat_secs);
      heartbeat = std::thread([&] {
        std::unique_lock lock(hb_mu);
        while (!hb_cv.wait_for(lock, std::chrono::seconds(heartbeat_secs), [&] { return hb_stop; })) {
          lock.unlock();
          v1::SupervisorMessage hb;
          hb.mutable_heartbeat();
          const bool ok = session->Write(hb);
          lock.lock();
          if (!ok) break;
        }
      });
      while (session->stream->Read(&msg)) {
        switch (msg.payload_case()) {
          case v1::GatewayMessage::kRelayOpen:
            SpawnRelay(session, msg.relay_open());
            break;
          case v1::GatewayMessage::kHeartbeat:
          case v1::GatewayMessage::kSessionAccepted:
            break;
          case v1::GatewayMessage::kRelayClose:
            Log()->info("gateway closed relay {}: {}", msg.relay_close().channel_id(),
                        msg.relay_close().reason());
            break;
          case v1::GatewayMessage::kSessionRejected:
            Log()->warn("gateway rejected the session: {}", msg.session_rejected().reason());
            break;
          case v1::GatewayMessage::PAYLOAD_NOT_SET:
            break;
        }
      }
    }

    {
      std::lock_guard lock(mu_);
      active_ = false;
    }
    if (heartbeat.joinable()) {
      {
        std::lock_guard lock(hb_mu);
        hb_stop = true;
      }
      hb_cv.notify_all();
      heartbeat.join();
    }
    session->CloseWrites();
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

  /// Starts a relay thread for @open and reaps finished ones.
  /// Thread: the session thread.
  void SpawnRelay(const std::shared_ptr<Session>& session, const v1::RelayOpen& open) {
    std::list<std::shared_ptr<RelayTask>> finished;
    std::lock_guard lock(mu_);
    for (auto it = relays_.begin(); it != relays_.end();) {
      if ((*it)->done) {
        finished.push_back(*it);
        it = relays_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& relay : finished) relay->thread.join();  // already returned
    if (stopping_) return;
    auto task = std::make_shared<RelayTask>();
    task->thread = std::thread([this, session, open, task] {
      HandleRelay(session, open, task.get());
      task->done = true;
    });
    relays_.push_back(std::move(task));
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

  /// Dials the target and bridges it over a RelayStream; see the theory of
  /// operation. Thread: its own relay thread.
  void HandleRelay(const std::shared_ptr<Session>& session, const v1::RelayOpen& open,
                   RelayTask* task) {
    const std::string& channel = open.channel_id();
    auto send_result = [&](bool success, const std::string& error) {
      v1::SupervisorMessage msg;
      auto* result = msg.mutable_relay_open_result();
      result->set_channel_id(channel);
      result->set_success(success);
      result->set_error(error);
      return session->Write(msg);
    };

    HostPort target;
    if (std::string reject = ResolveTarget(open, &target); !reject.empty()) {
      Log()->warn("relay {} rejected: {}", channel, reject);
      send_result(false, reject);
      return;
    }
    const std::string where = FormatHostPort(target.host, target.port);
    DialResult dial = DialTcp(target.host, target.port);
    if (!dial.ok()) {
      Log()->info("relay {}: dial {} failed: {}", channel, where, dial.error);
      send_result(false, dial.error);
      return;
    }
    const int fd = dial.fd.get();
    if (!send_result(true, std::string())) {
      Log()->warn("relay {}: control session gone before the result was sent", channel);
      SetLingerZero(fd);
      return;
    }

    grpc::ClientContext rctx;
    {
      std::lock_guard lock(mu_);
      if (stopping_) {
        SetLingerZero(fd);
        return;
      }
      task->ctx = &rctx;
    }
    std::unique_ptr<RelayClientStream> rs = stub_->RelayStream(&rctx);
    Log()->debug("relay {} to {} open", channel, where);

    std::atomic<bool> stream_over{false};
    std::thread socket_reader;
    v1::RelayFrame frame;
    frame.mutable_init()->set_channel_id(channel);
    if (rs->Write(frame)) {
      // target -> gateway
      socket_reader = std::thread([&] {
        std::vector<char> buf(kRelayChunkBytes);
        v1::RelayFrame out;
        for (;;) {
          const ssize_t n = ::read(fd, buf.data(), buf.size());
          if (n > 0) {
            out.set_data(buf.data(), static_cast<size_t>(n));
            if (!rs->Write(out)) return;
            continue;
          }
          if (n == 0) {  // target sent FIN
            if (!stream_over) rs->WritesDone();
            return;
          }
          if (errno == EINTR) continue;
          if (!stream_over) {
            Log()->info("relay {}: target read failed: {}", channel, OsErrorText(errno));
            rctx.TryCancel();
          }
          return;
        }
      });
      // gateway -> target (this thread)
      v1::RelayFrame in;
      while (rs->Read(&in)) {
        if (!in.has_data()) continue;
        if (in.data().empty()) {  // client sent FIN
          ::shutdown(fd, SHUT_WR);
          continue;
        }
        if (const int err = WriteAll(fd, in.data().data(), in.data().size()); err != 0) {
          Log()->info("relay {}: target write failed: {}", channel, OsErrorText(err));
          rctx.TryCancel();
          while (rs->Read(&in)) {
          }
          break;
        }
      }
    }
    stream_over = true;
    // Wake the socket reader. SHUT_RD sends nothing on Linux (SHUT_RDWR would
    // send a FIN), so a failed relay still reaches the target as an RST only.
    ::shutdown(fd, SHUT_RD);
    if (socket_reader.joinable()) socket_reader.join();
    const grpc::Status status = rs->Finish();
    {
      std::lock_guard lock(mu_);
      task->ctx = nullptr;
    }
    if (!status.ok()) SetLingerZero(fd);  // the target sees a reset
    dial.fd.reset();
    if (status.ok()) {
      Log()->debug("relay {} to {} closed", channel, where);
    } else {
      Log()->info("relay {} to {} ended: {}: {}", channel, where,
                  StatusCodeName(status.error_code()), status.error_message());
    }
  }

  SupervisorConfig config_;
  HostPort ssh_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::OpenShell::Stub> stub_;

  mutable std::mutex mu_;
  std::condition_variable cv_;                    // backoff wait; with mu_
  bool started_ = false;                          // mu_
  bool stopping_ = false;                         // mu_
  bool active_ = false;                           // mu_
  uint64_t accepted_ = 0;                         // mu_
  std::shared_ptr<Session> current_;              // mu_
  std::list<std::shared_ptr<RelayTask>> relays_;  // mu_
  std::mutex join_mu_;                            // serializes joins in Stop()
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

}  // namespace osh::peers

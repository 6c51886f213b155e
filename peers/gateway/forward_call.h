// One ForwardTcp call of the mini-gateway and the RelayStream that carries
// it to the supervisor, on the gRPC callback API: no thread per stream. See
// forward_call.cc for the theory of operation.
#pragma once

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "openshell.grpc.pb.h"
#include "relay/data_frame.h"
#include "peers/common/protocol.h"
#include "common/tunnel_ext.h"
#include "peers/gateway/wire.h"

namespace osh::peers {

class ControlSession;
class ForwardCall;
class ForwardReactor;
class RelayReactor;

/// The gateway-wide state a ForwardCall works against (GatewayService
/// implements it). Every method is thread-safe, takes only the hub's own
/// lock and never calls into a ForwardCall, so a ForwardCall may call it with
/// its own lock held (lock order: ForwardCall, then hub). The hub in turn
/// calls ForwardCall's On*() events without holding its lock.
class ForwardHub {
 public:
  virtual ~ForwardHub() = default;

  /// The generation whose TcpForwardFrame the calls decode and encode.
  virtual Protocol protocol() const = 0;

  /// Whether calls that ask for the tunnel extensions get them
  /// (GatewayConfig::tunnel_extensions); false = upstream behaviour always.
  virtual bool tunnel_extensions() const = 0;

  /// AdmitClientCall() - the checks before a client method reads anything:
  /// the global rate limit (RESOURCE_EXHAUSTED "gRPC rate limit exceeded",
  /// when configured), then the TLS listener and the bearer token (protocol
  /// §2.1 step 1, §4.3; UNAUTHENTICATED). Return: OK or the status to end
  /// the call with. Thread: any.
  virtual grpc::Status AdmitClientCall(const grpc::ServerContextBase& ctx) = 0;

  /// Admit() - protocol §2.1 steps 4-7 (protocol-0.1 §3 "Checks, in order")
  /// for a validated init: the sandbox exists (0.0: by id; 0.1: by name in
  /// init.workspace; NOT_FOUND "sandbox not found"), passes the generation's
  /// readiness gate (FAILED_PRECONDITION "sandbox is not ready"), @token
  /// (trimmed) is valid for it (UNAUTHENTICATED ...), then one per-token and
  /// one per-sandbox slot (RESOURCE_EXHAUSTED ...). Return: OK with both
  /// slots taken and the sandbox's id in @sandbox_id (give the slots back
  /// with ReleaseSlots()), or the status to end the call with.
  virtual grpc::Status Admit(const ForwardInit& init, const std::string& token,
                             std::string* sandbox_id) = 0;

  /// ReleaseSlots() - gives back the slots of a successful Admit().
  virtual void ReleaseSlots(const std::string& sandbox_id, const std::string& token) = 0;

  enum class Registration {
    kRegistered,    // *session is the sandbox's current session; claims find @call
    kWaiting,       // no session yet: @call gets OnSessionAvailable() when one registers
    kCapacity,      // the pending-relay caps are reached (protocol §2.8: 32 / 256)
    kShuttingDown,  // the gateway is stopping: end the call CANCELLED
  };
  /// RegisterRelay() - if sandbox @sandbox_id has a supervisor session and
  /// the pending-relay caps allow one more unclaimed relay, registers @call
  /// under its channel id with that session (RelayStream claims and
  /// RelayOpenResults find it from now on; it counts as pending until
  /// MarkClaimed() or Forget()) and stores the session in @session; without
  /// a session, adds @call to the sandbox's session waiters.
  virtual Registration RegisterRelay(const std::shared_ptr<ForwardCall>& call,
                                     const std::string& sandbox_id,
                                     std::shared_ptr<ControlSession>* session) = 0;

  /// Forget() - removes the call with @channel_id from the relay registry and
  /// from @sandbox_id's session waiters (later claims get NOT_FOUND).
  virtual void Forget(const std::string& channel_id, const std::string& sandbox_id) = 0;

  /// MarkClaimed() - the relay @channel_id was claimed by its RelayStream:
  /// it no longer counts against the pending-relay caps.
  virtual void MarkClaimed(const std::string& channel_id) = 0;

  /// FindRelay() - the call registered under @channel_id, or null.
  virtual std::shared_ptr<ForwardCall> FindRelay(const std::string& channel_id) const = 0;

  /// How long a call waits for a supervisor session (§2.7, 15 s by default).
  virtual std::chrono::milliseconds supervisor_wait() const = 0;
  /// How long a call waits for RelayOpenResult, and then again for the
  /// RelayStream claim (§2.7, 10 s by default).
  virtual std::chrono::milliseconds relay_claim_timeout() const = 0;
};

/// Raw: the frames are decoded with the hub's generation (wire.h).
using ForwardTcpReactor = grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>;
using RelayStreamReactor = grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>;

/// NewForwardTcpReactor() - the reactor for one ForwardTcp call (protocol §2):
/// authorization, the init frame, admission, relay open and the bridge; see
/// the theory of operation in forward_call.cc. gRPC owns the result (it
/// deletes itself in OnDone). @hub must outlive every call (the server's
/// Shutdown() waits for all reactors). Thread: the gRPC method handler.
ForwardTcpReactor* NewForwardTcpReactor(ForwardHub& hub, grpc::CallbackServerContext* ctx);

/// NewRelayStreamReactor() - the reactor for one RelayStream call (protocol
/// §3.3): reads init{channel_id} and hands the stream to the waiting
/// ForwardCall (else INVALID_ARGUMENT / NOT_FOUND "relay channel not
/// found"). Ownership and threads as NewForwardTcpReactor().
RelayStreamReactor* NewRelayStreamReactor(ForwardHub& hub, grpc::CallbackServerContext* ctx);

/// The shared state of one ForwardTcp call and, once claimed, its RelayStream:
/// an event-driven state machine (forward_call.cc). Both reactors and the
/// hub's registries hold it by shared_ptr; its own mutex guards everything.
/// The On*() methods below are the hub's events; each is thread-safe, cheap
/// and never blocks, and is a no-op in a state where it does not apply.
class ForwardCall : public std::enable_shared_from_this<ForwardCall> {
 public:
  struct Private;  // construction only through NewForwardTcpReactor()
  ForwardCall(const Private&, ForwardHub& hub, grpc::CallbackServerContext* ctx);
  ~ForwardCall();
  ForwardCall(const ForwardCall&) = delete;
  ForwardCall& operator=(const ForwardCall&) = delete;

  /// The channel id of relay_open / RelayStream init (a fresh UUIDv4).
  const std::string& channel_id() const { return channel_id_; }

  /// OnSessionAvailable() - a supervisor session for the call's sandbox
  /// registered (the call was a session waiter; it registers again).
  void OnSessionAvailable();
  /// OnRelayOpenResult() - the supervisor answered relay_open (§3.2):
  /// failure -> UNAVAILABLE with its error text (after the headers by
  /// default; trailers-only under connect-ack); success -> (connect-ack:
  /// the response headers, then) the claim wait, or the bridge if claimed.
  void OnRelayOpenResult(const openshell::v1::RelayOpenResult& result);
  /// OnSessionLost() - the session relay_open went to ended; fails the call
  /// with UNAVAILABLE "supervisor session disconnected" if the result is
  /// still outstanding.
  void OnSessionLost();
  /// OnShutdown() - the gateway is stopping: a call that still waits
  /// (session, result, claim) ends CANCELLED; bridges run on.
  void OnShutdown();

 private:
  friend class ForwardReactor;
  friend class RelayReactor;
  friend ForwardTcpReactor* NewForwardTcpReactor(ForwardHub&, grpc::CallbackServerContext*);

  enum class Phase { kReadInit, kWaitSession, kWaitResult, kWaitClaim, kBridging, kDone };

  // Reactions of the ForwardTcp reactor (any gRPC callback thread).
  void OnClientReadDone(bool ok);
  void OnClientWriteDone(bool ok);
  void OnClientCancel();
  void OnClientDone();
  // Reactions of the claimed RelayStream reactor @relay.
  bool Claim(RelayReactor* relay, grpc::CallbackServerContext* ctx);
  void OnRelayReadDone(RelayReactor* relay, bool ok);
  void OnRelayWriteDone(RelayReactor* relay, bool ok);
  void OnRelayCancel(RelayReactor* relay);
  void OnRelayDone(RelayReactor* relay);
  void OnTimer(uint64_t generation);

  // Everything below runs with mu_ held.
  void HandleInitLocked(bool ok);
  void WaitForSessionLocked();
  void SendRelayOpenLocked();
  void SendHeadersLocked();
  void StartBridgeLocked();
  void UploadReadDoneLocked(bool ok);
  bool PassThroughLocked(grpc::ByteBuffer* in, grpc::ByteBuffer* out);
  void DownloadReadDoneLocked();
  void WriteNextUploadChunkLocked();
  void WriteNextDownloadChunkLocked();
  void SendRelayFinLocked();
  void TargetFinLocked();
  void StartClientWriteLocked();
  void ClientCancelledLocked();
  void RelayLostLocked();
  void MaybeFinishOkLocked();
  void ArmTimerLocked(std::chrono::milliseconds timeout);
  void FinishRelayLocked(const grpc::Status& status);
  void FinishLocked(const grpc::Status& status);

  ForwardHub& hub_;
  grpc::CallbackServerContext* const client_ctx_;
  const std::string channel_id_;

  std::mutex mu_;
  Phase phase_ = Phase::kReadInit;                   // guarded by mu_ (all below too)
  ForwardReactor* client_ = nullptr;                 // null after its OnDone
  bool client_finished_ = false;                     // Finish() called on client_
  bool client_cancelled_seen_ = false;               // client_'s OnCancel ran
  RelayReactor* relay_ = nullptr;                    // the claimed RelayStream; null after its OnDone
  grpc::CallbackServerContext* relay_ctx_ = nullptr;
  bool claimed_ = false;
  bool relay_finished_ = false;                      // Finish() called on relay_

  const tunnel_ext::Extensions ext_;  // what this call turned on (asked and known)
  bool headers_sent_ = false;

  std::string sandbox_id_;   // the admitted sandbox's id
  std::string token_;        // trimmed
  std::string what_;         // "tcp HOST:PORT" or "ssh", for logs
  openshell::v1::RelayOpen open_;  // relay_open to send (channel id, target, service id)
  bool slots_held_ = false;
  std::shared_ptr<ControlSession> session_;  // the session relay_open went to

  std::unique_ptr<grpc::Alarm> alarm_;  // the current wait's deadline
  uint64_t alarm_generation_ = 0;       // bumped per wait; stale alarms are ignored

  // The bridge: one outstanding operation per direction and stream; a
  // received frame is forwarded as it came (PassThroughLocked), or decoded
  // and sent in chunks of at most kMaxDataFrameBytes.
  grpc::ByteBuffer client_in_;
  grpc::ByteBuffer client_out_;
  grpc::ByteBuffer relay_in_;
  grpc::ByteBuffer relay_out_;
  relay::DataFrameView frame_view_;  // scratch of PassThroughLocked (keeps its capacity)
  std::string up_buf_;     // client data not yet written to the relay
  size_t up_off_ = 0;
  std::string down_buf_;   // relay data not yet written to the client
  size_t down_off_ = 0;
  bool client_write_pending_ = false;
  bool up_fin_sent_ = false;    // the empty frame (client FIN) was written to the relay
  bool up_done_ = false;        // ... and that write completed
  bool down_fin_sent_ = false;  // fin-frame: the empty frame (target FIN) was written to the client
  bool down_done_ = false;      // the target's FIN is through (written, or held with 0.0)
};

}  // namespace osh::peers

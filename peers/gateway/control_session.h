// One supervisor control session of the mini-gateway (ConnectSupervisor,
// protocol §3.1, protocol-0.1 §4) on the gRPC callback API with raw
// (ByteBuffer) messages, decoded with the gateway's generation: no thread per
// session. See control_session.cc for the theory of operation.
#pragma once

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "openshell.pb.h"
#include "peers/common/protocol.h"
#include "peers/gateway/wire.h"

namespace osh::peers {

class ControlSession;

/// What a control session needs from the gateway (GatewayService implements
/// it). Called from the session's gRPC reactions, never with the session's
/// lock held; implementations may call ForwardCall events and ControlSession
/// methods from these.
class SessionHub {
 public:
  virtual ~SessionHub() = default;
  /// The generation the session's messages are decoded and encoded with.
  virtual Protocol protocol() const = 0;
  /// The heartbeat period announced in session_accepted and kept by the
  /// gateway (protocol §3.1: 15 s).
  virtual std::chrono::seconds heartbeat_interval() const = 0;
  /// CheckHello() - whether a session for @hello's sandbox may start.
  /// Return: OK, or the status to end the call with (NOT_FOUND "sandbox not
  /// found", UNAVAILABLE while shutting down).
  virtual grpc::Status CheckHello(const SupervisorEvent& hello) = 0;
  /// RegisterSession() - @session was accepted (session_accepted is queued
  /// first): make it its sandbox's current session (superseding an older
  /// one) and wake the ForwardTcp calls waiting for it.
  virtual void RegisterSession(const std::shared_ptr<ControlSession>& session,
                               const SupervisorEvent& hello) = 0;
  /// OnRelayOpenResult() - @session's supervisor answered a relay_open.
  virtual void OnRelayOpenResult(const std::shared_ptr<ControlSession>& session,
                                 const openshell::v1::RelayOpenResult& result) = 0;
  /// OnSessionEnded() - @session's read side ended (supervisor closed it,
  /// the stream broke, or it was cancelled): unregister it and fail the
  /// relays still waiting for its answer.
  virtual void OnSessionEnded(const std::shared_ptr<ControlSession>& session) = 0;
};

using ControlSessionReactor = grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>;

/// NewControlSessionReactor() - the reactor for one ConnectSupervisor call.
/// gRPC owns it (deleted in OnDone); @hub must outlive every call (the
/// server's Shutdown() waits for all reactors). Thread: the method handler.
ControlSessionReactor* NewControlSessionReactor(SessionHub& hub, grpc::CallbackServerContext* ctx);

/// One accepted ConnectSupervisor stream: the hub's handle on it. Writes are
/// queued and sent one at a time (session_accepted first, then relay_open
/// messages in order, and a heartbeat every heartbeat_interval).
class ControlSession : public std::enable_shared_from_this<ControlSession> {
 public:
  struct Private;  // construction only through NewControlSessionReactor()
  ControlSession(const Private&, SessionHub& hub, grpc::CallbackServerContext* ctx);
  ~ControlSession();
  ControlSession(const ControlSession&) = delete;
  ControlSession& operator=(const ControlSession&) = delete;

  /// The hello's sandbox id and the gateway's session id; set before the
  /// session is registered, constant afterwards.
  const std::string& sandbox_id() const { return sandbox_id_; }
  const std::string& session_id() const { return session_id_; }

  /// SendRelayOpen() - queues relay_open (encoded with the hub's protocol).
  /// Return: false once the session has ended or a write failed (the
  /// message is dropped). Thread: any; never blocks on the network.
  bool SendRelayOpen(const openshell::v1::RelayOpen& open);

  /// Cancel() - cancels the call (a newer session superseded it, the sandbox
  /// was removed, or shutdown). No-op once the call is done. Thread: any.
  void Cancel();

 private:
  friend class ControlReactor;
  friend ControlSessionReactor* NewControlSessionReactor(SessionHub&, grpc::CallbackServerContext*);

  // Reactions (gRPC callback threads).
  void OnReadDone(bool ok);
  void OnWriteDone(bool ok);
  void OnDone();
  void OnHeartbeatTimer();

  void HandleHello(bool ok);
  void HandleMessage();
  void EndSession();
  void StartReadLocked();
  bool EnqueueLocked(grpc::ByteBuffer msg);
  void WriteNextLocked();
  void ArmHeartbeatLocked();
  void FinishLocked(const grpc::Status& status);

  SessionHub& hub_;
  grpc::CallbackServerContext* const ctx_;
  std::string sandbox_id_;
  std::string session_id_;
  bool accepted_ = false;   // read reactions only (one read at a time)
  grpc::ByteBuffer in_;     // read reactions only

  std::mutex mu_;
  ControlSessionReactor* reactor_ = nullptr;  // mu_; null after OnDone
  bool finished_ = false;                     // mu_; Finish() called
  bool closed_ = false;                       // mu_; no more writes (ended or a write failed)
  bool write_in_flight_ = false;              // mu_
  grpc::ByteBuffer out_;                      // mu_; the write in flight
  std::deque<grpc::ByteBuffer> queue_;        // mu_
  std::unique_ptr<grpc::Alarm> heartbeat_;    // mu_
};

}  // namespace osh::peers

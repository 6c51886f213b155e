// One supervisor control session of the mini-gateway (ConnectSupervisor,
// protocol §3.1): the sync-API stream plus a writer thread that sends queued
// messages (relay_open from ForwardTcp calls) and the periodic heartbeat.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "openshell.grpc.pb.h"

namespace osh::peers {

/// One ConnectSupervisor stream. The handler thread reads; every write goes
/// through the session's writer thread, so Send() never blocks its caller
/// (a ForwardTcp reaction) on HTTP/2 flow control.
///
/// Lifecycle, all on the handler thread: construct, WriteNow(accepted),
/// StartWriter(), ... read loop ..., TryCancel the call, Close(), Detach().
/// Cancel() and Send() may be called from any thread at any time.
class ControlSession {
 public:
  using Stream = grpc::ServerReaderWriter<openshell::v1::GatewayMessage,
                                          openshell::v1::SupervisorMessage>;

  /// @ctx, @stream: the handler's call; both must stay valid until Detach()
  /// (ctx) and Close() (stream). @heartbeat_interval: period of the
  /// gateway's heartbeat (§3.1), >= 1 s.
  ControlSession(std::string sandbox_id, std::string session_id, grpc::ServerContext* ctx,
                 Stream* stream, std::chrono::seconds heartbeat_interval);
  /// Stops the writer thread if Close() was not called (it should have been).
  ~ControlSession();
  ControlSession(const ControlSession&) = delete;
  ControlSession& operator=(const ControlSession&) = delete;

  const std::string& sandbox_id() const { return sandbox_id_; }
  const std::string& session_id() const { return session_id_; }

  /// WriteNow() - writes @msg on the calling thread (session_accepted, before
  /// StartWriter()). Return: false if the stream is broken.
  /// Thread: the handler thread, before StartWriter(); blocks under flow control.
  bool WriteNow(const openshell::v1::GatewayMessage& msg);

  /// StartWriter() - starts the writer thread: queued messages in order, and
  /// a heartbeat every heartbeat_interval. Thread: the handler thread, once.
  void StartWriter();

  /// Send() - queues @msg for the writer thread (FIFO, after anything queued
  /// earlier). Return: false once the session is closed or a write failed;
  /// the message is then dropped. Thread: any; never blocks on the network.
  bool Send(openshell::v1::GatewayMessage msg);

  /// Cancel() - cancels the call (a newer session superseded it, the sandbox
  /// was removed, or shutdown). No-op after Detach(). Thread: any.
  void Cancel();

  /// Close() - refuses further Send()s, drops the queue, and stops and joins
  /// the writer thread. Call after the call was cancelled, so that a write
  /// blocked on a supervisor that stopped reading returns.
  /// Thread: the handler thread.
  void Close();

  /// Detach() - forgets the server context; call before the handler returns.
  void Detach();

 private:
  void WriterLoop();

  const std::string sandbox_id_;
  const std::string session_id_;
  Stream* const stream_;
  const std::chrono::seconds heartbeat_interval_;

  std::mutex mu_;
  std::condition_variable cv_;                          // queue_ or closed_ changed
  std::deque<openshell::v1::GatewayMessage> queue_;     // guarded by mu_
  bool closed_ = false;                                 // guarded by mu_; Send() refused
  std::thread writer_;

  std::mutex life_mu_;
  grpc::ServerContext* ctx_;  // guarded by life_mu_; null after Detach()
};

}  // namespace osh::peers

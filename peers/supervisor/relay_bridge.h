// The mini-supervisor's relays (protocol §3.2): one RelayStream callback
// reactor per relay and one event-loop thread for every target socket. See
// relay_bridge.cc for the theory of operation.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "openshell.grpc.pb.h"
#include "peers/supervisor/target_dial.h"

namespace osh::peers {

/// Where a relay reports the outcome of its dial: the control session's
/// relay_open_result message (protocol §3.2).
class OpenResultSink {
 public:
  virtual ~OpenResultSink() = default;

  /// SendOpenResult() - queues relay_open_result{@channel_id, @success,
  /// @error} on the control stream, behind the messages already queued.
  /// @written: if set, called exactly once: true once the message has been
  ///   written, false if the session ended first. It may run on any thread
  ///   (inline when the session has already ended) and must not block.
  /// Thread: any; never blocks.
  virtual void SendOpenResult(const std::string& channel_id, bool success,
                              const std::string& error,
                              std::function<void(bool written)> written) = 0;
};

/// One relay_open whose target passed validation and name resolution.
struct RelayOpenRequest {
  std::string channel_id;                   ///< RelayOpen.channel_id
  std::string where;                        ///< "host:port", for log lines
  std::vector<TargetAddress> addresses;     ///< dialled in this order
  std::shared_ptr<OpenResultSink> results;  ///< gets the relay_open_result
};

class RelayBridgeCore;

/// Every relay of one supervisor: dials targets without blocking, sends the
/// relay_open_result, opens the RelayStream and bridges it to the target
/// socket: dials, epoll and endings on one event-loop thread, each frame's
/// target I/O inline in gRPC's callback reactions (a mutex per relay).
///
/// Lifecycle: construct, Start(), Open()..., Shutdown() (the destructor
/// shuts down too). Not copyable or movable.
class RelayBridge {
 public:
  /// RelayBridge() - creates the event loop (no thread yet).
  /// @channel: carries the RelayStream calls (raw frames, relay_bridge.cc).
  /// @throws std::system_error if epoll or eventfd cannot be created.
  explicit RelayBridge(std::shared_ptr<grpc::ChannelInterface> channel);
  /// Calls Shutdown().
  ~RelayBridge();
  RelayBridge(const RelayBridge&) = delete;
  RelayBridge& operator=(const RelayBridge&) = delete;

  /// Start() - starts the event-loop thread. @throws std::runtime_error if
  /// already started or shut down. Thread: any.
  void Start();

  /// Open() - hands @request to the event loop, which dials the target and
  /// reports the outcome through @request.results (success: then the
  /// RelayStream follows once the result has been written). Dropped once
  /// Shutdown() has begun. Thread: any; never blocks on the loop.
  void Open(RelayOpenRequest request);

  /// Shutdown() - abandons dials and pending results (their sockets are
  /// reset), cancels every RelayStream, waits until every reactor's OnDone
  /// has been handled and its socket closed (SO_LINGER 0: the target sees an
  /// RST), then stops the event-loop thread. Idempotent. Thread: any except
  /// the loop thread and gRPC's callback threads.
  void Shutdown();

 private:
  std::unique_ptr<RelayBridgeCore> core_;
  std::mutex shutdown_mu_;  // serializes Start() and Shutdown()
  bool started_ = false;    // shutdown_mu_
  bool shut_down_ = false;  // shutdown_mu_
};

}  // namespace osh::peers

// The mini-supervisor: the sandbox side of the OpenShell relay protocol
// (protocol §3): keeps the ConnectSupervisor session to a gateway, dials
// loopback targets on RelayOpen and bridges them over RelayStream.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "peers/common/protocol.h"

namespace osh::peers {

/// Configuration of a MiniSupervisor.
struct SupervisorConfig {
  /// Gateway endpoint URL "http://HOST:PORT" (protocol §4.1; plaintext h2c).
  std::string gateway_endpoint;
  /// The sandbox id sent in SupervisorHello (protocol §1.6).
  std::string sandbox_id;
  /// The wire generation of the ConnectSupervisor session (protocol-0.1 §4):
  /// 0.1 sends SupervisorHello with connection_epoch (1 on the first
  /// connection, +1 per reconnect) and reads SessionAccepted's
  /// heartbeat_interval Duration; 0.0 reads heartbeat_interval_secs.
  Protocol protocol = kDefaultProtocol;
  /// Where SSH-target relays (and relays without a target) are dialled,
  /// "HOST:PORT" or "[V6]:PORT"; upstream uses its embedded SSH server (§3.2),
  /// here a real sshd.
  std::string ssh_target = "127.0.0.1:22";
  /// SupervisorHello.instance_id; empty picks a random UUIDv4.
  std::string instance_id;
  /// Reconnect backoff: first delay, doubled after every failed attempt up to
  /// max_backoff, reset after a session was accepted (protocol §3.1: 1 s..30 s).
  std::chrono::milliseconds initial_backoff{1000};
  std::chrono::milliseconds max_backoff{30000};
  /// Ceiling of every relay's buffers together, bytes (--max-buffer-mib; 0 =
  /// none, the default): the channel's gRPC memory quota, which shrinks the
  /// HTTP/2 receive windows of the relays (uploads towards targets) as unread
  /// data fills it, and cancels relays when exhausted (docs/ARCHITECTURE.md
  /// "Memory bounds").
  size_t max_buffer_bytes = 0;
};

/// A supervisor for one sandbox. One gRPC channel carries the control
/// session and every RelayStream (one HTTP/2 connection, protocol §3.1).
/// See mini_supervisor.cc for the theory of operation.
///
/// Lifecycle: construct, Start(), ..., Stop() (the destructor stops too).
/// Not copyable or movable. All public methods are thread-safe.
class MiniSupervisor {
 public:
  /// Checks @config and creates the channel (no connection yet).
  /// @throws std::invalid_argument for a bad endpoint URL, an empty sandbox
  /// id, a malformed ssh_target or a non-positive backoff.
  explicit MiniSupervisor(SupervisorConfig config);
  /// Calls Stop().
  ~MiniSupervisor();
  MiniSupervisor(const MiniSupervisor&) = delete;
  MiniSupervisor& operator=(const MiniSupervisor&) = delete;

  /// Start() - starts the session thread (connect, hello, heartbeats,
  /// relays, reconnect with backoff). Returns at once; the session comes up
  /// asynchronously. @throws std::runtime_error if already started or
  /// stopped.
  void Start();

  /// Stop() - cancels the control session and every relay (targets see an
  /// RST), waits until every relay's reactor is done, joins all threads.
  /// Idempotent. Thread: any except the
  /// supervisor's own threads.
  void Stop();

  /// session_active() - true while a control session is accepted and has
  /// not ended.
  bool session_active() const;

  /// sessions_accepted() - how many control sessions the gateway accepted
  /// since Start() (grows by one per reconnect).
  uint64_t sessions_accepted() const;

  /// instance_id() - the instance id sent in every hello.
  std::string instance_id() const;

  /// heartbeat_secs() - the heartbeat period in seconds of the last accepted
  /// session: the gateway's interval (0.0 heartbeat_interval_secs, 0.1 the
  /// heartbeat_interval Duration, rounded up), at least 5; 0 before the
  /// first session.
  uint32_t heartbeat_secs() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace osh::peers

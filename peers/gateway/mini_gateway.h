// The mini-gateway: a small in-process implementation of the OpenShell
// gateway's sandbox, SSH-session, ForwardTcp and supervisor-relay RPCs
// (protocol §1-§3), for tests, benchmarks and local demos.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "peers/gateway/gateway_config.h"

namespace osh::peers {

/// A running (or startable) mini-gateway gRPC server (h2c, or TLS with
/// optional mTLS and a bearer token) speaking one wire generation
/// (GatewayConfig::protocol). Every RPC but Health runs on the gRPC callback
/// API (no thread per call or stream). By default it behaves like upstream;
/// the extensions of common/tunnel_ext.h only when a call asks. See
/// mini_gateway.cc and forward_call.cc for the theory of operation and
/// peers/README.md for the generations and the extensions.
///
/// Lifecycle: construct, Start(), ... , Shutdown() (the destructor shuts down
/// too). Not copyable or movable. All public methods are thread-safe.
class MiniGateway {
 public:
  /// Validates @config (ValidateGatewayConfig()); does not listen yet.
  /// @throws std::invalid_argument on an invalid config.
  explicit MiniGateway(GatewayConfig config);
  /// Shuts the server down (zero grace) if it is still running.
  ~MiniGateway();
  MiniGateway(const MiniGateway&) = delete;
  MiniGateway& operator=(const MiniGateway&) = delete;

  /// Start() - binds config.listen (and config.supervisor_listen) and starts
  /// serving. With port 0 the kernel picks a free port; read it with port().
  /// @throws std::runtime_error if an address cannot be bound, or Start()
  /// was already called; std::invalid_argument if a TLS file cannot be read. Thread: any; returns once the server accepts calls.
  void Start();

  /// port() - the bound TCP port (valid after Start(), else 0).
  uint16_t port() const;

  /// supervisor_port() - the bound port of config.supervisor_listen (valid
  /// after Start(); 0 when there is no supervisor listener).
  uint16_t supervisor_port() const;

  /// bound_address() - "HOST:PORT" with the listen host and the bound port,
  /// e.g. "127.0.0.1:40123" or "[::]:17670" (empty before Start()).
  std::string bound_address() const;

  /// IsSupervisorConnected() - whether a supervisor session for the sandbox
  /// with id @sandbox_id is registered, i.e. whether ListSandboxes would say
  /// SANDBOX_PHASE_READY for it (protocol §1.3 "What Ready means").
  bool IsSupervisorConnected(const std::string& sandbox_id) const;

  /// SetSandboxes() - replaces the declared sandboxes (the binary does it on
  /// SIGHUP from --config). Removed sandboxes lose their supervisor session
  /// and become NOT_FOUND; new ones are PROVISIONING until a supervisor
  /// connects. @throws std::logic_error before Start(). Thread: any.
  void SetSandboxes(const std::vector<SandboxDecl>& sandboxes);

  /// Shutdown() - stops accepting calls, cancels the supervisor control
  /// sessions, lets running ForwardTcp streams drain for up to @grace, then
  /// cancels whatever is left and waits for every handler to return.
  /// Idempotent. Thread: any except a gRPC handler thread of this server.
  void Shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace osh::peers

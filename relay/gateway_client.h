// Control-plane client of the OpenShell gateway: one gRPC channel (h2c or
// TLS) and the unary RPCs the tunnel needs. No gRPC type in this header.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "relay/endpoint.h"

namespace osh::relay {

/// A gRPC status, without gRPC types: code is grpc::StatusCode's value.
struct CallStatus {
  int code = 0;
  std::string message;
  bool ok() const { return code == 0; }
  /// "UNAVAILABLE: failed to connect ..." style text for users.
  std::string to_string() const;
};

/// What the tunnel needs to know about a sandbox (protocol §1.3).
struct SandboxInfo {
  std::string id;    ///< ObjectMeta.id (UUID): what ForwardTcp takes
  std::string name;  ///< ObjectMeta.name: what DNS names use
  int phase = 0;     ///< SandboxPhase; status.phase, or the legacy field 4
  bool ready() const { return phase == 2; }
};

struct SshSession {
  std::string token;
  int64_t expires_at_ms = 0;
};

struct GatewayOptions {
  Endpoint endpoint;
  std::chrono::milliseconds rpc_timeout{5000};
};

/// Thread-safe: every method may be called from any thread; calls block up
/// to rpc_timeout. Errors come back as CallStatus, never as exceptions.
class GatewayClient {
 public:
  explicit GatewayClient(GatewayOptions opts);
  ~GatewayClient();

  /// Health (protocol §1.5); `version` receives the gateway's version.
  CallStatus health(std::string* version);
  /// ListSandboxes, all pages (limit 1000 per page, protocol §1.3).
  CallStatus list_sandboxes(std::vector<SandboxInfo>* out);
  /// CreateSshSession: a token for ForwardTcp (protocol §1.4).
  CallStatus create_ssh_session(const std::string& sandbox_id, SshSession* out);
  /// RevokeSshSession; revoking an unknown token is not an error.
  CallStatus revoke_ssh_session(const std::string& token);

  const GatewayOptions& options() const { return opts_; }

  struct Impl;  ///< relay-internal (gateway_client_impl.h)
  Impl& impl() { return *impl_; }

 private:
  GatewayOptions opts_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace osh::relay

// Control-plane client of the OpenShell gateway: one gRPC channel (h2c, TLS or
// mTLS, optionally a bearer token) and the unary RPCs the tunnel needs. No
// gRPC type in this header.
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

/// How to reach and authenticate to the gateway (protocol §4.2, §4.3).
/// cli/gateway_config resolves these from flags, environment and the
/// OpenShell config files; the relay only uses them.
struct GatewayOptions {
  Endpoint endpoint;
  std::chrono::milliseconds rpc_timeout{5000};
  /// ListSandboxesRequest.workspace ("" = the gateway's default, §1.3).
  std::string workspace;

  // TLS, https endpoints only (ignored for http://, which is h2c).
  /// PEM trust anchors for the server certificate; "" = the system roots.
  std::string ca_pem;
  /// PEM client certificate chain and its private key: mTLS identity.
  /// Both or neither.
  std::string client_cert_pem;
  std::string client_key_pem;
  /// Accept any server certificate, present no client certificate
  /// (OPENSHELL_GATEWAY_INSECURE, protocol §4.2 "Insecure mode").
  bool insecure_tls = false;
  /// Name the server certificate must match; "" = the endpoint's host
  /// (upstream's rule, §4.2). IP literals match IP SANs.
  std::string tls_server_name;

  /// Sent as "authorization: Bearer <token>" on every call, ForwardTcp
  /// streams included (§4.3); "" = no authorization header.
  std::string bearer_token;

  /// Where the material came from, for error messages only ("" = not set):
  /// e.g. "/home/u/.config/openshell/gateways/g/mtls/ca.crt".
  std::string ca_source;
  std::string client_cert_source;
  std::string token_source;
};

/// describe_failure() - one line for users about a failed control call
/// (Health, ListSandboxes, ...): what went wrong and what to check.
/// Recognizes, from gRPC's status text: a server certificate that the CA does
/// not verify ("TLS handshake with <endpoint> failed: certificate verify
/// failed (is the CA in <ca_source> right?)"), a gateway that requires a client
/// certificate, a TLS/h2c mismatch, an unreachable gateway, and UNAUTHENTICATED
/// (bad or missing bearer token). Anything else: "<endpoint>: CODE: message".
/// No trailing newline. Thread: any.
std::string describe_failure(const CallStatus& status, const GatewayOptions& opts);
/// Same, when only the endpoint is known (no hints about files).
std::string describe_failure(const CallStatus& status, const Endpoint& endpoint);

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
  /// GetSandbox by name (protocol §1.1); NOT_FOUND when there is none.
  CallStatus get_sandbox(const std::string& name, SandboxInfo* out);
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

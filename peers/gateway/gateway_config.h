// Configuration of the mini-gateway: declared sandboxes, limits and timeouts.
// Defaults are upstream's (protocol §1.4, §2.7, §2.8, §3.1).
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace osh::peers {

/// One declared sandbox. @id is ObjectMeta.id (what ForwardTcp,
/// CreateSshSession and SupervisorHello carry); @name is the GetSandbox key
/// (protocol §1.3).
struct SandboxDecl {
  std::string name;
  std::string id;
};

/// Everything the mini-gateway can be configured with.
struct GatewayConfig {
  /// Listen address "HOST:PORT" or "[V6]:PORT"; port 0 picks a free port.
  std::string listen = "0.0.0.0:17670";
  std::vector<SandboxDecl> sandboxes;
  /// Concurrent ForwardTcp streams per SSH-session token (protocol §2.8).
  int max_streams_per_token = 3;
  /// Concurrent ForwardTcp streams per sandbox, all target kinds (§2.8).
  int max_streams_per_sandbox = 20;
  /// How long ForwardTcp waits for a live supervisor session (§2.7: 15 s).
  std::chrono::milliseconds supervisor_wait{15000};
  /// How long ForwardTcp waits for RelayOpenResult, and then again for the
  /// RelayStream claim (§2.7: 10 s).
  std::chrono::milliseconds relay_claim_timeout{10000};
  /// SSH-session token lifetime (the flag and JSON key are in seconds);
  /// 0 means "never expires" (expires_at_ms 0, §1.4).
  std::chrono::milliseconds token_ttl{std::chrono::seconds(86400)};
  /// Gateway heartbeat period on ConnectSupervisor, sent in SessionAccepted (§3.1).
  std::chrono::seconds heartbeat_interval{15};
  /// HealthResponse.version (§1.5).
  std::string version = "mini-gateway 0.1.0";
  /// Test hook: append every minted SSH-session token to this file, so a
  /// test can check that no log anywhere contains one. "" = off.
  std::string record_tokens_file;

  // ---- transport security and client authentication (protocol §4.2, §4.3) ----

  /// PEM server certificate chain and private key files: serve TLS (ALPN h2)
  /// on `listen`. Both or neither; "" = plaintext h2c.
  std::string tls_cert_file;
  std::string tls_key_file;
  /// PEM CA bundle file: require a client certificate signed by it on the TLS
  /// listener (mTLS; upstream's require_client_auth). Needs TLS.
  std::string client_ca_file;
  /// When set, every client method except Health needs the metadata
  /// "authorization: Bearer <bearer_token>" (protocol §2.3: missing ->
  /// UNAUTHENTICATED "missing authorization header", wrong -> UNAUTHENTICATED
  /// "invalid token"). The supervisor methods (ConnectSupervisor,
  /// RelayStream) are exempt: the sandbox principal is out of scope here.
  std::string bearer_token;
  /// Optional second, plaintext listen address "HOST:PORT" for supervisors
  /// (the mini-supervisor speaks h2c only). When `listen` serves TLS, client
  /// methods called through this address fail UNAUTHENTICATED, so it cannot
  /// be used to bypass TLS or mTLS. "" = none.
  std::string supervisor_listen;
};

/// ParseSandboxFlag() - parses a "--sandbox NAME=ID" value.
/// Return: the declaration. @throws std::invalid_argument if there is no '='
/// or either side is empty. Thread: any.
SandboxDecl ParseSandboxFlag(std::string_view text);

/// ApplyGatewayConfigJson() - overlays a JSON config document on @config.
/// @json_text: {"sandboxes":[{"name":"demo","id":"..."}],
///   "max_streams_per_token":3, "max_streams_per_sandbox":20}; also accepted:
///   "listen", "supervisor_wait_ms", "relay_claim_timeout_ms",
///   "token_ttl_secs", "version", "tls_cert", "tls_key", "client_ca",
///   "bearer_token", "supervisor_listen". Keys that are present replace the value in
///   @config; "sandboxes" entries are appended.
/// @throws std::invalid_argument on malformed JSON, an unknown key or a value
/// of the wrong type. Thread: any.
void ApplyGatewayConfigJson(std::string_view json_text, GatewayConfig& config);

/// LoadGatewayConfigFile() - reads @path and calls ApplyGatewayConfigJson().
/// @throws std::invalid_argument if the file cannot be read or is invalid
/// (the message names the file). Thread: any.
void LoadGatewayConfigFile(const std::string& path, GatewayConfig& config);

/// ValidateGatewayConfig() - checks @config before the gateway starts: a
/// parsable listen address, non-empty and unique sandbox names and ids,
/// limits >= 1, non-negative timeouts, heartbeat >= 1 s; TLS certificate and
/// key given together, a client CA only with TLS, a bearer token of visible
/// ASCII only (it travels in an HTTP/2 header), a parsable supervisor_listen.
/// Files are not read here (see ReadPemFile()).
/// @throws std::invalid_argument describing the first problem. Thread: any.
void ValidateGatewayConfig(const GatewayConfig& config);

/// ReadPemFile() - reads a PEM file for the TLS options.
/// @path: the file; @what: the flag it came from, for the message
/// ("--tls-cert"). Return: the file's text.
/// @throws std::invalid_argument "--tls-cert 'PATH': cannot read: <errno text>"
/// or "... : no PEM block (-----BEGIN ...) found". Thread: any.
std::string ReadPemFile(const std::string& path, const char* what);

}  // namespace osh::peers

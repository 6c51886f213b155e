// Configuration of the mini-gateway: declared sandboxes, limits and timeouts.
// Defaults are upstream's (protocol §1.4, §2.7, §2.8, §3.1).
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "peers/common/protocol.h"

namespace osh::peers {

/// The workspace of a sandbox declared without one (protocol-0.1 §3: named
/// explicitly by 0.1 clients; an empty 0.0 workspace means it too).
inline constexpr char kDefaultWorkspace[] = "default";

/// One declared sandbox. @id is ObjectMeta.id (0.0: what ForwardTcp and
/// CreateSshSession address; both generations: SupervisorHello.sandbox_id);
/// @name is unique within @workspace and is how 0.1 clients address it
/// (protocol-0.1 §3), and how GetSandbox finds it in both generations.
struct SandboxDecl {
  std::string name;
  std::string id;
  std::string workspace = kDefaultWorkspace;
  /// A fixed SandboxPhase value (the enum's numbers; 9 = COMPLETED needs the
  /// 0.1 generation), or 0: derived from the supervisor session (READY while
  /// one is connected, else PROVISIONING; protocol §1.3).
  int phase = 0;
  /// OpenSSH "SHA256:..." host key fingerprint of the sandbox's sshd, sent in
  /// CreateSshSessionResponse.host_key_fingerprint (7) and, with 0.1, in
  /// Sandbox.host_key_fingerprint (6). "" = none (upstream 0.0 leaves it empty).
  std::string host_key_fingerprint;
};

/// An optional global rate limit on client calls (protocol-0.1 §3: upstream's
/// global limiter, RESOURCE_EXHAUSTED "gRPC rate limit exceeded"): at most
/// @count calls per @period, as a token bucket of @count tokens refilled
/// continuously. @count 0 = off.
struct RateLimit {
  int count = 0;
  std::chrono::milliseconds period{1000};
};

/// Everything the mini-gateway can be configured with.
struct GatewayConfig {
  /// Listen address "HOST:PORT" or "[V6]:PORT"; port 0 picks a free port.
  std::string listen = "0.0.0.0:17670";
  /// Which generation's messages every generation-dependent call uses.
  Protocol protocol = kDefaultProtocol;
  /// Offer the project's ForwardTcp extensions (common/tunnel_ext.h) to
  /// calls that ask for them. Off by default: the gateway then ignores the
  /// x-osh-tunnel-ext metadata, exactly as upstream does, and a tunnel that
  /// asks falls back to upstream behaviour (settle window, OK ends).
  bool tunnel_extensions = false;
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
  /// Unclaimed (pending) relays allowed per sandbox and in all (protocol
  /// §2.8: 32 and 256); over either -> UNAVAILABLE "supervisor relay failed:
  /// relay capacity reached".
  int max_pending_relays_per_sandbox = 32;
  int max_pending_relays = 256;
  /// Ceiling of the buffers of every stream together, bytes (--max-buffer-mib,
  /// JSON "max_buffer_mib"; 0 = none, the default): the server's gRPC memory
  /// quota, which shrinks the HTTP/2 receive windows of all calls (ForwardTcp
  /// uploads, RelayStream downloads) as unread data fills it, and cancels
  /// calls when exhausted (docs/ARCHITECTURE.md "Memory bounds").
  size_t max_buffer_bytes = 0;
  /// Global rate limit on client calls (off by default).
  RateLimit rate_limit;
  /// Gateway heartbeat period on ConnectSupervisor, sent in SessionAccepted
  /// (§3.1; 0.0: heartbeat_interval_secs, 0.1: the heartbeat_interval Duration).
  std::chrono::seconds heartbeat_interval{15};
  /// HealthResponse.version (§1.5); "" = DefaultHealthVersion(protocol).
  std::string version;
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

/// ParseSandboxFlag() - parses a "--sandbox NAME=ID[@WORKSPACE]" value.
/// Return: the declaration (workspace "default" when not given).
/// @throws std::invalid_argument if there is no '=' or a part is empty.
/// Thread: any.
SandboxDecl ParseSandboxFlag(std::string_view text);

/// GenerateSandboxes() - @count cheap declarations for tests of paging:
/// names "<prefix>-<n>" (n zero-padded to the width of count-1), ids UUIDv4-
/// shaped and derived from @prefix, @workspace and n, in @workspace.
/// @throws std::invalid_argument for an empty prefix or workspace, or a
/// count outside 1..100000. Thread: any.
std::vector<SandboxDecl> GenerateSandboxes(std::string_view prefix, int count,
                                           std::string_view workspace = kDefaultWorkspace);

/// ParseGenerateFlag() - parses "--generate-sandboxes PREFIX:COUNT[@WORKSPACE]"
/// and calls GenerateSandboxes(). @throws std::invalid_argument. Thread: any.
std::vector<SandboxDecl> ParseGenerateFlag(std::string_view text);

/// ParseSandboxPhase() - a SandboxPhase by name ("READY", "completed",
/// "SANDBOX_PHASE_ERROR") or number (0..9); "auto" or "" is 0 (derived from
/// the supervisor session). @throws std::invalid_argument. Thread: any.
int ParseSandboxPhase(std::string_view text);

/// ParseRateLimit() - parses "N/SECONDS" (e.g. "100/1", "5/0.5"); "off" or
/// "0" is no limit. @throws std::invalid_argument. Thread: any.
RateLimit ParseRateLimit(std::string_view text);

/// HostKeyFingerprint() - @value is either an OpenSSH fingerprint
/// "SHA256:<base64>" (returned as is) or the path of an OpenSSH public key
/// file ("ssh-ed25519 AAAA... comment", e.g. /etc/ssh/ssh_host_ed25519_key.pub),
/// whose fingerprint is computed as ssh-keygen -l does: "SHA256:" + unpadded
/// base64 of SHA-256 over the decoded key blob.
/// @throws std::invalid_argument if the file cannot be read or parsed.
/// Thread: any.
std::string HostKeyFingerprint(const std::string& value);

/// ApplyPerSandboxFlag() - applies a "NAME=VALUE" flag to the declared
/// sandboxes named NAME (in any workspace; "*" = every sandbox) with @apply.
/// @flag names the flag in messages. @throws std::invalid_argument for a
/// malformed value or a NAME that matches nothing. Thread: any.
void ApplyPerSandboxFlag(std::string_view text, const char* flag, std::vector<SandboxDecl>& sandboxes,
                         void (*apply)(SandboxDecl&, const std::string& value));

/// ApplyGatewayConfigJson() - overlays a JSON config document on @config.
/// @json_text: {"protocol":"0.1", "sandboxes":[{"name":"demo","id":"...",
///   "workspace":"default", "phase":"READY", "host_key_fingerprint":"SHA256:..."
///   or "host_key_file":"/path/key.pub"}], "generate_sandboxes":[{"prefix":"sb",
///   "count":150, "workspace":"default"}], "max_streams_per_token":3,
///   "max_streams_per_sandbox":20}; also accepted: "listen",
///   "supervisor_wait_ms", "relay_claim_timeout_ms", "token_ttl_secs",
///   "version", "rate_limit" ("N/SECONDS"), "max_pending_relays_per_sandbox",
///   "max_pending_relays", "tls_cert", "tls_key", "client_ca",
///   "bearer_token", "supervisor_listen". Keys that are present replace the
///   value in @config; "sandboxes" and generated entries are appended.
/// @throws std::invalid_argument on malformed JSON, an unknown key or a value
/// of the wrong type. Thread: any.
void ApplyGatewayConfigJson(std::string_view json_text, GatewayConfig& config);

/// LoadGatewayConfigFile() - reads @path and calls ApplyGatewayConfigJson().
/// @throws std::invalid_argument if the file cannot be read or is invalid
/// (the message names the file). Thread: any.
void LoadGatewayConfigFile(const std::string& path, GatewayConfig& config);

/// ValidateGatewayConfig() - checks @config before the gateway starts: a
/// parsable listen address, non-empty sandbox names, ids and workspaces,
/// names unique per workspace and ids unique, phases 0..8 (0..9 with 0.1),
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

// Control-plane client of the OpenShell gateway: one gRPC channel (h2c, TLS or
// mTLS, optionally a bearer token) and the unary RPCs the tunnel needs. No
// gRPC type in this header.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "relay/endpoint.h"

namespace osh::relay {

/// A gRPC status, without gRPC types: code is grpc::StatusCode's value.
struct CallStatus {
  int code = 0;
  std::string message;
  bool ok() const { return code == 0; }
  /// True for NOT_FOUND (e.g. GetSandbox of a name the gateway does not know).
  bool not_found() const;
  /// "UNAVAILABLE: failed to connect ..." style text for users.
  std::string to_string() const;
};

/// The two generations of upstream's client wire (openshell-protocol.md is
/// 0.0.11x, openshell-protocol-0.1.md is 0.1.x). One gateway speaks exactly
/// one; GatewayClient detects which from Health (protocol-0.1 §2) and uses
/// that encoding for every call.
enum class Generation {
  kUnknown,  ///< not detected yet (no successful health() so far)
  k0_0,      ///< 0.0.x: sandboxes addressed by UUID, offsets, *_ms times
  k0_1,      ///< 0.1.x: name + workspace selector, page tokens, Timestamps
};
/// "0.0", "0.1" or "unknown".
const char* to_string(Generation g);

/// generation_from_version() - the generation a Health version string names
/// (protocol-0.1 §2): major.minor 0.0 -> k0_0, 0.1 or later -> k0_1; "0.0.0"
/// (a build without git metadata), an empty or unparseable string ->
/// kUnknown (the caller probes). Accepts "0.1.6-dev.3+gabc", "v0.1.5" and
/// "openshell 0.0.111"-style prefixes. Thread: any.
Generation generation_from_version(std::string_view version);

/// Upstream's SandboxPhase values the tunnel looks at (both generations).
enum SandboxPhaseValue : int {
  kPhaseReady = 2,
  kPhaseError = 3,
  kPhaseCompleted = 9,  ///< 0.1 only
};

/// "READY", "COMPLETED", ...: a SandboxPhase value's name without the
/// SANDBOX_PHASE_ prefix (both generations; unknown values: "UNKNOWN").
const char* phase_name(int phase);

/// What the tunnel needs to know about a sandbox (protocol §1.3, 0.1 §3).
struct SandboxInfo {
  std::string id;    ///< ObjectMeta.id (UUID): what 0.0's ForwardTcp takes
  std::string name;  ///< ObjectMeta.name: DNS names, and what 0.1's calls take
  int phase = 0;     ///< SandboxPhase; status.phase, or the legacy field 4
  /// Sandbox.host_key_fingerprint (0.1, "SHA256:..."; "" when not given).
  std::string host_key_fingerprint;
  bool ready() const { return phase == kPhaseReady; }
  /// Whether the gateway may accept a ForwardTcp for it: READY, or (0.1's
  /// readiness gate, protocol-0.1 §3 CreateSshSession) COMPLETED or ERROR
  /// with a live supervisor session, which only the gateway knows, so the
  /// tunnel tries and maps FAILED_PRECONDITION to EHOSTUNREACH.
  bool may_be_reachable() const {
    return phase == kPhaseReady || phase == kPhaseCompleted || phase == kPhaseError;
  }
};

struct SshSession {
  std::string token;
  /// Expiry, ms since the Unix epoch; 0 = none. 0.0: expires_at_ms; 0.1:
  /// expiration_time (a Timestamp; absent = no expiry).
  int64_t expires_at_ms = 0;
  /// CreateSshSessionResponse.host_key_fingerprint ("" when not given).
  std::string host_key_fingerprint;
};

/// Which sandbox a token or a stream is for: 0.0 addresses it by `id`, 0.1
/// by `name` in the client's workspace (protocol-0.1 §3).
struct SandboxRef {
  std::string id;
  std::string name;
};

/// How to reach and authenticate to the gateway (protocol §4.2, §4.3).
/// cli/gateway_config resolves these from flags, environment and the
/// OpenShell config files; the relay only uses them.
/// Receive limits per call (issue 14.8, docs/THREAT_MODEL.md "Gateway"):
/// each call accepts what it can legitimately get, not one channel-wide
/// 4 MiB. Enforced by gRPC (a per-method service config; a larger message
/// fails the call with RESOURCE_EXHAUSTED before it is buffered whole).
/// ForwardTcp frame: upstream sends at most 64 KiB of data per frame, plus
/// the frame's own encoding; 1 KiB of slack.
inline constexpr size_t kMaxForwardFrameBytes = (64u << 10) + 1024;
/// One sandbox record in a list page or GetSandbox answer: an assumption
/// (the records the tunnel reads carry id, name, phase and a small spec).
inline constexpr size_t kMaxSandboxRecordBytes = 16u << 10;
/// Health, CreateSshSession, RevokeSshSession answers.
inline constexpr size_t kMaxSmallAnswerBytes = 64u << 10;
/// max_list_page_bytes() - the receive limit of one ListSandboxes page of
/// @page_size records (clamped to upstream's 1..1000): one record bound each,
/// plus one for the page's own fields (page token, paging info).
inline size_t max_list_page_bytes(uint32_t page_size) {
  const size_t n = page_size < 1 ? 1 : page_size > 1000 ? 1000 : page_size;
  return (n + 1) * kMaxSandboxRecordBytes;
}

/// What carries the ForwardTcp streams (the unary calls always use grpc++).
enum class ForwardTransport {
  kGrpc,  ///< grpc++'s channel: every stream gets the transport-wide window (>= 4 MiB)
  kH2,    ///< the relay's own HTTP/2 channel (relay/h2_channel.h): a window per stream
};
/// "grpc" or "h2".
const char* to_string(ForwardTransport t);

struct GatewayOptions {
  Endpoint endpoint;
  std::chrono::milliseconds rpc_timeout{5000};
  /// The workspace every workspace-scoped call names (--workspace,
  /// OPENSHELL_WORKSPACE; "" is sent as "default", which 0.1 requires
  /// explicitly and 0.0 assumes).
  std::string workspace = "default";
  /// Force a generation instead of detecting it (kUnknown = detect).
  Generation force_generation = Generation::kUnknown;
  /// ListSandboxes page size (both generations; upstream coerces more than
  /// 1000 to 1000, protocol-0.1 §3).
  uint32_t list_page_size = 1000;
  /// The channel's gRPC ResourceQuota, bytes; 0 = none (gRPC's default).
  /// `up` and `forward` set it to ForwardOptions::max_buffer_bytes
  /// (--max-buffer-mib; docs/ARCHITECTURE.md "Memory bounds").
  size_t grpc_memory_quota = 0;
  /// What carries the ForwardTcp streams (--forward-transport,
  /// docs/ARCHITECTURE.md "Memory bounds").
  ForwardTransport forward_transport = ForwardTransport::kGrpc;
  /// kH2 only: a stream's receive window when it starts and the most it
  /// grows to, bytes (h2::ChannelOptions); the connection's window is
  /// grpc_memory_quota when set, else 256 MiB.
  uint32_t h2_stream_window = 256u << 10;
  uint32_t h2_stream_window_max = 32u << 20;  // h2::ChannelOptions::stream_window_max

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
  /// Where bearer_token came from, when it is an OIDC token file
  /// (<config>/gateways/<name>/oidc_token.json): the openshell CLI rewrites
  /// it on refresh, so the client re-reads it when its modification time
  /// changes (checked at most once a second) and takes the token that
  /// parse_bearer_token_file returns for the new text. "" = the token is
  /// fixed for the client's life.
  std::string bearer_token_file;
  /// The uid that must own bearer_token_file when it is re-read (the
  /// served user; cli GatewayFlags::files_owner): a file that now belongs
  /// to someone else (swapped for a symlink to another user's token) is
  /// ignored with a warning and the previous token kept. nullopt = any.
  std::optional<uid_t> bearer_token_file_owner;
  /// Returns the bearer token in the file's text, or "" when the text holds
  /// no usable token (the previous token is then kept and a warning logged).
  /// Called on whichever thread starts a call; must not throw.
  std::function<std::string(const std::string& text)> parse_bearer_token_file;

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

  /// Health (protocol §1.5, unchanged in 0.1); `version` receives the
  /// gateway's version. Each successful call also (re)detects the
  /// generation (protocol-0.1 §2): from the version, or, when that is 0.0.0
  /// or unparseable, with an empty ListSandboxes (0.0 lists, 0.1 answers
  /// INVALID_ARGUMENT "workspace_scope is required"). A probe that answers
  /// neither (UNAUTHENTICATED, ...) leaves the generation unknown and is
  /// returned as the error. With options().force_generation set, no probe.
  CallStatus health(std::string* version);
  /// The generation in use; kUnknown before the first successful health().
  /// The calls below that depend on it run health() first while it is
  /// unknown, and return its failure if detection fails.
  Generation generation() const;
  /// ListSandboxes, all pages: 0.0 by offset (limit 1000), 0.1 by page
  /// token (page_size 1000), in options().workspace.
  CallStatus list_sandboxes(std::vector<SandboxInfo>* out);
  /// GetSandbox by name (protocol §1.1); NOT_FOUND when there is none.
  CallStatus get_sandbox(const std::string& name, SandboxInfo* out);
  /// CreateSshSession: a token for ForwardTcp (protocol §1.4; 0.1: by name
  /// in the workspace).
  CallStatus create_ssh_session(const SandboxRef& sandbox, SshSession* out);
  /// RevokeSshSession. Revoking an unknown token is not an error: 0.1 asks
  /// with allow_missing and takes COMPLETED and ALREADY_ABSENT as done
  /// (anything else, UNSPECIFIED included, is an error); 0.0 ignores
  /// `revoked`.
  CallStatus revoke_ssh_session(const std::string& token);

  const GatewayOptions& options() const { return opts_; }

  /// set_bearer_token() - replaces the bearer token (and the OIDC token file
  /// it is re-read from, with its parser; GatewayOptions::bearer_token*) used
  /// from the next call or ForwardTcp stream on; streams already open keep
  /// theirs. For `up`'s SIGHUP reload (cli/up.cc): everything else in
  /// options() is fixed for the client's life (a new endpoint, TLS material
  /// or workspace needs a new client). @token "" = no authorization header.
  /// Returns whether the header changed. Thread: any.
  bool set_bearer_token(const std::string& token, const std::string& token_file,
                        std::function<std::string(const std::string&)> parse_token_file);

  struct Impl;  ///< relay-internal (gateway_client_impl.h)
  Impl& impl() { return *impl_; }

 private:
  /// The empty-ListSandboxes probe of protocol-0.1 §2.
  CallStatus probe_generation(Generation* out);
  /// The generation, detected with health() first while unknown.
  CallStatus ensure_generation(Generation* g);

  GatewayOptions opts_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace osh::relay

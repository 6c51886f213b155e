// `openshell-tunnel forward [BIND:]LOCAL SANDBOX[:PORT]`: a local port
// forward over ForwardTcp, without a TUN (like upstream's `openshell forward
// service`, protocol §5.2), and the sandbox lookup it shares with `ssh-proxy`
// (cli/ssh_proxy.h). The bridging itself is relay/socket_bridge.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "relay/forward.h"
#include "relay/gateway_client.h"

namespace osh::cli {

/// The two positional arguments of `forward`, parsed.
struct ForwardSpec {
  std::string bind = "127.0.0.1";  ///< IPv4 or IPv6 literal, without brackets
  uint16_t local_port = 0;         ///< 0 = the kernel picks a free port
  std::string sandbox;             ///< the sandbox's name (not its id)
  uint16_t target_port = 0;        ///< 1..65535 on the sandbox's loopback; 22 = SSH target
};

/// parse_forward_spec() - parses `[BIND:]LOCAL` and `SANDBOX[:PORT]`.
/// @local: `8080`, `127.0.0.1:8080`, `[::1]:8080` or `0.0.0.0:0` (port 0:
///         the kernel picks one); BIND must be an IP literal.
/// @target: `demo` or `demo:8080`; PORT defaults to LOCAL, and is required
///          when LOCAL is 0.
/// @error: receives one line for the user when parsing fails.
/// Return: the spec, or nullopt. Thread: any.
std::optional<ForwardSpec> parse_forward_spec(std::string_view local, std::string_view target,
                                              std::string* error);

/// find_ready_sandbox() - the sandbox called @name in the client's
/// workspace, via GetSandbox (protocol §1.1; 0.1 §3); it must be one the
/// gateway may relay to: READY, as upstream's `forward service` requires
/// (protocol §5.2), or COMPLETED/ERROR, which 0.1's readiness gate accepts
/// while the supervisor session lives (SandboxInfo::may_be_reachable).
/// @error: one line for the user on failure (gateway unreachable, no such
///         sandbox, not ready).
/// Return: the sandbox, or nullopt. Thread: any; blocks up to the
/// gateway's rpc_timeout (twice on the first call: Health detects the
/// protocol generation).
std::optional<relay::SandboxInfo> find_ready_sandbox(relay::GatewayClient& gw,
                                                     const std::string& name, std::string* error);

/// Everything `forward` needs after flag parsing.
struct ForwardCommandOptions {
  relay::GatewayOptions gateway;   ///< resolved by cli/gateway_config
  ForwardSpec spec;
  /// The stream settings, with relay's defaults (cli/stream_flags.h).
  relay::ForwardOptions forward;
};

/// run_forward() - looks the sandbox up (READY), listens on BIND:LOCAL,
/// prints `✓ Forwarding BIND:LOCAL -> 127.0.0.1:PORT in sandbox NAME via
/// gRPC`, and bridges every accepted connection to one ForwardTcp stream until
/// SIGINT/SIGTERM/SIGHUP (which must be blocked in every thread; main does it).
/// Return: an ExitCode (cli/up.h): 0 after a signal, 1 bad address, 2 the
/// gateway or the sandbox lookup failed, 3 the listener could not be opened.
int run_forward(const ForwardCommandOptions& opts);

}  // namespace osh::cli

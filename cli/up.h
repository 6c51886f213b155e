// `openshell-tunnel up`: brings the tunnel up in the foreground and runs it
// until SIGINT/SIGTERM.
#pragma once

#include <cstdint>
#include <string>

#include "relay/gateway_client.h"

namespace osh::cli {

struct UpOptions {
  relay::GatewayOptions gateway;           ///< resolved by cli/gateway_config
  std::string tun_name = "osh0";
  std::string prefix4 = "198.18.0.0/16";   ///< RFC 2544 benchmark range (design.md §4)
  std::string prefix6 = "fd00:6f73:6800::/64";
  std::string domain = "local";
  std::string hosts_file = "/etc/hosts";   ///< "" disables the hosts block
  uint32_t mtu = 1500;                     ///< TUN MTU, bytes
  size_t max_streams_per_sandbox = 20;     ///< upstream cap (protocol §2.8)
  size_t max_streams_per_token = 3;
  uint32_t queue_timeout_ms = 10000;
};

/// Process exit codes (README "Exit codes").
enum ExitCode : int {
  kExitOk = 0,
  kExitUsage = 1,        ///< bad flags or configuration
  kExitGateway = 2,      ///< the gateway could not be reached or refused us
  kExitSystem = 3,       ///< TUN, netlink, hosts file or other local failure
};

/// Runs `up`. Blocks until a termination signal; returns an ExitCode.
/// Expects SIGINT/SIGTERM/SIGHUP to be blocked in every thread (main does it).
int run_up(const UpOptions& opts);

}  // namespace osh::cli

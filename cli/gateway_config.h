// Which gateway to talk to and how: resolved like the OpenShell CLI does
// (protocol §4): flags, environment, active_gateway files, gateway metadata.
#pragma once

#include <stdexcept>
#include <string>

#include "relay/gateway_client.h"

namespace CLI {
class App;
}

namespace osh::cli {

/// Gateway selection flags shared by every command that talks to a gateway.
struct GatewayFlags {
  std::string endpoint;   ///< --gateway-endpoint / OPENSHELL_GATEWAY_ENDPOINT
  std::string name;       ///< -g/--gateway / OPENSHELL_GATEWAY
  std::string workspace;  ///< --workspace / OPENSHELL_WORKSPACE ("" = default)
};

/// A configuration problem the user must fix; what() is one clear line.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Adds --gateway-endpoint, -g/--gateway and --workspace to `cmd`, with the
/// environment variables as defaults.
void add_gateway_flags(CLI::App* cmd, GatewayFlags& flags);

/// Resolves the flags into connection options. Throws ConfigError.
relay::GatewayOptions resolve_gateway(const GatewayFlags& flags);

}  // namespace osh::cli

#include "cli/gateway_config.h"

#include <CLI/CLI.hpp>
#include <cstdlib>

namespace osh::cli {
namespace {
std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}
}  // namespace

void add_gateway_flags(CLI::App* cmd, GatewayFlags& f) {
  f.endpoint = env("OPENSHELL_GATEWAY_ENDPOINT");
  f.name = env("OPENSHELL_GATEWAY");
  f.workspace = env("OPENSHELL_WORKSPACE");
  cmd->add_option("--gateway-endpoint", f.endpoint,
                  "gateway URL, http://HOST:PORT (h2c) or https://HOST:PORT "
                  "(env OPENSHELL_GATEWAY_ENDPOINT)");
  cmd->add_option("-g,--gateway", f.name, "gateway name from the OpenShell config (env OPENSHELL_GATEWAY)");
  cmd->add_option("--workspace", f.workspace, "workspace (env OPENSHELL_WORKSPACE; default: default)");
}

relay::GatewayOptions resolve_gateway(const GatewayFlags& f) {
  if (f.endpoint.empty())
    throw ConfigError("no gateway: pass --gateway-endpoint or set OPENSHELL_GATEWAY_ENDPOINT");
  std::string err;
  auto ep = relay::parse_endpoint(f.endpoint, &err);
  if (!ep) throw ConfigError(err);
  relay::GatewayOptions o;
  o.endpoint = *ep;
  return o;
}

}  // namespace osh::cli

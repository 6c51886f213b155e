// `openshell-tunnel ssh-proxy`: flags and help; the work is in ssh_proxy.cc.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/gateway_config.h"
#include "cli/ssh_proxy.h"
#include "cli/up.h"

namespace osh::cli {

void add_ssh_proxy_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand(
      "ssh-proxy",
      "OpenSSH ProxyCommand: carry stdin/stdout over one ForwardTcp stream to the sandbox's SSH "
      "server, e.g. ssh -o ProxyCommand='openshell-tunnel ssh-proxy demo' root@demo");
  auto opts = std::make_shared<SshProxyOptions>();
  auto gw = std::make_shared<GatewayFlags>();
  add_gateway_flags(cmd, *gw);
  cmd->add_option("sandbox", opts->sandbox, "sandbox name")->required()->option_text("SANDBOX");
  cmd->callback([opts, gw, exit_code] {
    // ssh shows the proxy's stderr in the user's terminal: only warnings and
    // errors, unless -v / --log-level asked for more or less.
    if (spdlog::get_level() == spdlog::level::info) spdlog::set_level(spdlog::level::warn);
    if (!resolve_for_command(*gw, &opts->gateway, "openshell-tunnel ssh-proxy")) {
      *exit_code = kExitUsage;
      return;
    }
    *exit_code = run_ssh_proxy(*opts);
  });
}

}  // namespace osh::cli

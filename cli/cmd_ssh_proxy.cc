// `openshell-tunnel ssh-proxy`: flags and help; the work is in ssh_proxy.cc.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/gateway_config.h"
#include "cli/ssh_proxy.h"
#include "cli/up.h"
#include "names/ssh_config.h"

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

void add_known_hosts_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand(
      "known-hosts",
      "OpenSSH KnownHostsCommand of the ssh Include (not for direct use): print the offered host key as "
      "a known_hosts line only if its fingerprint is the one the gateway gave");
  cmd->group("");  // hidden from --help and completion; documented in the man page
  auto args = std::make_shared<std::vector<std::string>>();
  cmd->add_option("args", *args, "EXPECTED_FINGERPRINT OFFERED_FINGERPRINT(%f) HOST(%H) TYPE(%t) KEY(%K)")
      ->required()->expected(5)->option_text("EXPECTED %f %H %t %K");
  cmd->callback([args, exit_code] {
    const auto& a = *args;
    *exit_code = kExitOk;
    // Before the key exchange ssh asks once with no key ("NONE"), to order
    // its host key algorithms: nothing to say then.
    if (a[1] == "NONE" || a[3] == "NONE") return;
    const auto line = names::SshConfigInclude::known_hosts_line(a[0], a[1], a[2], a[3], a[4]);
    if (line) {
      fmt::print("{}", *line);
    } else {
      // ssh shows this in the terminal, then refuses the host (strict checking).
      fmt::print(stderr, "openshell-tunnel: the {} host key of {} ({}) is not the one the gateway reports "
                 "for this sandbox ({}); refusing it\n", a[3], a[2], a[1], a[0]);
    }
  });
}

}  // namespace osh::cli

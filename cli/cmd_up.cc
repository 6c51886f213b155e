// `openshell-tunnel up`: flags and help; the work is in up.cc.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/gateway_config.h"
#include "cli/up.h"

namespace osh::cli {

void add_up_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("up", "Bring the tunnel up (foreground; Ctrl-C or SIGTERM stops it)");
  auto opts = std::make_shared<UpOptions>();
  auto gw = std::make_shared<GatewayFlags>();
  add_gateway_flags(cmd, *gw);
  cmd->add_option("--tun-name", opts->tun_name, "TUN interface name")->capture_default_str();
  cmd->add_option("--prefix4", opts->prefix4, "IPv4 prefix for sandbox addresses")->capture_default_str();
  cmd->add_option("--prefix6", opts->prefix6, "IPv6 prefix for sandbox addresses")->capture_default_str();
  cmd->add_option("--domain", opts->domain, "DNS suffix: <sandbox>.<domain>")->capture_default_str();
  cmd->add_option("--hosts-file", opts->hosts_file,
                  "hosts file for the managed names block (\"\" to disable)")->capture_default_str();
  cmd->add_option("--mtu", opts->mtu, "TUN MTU in bytes")
      ->capture_default_str()->check(CLI::Range(1280, 65535));
  cmd->add_option("--max-streams-per-sandbox", opts->max_streams_per_sandbox,
                  "concurrent ForwardTcp streams per sandbox; more connections wait")
      ->capture_default_str();
  cmd->add_option("--max-streams-per-token", opts->max_streams_per_token,
                  "concurrent streams per SSH-session token")->capture_default_str();
  cmd->add_option("--queue-timeout-ms", opts->queue_timeout_ms,
                  "how long a connection may wait for a stream slot before it is refused")
      ->capture_default_str();
  cmd->callback([opts, gw, exit_code] {
    try {
      opts->gateway = resolve_gateway(*gw);
    } catch (const ConfigError& e) {
      fmt::print(stderr, "error: {}\n", e.what());
      *exit_code = kExitUsage;
      return;
    }
    *exit_code = run_up(*opts);
  });
}

}  // namespace osh::cli

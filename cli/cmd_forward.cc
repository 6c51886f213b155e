// `openshell-tunnel forward`: flags and help; the work is in forward.cc.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/forward.h"
#include "cli/gateway_config.h"
#include "cli/stream_flags.h"
#include "cli/up.h"

namespace osh::cli {

void add_forward_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand(
      "forward",
      "Forward a local port to a port in a sandbox over the gateway (no TUN; like "
      "`openshell forward service`). Runs until Ctrl-C or SIGTERM, or until the sandbox is gone or not READY (checked every 2 s; exit 2)");
  auto opts = std::make_shared<ForwardCommandOptions>();
  auto gw = std::make_shared<GatewayFlags>();
  auto local = std::make_shared<std::string>();
  auto target = std::make_shared<std::string>();
  add_gateway_flags(cmd, *gw);
  cmd->add_option("local", *local,
                  "[BIND:]LOCAL: local port (0 picks a free one), optionally with a bind address "
                  "(default 127.0.0.1; [::1]:PORT for IPv6)")
      ->required()->option_text("[BIND:]LOCAL");
  cmd->add_option("target", *target,
                  "SANDBOX[:PORT]: sandbox name and the port on its loopback (default: LOCAL; "
                  "22 is the sandbox's SSH server)")
      ->required()->option_text("SANDBOX[:PORT]");
  add_stream_flags(cmd, opts->forward);
  cmd->callback([opts, gw, local, target, exit_code] {
    std::string err;
    auto spec = parse_forward_spec(*local, *target, &err);
    if (!spec) {
      fmt::print(stderr, "error: {}\n", err);
      *exit_code = kExitUsage;
      return;
    }
    opts->spec = *spec;
    if (!resolve_for_command(*gw, &opts->gateway, "error")) {
      *exit_code = kExitUsage;
      return;
    }
    // --max-buffer-mib: the channel is created with its quota (relay/forward.h).
    opts->gateway.grpc_memory_quota = opts->forward.max_buffer_bytes;
    opts->gateway.forward_transport = opts->forward.transport;
    *exit_code = run_forward(*opts);
  });
}

}  // namespace osh::cli

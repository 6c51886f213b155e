// openshell-tunnel: command-line entry point (CLI11). Subcommands live in
// their own files; this file only parses flags and sets up logging/signals.
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdlib>

#include "cli/up.h"

namespace {

// Blocks the termination signals in this thread before any other thread is
// created, so every thread inherits the mask and `up` can sigwait() for them.
void block_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

const char* env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  block_signals();
  CLI::App app{"openshell-tunnel: every OpenShell sandbox reachable as a host on your network"};
  app.require_subcommand(1);
  std::string log_level = "info";
  bool verbose = false;
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.add_flag("-v,--verbose", verbose, "same as --log-level debug");
  app.set_version_flag("--version", "openshell-tunnel 0.1.0");

  osh::cli::UpOptions up;
  up.gateway_endpoint = env_or("OPENSHELL_GATEWAY_ENDPOINT", "");
  auto* up_cmd = app.add_subcommand("up", "Bring the tunnel up (foreground; Ctrl-C to stop)");
  up_cmd->add_option("--gateway-endpoint", up.gateway_endpoint,
                     "Gateway URL, http://HOST:PORT or https://HOST:PORT "
                     "(env OPENSHELL_GATEWAY_ENDPOINT)");
  up_cmd->add_option("--tun-name", up.tun_name, "TUN interface name")->capture_default_str();
  up_cmd->add_option("--prefix4", up.prefix4, "IPv4 prefix for sandbox addresses")->capture_default_str();
  up_cmd->add_option("--prefix6", up.prefix6, "IPv6 prefix for sandbox addresses")->capture_default_str();
  up_cmd->add_option("--domain", up.domain, "DNS suffix: <sandbox>.<domain>")->capture_default_str();
  up_cmd->add_option("--hosts-file", up.hosts_file,
                     "hosts file for the managed names block (\"\" to disable)")->capture_default_str();
  up_cmd->add_option("--mtu", up.mtu, "TUN MTU in bytes")->capture_default_str()->check(CLI::Range(1280, 65535));
  up_cmd->add_option("--max-streams-per-sandbox", up.max_streams_per_sandbox,
                     "concurrent ForwardTcp streams per sandbox; more connections queue")
      ->capture_default_str();
  up_cmd->add_option("--max-streams-per-token", up.max_streams_per_token,
                     "concurrent streams per SSH-session token")->capture_default_str();
  up_cmd->add_option("--queue-timeout-ms", up.queue_timeout_ms,
                     "how long a connection may wait for a stream slot before it is refused")
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("openshell-tunnel");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(verbose ? spdlog::level::debug : spdlog::level::from_str(log_level));

  if (up_cmd->parsed()) {
    if (up.gateway_endpoint.empty()) {
      fprintf(stderr, "error: no gateway: pass --gateway-endpoint or set OPENSHELL_GATEWAY_ENDPOINT\n");
      return osh::cli::kExitUsage;
    }
    return osh::cli::run_up(up);
  }
  return osh::cli::kExitUsage;
}

// openshell-tunnel: command-line entry point (CLI11). Each subcommand adds
// itself (commands.h); this file sets up logging and signals.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/log_setup.h"
#include "cli/up.h"
#include "common/malloc_tuning.h"
#include "osh_version.h"  // generated at build time (cmake/version.cmake)

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

}  // namespace

int main(int argc, char** argv) {
  // Two arenas, and no heap trimming per freed frame (common/malloc_tuning.h).
  osh::tune_malloc_at_start("openshell-tunnel");
  block_signals();
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines interleave with stderr in order
  CLI::App app{"openshell-tunnel: every OpenShell sandbox reachable as a host on your network"};
  app.require_subcommand(1);
  app.fallthrough();  // `up -v` works as well as `-v up`
  osh::cli::LogOptions log;
  osh::cli::add_log_flags(app, log);
  // OSH_VERSION: CMakeLists.txt's project version, "~git<count>.<hash>" appended
  // for untagged builds (cmake/version.cmake).
  app.set_version_flag("--version", "openshell-tunnel " OSH_VERSION);
  app.parse_complete_callback([&] {
    try {
      osh::cli::start_logging(log);
    } catch (const std::exception& e) {
      throw CLI::ValidationError(e.what());
    }
  });

  int exit_code = osh::cli::kExitOk;
  osh::cli::set_program_args(argc, argv);
  osh::cli::add_up_command(app, &exit_code);
  osh::cli::add_status_command(app, &exit_code);
  osh::cli::add_down_command(app, &exit_code);
  osh::cli::add_forward_command(app, &exit_code);
  osh::cli::add_ssh_proxy_command(app, &exit_code);
  osh::cli::add_known_hosts_command(app, &exit_code);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // No command recognised but words left over ("openshell-tunnel bogus",
    // "--bogus"): name them instead of CLI11's "A subcommand is required".
    const std::vector<std::string> rest = app.remaining();
    if (e.get_exit_code() != 0 && app.get_subcommands().empty() && !rest.empty()) {
      std::fprintf(stderr, "error: unknown command or option '%s' (commands: up, status, down, forward, "
                   "ssh-proxy; see --help)\n", rest.front().c_str());
      return osh::cli::kExitUsage;
    }
    const int rc = app.exit(e);
    return rc == 0 ? 0 : osh::cli::kExitUsage;
  }
  osh::cli::stop_logging();
  return exit_code;
}

// Subcommand registration: each command adds itself (flags, help) to the
// CLI11 app and, when it runs, stores its exit code (up.h ExitCode).
#pragma once

namespace CLI {
class App;
}

namespace osh::cli {

/// The process's own argv (for `up -d`, which re-executes itself).
void set_program_args(int argc, char** argv);

void add_up_command(CLI::App& app, int* exit_code);
void add_status_command(CLI::App& app, int* exit_code);
void add_down_command(CLI::App& app, int* exit_code);
void add_forward_command(CLI::App& app, int* exit_code);
void add_ssh_proxy_command(CLI::App& app, int* exit_code);
/// `known-hosts`: ssh's KnownHostsCommand for sandboxes with a gateway
/// fingerprint (names/ssh_config.h).
void add_known_hosts_command(CLI::App& app, int* exit_code);

}  // namespace osh::cli

// Subcommand registration: each command adds itself (flags, help) to the
// CLI11 app and, when it runs, stores its exit code (up.h ExitCode).
#pragma once

namespace CLI {
class App;
}

namespace osh::cli {

void add_up_command(CLI::App& app, int* exit_code);

}  // namespace osh::cli

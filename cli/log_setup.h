// The process's logger (spdlog's default logger): stderr (the terminal, or
// the journal under systemd), or with --log-file a file that rotates by size
// (issue 14.7; `up -d` passes --log-file <state-dir>/tunnel.log).
#pragma once

#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace osh::cli {

/// The logging flags; they are the app's own (before or after the command).
struct LogOptions {
  std::string level = "info";  ///< trace ... off
  bool verbose = false;        ///< same as level "debug"
  std::string file;            ///< "" = stderr
  uint32_t max_mib = 10;       ///< size of the log file that makes it rotate, MiB
  uint32_t files = 3;          ///< rotated files kept: NAME.1.EXT ... NAME.N.EXT
};

/// add_log_flags() - --log-level, -v/--verbose, --log-file, --log-max-mib,
/// --log-files on @app, bound to @o (which must outlive the parse).
void add_log_flags(CLI::App& app, LogOptions& o);

/// start_logging() - installs the default logger for @o and remembers @o
/// (log_options()). Main thread, before any other thread starts.
/// With a file: spdlog's rotating_file_sink (size o.max_mib MiB, o.files old
/// files), mode 0600, every line flushed; stdout and stderr that point at the
/// log file (`up -d`'s child) are moved to the new file on each rotation.
/// @throws std::runtime_error naming the file if it cannot be opened.
void start_logging(const LogOptions& o);

/// start_log_writer() - with a log file: from now on lines are written,
/// and the file rotated, by one spdlog worker thread created here (an
/// async logger over the same sink, queue of 8192 lines, callers block
/// when it is full). The data-plane threads log under a seccomp filter
/// that forbids open/rename/dup2 (common/thread_sandbox.h), so a rotation
/// must never run on them. Call it after drop_privileges() (the worker
/// inherits the calling thread's capabilities) and after every fork that
/// does not exec (a forked child has no worker). No-op without a file.
/// Main thread.
void start_log_writer();

/// stop_logging() - writes what the worker still holds and stops it
/// (spdlog::shutdown()). Main thread, at exit.
void stop_logging();

/// The options start_logging() was called with (defaults before).
const LogOptions& log_options();

}  // namespace osh::cli

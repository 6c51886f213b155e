// Theory of operation: one default spdlog logger per process. Without
// --log-file it writes to stderr in colour (the terminal; under systemd
// stderr is the journal, which rotates by itself). With --log-file the lines
// go to a rotating_file_sink: when the file would pass --log-max-mib it is
// renamed NAME.1.EXT (tunnel.log -> tunnel.1.log, tunnel.1.log ->
// tunnel.2.log ...; the oldest beyond --log-files is deleted) and a new FILE is opened. Those of fds 1 and 2 that pointed at the
// file just rotated away (`up -d` starts its child with them on the log file)
// are pointed at the new one by spdlog's after_open hook, so that fmt::print()
// output (progress, "error: ..." lines) follows the log instead of growing a
// rotated file; these lines are few and not counted against the size. A
// terminal on fds 1 and 2 (`up --log-file F` in the foreground) stays.
#include "cli/log_setup.h"

#include <spdlog/async.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <stdexcept>

namespace osh::cli {
namespace {

LogOptions g_options;
// The --log-file sink, shared by the synchronous logger and the async one
// start_log_writer() makes.
std::shared_ptr<spdlog::sinks::rotating_file_sink_mt> g_file_sink;

constexpr const char* kPattern = "%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v";

}  // namespace

void add_log_flags(CLI::App& app, LogOptions& o) {
  app.add_option("--log-level", o.level, "trace, debug, info, warn, error, critical, off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.add_flag("-v,--verbose", o.verbose, "same as --log-level debug");
  app.add_option("--log-file", o.file,
                 "write the log to this file instead of stderr; "
                 "it rotates by size (up -d: <state-dir>/tunnel.log)");
  app.add_option("--log-max-mib", o.max_mib, "with --log-file: the size in MiB at which the file rotates")
      ->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--log-files", o.files, "with --log-file: rotated files kept (tunnel.1.log ... tunnel.N.log for tunnel.log)")
      ->capture_default_str()->check(CLI::Range(1, 100));
}

void start_logging(const LogOptions& o) {
  g_options = o;
  std::shared_ptr<spdlog::logger> logger;
  if (o.file.empty()) {
    logger = spdlog::stderr_color_mt("openshell-tunnel");
  } else {
    // Shared by the hooks (called under the sink's mutex): the file that
    // was just closed by a rotation.
    auto closed = std::make_shared<std::pair<dev_t, ino_t>>();
    spdlog::file_event_handlers h;
    h.before_close = [closed](const spdlog::filename_t&, std::FILE* f) {
      struct stat st {};
      if (::fstat(::fileno(f), &st) == 0) *closed = {st.st_dev, st.st_ino};
    };
    h.after_open = [closed](const spdlog::filename_t&, std::FILE* f) {
      const int fd = ::fileno(f);
      ::fchmod(fd, 0600);  // sandbox names, gateway errors: root's (or the service's) only
      std::fflush(stdout);
      std::fflush(stderr);
      for (int out : {STDOUT_FILENO, STDERR_FILENO}) {
        struct stat st {};
        if (::fstat(out, &st) == 0 && std::pair{st.st_dev, st.st_ino} == *closed) ::dup2(fd, out);
      }
    };
    try {
      auto sink = std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
          o.file, size_t{o.max_mib} << 20, o.files, /*rotate_on_open=*/false, h);
      g_file_sink = sink;
      logger = std::make_shared<spdlog::logger>("openshell-tunnel", std::move(sink));
    } catch (const spdlog::spdlog_ex& e) {
      throw std::runtime_error("--log-file " + o.file + ": " + e.what());
    }
    logger->flush_on(spdlog::level::trace);  // every line: `tail -f`, and `up -d` shows the end on failure
  }
  spdlog::set_default_logger(logger);
  spdlog::set_pattern(kPattern);
  spdlog::set_level(o.verbose ? spdlog::level::debug : spdlog::level::from_str(o.level));
}

void start_log_writer() {
  if (!g_file_sink) return;
  spdlog::init_thread_pool(8192, 1);
  auto logger = std::make_shared<spdlog::async_logger>("openshell-tunnel", g_file_sink, spdlog::thread_pool(),
                                                       spdlog::async_overflow_policy::block);
  logger->set_level(spdlog::default_logger()->level());
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  spdlog::set_pattern(kPattern);
}

void stop_logging() { spdlog::shutdown(); }

const LogOptions& log_options() { return g_options; }

}  // namespace osh::cli

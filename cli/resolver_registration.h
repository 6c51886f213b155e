// Registers the tunnel's DNS responder with systemd-resolved as the resolver
// for "~<domain>" on the tunnel link, and takes the registration back. Uses
// the resolvectl command line tool (started with posix_spawnp, no shell);
// nothing is started or configured when resolved is not running.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace osh::cli {

/// A resolvectl command failed (message: the command line, its exit status
/// and its stderr).
class ResolverError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// How a program run by run_program() ended.
struct ProgramResult {
  int exit_code = 0;        ///< exit status, or 128 + signal number if killed
  std::string stderr_text;  ///< what it wrote to stderr (first 4 KiB)
};

/// Runs a program to completion: argv[0] is searched in PATH, stdin and
/// stdout are /dev/null, stderr is captured. Blocks until it exits (no
/// timeout of its own; resolvectl's D-Bus calls time out after 25 s).
/// Thread: any (uses posix_spawnp, safe in a multi-threaded process).
/// @throws std::invalid_argument if argv is empty;
///         std::system_error if the program cannot be started (e.g. ENOENT).
ProgramResult run_program(const std::vector<std::string>& argv);

/// While it lives, systemd-resolved sends queries for names under `domain`
/// to `dns_addresses` over `link` (systemd-resolved.service(8), "Protocols
/// and Routing": a "~domain" routing-only domain on a link). Commands, in
/// order:
///
///     resolvectl dns <link> <addr>...
///     resolvectl domain <link> ~<domain>
///     resolvectl default-route <link> false
///
/// The last one keeps every other name off the tunnel link even on resolved
/// versions whose heuristics would make it a default route. The destructor
/// runs `resolvectl revert <link>`, which drops all per-link settings (the
/// link belongs to the tunnel, so there are none of anyone else's).
///
/// If available() is false, construction does nothing and active() is
/// false. Thread: construct and destroy on one thread; not copyable.
class ResolverRegistration {
 public:
  /// True if systemd-resolved is running (its runtime directory
  /// /run/systemd/resolve/ exists) and resolvectl is found in PATH.
  /// Starts nothing.
  static bool available();

  /// The argument vectors the constructor runs, in order (pure).
  /// @param link           interface name, e.g. "osh0"
  /// @param dns_addresses  numeric server addresses, e.g. {"198.18.0.2"}
  /// @param domain         e.g. "local"; a trailing '.' is dropped
  static std::vector<std::vector<std::string>> register_commands(
      const std::string& link, const std::vector<std::string>& dns_addresses,
      const std::string& domain);

  /// The argument vector the destructor runs (pure).
  static std::vector<std::string> revert_command(const std::string& link);

  /// Registers (see the class comment) if available(); otherwise a no-op.
  /// @throws std::invalid_argument if link, dns_addresses or domain is empty;
  ///         ResolverError if a command fails (anything already applied is
  ///         reverted first) or resolvectl cannot be started.
  ResolverRegistration(std::string link, std::vector<std::string> dns_addresses,
                       std::string domain);

  /// Reverts the link's resolved settings if active(); a failure is logged,
  /// not thrown.
  ~ResolverRegistration();

  ResolverRegistration(const ResolverRegistration&) = delete;
  ResolverRegistration& operator=(const ResolverRegistration&) = delete;

  /// True if the registration was made (and is reverted on destruction).
  bool active() const noexcept { return active_; }

 private:
  std::string link_;
  bool active_ = false;
};

}  // namespace osh::cli

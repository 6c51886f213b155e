// What a running tunnel changed on the machine and which addresses it gave
// out, persisted in <state-dir>/state.json (issue 4.2, 4.6): addresses stay
// stable across restarts, and after a crash (kill -9) the next `up` or
// `down` knows exactly what to clean up.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace osh::cli {

struct SandboxRecord {
  std::string id, name, v4, v6;
};

struct RunState {
  int pid = 0;                 ///< the daemon's pid; 0 = not running
  std::string tun_name;
  std::string hosts_file;      ///< "" = none written
  std::string ssh_config;      ///< the ssh config holding our Include block; "" = none
  std::string ssh_include;     ///< our include file
  std::map<std::string, SandboxRecord> sandboxes;  ///< by sandbox id

  /// Reads `dir`/state.json. A missing file is an empty state; an unreadable
  /// or corrupt one is logged and treated as empty (addresses are then
  /// re-derived, which is deterministic anyway).
  static RunState load(const std::filesystem::path& dir);
  /// Writes `dir`/state.json atomically (mode 0600).
  /// @throws std::system_error on I/O errors.
  void save(const std::filesystem::path& dir) const;
};

/// True if `pid` is a live openshell-tunnel process (by /proc/<pid>/comm).
bool tunnel_process_alive(int pid);

/// Removes what a tunnel that did not stop cleanly left behind: its TUN (if
/// the kernel kept it), the hosts block, the ssh Include block. Logs what it
/// did. Never throws.
void cleanup_stale(const RunState& st);

}  // namespace osh::cli

// What a running tunnel changed on the machine and which addresses it gave
// out, persisted in <state-dir>/state.json (issue 4.2, 4.6): addresses stay
// stable across restarts, and after a crash (kill -9) the next `up` or
// `down` knows exactly what to clean up.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "common/scoped_fd.h"

namespace osh::cli {

/// Mode of the state directory: only root lists or writes it; others may
/// traverse it to reach the control socket (mode 0666, every peer checked by
/// SO_PEERCRED; cli/control.h). Every other file in it is 0600.
inline constexpr mode_t kStateDirMode = 0711;

class UserFiles;

struct SandboxRecord {
  std::string id, name, v4, v6;
};

/// Who a process is, beyond its pid: pids are reused, but the pair (boot id,
/// start time) names one process of one boot (proc(5)).
struct ProcessIdentity {
  std::string boot_id;      ///< /proc/sys/kernel/random/boot_id; "" = unknown
  uint64_t start_time = 0;  ///< /proc/<pid>/stat field 22, clock ticks since boot
};

/// The identity of `pid` now. Reads /proc/sys/kernel/random/boot_id and
/// /proc/<pid>/stat (field 22, starttime; the comm field may contain spaces
/// and parentheses, so fields are counted after its last ')').
/// @return nullopt if the process does not exist or /proc cannot be read.
/// Thread: any.
std::optional<ProcessIdentity> process_identity(int pid);

struct RunState {
  int pid = 0;                 ///< the daemon's pid; 0 = not running
  ProcessIdentity identity;    ///< of `pid` when it was recorded (issue 14.4)
  std::string tun_name;
  std::string hosts_file;      ///< "" = none written
  std::string ssh_config;      ///< the ssh config holding our Include block; "" = none
  /// Who wrote ssh_config's block (the served user, 0 = root; -1 = not
  /// recorded: a state file of an older version, whose include file was
  /// ssh_include in the state directory).
  int64_t ssh_uid = -1;
  std::string ssh_include;     ///< older versions' include file in the state dir; "" = next to ssh_config
  std::map<std::string, SandboxRecord> sandboxes;  ///< by sandbox id

  /// Reads `dir`/state.json. A missing file is an empty state; an unreadable
  /// or corrupt one is logged and treated as empty (addresses are then
  /// re-derived, which is deterministic anyway).
  static RunState load(const std::filesystem::path& dir);
  /// Writes `dir`/state.json atomically (mode 0600).
  /// @throws std::system_error on I/O errors.
  void save(const std::filesystem::path& dir) const;
};

/// True if `pid` is a live openshell-tunnel process (by /proc/<pid>/exe).
/// Only for state files written before identities were recorded; use
/// recorded_tunnel_alive().
bool tunnel_process_alive(int pid);

/// True if the process recorded in `st` still runs: st.pid exists and its
/// boot id and start time (process_identity()) equal the recorded ones, so a
/// pid the kernel gave to another process since is never taken for the
/// tunnel. A record without an identity (an older version's state file)
/// falls back to tunnel_process_alive(). Thread: any.
bool recorded_tunnel_alive(const RunState& st);

/// The lock that makes one daemon per state directory (issue 14.4):
/// flock(2) LOCK_EX on `<dir>/lock`, held for the daemon's life (the kernel
/// drops it when the process dies, however it dies). The file is opened
/// O_CLOEXEC | O_NOFOLLOW (a symlink planted there is refused, and no
/// program the daemon starts inherits the lock; a child forked without exec
/// after acquire() would share it, so take it after such forks).
class StateLock {
 public:
  enum class Result {
    kAcquired,  ///< this process holds the lock now
    kHeld,      ///< another process holds it (EWOULDBLOCK)
    kError,     ///< the directory or the file could not be opened/created
  };

  StateLock() = default;

  /// Creates `dir` (mode 0700) if needed, opens or creates `<dir>/lock`
  /// (0600) and tries flock(LOCK_EX | LOCK_NB); never waits.
  /// @param error  set to a message with errno's text on kError
  /// Thread: any (one StateLock per process and directory).
  Result acquire(const std::filesystem::path& dir, std::string* error);

  bool held() const noexcept { return fd_.valid(); }

 private:
  ScopedFd fd_;
};

/// The uid whose file helper may remove st.ssh_config's block: st.ssh_uid,
/// or for an older state file the owner of the ssh config (lstat); nullopt
/// when there is no block or no owner can be told.
std::optional<uid_t> ssh_config_owner(const RunState& st);

/// Removes what a tunnel that did not stop cleanly left behind: its TUN (if
/// the kernel kept it, and only while it is still a TUN no process holds:
/// recorded_link_is_stale() on a read_host_network() snapshot, so a live
/// interface that has the name now is never deleted), the hosts block, the
/// ssh Include block and its include target through `files` (the helper
/// running as ssh_config_owner(st); never as root on the user's files:
/// without a matching helper the block is left and a warning says so).
/// Logs what it did. Thread: any (the calling thread's network namespace).
/// Never throws: failures are logged as warnings.
/// @return false if the ssh block could not be removed (keep it recorded).
bool cleanup_stale(const RunState& st, UserFiles* files);

}  // namespace osh::cli

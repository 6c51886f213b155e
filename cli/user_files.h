// The served user's files, written as that user (issue 14.1): root never
// writes through the user's ~/.ssh/config or its Include target.
//
// A helper process is forked while `up` (or `down`) still runs as full root
// and before any thread exists; it becomes the user (one group, setgid,
// setuid, no capabilities, no_new_privs, checked that it cannot regain
// root), closes every descriptor but its socket and then serves requests
// from the daemon over a socketpair until the socket closes (the daemon
// stopped or died; it also gets SIGKILL when its parent dies). Requests
// are length-bounded frames; the helper opens the ssh config's directory
// O_DIRECTORY | O_NOFOLLOW (creating it 0700 if missing), and every file in
// it O_NOFOLLOW, refusing symlinks and non-regular files
// (names::SshConfigInclude::*_at). Files it creates are 0600 and owned by
// the user because the user creates them.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace osh::cli {

/// The primary group of `uid` from the passwd database, or `uid` itself
/// when it has no entry (a user deleted since). Thread: any.
gid_t primary_gid(uid_t uid);

class UserFiles {
 public:
  /// Forks the helper for `uid` (primary group `gid`; uid 0 = root, which
  /// keeps uid 0 but no capability). Must run before any thread exists and
  /// while the process may still setuid (before drop_privileges()), and
  /// before a lock fd the helper must not share is opened (the helper closes
  /// all descriptors it inherited, but take no chances).
  /// @return nullptr and *error set when fork or socketpair fail; a helper
  ///         that fails to drop privileges exits at once and every request
  ///         then fails with its reason.
  static std::unique_ptr<UserFiles> start(uid_t uid, gid_t gid, std::string* error);

  /// Closes the socket (the helper exits) and reaps the helper.
  ~UserFiles();
  UserFiles(const UserFiles&) = delete;
  UserFiles& operator=(const UserFiles&) = delete;

  uid_t uid() const noexcept { return uid_; }

  /// Writes the include target next to `ssh_config` and puts the Include
  /// block at the top of `ssh_config` (names::SshConfigInclude::install_at),
  /// creating the config's directory (0700) if it is missing.
  /// @throws std::runtime_error with the helper's message on any failure;
  ///         a helper that died or did not answer within 30 s fails this
  ///         and every later request.
  /// Thread: any (one request at a time).
  void install(const std::filesystem::path& ssh_config, const std::string& include_text);
  /// Rewrites the include target only (the sandbox set changed).
  void write_include(const std::filesystem::path& ssh_config, const std::string& include_text);
  /// Removes the block and the include target (idempotent).
  void remove(const std::filesystem::path& ssh_config);

  /// Requests larger than this are refused by both sides (bytes).
  static constexpr size_t kMaxFrame = 16u << 20;

 private:
  UserFiles(int fd, pid_t pid, uid_t uid) : fd_(fd), pid_(pid), uid_(uid) {}
  void call(char op, const std::filesystem::path& ssh_config, const std::string& text);

  int fd_;
  pid_t pid_;
  uid_t uid_;
  std::mutex mu_;
  std::string broken_;  ///< why the channel failed ("" = usable); guarded by mu_
};

}  // namespace osh::cli

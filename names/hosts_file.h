// The managed block of a hosts file: "<address>\t<name> ..." lines for the
// sandboxes, between two marker lines, so that the tunnel can add, replace
// and remove exactly its own lines and never touch anyone else's.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace osh::names {

/// The whole file at `path`, or nullopt if it (or its directory) does not
/// exist. The file itself is opened O_NOFOLLOW and must be a regular file
/// (issue 14.1: a symlink planted there is refused, never followed; its
/// directory's path may contain symlinks). @throws std::system_error
/// (message names the path; ELOOP for a symlink, EINVAL for a non-regular
/// file) on I/O errors.
std::optional<std::string> read_text_file(const std::filesystem::path& path);

/// Replaces the file's content the way HostsFile::write_block does (temp file
/// + fsync + rename; in place when the file is a mount point), keeping its
/// mode, 0644 for a new file. A symlink or non-regular file at `path` is
/// refused (std::system_error ELOOP / EINVAL), never written through.
/// @throws std::system_error on I/O errors.
void replace_text_file(const std::filesystem::path& path, std::string_view data);

/// read_text_file() of the entry `name` (no '/') of the open directory
/// `dirfd`; `shown` is the path used in messages. Thread: any.
std::optional<std::string> read_text_file_at(int dirfd, const std::string& name,
                                             const std::filesystem::path& shown);

/// replace_text_file() of the entry `name` of the open directory `dirfd`,
/// `new_mode` for a file that does not exist yet (an existing file keeps
/// its mode; the new file is created by the caller's uid, so it is owned by
/// whoever calls). Thread: any.
void replace_text_file_at(int dirfd, const std::string& name, std::string_view data, mode_t new_mode,
                          const std::filesystem::path& shown);

/// One hosts-file line: an address and the names that resolve to it.
struct HostEntry {
  std::string address;             ///< numeric IPv4/IPv6 literal, e.g. "198.18.0.2"
  std::vector<std::string> names;  ///< at least one, e.g. {"sbx-1.local"}

  friend bool operator==(const HostEntry&, const HostEntry&) = default;
};

/// A hosts file (normally /etc/hosts, or /etc/netns/<ns>/hosts in tests) with
/// one managed block:
///
///     # BEGIN openshell-tunnel (managed, do not edit)
///     198.18.0.2	sbx-1.local
///     fd00:6f73:6800::2	sbx-1.local
///     # END openshell-tunnel
///
/// Block rules: a block is a BEGIN marker line followed by an END marker line
/// with no other BEGIN in between (markers match after stripping trailing
/// spaces, tabs and '\r'). Lines outside blocks are kept byte for byte. An
/// unmatched BEGIN or END is left alone (it is not ours to guess about).
/// Several blocks (from a bug or a manual copy) are merged: the new block
/// takes the first one's place and the others are removed.
///
/// Not safe against concurrent writers of the same file; one tunnel process
/// owns the block. Thread: any, but one call at a time per file.
class HostsFile {
 public:
  static constexpr std::string_view kBeginMarker =
      "# BEGIN openshell-tunnel (managed, do not edit)";
  static constexpr std::string_view kEndMarker = "# END openshell-tunnel";

  /// @param path  the hosts file; a symlink or a non-regular file there is
  ///              refused by write_block()/remove_block() (issue 14.1).
  explicit HostsFile(std::filesystem::path path);

  const std::filesystem::path& path() const noexcept { return path_; }

  /// Replaces the managed block with `entries` (in their order), or appends a
  /// block if there is none; an empty `entries` writes an empty block. Creates
  /// the file (mode 0644) if missing. Does nothing if the content would not
  /// change.
  ///
  /// The new content is written to a temporary file in the same directory,
  /// fsync'ed, given the old file's mode (and owner, when permitted) and
  /// renamed over the file. If the rename fails with EBUSY or EXDEV (the file
  /// is a mount point, as /etc/hosts is under `ip netns exec`), the file is
  /// rewritten in place instead (write, truncate, fsync), which is not atomic.
  ///
  /// @throws std::invalid_argument if an entry is empty or contains
  ///         whitespace, '#' or control characters in a field;
  ///         std::system_error (message names the path) on I/O errors.
  void write_block(const std::vector<HostEntry>& entries);

  /// Removes the managed block(s). No-op (no write) if the file is missing or
  /// has no block. Same write strategy and errors as write_block().
  void remove_block();

  /// The text of `original` with its block replaced by (or, if none, followed
  /// by) a block of `entries`. If `original` is not empty and does not end in
  /// '\n', a '\n' is added before an appended block.
  /// @throws std::invalid_argument for invalid entries (see write_block()).
  static std::string render(std::string_view original, const std::vector<HostEntry>& entries);

  /// The text of `original` without its block(s). strip(render(x, e)) == x
  /// for any x that is empty or ends in '\n' and has no block; for other x,
  /// the result is x + "\n" (render had to end x's last line).
  static std::string strip(std::string_view original);

 private:
  std::filesystem::path path_;
};

}  // namespace osh::names

// Theory of operation.
//
// Text: the file is split into lines, each keeping its terminator, so lines
// outside the managed block can be copied back byte for byte (CRLF, missing
// final newline, odd whitespace all survive). Blocks are found by exact marker
// lines (trailing blanks and '\r' ignored); render() and strip() are pure
// functions of the text, unit-tested without touching a file.
//
// Files: write_block()/remove_block() read the whole file (hosts files are
// small), compute the new text and, only if it differs, replace the file.
// The file itself is never reached through a symlink (issue 14.1): it is
// opened O_NOFOLLOW relative to its directory and must be a regular file,
// and a symlink or anything else at its name is refused with an error.
//   1. create "<dir>/.<name>.osh-XXXXXX" in the same directory (same file
//      system, so rename is atomic; O_EXCL | O_NOFOLLOW);
//   2. write all, fchmod to the old mode (0644 for a new file), fchown to the
//      old owner (best effort), fsync, close;
//   3. rename over the target, then fsync the directory (best effort).
// Readers thus see either the old or the new file. When the target is a
// mount point (bind mount from `ip netns exec`, or a container's /etc/hosts)
// rename fails with EBUSY/EXDEV; the temp file is removed and the target is
// rewritten in place: pwrite the new text at offset 0, ftruncate to its
// length, fsync. That window is not atomic, but the file is never empty.
// The same in-place rewrite serves an existing file whose directory is
// read-only (EROFS from mkostemp): the packaged systemd unit makes only
// /etc/hosts writable, not /etc (packaging/openshell-tunnel.service).
#include "names/hosts_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>  // arc4random_uniform
#include <optional>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "common/scoped_fd.h"

namespace osh::names {

namespace fs = std::filesystem;

namespace {

// A line of the original text, including its terminator if any.
struct Line {
  std::string_view text;
  bool is_begin = false;
  bool is_end = false;
};

std::string_view trim_right(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

std::vector<Line> split_lines(std::string_view text) {
  std::vector<Line> lines;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    std::size_t end = nl == std::string_view::npos ? text.size() : nl + 1;
    Line l{text.substr(pos, end - pos)};
    const std::string_view content = trim_right(l.text);
    l.is_begin = content == HostsFile::kBeginMarker;
    l.is_end = content == HostsFile::kEndMarker;
    lines.push_back(l);
    pos = end;
  }
  return lines;
}

// Marks lines that belong to a block (BEGIN..END with no BEGIN in between).
// Returns the index of the first block's BEGIN line, or npos if none.
std::size_t mark_blocks(const std::vector<Line>& lines, std::vector<bool>& in_block) {
  in_block.assign(lines.size(), false);
  std::size_t first = std::string_view::npos;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (!lines[i].is_begin) continue;
    std::size_t j = i + 1;
    while (j < lines.size() && !lines[j].is_end && !lines[j].is_begin) ++j;
    if (j < lines.size() && lines[j].is_end) {
      for (std::size_t k = i; k <= j; ++k) in_block[k] = true;
      if (first == std::string_view::npos) first = i;
      i = j;
    }
    // else: unmatched BEGIN, left as an ordinary line; scanning resumes at i+1
  }
  return first;
}

void check_field(std::string_view field, const char* what) {
  if (field.empty()) throw std::invalid_argument(std::string("hosts entry: empty ") + what);
  for (const char c : field) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f || c == '#')
      throw std::invalid_argument(std::string("hosts entry: invalid character in ") + what +
                                  " \"" + std::string(field) + "\"");
  }
}

std::string render_block(const std::vector<HostEntry>& entries) {
  std::string out;
  out.append(HostsFile::kBeginMarker).append("\n");
  for (const HostEntry& e : entries) {
    check_field(e.address, "address");
    if (e.names.empty())
      throw std::invalid_argument("hosts entry: no names for " + e.address);
    out.append(e.address);
    char sep = '\t';
    for (const std::string& n : e.names) {
      check_field(n, "name");
      out.push_back(sep);
      out.append(n);
      sep = ' ';
    }
    out.push_back('\n');
  }
  out.append(HostsFile::kEndMarker).append("\n");
  return out;
}

[[noreturn]] void throw_errno(int err, const std::string& what, const fs::path& p) {
  throw std::system_error(err, std::generic_category(), what + " " + p.string());
}

// Opens `name` in `dirfd` for `flags` without following a symlink and
// refuses anything but a regular file (a FIFO would block, a device is not
// ours). Returns an invalid fd for ENOENT when `missing_ok`.
ScopedFd open_regular_at(int dirfd, const std::string& name, int flags, const fs::path& shown,
                         bool missing_ok) {
  ScopedFd fd(::openat(dirfd, name.c_str(), flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT && missing_ok) return fd;
    if (errno == ELOOP)
      throw std::system_error(ELOOP, std::generic_category(),
                              shown.string() + " is a symbolic link; refusing to follow it");
    throw_errno(errno, "open", shown);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) throw_errno(errno, "fstat", shown);
  if (!S_ISREG(st.st_mode))
    throw std::system_error(EINVAL, std::generic_category(),
                            shown.string() + " is not a regular file; refusing to use it");
  return fd;
}

std::optional<std::string> read_at(int dirfd, const std::string& name, const fs::path& shown) {
  ScopedFd fd = open_regular_at(dirfd, name, O_RDONLY, shown, true);
  if (!fd.valid()) return std::nullopt;
  std::string data;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "read", shown);
    }
    if (n == 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  return data;
}

void write_all_at(int fd, std::string_view data, const fs::path& p) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "write", p);
    }
    done += static_cast<std::size_t>(n);
  }
}

void rewrite_in_place(int dirfd, const std::string& name, std::string_view data, const fs::path& target) {
  ScopedFd fd = open_regular_at(dirfd, name, O_WRONLY, target, false);
  write_all_at(fd.get(), data, target);
  if (::ftruncate(fd.get(), static_cast<off_t>(data.size())) < 0) throw_errno(errno, "truncate", target);
  if (::fsync(fd.get()) < 0) throw_errno(errno, "fsync", target);
  if (::close(fd.release()) < 0) throw_errno(errno, "close", target);
}

// A new file "<dir>/.<name>.osh-XXXXXX" (O_EXCL, never through a symlink).
ScopedFd create_temp_at(int dirfd, const std::string& name, std::string* tmp_name) {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::string suffix(6, 'x');
    for (char& c : suffix) c = kChars[::arc4random_uniform(sizeof kChars - 1)];
    *tmp_name = "." + name + ".osh-" + suffix;
    ScopedFd fd(::openat(dirfd, tmp_name->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (fd.valid() || errno != EEXIST) return fd;
  }
  errno = EEXIST;
  return ScopedFd{};
}

void replace_at(int dirfd, const std::string& name, std::string_view data, mode_t new_mode,
                const fs::path& target) {
  struct stat st {};
  const bool exists = ::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (!exists && errno != ENOENT) throw_errno(errno, "stat", target);
  if (exists && S_ISLNK(st.st_mode))
    throw std::system_error(ELOOP, std::generic_category(),
                            target.string() + " is a symbolic link; refusing to write through it");
  if (exists && !S_ISREG(st.st_mode))
    throw std::system_error(EINVAL, std::generic_category(),
                            target.string() + " is not a regular file; refusing to replace it");
  const mode_t mode = exists ? (st.st_mode & 07777) : new_mode;

  std::string tmp_name;
  ScopedFd fd = create_temp_at(dirfd, name, &tmp_name);
  if (!fd.valid()) {
    // A read-only directory around a writable file: systemd's
    // ProtectSystem=strict with ReadWritePaths=/etc/hosts (the packaged
    // unit) bind-mounts the file writable, /etc stays read-only.
    if (errno == EROFS && exists) {
      rewrite_in_place(dirfd, name, data, target);
      return;
    }
    throw_errno(errno, "create temporary file for", target);
  }
  const fs::path tmp = target.parent_path() / tmp_name;
  try {
    write_all_at(fd.get(), data, tmp);
    if (::fchmod(fd.get(), mode) < 0) throw_errno(errno, "chmod", tmp);
    if (exists) (void)::fchown(fd.get(), st.st_uid, st.st_gid);  // best effort (needs root)
    if (::fsync(fd.get()) < 0) throw_errno(errno, "fsync", tmp);
    if (::close(fd.release()) < 0) throw_errno(errno, "close", tmp);
  } catch (...) {
    ::unlinkat(dirfd, tmp_name.c_str(), 0);
    throw;
  }

  if (::renameat(dirfd, tmp_name.c_str(), dirfd, name.c_str()) == 0) {
    (void)::fsync(dirfd);  // best effort
    return;
  }
  const int err = errno;
  ::unlinkat(dirfd, tmp_name.c_str(), 0);
  if (err == EBUSY || err == EXDEV) {
    rewrite_in_place(dirfd, name, data, target);
    return;
  }
  throw_errno(err, "rename " + tmp.string() + " to", target);
}

// The directory holding `p` (its components may be symlinks: only the last
// one, the file itself, is never followed); invalid if it does not exist
// and `missing_ok`.
ScopedFd open_parent(const fs::path& p, bool missing_ok = false) {
  fs::path dir = p.parent_path();
  if (dir.empty()) dir = ".";
  ScopedFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid() && !(missing_ok && errno == ENOENT)) throw_errno(errno, "open directory of", p);
  return fd;
}

}  // namespace

std::optional<std::string> read_text_file_at(int dirfd, const std::string& name, const fs::path& shown) {
  return read_at(dirfd, name, shown);
}

void replace_text_file_at(int dirfd, const std::string& name, std::string_view data, mode_t new_mode,
                          const fs::path& shown) {
  replace_at(dirfd, name, data, new_mode, shown);
}

std::optional<std::string> read_text_file(const std::filesystem::path& path) {
  const ScopedFd dir = open_parent(path, true);
  if (!dir.valid()) return std::nullopt;
  return read_at(dir.get(), path.filename().string(), path);
}

void replace_text_file(const std::filesystem::path& path, std::string_view data) {
  replace_at(open_parent(path).get(), path.filename().string(), data, 0644, path);
}

HostsFile::HostsFile(std::filesystem::path path) : path_(std::move(path)) {}

std::string HostsFile::render(std::string_view original, const std::vector<HostEntry>& entries) {
  const std::string block = render_block(entries);
  const std::vector<Line> lines = split_lines(original);
  std::vector<bool> in_block;
  const std::size_t first = mark_blocks(lines, in_block);

  std::string out;
  out.reserve(original.size() + block.size() + 1);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (i == first) out += block;
    if (!in_block[i]) out += lines[i].text;
  }
  if (first == std::string_view::npos) {
    if (!out.empty() && out.back() != '\n') out.push_back('\n');
    out += block;
  }
  return out;
}

std::string HostsFile::strip(std::string_view original) {
  const std::vector<Line> lines = split_lines(original);
  std::vector<bool> in_block;
  mark_blocks(lines, in_block);
  std::string out;
  out.reserve(original.size());
  for (std::size_t i = 0; i < lines.size(); ++i)
    if (!in_block[i]) out += lines[i].text;
  return out;
}

void HostsFile::write_block(const std::vector<HostEntry>& entries) {
  const ScopedFd dir = open_parent(path_);
  const std::string name = path_.filename().string();
  const std::optional<std::string> old = read_at(dir.get(), name, path_);
  const std::string next = render(old.value_or(std::string{}), entries);
  if (old && *old == next) return;
  replace_at(dir.get(), name, next, 0644, path_);
}

void HostsFile::remove_block() {
  const ScopedFd dir = open_parent(path_, true);
  if (!dir.valid()) return;
  const std::string name = path_.filename().string();
  const std::optional<std::string> old = read_at(dir.get(), name, path_);
  if (!old) return;
  const std::string next = strip(*old);
  if (next == *old) return;
  replace_at(dir.get(), name, next, 0644, path_);
}

}  // namespace osh::names

// Theory of operation.
//
// Text: the file is split into lines, each keeping its terminator, so lines
// outside the managed block can be copied back byte for byte (CRLF, missing
// final newline, odd whitespace all survive). Blocks are found by exact marker
// lines (trailing blanks and '\r' ignored); render() and strip() are pure
// functions of the text, unit-tested without touching a file.
//
// Files: write_block()/remove_block() read the whole file (hosts files are
// small), compute the new text and, only if it differs, replace the file:
//   1. mkostemp "<dir>/.<name>.osh-XXXXXX" in the same directory (same file
//      system, so rename is atomic);
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

// The whole file, or nullopt if it does not exist.
std::optional<std::string> read_file(const fs::path& p) {
  ScopedFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return std::nullopt;
    throw_errno(errno, "open", p);
  }
  std::string data;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "read", p);
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

void fsync_dir(const fs::path& dir) noexcept {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

void rewrite_in_place(const fs::path& target, std::string_view data) {
  ScopedFd fd(::open(target.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) throw_errno(errno, "open for writing", target);
  write_all_at(fd.get(), data, target);
  if (::ftruncate(fd.get(), static_cast<off_t>(data.size())) < 0) throw_errno(errno, "truncate", target);
  if (::fsync(fd.get()) < 0) throw_errno(errno, "fsync", target);
  if (::close(fd.release()) < 0) throw_errno(errno, "close", target);
}

void replace_file(const fs::path& target, std::string_view data) {
  struct stat st {};
  const bool exists = ::stat(target.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) throw_errno(errno, "stat", target);
  const mode_t mode = exists ? (st.st_mode & 07777) : 0644;

  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  std::string tmpl = (dir / ("." + target.filename().string() + ".osh-XXXXXX")).string();
  ScopedFd fd(::mkostemp(tmpl.data(), O_CLOEXEC));
  if (!fd.valid()) {
    // A read-only directory around a writable file: systemd's
    // ProtectSystem=strict with ReadWritePaths=/etc/hosts (the packaged
    // unit) bind-mounts the file writable, /etc stays read-only.
    if (errno == EROFS && exists) {
      rewrite_in_place(target, data);
      return;
    }
    throw_errno(errno, "create temporary file for", target);
  }
  const fs::path tmp = tmpl;
  try {
    write_all_at(fd.get(), data, tmp);
    if (::fchmod(fd.get(), mode) < 0) throw_errno(errno, "chmod", tmp);
    if (exists) (void)::fchown(fd.get(), st.st_uid, st.st_gid);  // best effort (needs root)
    if (::fsync(fd.get()) < 0) throw_errno(errno, "fsync", tmp);
    if (::close(fd.release()) < 0) throw_errno(errno, "close", tmp);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }

  if (::rename(tmp.c_str(), target.c_str()) == 0) {
    fsync_dir(dir);
    return;
  }
  const int err = errno;
  ::unlink(tmp.c_str());
  if (err == EBUSY || err == EXDEV) {
    rewrite_in_place(target, data);
    return;
  }
  throw_errno(err, "rename " + tmp.string() + " to", target);
}

// The file to operate on: the symlink target if `p` is a symlink.
fs::path resolve(const fs::path& p) {
  std::error_code ec;
  if (fs::is_symlink(p, ec)) {
    fs::path real = fs::canonical(p, ec);
    if (!ec) return real;
  }
  return p;
}

}  // namespace

std::optional<std::string> read_text_file(const std::filesystem::path& path) {
  return read_file(resolve(path));
}

void replace_text_file(const std::filesystem::path& path, std::string_view data) {
  replace_file(resolve(path), data);
}

HostsFile::HostsFile(std::filesystem::path path) : path_(std::move(path)) {}

std::string HostsFile::render(std::string_view original, const std::vector<HostEntry>& entries) {
  const std::string block = render_block(entries);
  const std::vector<Line> lines = split_lines(original);
  std::vector<bool> in_block;
  const std::size_t first = mark_blocks(lines, in_block);

  std::string out;
  out.reserve(original.size() + block.size() + 1);
  if (first == std::string_view::npos) {
    out.append(original);
    if (!out.empty() && out.back() != '\n') out.push_back('\n');
    return out + block;
  }
  std::string rest;  // the lines after the first block that are in none
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (i < first) out += lines[i].text;
    else if (!in_block[i]) rest += lines[i].text;
  }
  // Stray markers in `rest` may pair up once the blocks between them are
  // gone; strip() removes such blocks too, so that rendering twice gives
  // the same text (a rule of fuzz/hosts_fuzz.cc).
  return out + block + strip(rest);
}

std::string HostsFile::strip(std::string_view original) {
  std::string text(original);
  for (;;) {
    const std::vector<Line> lines = split_lines(text);
    std::vector<bool> in_block;
    if (mark_blocks(lines, in_block) == std::string_view::npos) return text;
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < lines.size(); ++i)
      if (!in_block[i]) out += lines[i].text;
    text = std::move(out);  // each pass removes at least two lines
  }
}

void HostsFile::write_block(const std::vector<HostEntry>& entries) {
  const fs::path target = resolve(path_);
  const std::optional<std::string> old = read_file(target);
  const std::string next = render(old.value_or(std::string{}), entries);
  if (old && *old == next) return;
  replace_file(target, next);
}

void HostsFile::remove_block() {
  const fs::path target = resolve(path_);
  const std::optional<std::string> old = read_file(target);
  if (!old) return;
  const std::string next = strip(*old);
  if (next == *old) return;
  replace_file(target, next);
}

}  // namespace osh::names

// Theory of operation: see user_files.h. Wire format, both directions: a
// 4-byte length (host order: both ends are this binary on this machine)
// and that many bytes, at most kMaxFrame. A request is
// <op><ssh config path>\0<text>, op 'I' (install), 'W' (write the include
// target), 'R' (remove); the reply is '0' (done) or '1' followed by the
// error message. The helper is single-threaded and handles one request at a
// time; the daemon serialises its calls with a mutex and waits at most
// kReplyTimeout for a reply (a stuck home file system must not stall it
// for ever).
#include "cli/user_files.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/scoped_fd.h"
#include "names/ssh_config.h"

namespace osh::cli {

namespace fs = std::filesystem;

namespace {

constexpr int kReplyTimeoutMs = 30000;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// Blocking full write/read on the socket; false on error or EOF.
bool send_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads exactly n bytes; with timeout_ms >= 0 each wait is bounded.
bool recv_all(int fd, void* p, size_t n, int timeout_ms) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    if (timeout_ms >= 0) {
      pollfd pfd{fd, POLLIN, 0};
      const int r = ::poll(&pfd, 1, timeout_ms);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        if (r == 0) errno = ETIMEDOUT;
        return false;
      }
    }
    const ssize_t got = ::recv(fd, c, n, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      if (got == 0) errno = EPIPE;
      return false;
    }
    c += got;
    n -= static_cast<size_t>(got);
  }
  return true;
}

bool send_frame(int fd, const std::string& payload) {
  const uint32_t len = static_cast<uint32_t>(payload.size());
  return send_all(fd, &len, sizeof len) && send_all(fd, payload.data(), payload.size());
}

// nullopt on EOF, error or an oversized frame.
std::optional<std::string> recv_frame(int fd, int timeout_ms) {
  uint32_t len = 0;
  if (!recv_all(fd, &len, sizeof len, timeout_ms)) return std::nullopt;
  if (len > UserFiles::kMaxFrame) {
    errno = EMSGSIZE;
    return std::nullopt;
  }
  std::string data(len, '\0');
  if (!recv_all(fd, data.data(), len, timeout_ms)) return std::nullopt;
  return data;
}

// ---- the helper (child) side ----

// Becomes `uid`/`gid` for good: no capability, no way back to root.
// "" on success, otherwise what failed.
std::string become(uid_t uid, gid_t gid, pid_t parent) {
  // The bounding set: best effort (needs CAP_SETPCAP, which a systemd
  // CapabilityBoundingSet= may not include); nothing here ever execs.
  for (cap_value_t c = 0; c <= CAP_LAST_CAP; ++c) (void)::prctl(PR_CAPBSET_DROP, c, 0, 0, 0);
  if (uid != 0) {
    if (::setgroups(1, &gid) != 0) return errno_text("setgroups");
    if (::setresgid(gid, gid, gid) != 0) return errno_text("setresgid");
    if (::setresuid(uid, uid, uid) != 0) return errno_text("setresuid");
    if (::setuid(0) == 0 || ::seteuid(0) == 0) return "could regain root after setuid";
    if (::getuid() != uid || ::geteuid() != uid || ::getgid() != gid || ::getegid() != gid)
      return "uid/gid did not change";
  }
  cap_t none = cap_init();  // every set empty
  if (!none) return errno_text("cap_init");
  const int rc = cap_set_proc(none);
  cap_free(none);
  if (rc != 0) return errno_text("cap_set_proc");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno_text("PR_SET_NO_NEW_PRIVS");
  // A copy of the daemon's memory (the bearer token among it): not readable
  // through /proc or ptrace by anyone without CAP_SYS_PTRACE, as the daemon
  // (the kernel does this for a uid change; for uid 0 there is none).
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return errno_text("PR_SET_DUMPABLE");
  // Reset by setuid, so set now; the parent may have died in between.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return errno_text("PR_SET_PDEATHSIG");
  if (::getppid() != parent) return "the daemon is gone";
  ::umask(077);
  return "";
}

// The ssh config's directory, opened without following a symlink; created
// (0700) if `create` and it is missing; invalid if `missing_ok` and it (or
// its parent) does not exist. Its own parent (the home) may be
// reached through symlinks: the helper runs as the user, so it can only go
// where the user can.
ScopedFd open_config_dir(const fs::path& ssh_config, bool create, bool missing_ok = false) {
  fs::path dir = ssh_config.parent_path();
  if (dir.empty()) throw std::runtime_error("ssh config path " + ssh_config.string() + " has no directory");
  if (!ssh_config.is_absolute()) throw std::runtime_error("ssh config path " + ssh_config.string() + " is relative");
  if (dir == dir.root_path()) {
    ScopedFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw std::runtime_error(errno_text(("open " + dir.string()).c_str()));
    return fd;
  }
  const fs::path up = dir.parent_path();
  const std::string name = dir.filename().string();
  ScopedFd parent(::open(up.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!parent && errno == ENOENT && missing_ok) return parent;
  if (!parent) throw std::runtime_error(errno_text(("open " + up.string()).c_str()));
  if (create && ::mkdirat(parent.get(), name.c_str(), 0700) != 0 && errno != EEXIST)
    throw std::runtime_error(errno_text(("create " + dir.string()).c_str()));
  ScopedFd fd(::openat(parent.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd && errno == ENOENT && missing_ok) return fd;
  if (!fd) {
    if (errno == ELOOP || errno == ENOTDIR) {
      struct stat st {};
      if (::fstatat(parent.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
        throw std::runtime_error(dir.string() + " is a symbolic link; refusing to follow it");
    }
    throw std::runtime_error(errno_text(("open " + dir.string()).c_str()));
  }
  return fd;
}

// One request; "" when done, otherwise the error.
std::string handle(const std::string& req) {
  if (req.empty()) return "empty request";
  const char op = req[0];
  const size_t nul = req.find('\0', 1);
  if (nul == std::string::npos || nul - 1 > 4096) return "malformed request";
  const fs::path cfg = req.substr(1, nul - 1);
  const std::string text = req.substr(nul + 1);
  if (cfg.filename().empty() || cfg.filename() == "." || cfg.filename() == "..")
    return "ssh config path " + cfg.string() + " names no file";
  try {
    switch (op) {
      case 'I': {
        const ScopedFd dir = open_config_dir(cfg, true);
        names::SshConfigInclude::install_at(dir.get(), cfg, text);
        return "";
      }
      case 'W': {
        const ScopedFd dir = open_config_dir(cfg, false);
        names::SshConfigInclude::write_include_at(dir.get(), cfg, text);
        return "";
      }
      case 'R': {
        const ScopedFd dir = open_config_dir(cfg, false, true);
        if (!dir) return "";  // no directory: nothing of ours is there
        names::SshConfigInclude::remove_at(dir.get(), cfg);
        return "";
      }
      default:
        return "unknown request";
    }
  } catch (const std::exception& e) {
    return e.what();
  }
}

[[noreturn]] void helper_main(int sock, uid_t uid, gid_t gid, pid_t parent) {
  // Only the socket (as fd 3) and stdio survive: not the state lock, the
  // TUN or anything else the daemon may have opened by now.
  if (sock != 3) {
    if (::dup2(sock, 3) < 0) _exit(1);
    sock = 3;
  }
  ::close_range(4, ~0U, 0);
  int null = ::open("/dev/null", O_RDWR);
  if (null >= 0) {
    ::dup2(null, 0);
    ::dup2(null, 1);
    if (null > 3) ::close(null);
  }
  ::signal(SIGPIPE, SIG_IGN);
  const std::string failed = become(uid, gid, parent);
  for (;;) {
    const auto req = recv_frame(sock, -1);
    if (!req) _exit(0);  // the daemon closed the socket or died
    std::string reply;
    if (!failed.empty()) {
      reply = "1the user's file helper could not become uid " + std::to_string(uid) + ": " + failed;
    } else {
      const std::string err = handle(*req);
      reply = err.empty() ? "0" : "1" + err;
    }
    if (!send_frame(sock, reply)) _exit(0);
  }
}

}  // namespace

gid_t primary_gid(uid_t uid) {
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found) return found->pw_gid;
  return static_cast<gid_t>(uid);
}

std::unique_ptr<UserFiles> UserFiles::start(uid_t uid, gid_t gid, std::string* error) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    *error = errno_text("socketpair");
    return nullptr;
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    *error = errno_text("fork");
    ::close(sv[0]);
    ::close(sv[1]);
    return nullptr;
  }
  if (pid == 0) {
    ::close(sv[0]);
    helper_main(sv[1], uid, gid, parent);
  }
  ::close(sv[1]);
  return std::unique_ptr<UserFiles>(new UserFiles(sv[0], pid, uid));
}

UserFiles::~UserFiles() {
  ::close(fd_);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

void UserFiles::call(char op, const fs::path& ssh_config, const std::string& text) {
  std::lock_guard lk(mu_);
  if (!broken_.empty()) throw std::runtime_error(broken_);
  std::string req(1, op);
  req += ssh_config.string();
  req += '\0';
  req += text;
  if (req.size() > kMaxFrame) throw std::runtime_error("request to the user's file helper is too large");
  std::optional<std::string> reply;
  if (send_frame(fd_, req)) reply = recv_frame(fd_, kReplyTimeoutMs);
  if (!reply) {
    // A late reply would answer the next request: the channel is done.
    broken_ = errno_text("the user's file helper");
    ::shutdown(fd_, SHUT_RDWR);
    throw std::runtime_error(broken_);
  }
  if (reply->empty() || (*reply)[0] != '0')
    throw std::runtime_error(reply->empty() ? "empty reply from the user's file helper" : reply->substr(1));
}

void UserFiles::install(const fs::path& ssh_config, const std::string& include_text) {
  call('I', ssh_config, include_text);
}

void UserFiles::write_include(const fs::path& ssh_config, const std::string& include_text) {
  call('W', ssh_config, include_text);
}

void UserFiles::remove(const fs::path& ssh_config) { call('R', ssh_config, ""); }

}  // namespace osh::cli

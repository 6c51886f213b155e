// Theory of operation: one osh::EventLoop thread watches the listening
// socket (non-blocking); the destructor stops the loop. Each accepted client
// gets a 2 s receive timeout, one request line (≤ 4 KiB), one response line,
// on that thread; clients are served one at a time (status
// requests are rare and answered in microseconds). Every local user can
// connect (socket 0666, directory 0711, modes only: the daemon keeps no
// CAP_CHOWN/CAP_FOWNER for this); who may do what is the handler's decision
// on the peer's uid from SO_PEERCRED. A peer whose credentials cannot be
// read is not served.
#include "cli/control.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "cli/state.h"
#include "common/log_escape.h"
#include "common/log_limiter.h"

namespace osh::cli {
namespace {

sockaddr_un make_addr(const std::filesystem::path& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const std::string p = path.string();
  if (p.size() >= sizeof a.sun_path)
    throw std::system_error(ENAMETOOLONG, std::generic_category(), "control socket path " + p);
  std::memcpy(a.sun_path, p.c_str(), p.size() + 1);
  return a;
}

bool write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Limits of one line: a request is a small JSON object; an answer is the
// status JSON, about 0.5 KiB per sandbox (1,000 sandboxes: ~0.5 MiB).
constexpr size_t kMaxRequest = 4096;
constexpr size_t kMaxAnswer = 64u << 20;

void set_timeouts(int fd, std::chrono::milliseconds t);

// Reads up to '\n' (not included) or EOF; false on error, when the line is
// not complete by @deadline, or when more than @max bytes come without a
// newline.
bool read_line(int fd, std::string* out, size_t max, std::chrono::steady_clock::time_point deadline) {
  char buf[16384];
  while (out->size() <= max) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      errno = ETIMEDOUT;
      return false;
    }
    set_timeouts(fd, left);
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return !out->empty();
    const size_t scanned = out->size();
    out->append(buf, static_cast<size_t>(n));
    if (auto nl = out->find('\n', scanned); nl != std::string::npos) {
      out->resize(nl);
      return true;
    }
  }
  errno = EMSGSIZE;
  return false;
}

void set_timeouts(int fd, std::chrono::milliseconds t) {
  timeval tv{static_cast<time_t>(t.count() / 1000), static_cast<suseconds_t>((t.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace

ControlServer::ControlServer(std::filesystem::path path, Handler handler, Admit admit)
    : path_(std::move(path)), handler_(std::move(handler)), admit_(std::move(admit)) {
  std::error_code ec;
  std::filesystem::create_directories(path_.parent_path(), ec);
  ::chmod(path_.parent_path().c_str(), kStateDirMode);
  ::unlink(path_.c_str());
  sockaddr_un a = make_addr(path_);
  listen_fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_fd_) throw std::system_error(errno, std::generic_category(), "control socket");
  const mode_t old = ::umask(077);
  const int rc = ::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  const int err = errno;
  ::umask(old);
  if (rc < 0 || ::listen(listen_fd_.get(), 8) < 0)
    throw std::system_error(rc < 0 ? err : errno, std::generic_category(), "bind " + path_.string());
  // After bind (created under umask 077): open to every local user, who is
  // then checked by uid (SO_PEERCRED) in serve_one().
  if (::chmod(path_.c_str(), 0666) < 0)
    throw std::system_error(errno, std::generic_category(), "chmod " + path_.string());
  if (const int e = loop_.watch(listen_fd_.get(), EPOLLIN, [this](uint32_t) { serve_one(); }); e != 0)
    throw std::system_error(e, std::generic_category(), "epoll_ctl(control socket)");
  loop_.start();
}

ControlServer::~ControlServer() {
  loop_.stop();
  loop_.unwatch(listen_fd_.get());
  listen_fd_.reset();
  ::unlink(path_.c_str());
}

// One client per wake-up (level-triggered: the next one wakes the loop again).
void ControlServer::serve_one() {
  ScopedFd c(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));  // blocking, with timeouts
  if (!c) return;  // EAGAIN (the client left), EINTR, ECONNABORTED, EMFILE...
  set_timeouts(c.get(), std::chrono::milliseconds(2000));
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    spdlog::warn("control socket: cannot read the peer's credentials: {}", std::strerror(errno));
    return;
  }
  if (admit_ && !admit_(cred.uid)) {
    write_all(c.get(), json_answer({{"ok", false},
                                    {"denied", true},
                                    {"error", fmt::format("uid {} is not allowed to use this tunnel", cred.uid)}}) +
                           "\n");
    return;
  }
  std::string req;
  if (read_line(c.get(), &req, kMaxRequest, std::chrono::steady_clock::now() + std::chrono::milliseconds(2000))) {
    // The request boundary (issue 14.8): whatever the handler throws is an
    // error answer and one log line, never the end of this thread (an
    // exception escaping the loop would terminate the daemon, uncleaned).
    std::string resp;
    try {
      resp = handler_(req, cred.uid);
    } catch (const std::exception& e) {
      OSH_LOG_LIMITED(spdlog::level::err, "control socket: request failed: {}", log_escape(e.what()));
      resp = R"({"ok":false,"error":"internal error, see the tunnel's log"})";
    } catch (...) {
      OSH_LOG_LIMITED(spdlog::level::err, "control socket: request failed (unknown exception)");
      resp = R"({"ok":false,"error":"internal error"})";
    }
    resp.push_back('\n');
    write_all(c.get(), resp);
  }
}

std::string json_answer(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<std::string> control_request(const std::filesystem::path& path, const std::string& request,
                                           std::chrono::milliseconds timeout, std::string* error) {
  sockaddr_un a = make_addr(path);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::strerror(errno);
    return std::nullopt;
  }
  set_timeouts(fd, timeout);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
    *error = "connect " + path.string() + ": " + std::strerror(errno);
    ::close(fd);
    return std::nullopt;
  }
  std::string line = request + "\n";
  std::string resp;
  // A daemon that refuses this uid answers at accept, before reading, and
  // closes (ControlServer::Admit): the write may then fail with EPIPE while
  // the answer is already waiting to be read. So read whatever the write did.
  (void)write_all(fd, line);
  const bool ok = read_line(fd, &resp, kMaxAnswer, std::chrono::steady_clock::now() + timeout);
  const int err = errno;
  ::close(fd);
  if (!ok) {
    *error = "no answer on " + path.string() + ": " + std::strerror(err);
    return std::nullopt;
  }
  return resp;
}

}  // namespace osh::cli

// Theory of operation: `openshell-tunnel ssh-proxy SANDBOX`
// =======================================================
// OpenSSH runs the proxy with its stdin/stdout as the SSH byte stream
// (ProxyCommand). The proxy resolves SANDBOX to its id (ListSandboxes, must
// be READY), opens one ForwardTcp stream with init.ssh (protocol §5.3; the
// relay mints the CreateSshSession token), and pipes:
//   in_fd  -> stream: read only after the stream is open, at most
//             kForwardUpWindow bytes whose gRPC write has not completed;
//             EOF -> close_write() (WritesDone: sshd sees FIN, replies flow).
//   stream -> out_fd: one frame at a time, the next read_more() only once the
//             frame is written; the target's FIN (empty data frame) -> out_fd
//             is closed so ssh sees EOF.
// One thread runs everything: a poll() loop over in_fd, out_fd, the
// StreamEventQueue's eventfd and a signalfd for SIGINT/SIGTERM/SIGHUP (ssh
// sends SIGHUP to its proxy when it exits). out_fd is made non-blocking when
// it is a pipe or socket (restored on exit), so a full pipe never stalls the
// loop; a tty or file is written blocking.
// Ending: stream OK -> flush, exit 0; stream error or local I/O error -> one
// line on stderr, exit 2; a signal or ssh gone (EPIPE) -> abort, exit 0.
// The command raises logging to warn unless asked for (ssh shows our stderr).
#include "cli/ssh_proxy.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "cli/forward.h"
#include "cli/up.h"

namespace osh::cli {
namespace {

constexpr relay::StreamId kStream = 1;

// Sets O_NONBLOCK on a pipe or socket for the object's lifetime.
class NonBlockingGuard {
 public:
  explicit NonBlockingGuard(int fd) : fd_(fd) {
    struct stat st {};
    if (fstat(fd, &st) != 0 || !(S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) return;
    flags_ = fcntl(fd, F_GETFL);
    if (flags_ >= 0 && !(flags_ & O_NONBLOCK)) fcntl(fd, F_SETFL, flags_ | O_NONBLOCK);
    else flags_ = -1;
  }
  ~NonBlockingGuard() { restore(); }
  /// Puts the original flags back (before the fd is closed); idempotent.
  void restore() {
    if (flags_ >= 0) fcntl(fd_, F_SETFL, flags_);
    flags_ = -1;
  }
  NonBlockingGuard(const NonBlockingGuard&) = delete;
  NonBlockingGuard& operator=(const NonBlockingGuard&) = delete;

 private:
  int fd_;
  int flags_ = -1;  // the flags to restore; -1 = nothing changed
};

class SshProxy {
 public:
  SshProxy(relay::GatewayClient& gw, const SshProxyOptions& o, relay::SandboxRef sandbox)
      : o_(o), sandbox_(std::move(sandbox)), mgr_(gw, events_), buf_(kForwardChunk) {}

  int run() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    tun::ScopedFd sfd(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sfd) return fail(fmt::format("signalfd: {}", std::strerror(errno)));
    nb_.emplace(o_.out_fd);

    relay::ForwardTarget t;
    t.sandbox = sandbox_;
    t.ssh = true;
    t.service_id = "ssh-proxy:" + sandbox_.name;
    mgr_.open(kStream, std::move(t));

    while (!(stream_closed_ && out_off_ >= out_.size())) {
      pollfd fds[4];
      nfds_t n = 0;
      fds[n++] = {events_.fd(), POLLIN, 0};
      fds[n++] = {sfd.get(), POLLIN, 0};
      const int in_slot = want_read() ? static_cast<int>(n) : -1;
      if (in_slot >= 0) fds[n++] = {o_.in_fd, POLLIN, 0};
      const int out_slot = out_off_ < out_.size() ? static_cast<int>(n) : -1;
      if (out_slot >= 0) fds[n++] = {o_.out_fd, POLLOUT, 0};
      if (poll(fds, n, -1) < 0) {
        if (errno == EINTR) continue;
        return abort_with(fmt::format("poll: {}", std::strerror(errno)));
      }
      if (fds[1].revents) {
        signalfd_siginfo si{};
        [[maybe_unused]] ssize_t r = ::read(sfd.get(), &si, sizeof si);
        spdlog::debug("ssh-proxy: signal {}: stopping", si.ssi_signo);
        mgr_.abort(kStream);
        return kExitOk;
      }
      if (fds[0].revents) {
        for (auto& ev : events_.drain()) {
          if (int rc = apply(ev); rc >= 0) return rc;
        }
      }
      if (out_slot >= 0 && fds[out_slot].revents) {
        if (int rc = flush_out(); rc >= 0) return rc;
      }
      if (in_slot >= 0 && fds[in_slot].revents) {
        if (int rc = read_in(); rc >= 0) return rc;
      }
    }
    if (end_ != relay::EndKind::kOk) return fail(end_message());
    return kExitOk;
  }

 private:
  bool want_read() const {
    return open_ok_ && !in_eof_ && !stream_closed_ && up_outstanding_ < kForwardUpWindow;
  }

  // Return convention of the step functions: -1 = keep going, else the
  // process exit code.
  int apply(StreamEvent& ev) {
    switch (ev.kind) {
      case StreamEvent::Kind::kOpenOk:
        open_ok_ = true;
        break;
      case StreamEvent::Kind::kData:
        out_ = std::move(ev.bytes);
        out_off_ = 0;
        return flush_out();
      case StreamEvent::Kind::kRemoteFin:
        remote_fin_ = true;
        return flush_out();
      case StreamEvent::Kind::kWriteDone:
        up_outstanding_ -= std::min(up_outstanding_, ev.written);
        break;
      case StreamEvent::Kind::kClosed:
        stream_closed_ = true;
        end_ = ev.end;
        reason_ = std::move(ev.reason);
        // An error ends at once (like a reset); OK flushes what is queued.
        if (end_ != relay::EndKind::kOk) return fail(end_message());
        break;
    }
    return -1;
  }

  int read_in() {
    const size_t want = std::min(kForwardChunk, kForwardUpWindow - up_outstanding_);
    const ssize_t n = ::read(o_.in_fd, buf_.data(), want);
    if (n > 0) {
      up_outstanding_ += static_cast<size_t>(n);
      mgr_.send(kStream, std::string(buf_.data(), static_cast<size_t>(n)));
    } else if (n == 0) {
      in_eof_ = true;
      spdlog::debug("ssh-proxy: stdin EOF: WritesDone");
      mgr_.close_write(kStream);
    } else if (errno != EINTR && errno != EAGAIN) {
      return abort_with(fmt::format("reading stdin: {}", std::strerror(errno)));
    }
    return -1;
  }

  int flush_out() {
    while (out_off_ < out_.size()) {
      const ssize_t n = ::write(o_.out_fd, out_.data() + out_off_, out_.size() - out_off_);
      if (n > 0) {
        out_off_ += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && errno == EAGAIN) {
        return -1;
      } else if (n < 0 && errno == EPIPE) {
        // ssh stopped reading (it is exiting): not a proxy failure.
        spdlog::debug("ssh-proxy: stdout closed by the reader");
        mgr_.abort(kStream);
        return kExitOk;
      } else {
        return abort_with(fmt::format("writing stdout: {}", std::strerror(n < 0 ? errno : EIO)));
      }
    }
    if (!out_.empty()) {
      out_.clear();
      out_off_ = 0;
      if (!stream_closed_) mgr_.read_more(kStream);
    }
    if (remote_fin_ && !out_closed_) {
      out_closed_ = true;
      nb_->restore();
      ::close(o_.out_fd);  // ssh reads EOF: the target half-closed
      spdlog::debug("ssh-proxy: target FIN: stdout closed");
    }
    return -1;
  }

  std::string end_message() const {
    return open_ok_ ? fmt::format("the SSH stream to sandbox '{}' failed: {}", o_.sandbox, reason_)
                    : fmt::format("could not open the SSH stream to sandbox '{}': {}", o_.sandbox,
                                  reason_);
  }
  int abort_with(const std::string& msg) {
    mgr_.abort(kStream);
    return fail(msg);
  }
  static int fail(const std::string& msg) {
    fmt::print(stderr, "openshell-tunnel ssh-proxy: {}\n", msg);
    return kExitGateway;
  }

  const SshProxyOptions& o_;
  const relay::SandboxRef sandbox_;
  StreamEventQueue events_;  // outlives mgr_, which calls it
  relay::ForwardManager mgr_;
  std::vector<char> buf_;
  std::optional<NonBlockingGuard> nb_;  // out_fd non-blocking while run() runs
  bool open_ok_ = false, in_eof_ = false, remote_fin_ = false, out_closed_ = false;
  bool stream_closed_ = false;
  relay::EndKind end_ = relay::EndKind::kOk;
  std::string reason_;
  size_t up_outstanding_ = 0;
  std::string out_;  // the frame being written to out_fd
  size_t out_off_ = 0;
};

}  // namespace

int run_ssh_proxy(const SshProxyOptions& o) {
  relay::GatewayClient gw(o.gateway);
  std::string err;
  const auto sandbox = find_ready_sandbox(gw, o.sandbox, &err);
  if (!sandbox) {
    fmt::print(stderr, "openshell-tunnel ssh-proxy: {}\n", err);
    return kExitGateway;
  }
  try {
    SshProxy proxy(gw, o, {sandbox->id, sandbox->name});
    return proxy.run();
  } catch (const std::exception& e) {
    fmt::print(stderr, "openshell-tunnel ssh-proxy: {}\n", e.what());
    return kExitGateway;
  }
}

}  // namespace osh::cli

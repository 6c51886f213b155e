// Small blocking-socket helpers for the mini peers: an owning fd, dialling a
// TCP target, write_all, and the Rust-style OS error text that upstream puts
// into RelayOpenResult.error (protocol §2.3, §3.2).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace osh::peers {

/// Owns one file descriptor and closes it on destruction. Move-only; -1 means
/// "owns nothing". Not thread-safe (a value type).
class ScopedFd {
 public:
  ScopedFd() noexcept = default;
  /// Takes ownership of @fd (-1 for none).
  explicit ScopedFd(int fd) noexcept : fd_(fd) {}
  ~ScopedFd() { reset(); }
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  /// The owned descriptor, or -1.
  int get() const noexcept { return fd_; }
  /// True if a descriptor is owned.
  bool valid() const noexcept { return fd_ >= 0; }
  /// Gives up ownership without closing; returns the descriptor (or -1).
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
  /// Closes the owned descriptor (close() errors ignored) and owns @fd.
  void reset(int fd = -1) noexcept {
    const int old = std::exchange(fd_, fd);
    if (old >= 0 && old != fd) ::close(old);
  }

 private:
  int fd_ = -1;
};

/// OsErrorText() - "<strerror text> (os error <errno>)", the form of Rust's
/// io::Error Display that upstream's supervisor sends, e.g.
/// "Connection refused (os error 111)". Thread: any.
std::string OsErrorText(int err);

/// Result of DialTcp(): an open socket, or the errno and its text.
struct DialResult {
  ScopedFd fd;        ///< the connected socket (blocking, TCP_NODELAY, CLOEXEC)
  int err = 0;        ///< errno of the last failed attempt, 0 on success
  std::string error;  ///< OsErrorText(err), or a resolver message
  bool ok() const { return fd.valid(); }
};

/// DialTcp() - blocking connect to @host:@port (protocol §3.2: "blocking
/// connect, then TCP_NODELAY"; no dial timeout, loopback connects or is
/// refused at once).
/// @host: an IPv4 or IPv6 literal (no brackets) or a name getaddrinfo knows.
/// @port: 1..65535.
/// Each resolved address is tried in order; the last error is reported.
/// Return: see DialResult. Thread: any; blocks for the connect.
DialResult DialTcp(const std::string& host, uint16_t port);

/// WriteAll() - writes all @len bytes of @data to the socket @fd, retrying on
/// EINTR and short writes; uses send(MSG_NOSIGNAL) so a dead peer gives EPIPE
/// instead of SIGPIPE.
/// Return: 0 on success, else the errno of the failed send.
/// Thread: any; blocks while the socket buffer is full.
int WriteAll(int fd, const void* data, size_t len);

/// SetLingerZero() - SO_LINGER {on, 0}: the next close() sends a TCP RST
/// instead of a FIN, so the peer sees the connection reset. Errors ignored.
/// Thread: any.
void SetLingerZero(int fd);

}  // namespace osh::peers

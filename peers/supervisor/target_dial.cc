// Theory of operation: non-blocking target dial
// =============================================
//
// ResolveTcpTarget() (peers/common/socket.cc) runs getaddrinfo on the
// caller's thread; the mini-supervisor calls it on its session thread, so a
// slow resolver never stalls the event loop that carries every relay's
// bytes.
//
// TargetDialer walks the address list without blocking: socket(SOCK_NONBLOCK | SOCK_CLOEXEC), connect().
//   0            -> connected
//   EINPROGRESS  -> kWaiting; the owner waits for EPOLLOUT (or ERR/HUP) and
//                   calls OnWritable(), which reads SO_ERROR: 0 -> connected,
//                   else that errno is the attempt's error
//   other errno  -> the attempt's error
// A failed attempt closes its socket and moves to the next address; when
// none is left the last error is the result (ECONNREFUSED if there was no
// address at all), so RelayOpenResult.error reads exactly as before, e.g.
// "Connection refused (os error 111)". A connected socket gets TCP_NODELAY
// and stays non-blocking.

#include "peers/supervisor/target_dial.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cerrno>

namespace osh::peers {

TargetDialer::TargetDialer(std::vector<TargetAddress> addresses)
    : addresses_(std::move(addresses)) {}

TargetDialer::Step TargetDialer::Start() { return TryFrom(0); }

TargetDialer::Step TargetDialer::OnWritable() {
  if (!socket_.valid()) return Step::kFailed;
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(socket_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0) return Step::kConnected;
  if (err == EINPROGRESS || err == EALREADY) return Step::kWaiting;  // not done yet
  error_ = err;
  socket_.reset();
  return TryFrom(next_);
}

ScopedFd TargetDialer::TakeSocket() {
  if (socket_.valid()) {
    const int one = 1;
    ::setsockopt(socket_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return std::move(socket_);
}

TargetDialer::Step TargetDialer::TryFrom(size_t index) {
  for (; index < addresses_.size(); ++index) {
    const TargetAddress& a = addresses_[index];
    ScopedFd fd(::socket(a.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
    if (!fd.valid()) {
      error_ = errno;
      continue;
    }
    // EINTR: the connect goes on asynchronously (POSIX), as for EINPROGRESS;
    // retrying it would only report EALREADY.
    const int rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a.addr), a.len);
    if (rc == 0 || errno == EINPROGRESS || errno == EINTR) {
      socket_ = std::move(fd);
      next_ = index + 1;
      error_ = 0;
      return rc == 0 ? Step::kConnected : Step::kWaiting;
    }
    error_ = errno;
  }
  next_ = addresses_.size();
  if (error_ == 0) error_ = ECONNREFUSED;
  return Step::kFailed;
}

}  // namespace osh::peers

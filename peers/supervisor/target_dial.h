// Non-blocking TCP dial of a relay target for the mini-supervisor's event
// loop (protocol §3.2): ResolveTcpTarget() (peers/common/socket.h) on the
// caller's thread, then each address in turn without blocking. A failed dial
// reports the last error as OsErrorText(), e.g. "Connection refused (os error
// 111)", the text upstream's supervisor sends.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <vector>

#include "peers/common/socket.h"

namespace osh::peers {

/// Dials a list of addresses in order with non-blocking sockets: connect(),
/// and on EINPROGRESS wait (the owner's epoll) for the socket to become
/// writable, then read SO_ERROR. A failed address moves on to the next; the
/// last error is reported when none is left (ECONNREFUSED if the list was
/// empty). No timeout of its own: a loopback target connects
/// or is refused at once. Not thread-safe: one owner thread.
class TargetDialer {
 public:
  /// Where a dial stands after Start() or OnWritable().
  enum class Step {
    kWaiting,    ///< connect in progress: wait until fd() is writable
    kConnected,  ///< take the socket with TakeSocket()
    kFailed,     ///< every address failed: see error()
  };

  explicit TargetDialer(std::vector<TargetAddress> addresses);

  /// Start() - tries the first address (and the next ones while they fail
  /// at once). Return: the step. Thread: the owner's.
  Step Start();

  /// OnWritable() - after epoll reported fd() writable (or in error):
  /// checks SO_ERROR; on failure closes the socket and tries the next
  /// address. Return: the step. Thread: the owner's.
  Step OnWritable();

  /// fd() - the socket being dialled (kWaiting) or connected (kConnected),
  /// else -1. Its number changes when the dialer moves to the next address.
  int fd() const { return socket_.get(); }

  /// TakeSocket() - after kConnected: the connected non-blocking socket,
  /// with TCP_NODELAY set (protocol §3.2).
  ScopedFd TakeSocket();

  /// error() - after kFailed: errno of the last failed attempt.
  int error() const { return error_; }

 private:
  Step TryFrom(size_t index);

  std::vector<TargetAddress> addresses_;
  size_t next_ = 0;  // index of the address after the one in progress
  ScopedFd socket_;
  int error_ = 0;
};

}  // namespace osh::peers

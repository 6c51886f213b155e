// Move-only owner of a file descriptor (after OpenVPN 3 ScopedFD), shared by
// tun/ and the mini peers (header only, no dependencies).
#pragma once

#include <unistd.h>

#include <utility>

namespace osh {

/// Owns one file descriptor and closes it on destruction. Move-only.
/// A value of -1 means "owns nothing". Not thread-safe (like any value type).
class ScopedFd {
 public:
  ScopedFd() noexcept = default;
  /// Takes ownership of `fd` (-1 for none).
  explicit ScopedFd(int fd) noexcept : fd_(fd) {}
  ~ScopedFd() { reset(); }

  ScopedFd(ScopedFd&& other) noexcept : fd_(other.release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  /// The owned descriptor, or -1. Ownership is kept.
  int get() const noexcept { return fd_; }
  /// True if a descriptor is owned.
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  /// Gives up ownership without closing; returns the descriptor (or -1).
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }

  /// Closes the owned descriptor (if any) and takes ownership of `fd`.
  /// close() errors are ignored: on Linux the descriptor is released even
  /// when close() fails, so retrying would be wrong.
  void reset(int fd = -1) noexcept {
    const int old = std::exchange(fd_, fd);
    if (old >= 0 && old != fd) ::close(old);
  }

 private:
  int fd_ = -1;
};

}  // namespace osh

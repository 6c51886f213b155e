// The TUN device: a layer-3 interface whose packets are read from and written
// to a file descriptor.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "tun/scoped_fd.h"
#include "tun/tun_error.h"

namespace osh::tun {

/// An open, non-persistent TUN interface (IFF_TUN | IFF_NO_PI). The kernel
/// removes the interface, with every address and route on it, when the
/// descriptor is closed (destruction of the last owner), so a crash never
/// leaves the interface behind. Move-only.
///
/// Each read() on fd() returns exactly one IP packet (IPv4 or IPv6, no
/// packet-info header); each write() must be exactly one IP packet. The fd is
/// O_NONBLOCK and O_CLOEXEC.
///
/// The interface is created in the network namespace of the calling thread.
class TunDevice {
 public:
  /// Creates the TUN interface.
  /// @param name  wanted interface name, at most 15 bytes (IFNAMSIZ - 1);
  ///              may contain one "%d" for the kernel to number; empty lets
  ///              the kernel choose ("tun%d").
  /// @return the open device; name() is the name the kernel actually used.
  /// @throws TunError if /dev/net/tun cannot be opened (ENOENT without the
  ///         driver, EACCES/EPERM without CAP_NET_ADMIN), the name is invalid
  ///         (EINVAL) or already used by another interface (EBUSY), or the
  ///         index cannot be read.
  /// Thread: any; blocking only for the duration of the syscalls.
  static TunDevice open(std::string_view name);

  TunDevice(TunDevice&&) noexcept = default;
  TunDevice& operator=(TunDevice&&) noexcept = default;

  /// The interface name the kernel assigned.
  const std::string& name() const noexcept { return name_; }
  /// The packet descriptor (still owned by this object).
  int fd() const noexcept { return fd_.get(); }
  /// The interface index (stable while the device is open).
  int ifindex() const noexcept { return ifindex_; }

 private:
  TunDevice(ScopedFd fd, std::string name, int ifindex)
      : fd_(std::move(fd)), name_(std::move(name)), ifindex_(ifindex) {}

  ScopedFd fd_;
  std::string name_;
  int ifindex_ = 0;
};

}  // namespace osh::tun

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
/// packet-info header); each write() must be exactly one IP packet. With
/// checksum offload (vnet_hdr()), each one is preceded by a 10-byte
/// virtio_net_hdr (stack/vnet.h). The fd is O_NONBLOCK and O_CLOEXEC.
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
  /// @param checksum_offload  also ask for the virtio-net header with TCP/UDP
  ///              checksum offload (IFF_VNET_HDR, TUNSETVNETHDRSZ 10,
  ///              TUNSETOFFLOAD TUN_F_CSUM; no TSO/UFO): the kernel then
  ///              neither computes nor verifies the checksums of this
  ///              host-local hop (issue 16.5). If the kernel refuses any of
  ///              it, the device is opened plain instead (vnet_hdr() false,
  ///              offload_refused() says why), not an error.
  /// Thread: any; blocking only for the duration of the syscalls.
  static TunDevice open(std::string_view name, bool checksum_offload = false);

  TunDevice(TunDevice&&) noexcept = default;
  TunDevice& operator=(TunDevice&&) noexcept = default;

  /// The interface name the kernel assigned.
  const std::string& name() const noexcept { return name_; }
  /// The packet descriptor (still owned by this object).
  int fd() const noexcept { return fd_.get(); }
  /// The interface index (stable while the device is open).
  int ifindex() const noexcept { return ifindex_; }
  /// Whether fd()'s packets carry a virtio_net_hdr with checksum offload on.
  bool vnet_hdr() const noexcept { return vnet_hdr_; }
  /// Why checksum offload was asked for and is off (the failed ioctl and
  /// its error); empty if it is on or was not asked for.
  const std::string& offload_refused() const noexcept { return offload_refused_; }

 private:
  TunDevice(ScopedFd fd, std::string name, int ifindex)
      : fd_(std::move(fd)), name_(std::move(name)), ifindex_(ifindex) {}

  ScopedFd fd_;
  std::string name_;
  int ifindex_ = 0;
  bool vnet_hdr_ = false;
  std::string offload_refused_;
};

}  // namespace osh::tun

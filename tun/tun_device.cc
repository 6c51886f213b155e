// Theory of operation: open() follows the classic TUN recipe
// (Documentation/networking/tuntap.rst): open the clone device
// /dev/net/tun, then ioctl(TUNSETIFF) with IFF_TUN | IFF_NO_PI attaches the
// descriptor to a new (or existing, unattached persistent) interface of that
// name. TUNSETPERSIST is never set, so the interface lives exactly as long as
// the descriptor. The descriptor is held in a ScopedFd and handed to the
// TunDevice only once every step succeeded, so a failure part-way closes it
// (and thereby removes the interface). The index is looked up by the name the
// kernel returned in the ifreq.
//
// Checksum offload (issue 16.5): IFF_VNET_HDR in the same TUNSETIFF, then
// TUNSETVNETHDRSZ (10, the legacy struct virtio_net_hdr; the kernel's
// default, set so that nothing depends on it) and TUNSETOFFLOAD TUN_F_CSUM
// (the interface gains NETIF_F_HW_CSUM: the kernel hands its TCP/UDP
// packets over CHECKSUM_PARTIAL and accepts ours so, drivers/net/tun.c
// set_offload). wireguard-go and Tailscale do the same (tun/tun_linux.go),
// with TSO as well, which this tunnel does not need: its MTU of 65000 makes
// the segments as large already. Any of the three refused (an old kernel, a
// restricted container): the descriptor is closed (the half-made interface
// goes with it) and the device opened again without them.
#include "tun/tun_device.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

namespace osh::tun {

namespace {

/// The ioctls of checksum offload on a descriptor opened with IFF_VNET_HDR.
/// @return empty, or what failed.
std::string enable_checksum_offload(int fd) {
  int size = 10;  // sizeof(struct virtio_net_hdr)
  if (::ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) return std::string("TUNSETVNETHDRSZ: ") + std::strerror(errno);
  if (::ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(TUN_F_CSUM)) < 0)
    return std::string("TUNSETOFFLOAD TUN_F_CSUM: ") + std::strerror(errno);
  return {};
}

}  // namespace

TunDevice TunDevice::open(std::string_view name, bool checksum_offload) {
  static constexpr const char* kClonePath = "/dev/net/tun";

  const std::string quoted = "\"" + std::string(name) + "\"";
  if (name.size() >= IFNAMSIZ)
    throw TunError("TUN name " + quoted, EINVAL,
                   "longer than " + std::to_string(IFNAMSIZ - 1) + " bytes");
  if (name.find('\0') != std::string_view::npos)
    throw TunError("TUN name " + quoted, EINVAL);

  // One attempt: the open descriptor attached with @flags, or errno.
  const auto attach = [&](short flags, ScopedFd& fd, std::string& actual) -> int {
    fd.reset();  // a refused first attempt's interface goes before its name is asked for again
    fd = ScopedFd(::open(kClonePath, O_RDWR | O_CLOEXEC | O_NONBLOCK));
    if (!fd) throw TunError(std::string("open ") + kClonePath, errno);
    struct ifreq ifr;
    std::memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = flags;
    name.copy(ifr.ifr_name, name.size());
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) < 0) return errno;
    actual.assign(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
    return 0;
  };
  ScopedFd fd;
  std::string actual, refused;
  bool vnet = false;
  if (checksum_offload) {
    if (const int err = attach(IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, fd, actual); err == 0) {
      refused = enable_checksum_offload(fd.get());
      vnet = refused.empty();
    } else if (err == EINVAL) {  // anything else is not about the header: as without it
      refused = std::string("TUNSETIFF IFF_VNET_HDR: ") + std::strerror(err);
    }
  }
  if (!vnet) {  // a refused descriptor is closed here, and its interface with it
    if (const int err = attach(IFF_TUN | IFF_NO_PI, fd, actual); err != 0)
      throw TunError("TUNSETIFF " + quoted, err);
  }

  const unsigned index = ::if_nametoindex(actual.c_str());
  if (index == 0) throw TunError("interface index of " + actual, errno);

  TunDevice dev(std::move(fd), std::move(actual), static_cast<int>(index));
  dev.vnet_hdr_ = vnet;
  dev.offload_refused_ = std::move(refused);
  return dev;
}

}  // namespace osh::tun

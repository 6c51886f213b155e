// Theory of operation: open() follows the classic TUN recipe
// (Documentation/networking/tuntap.rst): open the clone device
// /dev/net/tun, then ioctl(TUNSETIFF) with IFF_TUN | IFF_NO_PI attaches the
// descriptor to a new (or existing, unattached persistent) interface of that
// name. TUNSETPERSIST is never set, so the interface lives exactly as long as
// the descriptor. The descriptor is held in a ScopedFd and handed to the
// TunDevice only once every step succeeded, so a failure part-way closes it
// (and thereby removes the interface). The index is looked up by the name the
// kernel returned in the ifreq.
#include "tun/tun_device.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

namespace osh::tun {

TunDevice TunDevice::open(std::string_view name) {
  static constexpr const char* kClonePath = "/dev/net/tun";

  const std::string quoted = "\"" + std::string(name) + "\"";
  if (name.size() >= IFNAMSIZ)
    throw TunError("TUN name " + quoted, EINVAL,
                   "longer than " + std::to_string(IFNAMSIZ - 1) + " bytes");
  if (name.find('\0') != std::string_view::npos)
    throw TunError("TUN name " + quoted, EINVAL);

  ScopedFd fd(::open(kClonePath, O_RDWR | O_CLOEXEC | O_NONBLOCK));
  if (!fd) throw TunError(std::string("open ") + kClonePath, errno);

  struct ifreq ifr;
  std::memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  name.copy(ifr.ifr_name, name.size());
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) < 0)
    throw TunError("TUNSETIFF " + quoted, errno);

  std::string actual(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
  const unsigned index = ::if_nametoindex(actual.c_str());
  if (index == 0) throw TunError("interface index of " + actual, errno);

  return TunDevice(std::move(fd), std::move(actual), static_cast<int>(index));
}

}  // namespace osh::tun

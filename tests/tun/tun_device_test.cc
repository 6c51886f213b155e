// TunDevice tests. Everything that creates an interface runs in a forked
// child inside a fresh network namespace (netns_child.h).
#include "tun/tun_device.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>

#include "netns_child.h"
#include "tun/link_config.h"

namespace osh::tun {
namespace {

using testing::Failures;

TEST(TunErrorTest, FormatsStepAndReason) {
  const TunError e("open /dev/net/tun", ENOENT);
  EXPECT_STREQ(e.what(), "open /dev/net/tun: No such file or directory");
  EXPECT_EQ(e.error_code(), ENOENT);
  const TunError d("connect", 0, "Permission denied by policy");
  EXPECT_STREQ(d.what(), "connect: Permission denied by policy");
  EXPECT_EQ(d.error_code(), 0);
}

TEST(TunDeviceTest, NameTooLongIsTunError) {
  // Rejected before anything is opened, so this runs unprivileged.
  try {
    TunDevice::open("osh-name-is-too-long");
    FAIL() << "no exception";
  } catch (const TunError& e) {
    EXPECT_EQ(e.error_code(), EINVAL);
    EXPECT_NE(std::string(e.what()).find("TUN name \"osh-name-is-too-long\""), std::string::npos)
        << e.what();
  }
}

TEST(TunDeviceTest, OpenCreatesNonPersistentInterface) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    int index = 0;
    {
      TunDevice tun = TunDevice::open("osh-test0");
      CHECK_IN_CHILD(f, tun.name() == "osh-test0", tun.name());
      CHECK_IN_CHILD(f, tun.fd() >= 0);
      index = tun.ifindex();
      CHECK_IN_CHILD(f, index > 0);
      CHECK_IN_CHILD(f, link_index("osh-test0") == index);
      const int fl = ::fcntl(tun.fd(), F_GETFL);
      CHECK_IN_CHILD(f, (fl & O_NONBLOCK) != 0);
      CHECK_IN_CHILD(f, (::fcntl(tun.fd(), F_GETFD) & FD_CLOEXEC) != 0);
      char buf[2048];
      errno = 0;
      const ssize_t n = ::read(tun.fd(), buf, sizeof buf);
      CHECK_IN_CHILD(f, n < 0 && (errno == EAGAIN || errno == EIO),
                     "read gave " + std::to_string(n) + " errno " + std::to_string(errno));

      // Moving keeps the interface alive: one owner of the fd.
      TunDevice moved = std::move(tun);
      CHECK_IN_CHILD(f, link_index("osh-test0") == index);
      CHECK_IN_CHILD(f, moved.ifindex() == index);
    }
    // Closing the descriptor removes the interface.
    CHECK_IN_CHILD(f, !link_index("osh-test0").has_value(), "interface outlived its fd");
    return f.str();
  });
}

// Checksum offload (issue 16.5): granted by this kernel, with the flags
// the kernel reports back (TUNGETIFF); not asked for, not there.
TEST(TunDeviceTest, ChecksumOffloadIsOnWhenAskedFor) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    {
      TunDevice tun = TunDevice::open("osh-test0", true);
      CHECK_IN_CHILD(f, tun.vnet_hdr(), "refused: " + tun.offload_refused());
      CHECK_IN_CHILD(f, tun.offload_refused().empty(), tun.offload_refused());
      struct ifreq ifr{};
      CHECK_IN_CHILD(f, ::ioctl(tun.fd(), TUNGETIFF, &ifr) == 0);
      CHECK_IN_CHILD(f, (ifr.ifr_flags & IFF_VNET_HDR) != 0, "no IFF_VNET_HDR");
      int size = 0;
      CHECK_IN_CHILD(f, ::ioctl(tun.fd(), TUNGETVNETHDRSZ, &size) == 0 && size == 10, std::to_string(size));
    }
    TunDevice plain = TunDevice::open("osh-test0");
    CHECK_IN_CHILD(f, !plain.vnet_hdr());
    struct ifreq ifr{};
    CHECK_IN_CHILD(f, ::ioctl(plain.fd(), TUNGETIFF, &ifr) == 0 && (ifr.ifr_flags & IFF_VNET_HDR) == 0);
    return f.str();
  });
}

TEST(TunDeviceTest, KernelNumbersPattern) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    TunDevice a = TunDevice::open("osh%d");
    TunDevice b = TunDevice::open("osh%d");
    CHECK_IN_CHILD(f, a.name() == "osh0", a.name());
    CHECK_IN_CHILD(f, b.name() == "osh1", b.name());
    CHECK_IN_CHILD(f, a.ifindex() != b.ifindex());
    TunDevice c = TunDevice::open("");
    CHECK_IN_CHILD(f, c.name() == "tun0", c.name());
    return f.str();
  });
}

TEST(TunDeviceTest, SameNameTwiceIsBusy) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    TunDevice a = TunDevice::open("osh-test0");
    try {
      TunDevice b = TunDevice::open("osh-test0");
      f.add("second open succeeded", __LINE__);
    } catch (const TunError& e) {
      CHECK_IN_CHILD(f, e.error_code() == EBUSY, e.what());
      CHECK_IN_CHILD(f, std::string(e.what()) ==
                            "TUNSETIFF \"osh-test0\": Device or resource busy",
                     e.what());
    }
    return f.str();
  });
}

TEST(TunDeviceTest, InvalidNameIsTunError) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, [] {
    Failures f;
    for (const char* bad : {"bad/name", "bad name", "."}) {
      try {
        TunDevice t = TunDevice::open(bad);
        f.add(std::string("opened ") + bad + " as " + t.name(), __LINE__);
      } catch (const TunError& e) {
        CHECK_IN_CHILD(f, e.error_code() == EINVAL, e.what());
      }
    }
    return f.str();
  });
}

}  // namespace
}  // namespace osh::tun

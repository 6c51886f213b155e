// TunDevice tests. Everything that creates an interface runs in a forked
// child inside a fresh network namespace (netns_child.h).
#include "tun/tun_device.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <seccomp.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

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

// refuse_ioctl() - in a forked test child: from now on, ioctl(fd, @request)
// fails with EINVAL, as a kernel without that TUN feature answers (seccomp,
// libseccomp). Returns "" or what failed.
std::string refuse_ioctl(unsigned long request) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) return "seccomp_init failed";
  int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EINVAL), SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_EQ, request));
  if (rc == 0) rc = seccomp_load(ctx);
  seccomp_release(ctx);
  return rc == 0 ? "" : "seccomp: " + std::string(std::strerror(-rc));
}

// Checksum offload refused by the kernel (issue 16.5): TunDevice::open
// does not fail, it reopens the interface plain and says which ioctl was
// refused (what `up` then logs once and shows as status's tun_offload).
// Each refusal of enable_checksum_offload's two ioctls, in its own child.
TEST(TunDeviceTest, RefusedChecksumOffloadFallsBackToAPlainTun) {
  OSH_REQUIRE_PRIVILEGES();
  struct Case {
    unsigned long request;
    const char* want;
  };
  for (const Case c : {Case{TUNSETVNETHDRSZ, "TUNSETVNETHDRSZ: Invalid argument"},
                       Case{TUNSETOFFLOAD, "TUNSETOFFLOAD TUN_F_CSUM: Invalid argument"}}) {
    SCOPED_TRACE(c.want);
    OSH_IN_NEW_NETNS(0, [request = c.request, want = std::string(c.want)] {
      Failures f;
      if (std::string err = refuse_ioctl(request); !err.empty()) return err;
      TunDevice tun = TunDevice::open("osh-test0", true);
      CHECK_IN_CHILD(f, !tun.vnet_hdr(), "offload reported on although refused");
      CHECK_IN_CHILD(f, tun.offload_refused() == want, "offload_refused: '" + tun.offload_refused() + "'");
      CHECK_IN_CHILD(f, tun.name() == "osh-test0", tun.name());
      CHECK_IN_CHILD(f, tun.ifindex() > 0 && tun.ifindex() == static_cast<int>(if_nametoindex("osh-test0")),
                     "the interface is not the reopened one");
      struct ifreq ifr{};
      CHECK_IN_CHILD(f, ::ioctl(tun.fd(), TUNGETIFF, &ifr) == 0);
      CHECK_IN_CHILD(f, (ifr.ifr_flags & IFF_VNET_HDR) == 0, "the reopened descriptor still has IFF_VNET_HDR");
      CHECK_IN_CHILD(f, (ifr.ifr_flags & IFF_NO_PI) != 0, "the reopened descriptor lost IFF_NO_PI");
      return f.str();
    });
  }
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

#include "cli/privileges.h"

#include <sys/capability.h>
#include <sys/prctl.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace osh::cli {
namespace {
// CAP_NET_ADMIN: TUN, addresses, link teardown, stale-link removal.
// CAP_DAC_READ_SEARCH: SIGHUP re-reads the served user's OpenShell
// configuration (~/.config/openshell, mTLS keys mode 0600) as root, and the
// gateway client re-reads a changed bearer token file (relay/gateway_client)
// on its calls; both could move to the user's file helper one day.
// Nothing writes with a capability: the state directory and /etc/hosts are
// root's own files, and the user's ssh files are written by the user's file
// helper (cli/user_files.h), forked before this drop.
constexpr cap_value_t kKeep[] = {CAP_NET_ADMIN, CAP_DAC_READ_SEARCH};

bool kept(cap_value_t c) {
  for (cap_value_t k : kKeep)
    if (k == c) return true;
  return false;
}
}  // namespace

unsigned long long kept_capabilities_mask() {
  unsigned long long m = 0;
  for (cap_value_t k : kKeep) m |= 1ull << k;
  return m;
}

std::string drop_privileges() {
  // Bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
  for (cap_value_t c = 0; c <= CAP_LAST_CAP; ++c) {
    // Already outside the bounding set (systemd's CapabilityBoundingSet=):
    // nothing to drop, and dropping would need CAP_SETPCAP, which is gone too.
    if (kept(c) || !CAP_IS_SUPPORTED(c) || prctl(PR_CAPBSET_READ, c, 0, 0, 0) != 1) continue;
    if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL)
      return std::string("PR_CAPBSET_DROP: ") + std::strerror(errno);
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    return std::string("clearing ambient capabilities: ") + std::strerror(errno);
  cap_t caps = cap_get_proc();
  if (!caps) return std::string("cap_get_proc: ") + std::strerror(errno);
  // Keep each of ours only if we have it now (a non-root run keeps nothing).
  cap_flag_value_t have[sizeof kKeep / sizeof kKeep[0]] = {};
  for (size_t i = 0; i < sizeof kKeep / sizeof kKeep[0]; ++i)
    cap_get_flag(caps, kKeep[i], CAP_PERMITTED, &have[i]);
  cap_clear(caps);
  for (size_t i = 0; i < sizeof kKeep / sizeof kKeep[0]; ++i) {
    if (have[i] != CAP_SET) continue;
    cap_set_flag(caps, CAP_PERMITTED, 1, &kKeep[i], CAP_SET);
    cap_set_flag(caps, CAP_EFFECTIVE, 1, &kKeep[i], CAP_SET);
  }
  const int rc = cap_set_proc(caps);
  const int err = errno;
  cap_free(caps);
  if (rc != 0) return std::string("cap_set_proc: ") + std::strerror(err);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return std::string("PR_SET_NO_NEW_PRIVS: ") + std::strerror(errno);
  return "";
}

}  // namespace osh::cli

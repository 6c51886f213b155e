// Least privilege for the running daemon (issue 6.6, docs/THREAT_MODEL.md).
#pragma once

#include <string>

namespace osh::cli {

/// Reduces the bounding, permitted, effective and inheritable capability
/// sets to the two `up` needs for its whole life: CAP_NET_ADMIN (TUN,
/// addresses, link teardown, stale-link removal) and CAP_DAC_READ_SEARCH
/// (SIGHUP re-reads the served user's OpenShell configuration); no
/// capability to write others' files is kept (issue 14.6: the state
/// directory and the hosts file are root's own, the user's ssh files are
/// written by the user's file helper, cli/user_files.h, forked before);
/// clears the ambient set; sets PR_SET_NO_NEW_PRIVS so nothing it executes
/// could gain more. Capabilities already outside the bounding set
/// (systemd's CapabilityBoundingSet=) are left alone.
///
/// Thread: must run before any other thread exists. Capabilities are per
/// thread on Linux and threads inherit the creator's, so dropping them in
/// main before gRPC, lwIP or the stack start covers every thread.
/// @return "" on success, otherwise what failed (the caller warns and goes
///         on: more privilege than needed is not fatal).
std::string drop_privileges();

/// The capability mask drop_privileges() keeps (bit n = capability n), for
/// tests that read /proc/<pid>/status.
unsigned long long kept_capabilities_mask();

}  // namespace osh::cli

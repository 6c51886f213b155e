// Confinement of one thread: the data-plane threads that parse what arrives
// from the TUN (the stack reader, lwIP's tcpip thread) give up every
// capability and load a seccomp allow-list, so that a memory bug in lwIP or
// ldns reaches as little as possible (issue 14.6, docs/THREAT_MODEL.md
// "What a memory bug in the data plane can reach").
//
// Linux keeps capabilities and seccomp filters per thread: both calls below
// act on the calling thread only (capset(2) through libcap without libpsx;
// seccomp(2) without SECCOMP_FILTER_FLAG_TSYNC). Threads the confined thread
// creates later inherit both, so a confined thread must not create threads
// (the stack hands its upstream calls to a thread of its own for that
// reason, stack.cc "Confined threads").
#pragma once

#include <string>

namespace osh {

/// How far confine_this_thread() goes.
enum class Confinement {
  kNone,          ///< nothing (unit tests of the stack; the thread is left as it is)
  kCapabilities,  ///< name the thread and clear its capabilities, no seccomp filter
  kSeccomp,       ///< kCapabilities, then the seccomp allow-list (the default of `up`)
};

/// The confinement `up` asks for: kSeccomp, or kCapabilities when the
/// environment variable OPENSHELL_TUNNEL_SECCOMP is "0" or "off" (a debugging
/// switch, documented in the man page), or kNone when it is "none" (for
/// measuring the confinement's cost: the threads keep the process's
/// capabilities and the stack calls the relay without the upstream dispatch
/// thread, as before issue 14.6). Thread: any.
Confinement confinement_from_env();

/// Whether this build enforces the filter: false in sanitizer builds
/// (OSH_SANITIZED, set by CMake for OSH_SANITIZE and OSH_TSAN), whose
/// runtimes make system calls of their own on every thread; there the
/// filter is loaded with SCMP_ACT_LOG instead of killing (the audit log
/// names what would have been killed).
bool seccomp_enforced();

/// confine_this_thread() - confines the CALLING thread:
///  1. names it @name (at most 15 bytes; /proc/<pid>/task/<tid>/comm);
///  2. clears its effective, permitted and inheritable capabilities
///     (kCapabilities and kSeccomp; the process's other threads keep theirs);
///  3. (kSeccomp) loads the data-plane allow-list (thread_sandbox.cc
///     kAllowed): memory, futex, time, epoll, read/write on fds the thread
///     already has, its own exit. File-system calls (open, stat, rename,
///     unlink...) fail with EPERM, so that a log line whose file sink rotates
///     on this thread fails instead of killing the daemon; any other system
///     call kills the whole process (SCMP_ACT_KILL_PROCESS, SIGSYS), or is
///     only logged in a sanitizer build (seccomp_enforced()).
/// PR_SET_NO_NEW_PRIVS is set for the thread first (libseccomp's default;
/// `up` set it for the process already, cli/privileges.cc).
/// Return: "" on success, else what failed (the thread may then be partly
/// confined: named, capabilities cleared). Thread: the one to confine, before
/// it reads any input.
std::string confine_this_thread(const char* name, Confinement how);

}  // namespace osh

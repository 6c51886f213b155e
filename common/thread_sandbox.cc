// The data-plane allow-list. Found empirically (vm-tests/test_syscalls.sh
// prints what the confined threads called during a full session under
// strace -f: ssh, HTTP download, DNS, ping, IPv4 and IPv6), then kept to
// what the code on those threads needs:
//   - the event loop: epoll_wait/epoll_pwait, epoll_ctl (parking the TUN
//     fd), read/write of the TUN fd and of the loops' eventfds;
//   - glibc malloc (brk, mmap, munmap, mremap, madvise, mprotect; never with
//     PROT_EXEC), mutexes and condition variables (futex, sched_yield), time
//     (clock_gettime and friends, normally the vDSO), sleeping (lwIP's
//     timeouts, spdlog's retries);
//   - logging (spdlog: write/writev on its fd, fstat on it);
//   - the thread's own end (exit, rt_sigprocmask, madvise of the stack) and
//     abort() (tgkill of this process only);
//   - glibc's set*id broadcast: a set*id() on any thread of the process runs
//     the same call on every thread (nptl SIGSETXID); refusing it would kill
//     the daemon. Without capabilities it can only pick among the thread's
//     own ids.
// Deliberately absent: socket, connect, accept, sendmsg/recvmsg, open/openat
// (EPERM, see the header), execve, clone/fork (no new threads: they would
// inherit the filter), ptrace, kill (other processes), ioctl, mount, bpf,
// capset, prctl, seccomp.
#include "common/thread_sandbox.h"

#include <fcntl.h>
#include <pthread.h>
#include <seccomp.h>
#include <sys/capability.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

namespace osh {
namespace {

/// Allowed whatever the arguments. Names unknown on this architecture
/// (open on arm64...) are skipped.
constexpr const char* kAllowed[] = {
    // event loop and I/O on fds the thread already has
    "read", "readv", "write", "writev", "epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl",
    "fstat",
    // memory (mmap and mprotect: below, without PROT_EXEC)
    "brk", "munmap", "mremap", "madvise",
    // synchronisation, time, sleeping
    "futex", "sched_yield", "clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep",
    "clock_nanosleep",
    // identity, randomness
    "getpid", "gettid", "getrandom",
    // signals: masks and returning from glibc's own handlers
    "rt_sigprocmask", "rt_sigreturn", "restart_syscall",
    // glibc's set*id broadcast (see above)
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    // the thread's end
    "exit", "exit_group",
};

/// Fail with EPERM instead of killing: what a file sink's open/rotation does.
constexpr const char* kRefused[] = {
    "open", "openat", "openat2", "creat", "stat", "lstat", "access", "faccessat", "faccessat2",
    "rename", "renameat", "renameat2", "unlink", "unlinkat", "mkdir", "mkdirat", "readlink",
    "readlinkat",
};

struct CtxDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

std::string err(const char* what, int rc) { return std::string(what) + ": " + std::strerror(-rc); }

std::string load_filter() {
  const uint32_t deflt = seccomp_enforced() ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_LOG;
  std::unique_ptr<void, CtxDeleter> ctx(seccomp_init(deflt));
  if (!ctx) return "seccomp_init failed";
  scmp_filter_ctx c = ctx.get();
  int rc;
  const auto add = [&](uint32_t action, const char* name, unsigned n, const scmp_arg_cmp* args) -> std::string {
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return "";  // not a system call here
    if ((rc = seccomp_rule_add_array(c, action, nr, n, args)) != 0 && rc != -EDOM)
      return err((std::string("seccomp_rule_add ") + name).c_str(), rc);
    return "";
  };
  for (const char* name : kAllowed)
    if (std::string e = add(SCMP_ACT_ALLOW, name, 0, nullptr); !e.empty()) return e;
  for (const char* name : kRefused)
    if (std::string e = add(SCMP_ACT_ERRNO(EPERM), name, 0, nullptr); !e.empty()) return e;
  // Memory, never executable: mmap(addr, len, prot, ...), mprotect(addr, len, prot).
  const scmp_arg_cmp no_exec = SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0);
  for (const char* name : {"mmap", "mprotect"})
    if (std::string e = add(SCMP_ACT_ALLOW, name, 1, &no_exec); !e.empty()) return e;
  // fstat() is fstatat(fd, "", AT_EMPTY_PATH) in glibc >= 2.33: allowed on
  // an fd; with a path it is a file-system lookup (EPERM).
  const scmp_arg_cmp empty_path3 = SCMP_A3(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH);
  const scmp_arg_cmp path3 = SCMP_A3(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, 0);
  const scmp_arg_cmp empty_path2 = SCMP_A2(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH);
  const scmp_arg_cmp path2 = SCMP_A2(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, 0);
  if (std::string e = add(SCMP_ACT_ALLOW, "newfstatat", 1, &empty_path3); !e.empty()) return e;
  if (std::string e = add(SCMP_ACT_ERRNO(EPERM), "newfstatat", 1, &path3); !e.empty()) return e;
  if (std::string e = add(SCMP_ACT_ALLOW, "statx", 1, &empty_path2); !e.empty()) return e;
  if (std::string e = add(SCMP_ACT_ERRNO(EPERM), "statx", 1, &path2); !e.empty()) return e;
  // abort(): tgkill(this process, ...); no signal to any other process.
  const scmp_arg_cmp self = SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(::getpid()));
  if (std::string e = add(SCMP_ACT_ALLOW, "tgkill", 1, &self); !e.empty()) return e;
  if ((rc = seccomp_load(c)) != 0) return err("seccomp_load", rc);
  return "";
}

}  // namespace

Confinement confinement_from_env() {
  const char* v = std::getenv("OPENSHELL_TUNNEL_SECCOMP");
  if (v && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0)) return Confinement::kCapabilities;
  if (v && std::strcmp(v, "none") == 0) return Confinement::kNone;
  return Confinement::kSeccomp;
}

bool seccomp_enforced() {
#ifdef OSH_SANITIZED
  return false;
#else
  return true;
#endif
}

std::string confine_this_thread(const char* name, Confinement how) {
  if (how == Confinement::kNone) return "";
  (void)pthread_setname_np(pthread_self(), name);  // only ERANGE (> 15 bytes): cosmetic
  cap_t none = cap_init();  // every flag clear
  if (!none) return std::string("cap_init: ") + std::strerror(errno);
  const int rc = cap_set_proc(none);  // this thread only: libpsx is not linked
  const int e = errno;
  cap_free(none);
  if (rc != 0) return std::string("clearing the thread's capabilities: ") + std::strerror(e);
  if (how == Confinement::kSeccomp) return load_filter();
  return "";
}

}  // namespace osh

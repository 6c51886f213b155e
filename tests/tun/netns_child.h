// Test helper: run a piece of a test in a forked child that lives in a fresh
// network namespace (and optionally a fresh mount namespace). Everything the
// child creates (TUN, addresses, routes, mounts) disappears with it, so the
// machine's own namespaces are never touched.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>

namespace osh::tun::testing {

/// Exit code the child uses for "cannot run here" (unshare not permitted).
inline constexpr int kChildSkip = 77;
/// Upper bound for one child's run; SIGALRM kills a hung child.
inline constexpr unsigned kChildTimeoutSeconds = 60;

/// "" if this process can run namespace tests; otherwise why not.
inline std::string privileged_skip_reason() {
  std::ifstream status("/proc/self/status");
  std::string line;
  unsigned long long cap_eff = 0;
  while (std::getline(status, line))
    if (line.rfind("CapEff:", 0) == 0) cap_eff = std::stoull(line.substr(7), nullptr, 16);
  constexpr int kCapNetAdmin = 12, kCapSysAdmin = 21;
  if ((cap_eff & (1ULL << kCapNetAdmin)) == 0) return "needs CAP_NET_ADMIN";
  if ((cap_eff & (1ULL << kCapSysAdmin)) == 0) return "needs CAP_SYS_ADMIN (unshare)";
  if (::access("/dev/net/tun", R_OK | W_OK) != 0) return "no usable /dev/net/tun";
  return {};
}

#define OSH_REQUIRE_PRIVILEGES()                                              \
  do {                                                                        \
    const std::string osh_skip_ = ::osh::tun::testing::privileged_skip_reason(); \
    if (!osh_skip_.empty()) GTEST_SKIP() << osh_skip_;                        \
  } while (0)

/// Runs `body` in a forked child after unshare(CLONE_NEWNET | extra_flags).
/// `body` returns "" on success or a description of what went wrong;
/// exceptions are caught and reported. Returns "" on success, or the child's
/// message / exit status. Sets *skipped if the child could not unshare.
inline std::string run_in_new_netns(bool* skipped, int extra_flags,
                                    const std::function<std::string()>& body) {
  *skipped = false;
  std::fflush(nullptr);  // do not duplicate buffered output into the child
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return std::string("pipe: ") + std::strerror(errno);
  const pid_t pid = ::fork();
  if (pid < 0) return std::string("fork: ") + std::strerror(errno);
  if (pid == 0) {
    ::close(fds[0]);
    ::alarm(kChildTimeoutSeconds);
    std::string msg;
    int code = 0;
    if (::unshare(CLONE_NEWNET | extra_flags) != 0) {
      msg = std::string("unshare: ") + std::strerror(errno);
      code = kChildSkip;
    } else {
      try {
        msg = body();
      } catch (const std::exception& e) {
        msg = std::string("exception: ") + e.what();
      } catch (...) {
        msg = "unknown exception";
      }
      code = msg.empty() ? 0 : 1;
    }
    std::size_t off = 0;
    while (off < msg.size()) {
      const ssize_t n = ::write(fds[1], msg.data() + off, msg.size() - off);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    ::_exit(code);  // no atexit handlers, no gtest teardown in the child
  }
  ::close(fds[1]);
  std::string msg;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    msg.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status))
    return "child killed by signal " + std::to_string(WTERMSIG(status)) + " " + msg;
  const int code = WEXITSTATUS(status);
  if (code == kChildSkip) *skipped = true;
  if (code == 0) return {};
  return msg.empty() ? "child exit code " + std::to_string(code) : msg;
}

/// Runs a body (a lambda returning "" or a failure text) in a new network
/// namespace (plus `extra_flags`, e.g. CLONE_NEWNS) as a whole test step:
/// skips the test if namespaces are unavailable, fails it with the child's
/// message.
#define OSH_IN_NEW_NETNS(extra_flags, ...)                                    \
  do {                                                                        \
    bool osh_skipped_ = false;                                                \
    const std::string osh_msg_ = ::osh::tun::testing::run_in_new_netns(       \
        &osh_skipped_, (extra_flags), __VA_ARGS__);                           \
    if (osh_skipped_) GTEST_SKIP() << osh_msg_;                               \
    EXPECT_EQ(osh_msg_, "");                                                  \
  } while (0)

/// Runs a shell command (in the caller's namespaces) and returns its stdout.
inline std::string run_command(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

/// The innermost {...} of `json` that contains `needle`, or "" if absent.
/// Good enough for `ip -j` output, whose leaf objects have no nested objects.
inline std::string json_object_with(const std::string& json, const std::string& needle) {
  const std::size_t at = json.find(needle);
  if (at == std::string::npos) return {};
  const std::size_t open = json.rfind('{', at);
  const std::size_t close = json.find('}', at);
  if (open == std::string::npos || close == std::string::npos) return {};
  return json.substr(open, close - open + 1);
}

/// Collects failures inside a child body: CHECK_IN_CHILD(cond) appends a
/// message and keeps going; the body returns failures.str().
struct Failures {
  std::string text;
  void add(const std::string& what, int line) {
    text += "line " + std::to_string(line) + ": " + what + "\n";
  }
  std::string str() const { return text; }
};
#define CHECK_IN_CHILD(f, cond, ...)                                           \
  do {                                                                        \
    if (!(cond))                                                              \
      (f).add(std::string("failed: " #cond " ") + std::string(__VA_ARGS__), __LINE__); \
  } while (0)

}  // namespace osh::tun::testing

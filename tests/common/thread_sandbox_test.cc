// common/thread_sandbox: what a confined thread may still do, what it may
// not (issue 14.6). Each case runs in a forked child (a filter cannot be
// unloaded, and a forbidden call kills the whole process), whose thread
// confines itself as the stack's threads do.
#include "common/thread_sandbox.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace osh {
namespace {

/// Forks; the child runs @body on a new thread confined with @how and exits
/// with body's return value. Returns the child's wait status.
template <class Fn>
int in_confined_child(Confinement how, Fn body) {
  const pid_t pid = fork();
  if (pid == 0) {
    int rc = 100;
    std::thread t([&] {
      if (!confine_this_thread("osh-test", how).empty()) {
        rc = 101;
        return;
      }
      rc = body();
    });
    t.join();
    _exit(rc);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

/// "Field:\tvalue" of /proc/self/task/@tid/status.
std::string task_status(pid_t tid, const std::string& field) {
  std::ifstream st("/proc/self/task/" + std::to_string(tid) + "/status");
  for (std::string line; std::getline(st, line);)
    if (line.rfind(field + ":", 0) == 0) return line.substr(line.find_first_not_of(" \t", field.size() + 1));
  return "?";
}

TEST(ThreadSandbox, ConfinedThreadKeepsWorkingWithMemoryLocksPipesAndTime) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  const int status = in_confined_child(Confinement::kSeccomp, [&] {
    std::vector<std::vector<char>> blocks;  // small (brk) and large (mmap) allocations
    for (size_t n = 16; n <= (8u << 20); n *= 4) blocks.emplace_back(n, 'x');
    blocks.clear();
    std::mutex mu;
    { std::lock_guard lk(mu); }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    (void)std::chrono::steady_clock::now();
    if (write(p[1], "ok", 2) != 2) return 2;
    char b[2];
    if (read(p[0], b, 2) != 2) return 3;
    return 0;
  });
  close(p[0]);
  close(p[1]);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// The confined thread, alive (blocked on a pipe), seen from the main thread
// of the same process: no capabilities, filter mode 2; the main thread keeps
// both as they were.
TEST(ThreadSandbox, OnlyTheCallingThreadIsConfined) {
  int res[2];
  ASSERT_EQ(pipe(res), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    int tid_pipe[2], go[2];
    if (pipe(tid_pipe) != 0 || pipe(go) != 0) _exit(100);
    std::thread t([&] {
      if (!confine_this_thread("osh-test", Confinement::kSeccomp).empty()) _exit(101);
      const pid_t me = gettid();
      (void)!write(tid_pipe[1], &me, sizeof me);
      char c;
      (void)!read(go[0], &c, 1);  // stays alive while the main thread looks
    });
    pid_t tid = 0;
    if (read(tid_pipe[0], &tid, sizeof tid) != sizeof tid) _exit(102);
    const std::string line = task_status(tid, "CapEff") + " " + task_status(tid, "CapPrm") + " " +
                             task_status(tid, "Seccomp") + " " + task_status(tid, "NoNewPrivs") +
                             " main " + task_status(getpid(), "Seccomp") + " " +
                             (task_status(getpid(), "CapEff") == task_status(getpid(), "CapPrm") ? "same" : "?");
    (void)!write(res[1], line.data(), line.size());
    (void)!write(go[1], "x", 1);
    t.join();
    _exit(0);
  }
  close(res[1]);
  char buf[256] = {};
  const ssize_t n = read(res[0], buf, sizeof buf - 1);
  close(res[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf), "0000000000000000 0000000000000000 2 1 main 0 same");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(ThreadSandbox, FileSystemCallsFailWithEperm) {
  const int status = in_confined_child(Confinement::kSeccomp, [] {
    if (open("/dev/null", O_RDONLY) >= 0) return 2;
    if (errno != EPERM) return 3;
    if (access("/", F_OK) == 0 || errno != EPERM) return 4;
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  if (!seccomp_enforced()) GTEST_SKIP() << "sanitizer build: the filter only logs";
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(ThreadSandbox, ForbiddenCallKillsTheProcessWithSigsys) {
  if (!seccomp_enforced()) GTEST_SKIP() << "sanitizer build: the filter only logs";
  for (int which = 0; which < 3; ++which) {
    const int status = in_confined_child(Confinement::kSeccomp, [which] {
      if (which == 0) (void)socket(AF_INET, SOCK_STREAM, 0);
      if (which == 1) (void)kill(1, 0);
      if (which == 2) std::thread([] {}).join();  // clone: no new threads
      return 0;
    });
    ASSERT_TRUE(WIFSIGNALED(status)) << "case " << which << " exited " << WEXITSTATUS(status);
    EXPECT_EQ(WTERMSIG(status), SIGSYS) << "case " << which;
  }
}

TEST(ThreadSandbox, CapabilitiesOnlyLeavesSystemCallsAlone) {
  const int status = in_confined_child(Confinement::kCapabilities, [] {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 2;
    close(fd);
    return task_status(gettid(), "Seccomp") == "0" && task_status(gettid(), "CapEff") == "0000000000000000" ? 0 : 3;
  });
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(ThreadSandbox, EnvironmentSwitch) {
  unsetenv("OPENSHELL_TUNNEL_SECCOMP");
  EXPECT_EQ(confinement_from_env(), Confinement::kSeccomp);
  setenv("OPENSHELL_TUNNEL_SECCOMP", "0", 1);
  EXPECT_EQ(confinement_from_env(), Confinement::kCapabilities);
  setenv("OPENSHELL_TUNNEL_SECCOMP", "off", 1);
  EXPECT_EQ(confinement_from_env(), Confinement::kCapabilities);
  setenv("OPENSHELL_TUNNEL_SECCOMP", "none", 1);
  EXPECT_EQ(confinement_from_env(), Confinement::kNone);
  setenv("OPENSHELL_TUNNEL_SECCOMP", "1", 1);
  EXPECT_EQ(confinement_from_env(), Confinement::kSeccomp);
  unsetenv("OPENSHELL_TUNNEL_SECCOMP");
}

}  // namespace
}  // namespace osh

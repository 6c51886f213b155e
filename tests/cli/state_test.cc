// cli/state: the recorded daemon is the tunnel only while pid, boot id and
// start time all match (a reused pid is not the tunnel), and the state-dir
// lock admits one holder (issue 14.4). Runs as any user; no namespaces.
#include "cli/state.h"
#include "tests/cli/temp_dir_test.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace osh::cli {
namespace {

namespace fs = std::filesystem;

using StateDir = testing::TempDirTest;

// A child that waits until killed; its pid plays "the pid was reused".
struct Sleeper {
  pid_t pid = ::fork();
  Sleeper() {
    if (pid == 0) {
      ::pause();
      _exit(0);
    }
  }
  ~Sleeper() {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
};

std::string boot_id() {
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::string s;
  std::getline(f, s);
  return s;
}

TEST(ProcessIdentity, ReadsBootIdAndStartTime) {
  const auto a = process_identity(::getpid());
  ASSERT_TRUE(a);
  EXPECT_EQ(a->boot_id, boot_id());
  EXPECT_EQ(a->boot_id.size(), 36u);
  EXPECT_GT(a->start_time, 0u);
  const auto b = process_identity(::getpid());
  ASSERT_TRUE(b);
  EXPECT_EQ(a->start_time, b->start_time);
  EXPECT_FALSE(process_identity(0));
  EXPECT_FALSE(process_identity(-1));
}

TEST(ProcessIdentity, GoneProcessHasNone) {
  const pid_t child = ::fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  ::waitpid(child, nullptr, 0);
  EXPECT_FALSE(process_identity(child));
}

// The comm field may hold spaces and parentheses ("x) 1 2 3 (y"): fields are
// counted after the last ')', so the start time is unchanged by a rename.
TEST(ProcessIdentity, CommWithSpacesAndParentheses) {
  const pid_t child = ::fork();
  if (child == 0) {
    const auto before = process_identity(::getpid());
    ::prctl(PR_SET_NAME, "x) 1 2 3 (y", 0, 0, 0);
    const auto after = process_identity(::getpid());
    _exit(before && after && before->start_time == after->start_time ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(RecordedTunnel, AliveOnlyWithMatchingIdentity) {
  RunState st;
  st.pid = ::getpid();
  st.identity = *process_identity(::getpid());
  EXPECT_TRUE(recorded_tunnel_alive(st));

  RunState other_start = st;
  other_start.identity.start_time += 1;
  EXPECT_FALSE(recorded_tunnel_alive(other_start));

  RunState other_boot = st;
  other_boot.identity.boot_id = "00000000-0000-0000-0000-000000000000";
  EXPECT_FALSE(recorded_tunnel_alive(other_boot));

  RunState none;
  EXPECT_FALSE(recorded_tunnel_alive(none));
}

// The state names a pid that now belongs to another process (here a child
// that is alive): with the old identity recorded it is not the tunnel.
TEST(RecordedTunnel, ReusedPidIsNotTheTunnel) {
  // proc(5) start times count clock ticks (USER_HZ, 10 ms): a child forked
  // within this test process's first tick would have the same start time.
  // Two ticks apart, the identities differ as a reused pid's would.
  const long tick_us = 1'000'000 / ::sysconf(_SC_CLK_TCK);
  ::usleep(static_cast<useconds_t>(2 * tick_us));
  Sleeper other;
  ASSERT_GT(other.pid, 0);
  ASSERT_NE(process_identity(other.pid)->start_time, process_identity(::getpid())->start_time);
  RunState st;
  st.pid = other.pid;
  st.identity = *process_identity(::getpid());  // the identity the "tunnel" had
  EXPECT_FALSE(recorded_tunnel_alive(st));
  st.identity = *process_identity(other.pid);   // the process itself
  EXPECT_TRUE(recorded_tunnel_alive(st));
}

TEST_F(StateDir, IdentitySurvivesSaveAndLoad) {
  RunState st;
  st.pid = ::getpid();
  st.identity = *process_identity(::getpid());
  st.tun_name = "osh0";
  st.save(dir_);
  const RunState back = RunState::load(dir_);
  EXPECT_EQ(back.pid, st.pid);
  EXPECT_EQ(back.identity.boot_id, st.identity.boot_id);
  EXPECT_EQ(back.identity.start_time, st.identity.start_time);
  EXPECT_TRUE(recorded_tunnel_alive(back));
}

// A state file of an older version (no identity): the pid alone, checked by
// the executable's name, as before; this test binary is not the tunnel.
TEST_F(StateDir, OldStateFileWithoutIdentity) {
  std::ofstream(dir_ / "state.json") << R"({"pid": )" << ::getpid() << R"(, "tun_name": "osh0"})";
  const RunState st = RunState::load(dir_);
  EXPECT_EQ(st.pid, ::getpid());
  EXPECT_TRUE(st.identity.boot_id.empty());
  EXPECT_FALSE(recorded_tunnel_alive(st));
}

TEST_F(StateDir, NamesThatAreNotUtf8AreSaved) {
  // Sandbox names come from the gateway (issue 14.8): one that is not UTF-8
  // made nlohmann::json throw, and the state was never saved again.
  RunState st;
  st.pid = 42;
  st.sandboxes["id-1"] = SandboxRecord{"id-1", "bad\xff\xfename", "198.18.0.20", "fd00::20"};
  ASSERT_NO_THROW(st.save(dir_));
  const RunState back = RunState::load(dir_);
  ASSERT_TRUE(back.sandboxes.contains("id-1"));
  EXPECT_EQ(back.sandboxes.at("id-1").v4, "198.18.0.20");
  EXPECT_EQ(back.sandboxes.at("id-1").name, "bad\xef\xbf\xbd\xef\xbf\xbdname");  // U+FFFD per bad byte
}

TEST_F(StateDir, LockHasOneHolder) {
  std::string err;
  StateLock first;
  ASSERT_EQ(first.acquire(dir_, &err), StateLock::Result::kAcquired) << err;
  EXPECT_TRUE(first.held());
  // flock(2) locks belong to the open file description: a second open, even
  // in this process, is refused, and so is another process.
  StateLock second;
  EXPECT_EQ(second.acquire(dir_, &err), StateLock::Result::kHeld);
  EXPECT_FALSE(second.held());
  const pid_t child = ::fork();
  if (child == 0) {
    StateLock l;
    std::string e;
    _exit(l.acquire(dir_, &e) == StateLock::Result::kHeld ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // The holder keeps it, nobody else gets it.
  EXPECT_EQ(second.acquire(dir_, &err), StateLock::Result::kHeld);

  first = StateLock();  // released (closed)
  EXPECT_EQ(second.acquire(dir_, &err), StateLock::Result::kAcquired) << err;
}

TEST_F(StateDir, LockIsReleasedWhenTheHolderDies) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    StateLock l;
    std::string e;
    const char ok = l.acquire(dir_, &e) == StateLock::Result::kAcquired ? 'y' : 'n';
    (void)!::write(ready[1], &ok, 1);
    ::pause();
    _exit(0);
  }
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  EXPECT_EQ(ok, 'y');
  std::string err;
  StateLock mine;
  EXPECT_EQ(mine.acquire(dir_, &err), StateLock::Result::kHeld);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_EQ(mine.acquire(dir_, &err), StateLock::Result::kAcquired) << err;
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST_F(StateDir, LockFileSymlinkIsRefused) {
  const fs::path target = dir_ / "elsewhere";
  std::ofstream(target) << "";
  fs::create_symlink(target, dir_ / "lock");
  std::string err;
  StateLock l;
  EXPECT_EQ(l.acquire(dir_, &err), StateLock::Result::kError);
  EXPECT_NE(err.find("lock"), std::string::npos) << err;
}

// Only root lists or writes it; others may traverse it to the control
// socket (kStateDirMode, issue 14.2).
TEST_F(StateDir, LockCreatesADirectoryOthersCanOnlyTraverse) {
  const fs::path sub = dir_ / "new" / "state";
  std::string err;
  StateLock l;
  ASSERT_EQ(l.acquire(sub, &err), StateLock::Result::kAcquired) << err;
  EXPECT_EQ(fs::status(sub).permissions() & fs::perms::all,
            fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  EXPECT_TRUE(fs::is_regular_file(sub / "lock"));
}

// Issue 14.1: the uid whose helper removes the ssh block after a crash is
// the recorded one; an older state file (no ssh_uid) falls back to the
// config's owner, and a symlink there names nobody.
TEST_F(StateDir, SshOwnerIsRecordedOrTheConfigsOwner) {
  RunState st;
  EXPECT_FALSE(ssh_config_owner(st));
  st.ssh_config = (dir_ / "config").string();
  st.ssh_uid = 1234;
  st.save(dir_);
  const RunState back = RunState::load(dir_);
  EXPECT_EQ(back.ssh_uid, 1234);
  EXPECT_EQ(ssh_config_owner(back), std::optional<uid_t>(1234));
  RunState old;
  old.ssh_config = st.ssh_config;
  EXPECT_FALSE(ssh_config_owner(old)) << "no file: nobody";
  { std::ofstream(old.ssh_config) << "Host x\n"; }
  EXPECT_EQ(ssh_config_owner(old), std::optional<uid_t>(::geteuid()));
  fs::remove(old.ssh_config);
  fs::create_symlink("/etc/passwd", old.ssh_config);
  EXPECT_FALSE(ssh_config_owner(old)) << "a symlink names nobody";
}

}  // namespace
}  // namespace osh::cli

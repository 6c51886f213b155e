// --log-file (cli/log_setup; issue 14.7): the log rotates by size, keeps
// --log-files old files, is 0600, and a stdout that pointed at the log file
// (up -d's child) follows it across rotations. Each case runs in a forked
// child: start_logging() replaces the process's default logger and may move
// fds 1 and 2. Runs as any user; no namespaces.
#include "cli/log_setup.h"
#include "common/thread_sandbox.h"
#include "tests/cli/temp_dir_test.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

namespace osh::cli {
namespace {

namespace fs = std::filesystem;

class LogDir : public testing::TempDirTest {
 protected:
  /// Runs @fn in a child; its exit code (0 = fine).
  static int in_child(const std::function<int()>& fn) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) _exit(fn());
    int st = 0;
    ::waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  /// start_logging() to @file, rotating at 1 MiB, keeping @files old ones.
  static void log_to(const fs::path& file, uint32_t files) {
    LogOptions o;
    o.file = file.string();
    o.max_mib = 1;
    o.files = files;
    start_logging(o);
  }
};

TEST_F(LogDir, RotatesBySizeAndKeepsTheConfiguredNumberOfFiles) {
  const fs::path log = dir_ / "tunnel.log";
  ASSERT_EQ(in_child([&] {
              log_to(log, 2);
              const std::string line(1000, 'x');
              for (int i = 0; i < 5000; ++i) spdlog::info("{} {}", i, line);  // ~5 MiB
              spdlog::info("the last line");
              return 0;
            }),
            0);
  ASSERT_TRUE(fs::exists(log));
  // spdlog names rotated files "tunnel.1.log" (the index before the extension).
  EXPECT_TRUE(fs::exists(dir_ / "tunnel.1.log"));
  EXPECT_TRUE(fs::exists(dir_ / "tunnel.2.log"));
  int kept = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    ++kept;
    EXPECT_LE(fs::file_size(e.path()), (1u << 20) + 2048) << e.path();
    EXPECT_EQ(fs::status(e.path()).permissions() & fs::perms::mask,
              fs::perms::owner_read | fs::perms::owner_write) << e.path();
  }
  EXPECT_EQ(kept, 3);  // the file and 2 rotated ones: the rest of the 5 MiB is gone
  EXPECT_NE(read(log).find("the last line"), std::string::npos);
}

TEST_F(LogDir, OutputOnTheLogFileFollowsItAcrossRotations) {
  const fs::path log = dir_ / "tunnel.log";
  ASSERT_EQ(in_child([&] {
              // up -d: the child starts with stdout and stderr on the log file.
              const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
              if (fd < 0) return 10;
              ::dup2(fd, 1);
              ::dup2(fd, 2);
              ::close(fd);
              log_to(log, 1);
              std::printf("printed before the rotation\n");
              std::fflush(stdout);
              const std::string line(1000, 'y');
              for (int i = 0; i < 1500; ++i) spdlog::info("{} {}", i, line);  // > 1 MiB: one rotation
              std::printf("printed after the rotation\n");
              std::fprintf(stderr, "error: after the rotation\n");
              std::fflush(nullptr);
              return 0;
            }),
            0);
  const std::string now = read(log);
  EXPECT_NE(now.find("printed after the rotation"), std::string::npos);
  EXPECT_NE(now.find("error: after the rotation"), std::string::npos);
  EXPECT_EQ(now.find("printed before the rotation"), std::string::npos);
}

TEST_F(LogDir, AConfinedThreadsLinesRotateTheFileOnTheWriter) {
  // up: the stack reader logs under the data-plane seccomp filter, which
  // forbids the open/rename/dup2 of a rotation; start_log_writer() moves
  // writing and rotating to a worker thread of its own, so the file still
  // rotates, nothing is lost and the filter never fires (a dup2 on the
  // confined thread would kill the process: this child's exit status).
  const fs::path log = dir_ / "tunnel.log";
  ASSERT_EQ(in_child([&] {
              const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
              if (fd < 0) return 10;
              ::dup2(fd, 1);  // as in up -d's child: the rotation moves fds 1 and 2
              ::dup2(fd, 2);
              ::close(fd);
              log_to(log, 2);
              start_log_writer();
              std::string why;
              std::thread confined([&why] {
                why = confine_this_thread("osh-test", Confinement::kSeccomp);
                if (!why.empty()) return;
                const std::string line(1000, 'z');
                for (int i = 0; i < 2500; ++i) spdlog::info("{} {}", i, line);  // > 2 MiB: two rotations
                spdlog::info("the last confined line");
              });
              confined.join();
              stop_logging();
              return why.empty() ? 0 : 11;
            }),
            0);
  EXPECT_TRUE(fs::exists(dir_ / "tunnel.1.log"));
  EXPECT_TRUE(fs::exists(dir_ / "tunnel.2.log"));
  EXPECT_NE(read(log).find("the last confined line"), std::string::npos);
}

TEST_F(LogDir, ATerminalOnStdoutStaysWhereItIs) {
  // up --log-file F in the foreground: stdout is not the log file, so its
  // output does not move there.
  const fs::path log = dir_ / "tunnel.log";
  const fs::path out = dir_ / "stdout.txt";
  ASSERT_EQ(in_child([&] {
              const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
              ::dup2(fd, 1);
              log_to(log, 1);
              const std::string line(1000, 'z');
              for (int i = 0; i < 1500; ++i) spdlog::info("{} {}", i, line);
              std::printf("progress line\n");
              std::fflush(stdout);
              return 0;
            }),
            0);
  EXPECT_EQ(read(out), "progress line\n");
}

TEST_F(LogDir, AnUnwritableLogFileIsAnErrorNamingIt) {
  std::ofstream(dir_ / "a-file") << "not a directory\n";
  LogOptions o;
  o.file = (dir_ / "a-file" / "tunnel.log").string();  // fails for root too
  EXPECT_EQ(in_child([&] {
              try {
                start_logging(o);
              } catch (const std::runtime_error& e) {
                return std::string(e.what()).find(o.file) != std::string::npos ? 0 : 2;
              }
              return 1;
            }),
            0);
}

}  // namespace
}  // namespace osh::cli

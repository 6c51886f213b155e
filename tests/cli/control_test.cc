// The control socket's request boundary (issue 14.8): a handler that throws
// (nlohmann::json on a gateway error message that is not UTF-8) answers an
// error and the server keeps serving; answers are valid JSON whatever bytes
// the values hold. Runs as any user; no namespaces.
#include "cli/control.h"
#include "tests/cli/temp_dir_test.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace osh::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using ControlDir = testing::TempDirTest;

TEST(JsonAnswer, ValuesThatAreNotUtf8BecomeReplacementCharacters) {
  const json j = {{"error", "UNAVAILABLE: sandbox \xff\xfe gone"}, {"name", "ok"}};
  EXPECT_THROW((void)j.dump(), json::type_error);  // what status_json().dump() did
  std::string line;
  ASSERT_NO_THROW(line = json_answer(j));
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const json back = json::parse(line);
  EXPECT_EQ(back["error"], "UNAVAILABLE: sandbox \xef\xbf\xbd\xef\xbf\xbd gone");
  EXPECT_EQ(back["name"], "ok");
}

TEST_F(ControlDir, AThrowingHandlerAnswersAnErrorAndTheServerKeepsRunning) {
  std::atomic<int> calls{0};
  ControlServer server(dir_ / "control.sock", [&](const std::string&, uid_t) -> std::string {
    if (calls++ == 0) {
      // What status_json().dump() threw for a gateway error that is not UTF-8.
      return json{{"error", "\xff"}}.dump();
    }
    if (calls == 2) throw 42;  // not even a std::exception
    return R"({"ok":true})";
  });
  std::string err;
  const auto first = control_request(dir_ / "control.sock", R"({"cmd":"status"})", std::chrono::seconds(5), &err);
  ASSERT_TRUE(first) << err;
  EXPECT_EQ(json::parse(*first)["ok"], false);
  const auto second = control_request(dir_ / "control.sock", R"({"cmd":"status"})", std::chrono::seconds(5), &err);
  ASSERT_TRUE(second) << err;
  EXPECT_EQ(json::parse(*second)["ok"], false);
  const auto third = control_request(dir_ / "control.sock", R"({"cmd":"status"})", std::chrono::seconds(5), &err);
  ASSERT_TRUE(third) << err;
  EXPECT_EQ(json::parse(*third)["ok"], true);
  EXPECT_EQ(calls.load(), 3);
}

// A raw client of the socket at @path (connected; -1 on failure).
int connect_raw(const fs::path& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST_F(ControlDir, AUidThatIsNotAdmittedIsAnsweredWithoutBeingRead) {
  // Admit says no for our own uid: the answer comes although we send nothing
  // (a peer that may not use the tunnel cannot hold the server's thread).
  std::atomic<int> calls{0};
  ControlServer server(
      dir_ / "control.sock", [&](const std::string&, uid_t) { return (++calls, std::string(R"({"ok":true})")); },
      [](uid_t) { return false; });
  const int fd = connect_raw(dir_ / "control.sock");
  ASSERT_GE(fd, 0);
  char buf[512];
  const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  ::close(fd);
  ASSERT_GT(n, 0);
  const json answer = json::parse(std::string(buf, static_cast<size_t>(n)));
  EXPECT_EQ(answer["ok"], false);
  EXPECT_EQ(answer["denied"], true);
  EXPECT_EQ(calls.load(), 0);
}

TEST_F(ControlDir, ARefusedClientReadsItsAnswerEvenWhenItsRequestCannotBeSent) {
  // The server answers a refused uid at accept and closes without reading;
  // control_request() still returns that answer (it used to report "not
  // answering" when its write met the closed socket first).
  ControlServer server(
      dir_ / "control.sock", [](const std::string&, uid_t) { return std::string(R"({"ok":true})"); },
      [](uid_t) { return false; });
  for (int i = 0; i < 20; ++i) {
    std::string err;
    const std::string big(200000, ' ');  // larger than the socket buffer: the write cannot finish first
    const auto answer =
        control_request(dir_ / "control.sock", R"({"cmd":"status"})" + big, std::chrono::seconds(10), &err);
    ASSERT_TRUE(answer) << err;
    EXPECT_EQ(json::parse(*answer)["denied"], true);
  }
}

TEST_F(ControlDir, ATricklingPeerIsCutOffAndTheNextRequestIsServed) {
  // One byte every 500 ms never completes a line: one deadline for the whole
  // line (2 s), not per read, so the server moves on to the next client.
  ControlServer server(dir_ / "control.sock", [](const std::string&, uid_t) { return std::string(R"({"ok":true})"); });
  const int slow = connect_raw(dir_ / "control.sock");
  ASSERT_GE(slow, 0);
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    while (!stop && ::send(slow, "{", 1, MSG_NOSIGNAL) == 1)
      std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the trickle's pace, not a wait for an event
  });
  std::string err;
  const auto answer = control_request(dir_ / "control.sock", R"({"cmd":"status"})", std::chrono::seconds(20), &err);
  stop = true;
  ::shutdown(slow, SHUT_RDWR);
  trickle.join();
  ::close(slow);
  ASSERT_TRUE(answer) << err;
  EXPECT_EQ(json::parse(*answer)["ok"], true);
}

}  // namespace
}  // namespace osh::cli

// The control socket's request boundary (issue 14.8): a handler that throws
// (nlohmann::json on a gateway error message that is not UTF-8) answers an
// error and the server keeps serving; answers are valid JSON whatever bytes
// the values hold. Runs as any user; no namespaces.
#include "cli/control.h"
#include "tests/cli/temp_dir_test.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
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

}  // namespace
}  // namespace osh::cli

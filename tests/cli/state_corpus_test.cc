// Replays the committed corpora of fuzz/state_fuzz.cc and
// fuzz/control_fuzz.cc through their rules (fuzz/state_check.h,
// fuzz/control_check.h) in the normal build (CI: main and ASan+UBSan
// builds), plus named tests for what the seeds were written for.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include "fuzz/control_check.h"
#include "fuzz/corpus_files.h"
#include "fuzz/state_check.h"

namespace osh::fuzz {
namespace {

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

class StateCorpus : public ::testing::Test {
 protected:
  void SetUp() override { spdlog::set_level(spdlog::level::off); }
  void TearDown() override { spdlog::set_level(spdlog::level::info); }
  StateHarness harness_;
};

TEST_F(StateCorpus, EveryFileLoadsCleanlyAndRoundTrips) {
  const auto files = corpus_files(OSH_STATE_CORPUS_DIR);
  for (const auto& [name, b] : files) EXPECT_EQ(harness_.run(b), "") << name;
  EXPECT_GE(files.size(), 25u);
}

TEST_F(StateCorpus, AFullStateLoadsEveryField) {
  cli::RunState st;
  ASSERT_EQ(harness_.run(bytes(R"({"pid":42,"boot_id":"b","start_time":7,"tun_name":"osh0",)"
                               R"("sandboxes":{"u":{"name":"demo","v4":"198.18.0.2","v6":"fd00::2"}}})"),
                         &st),
            "");
  EXPECT_EQ(st.pid, 42);
  EXPECT_EQ(st.identity.start_time, 7u);
  ASSERT_EQ(st.sandboxes.count("u"), 1u);
  EXPECT_EQ(st.sandboxes["u"].v4, "198.18.0.2");
}

// Finding (state_fuzz's rules): a float pid or start_time was converted by
// json::value() (1e300 into an int is undefined behaviour), a negative one
// wrapped; such a file is now corrupt, i.e. an empty state.
TEST_F(StateCorpus, NumbersThatAreNotWholeAndInRangeMakeTheFileCorrupt) {
  for (const char* text : {R"({"pid":1e300,"tun_name":"osh0"})", R"({"pid":-1,"tun_name":"osh0"})",
                           R"({"pid":4294967296,"tun_name":"osh0"})", R"({"pid":1.5,"tun_name":"osh0"})",
                           R"({"start_time":1e30,"tun_name":"osh0"})", R"({"start_time":-2,"tun_name":"osh0"})"}) {
    cli::RunState st;
    ASSERT_EQ(harness_.run(bytes(text), &st), "") << text;
    EXPECT_EQ(st.pid, 0) << text;
    EXPECT_EQ(st.tun_name, "") << text;
  }
}

TEST(ControlCorpus, EveryRequestGetsOneValidAnswer) {
  const auto files = corpus_files(OSH_CONTROL_CORPUS_DIR);
  for (const auto& [name, b] : files) EXPECT_EQ(check_control(b), "") << name;
  EXPECT_GE(files.size(), 18u);
}

TEST(ControlCorpus, AnswersNameTheProblemAndRunOnlyTheCommandAsked) {
  int downs = 0;
  cli::ControlCommands c;
  c.status = [] { return nlohmann::json{{"sandboxes", nlohmann::json::array()}}; };
  c.down = [&] {
    ++downs;
    return nlohmann::json{{"pid", 1}};
  };
  EXPECT_EQ(cli::answer_control_request(R"({"cmd":"status"})", c), R"({"ok":true,"sandboxes":[]})");
  EXPECT_EQ(cli::answer_control_request("nope", c), R"({"error":"request is not JSON","ok":false})");
  EXPECT_EQ(cli::answer_control_request(R"([1])", c), R"({"error":"request is not a JSON object","ok":false})");
  EXPECT_EQ(cli::answer_control_request(R"({"cmd":"x"})", c), R"({"error":"unknown command 'x'","ok":false})");
  EXPECT_EQ(downs, 0);
  EXPECT_EQ(cli::answer_control_request(R"({"cmd":"down"})", c), R"({"ok":true,"pid":1})");
  EXPECT_EQ(downs, 1);
  c.down = nullptr;  // a caller that may not stop the tunnel
  EXPECT_EQ(cli::answer_control_request(R"({"cmd":"down"})", c),
            R"({"denied":true,"error":"'down' is not allowed for this caller","ok":false})");
  EXPECT_EQ(downs, 1);
}

// A status whose strings are not UTF-8 (a sandbox name) used to make dump()
// throw on the control server's thread; now the bytes become U+FFFD.
TEST(ControlCorpus, InvalidUtf8InAnAnswerIsReplaced) {
  cli::ControlCommands c;
  c.status = [] { return nlohmann::json{{"name", "bad\xff"}}; };
  EXPECT_EQ(cli::answer_control_request(R"({"cmd":"status"})", c), "{\"name\":\"bad\xef\xbf\xbd\",\"ok\":true}");
  c.status = [] () -> nlohmann::json { throw std::runtime_error("boom"); };
  EXPECT_EQ(cli::answer_control_request(R"({"cmd":"status"})", c), R"({"error":"status failed: boom","ok":false})");
}

}  // namespace
}  // namespace osh::fuzz

// log_escape() and LogLimiter (issue 14.7).
#include <gtest/gtest.h>

#include <string>

#include "common/log_escape.h"
#include "common/log_limiter.h"

namespace osh {
namespace {

TEST(LogEscape, KeepsPrintableTextAndUtf8) {
  EXPECT_EQ(log_escape("demo-sandbox 1"), "demo-sandbox 1");
  EXPECT_EQ(log_escape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(log_escape("a\\b"), "a\\\\b");
}

TEST(LogEscape, EscapesControlsAndForgedLines) {
  EXPECT_EQ(log_escape("x\nERROR forged"), "x\\x0aERROR forged");
  EXPECT_EQ(log_escape("\x1b[31mred"), "\\x1b[31mred");
  EXPECT_EQ(log_escape(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(log_escape("\x7f"), "\\x7f");
  EXPECT_EQ(log_escape("\xc2\x85"), "\\xc2\\x85");            // NEL, a C1 control
  EXPECT_EQ(log_escape("\xe2\x80\xae" "abc"), "\\xe2\\x80\\xae" "abc");  // RIGHT-TO-LEFT OVERRIDE
  EXPECT_EQ(log_escape("\xe2\x80\xa8"), "\\xe2\\x80\\xa8");    // LINE SEPARATOR
}

TEST(LogEscape, EscapesIllFormedUtf8BytewiseAndResyncs) {
  EXPECT_EQ(log_escape("\xff" "a"), "\\xff" "a");
  EXPECT_EQ(log_escape("\xc0\xaf"), "\\xc0\\xaf");                   // overlong '/'
  EXPECT_EQ(log_escape("\xed\xa0\x80"), "\\xed\\xa0\\x80");          // surrogate
  EXPECT_EQ(log_escape("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // > U+10FFFF
  EXPECT_EQ(log_escape("\xe2\x82" "A"), "\\xe2\\x82" "A");             // truncated, then ASCII
}

TEST(LogEscape, CapsTheLength) {
  const std::string long_value(10000, 'a');
  const std::string e = log_escape(long_value, 64);
  EXPECT_EQ(e.size(), 64u);
  EXPECT_EQ(e.substr(61), "...");
  EXPECT_EQ(log_escape(std::string(64, 'b'), 64), std::string(64, 'b'));  // exactly fits: kept whole
  // Never cuts inside an escape or a UTF-8 sequence.
  const std::string e2 = log_escape(std::string(100, '\n'), 16);
  EXPECT_EQ(e2, "\\x0a\\x0a\\x0a...");
  const std::string e3 = log_escape(std::string(50, '\xc3') + "", 16);
  EXPECT_LE(e3.size(), 16u);
  EXPECT_LE(log_escape(std::string(1000, '\n')).size(), kLogEscapeMax);
}

using std::chrono::milliseconds;

TEST(LogLimiter, BurstThenOnePerRefillAndCountsWhatItHeldBack) {
  LogLimiter l(3, milliseconds(1000));
  const auto t0 = LogLimiter::Clock::time_point{} + std::chrono::hours(1);
  uint64_t s = 99;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(l.allow(t0, &s));
    EXPECT_EQ(s, 0u);
  }
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(l.allow(t0 + milliseconds(i % 999), &s));
  ASSERT_TRUE(l.allow(t0 + milliseconds(1000), &s));  // one token back after 1 s
  EXPECT_EQ(s, 1000u);
  EXPECT_FALSE(l.allow(t0 + milliseconds(1001), &s));
  ASSERT_TRUE(l.allow(t0 + milliseconds(2000), &s));
  EXPECT_EQ(s, 1u);
  // A long quiet period refills the burst, no more.
  int passed = 0;
  for (int i = 0; i < 10; ++i) passed += l.allow(t0 + std::chrono::hours(1), &s);
  EXPECT_EQ(passed, 3);
}

TEST(LogLimiter, MacroSkipsTheLineWithoutEvaluatingArguments) {
  int evaluated = 0;
  auto arg = [&] { return ++evaluated; };
  for (int i = 0; i < 1000; ++i) OSH_LOG_LIMITED(spdlog::level::critical, "line {}", arg());
  // 10 in the burst, plus at most a few refilled while the loop ran.
  EXPECT_GE(evaluated, static_cast<int>(LogLimiter::kBurst));
  EXPECT_LE(evaluated, static_cast<int>(LogLimiter::kBurst) + 5);
}

}  // namespace
}  // namespace osh

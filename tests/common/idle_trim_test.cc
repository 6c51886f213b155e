// IdleTrimPolicy on synthetic samples (no clock, no malloc), and one
// IdleTrimmer smoke test.
#include "common/idle_trim.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace osh {
namespace {

using namespace std::chrono_literals;
using Sample = IdleTrimPolicy::Sample;
constexpr size_t kMiB = size_t{1} << 20;

// Feeds one sample a second; cpu_ms_per_s of CPU each second, RSS in MiB.
struct Feed {
  IdleTrimPolicy policy;
  IdleTrimPolicy::Clock::time_point now{};
  std::chrono::microseconds cpu{0};

  bool step(int cpu_ms_per_s, size_t rss_mib) {
    now += 1s;
    cpu += std::chrono::milliseconds(cpu_ms_per_s);
    return policy.observe({now, cpu, rss_mib * kMiB});
  }
  void trimmed(size_t rss_mib) { policy.trimmed({now, cpu, rss_mib * kMiB}); }
  // Steps with @cpu_ms_per_s until a trim is due; the steps taken (@limit: none came).
  int steps_until_trim(int cpu_ms_per_s, size_t rss_mib, int limit) {
    int i = 0;
    while (!step(cpu_ms_per_s, rss_mib) && i < limit) ++i;
    return i;
  }
  // From 20 MiB, a 3 s load at @rss_mib, then idle until the first trim.
  void load_then_idle(size_t rss_mib) {
    EXPECT_FALSE(step(0, 20));
    for (int i = 0; i < 3; ++i) EXPECT_FALSE(step(300, rss_mib));
    ASSERT_LT(steps_until_trim(0, rss_mib, 10), 10);
  }
};

TEST(IdleTrimPolicy, TrimsOnceAfterBusyThenIdle) {
  Feed f;
  EXPECT_FALSE(f.step(0, 20));  // start: the lowest RSS seen is 20 MiB
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(f.step(500, 300)) << "busy: never";
  EXPECT_FALSE(f.step(0, 300));
  EXPECT_FALSE(f.step(0, 300)) << "2 s idle: not yet";
  EXPECT_TRUE(f.step(0, 300)) << "3 s idle after a busy period";
  f.trimmed(22);
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(f.step(0, 22)) << "idle, nothing happened: no second trim";
}

TEST(IdleTrimPolicy, NoTrimNearTheLowestRss) {
  Feed f;
  EXPECT_FALSE(f.step(0, 20));
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(f.step(500, 23));
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(f.step(0, 23)) << "3 MiB above the low: below the 4 MiB slack";
}

TEST(IdleTrimPolicy, SteadyLoadIsNeverTrimmed) {
  Feed f;
  EXPECT_FALSE(f.step(0, 20));
  for (int i = 0; i < 60; ++i) EXPECT_FALSE(f.step(100, 200)) << "10% of a core is not idle";
}

TEST(IdleTrimPolicy, BackgroundNoiseIsIdle) {
  Feed f;
  EXPECT_FALSE(f.step(0, 20));
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(f.step(400, 100));
  bool trimmed = false;
  for (int i = 0; i < 6 && !trimmed; ++i) trimmed = f.step(5, 100);  // 0.5%: timers, keepalives
  EXPECT_TRUE(trimmed);
}

TEST(IdleTrimPolicy, TrimsAgainAfterTheNextLoad) {
  // Stalled connections hold data through the first trim; when they close,
  // the next idle period trims again.
  Feed f;
  f.load_then_idle(340);
  f.trimmed(330);  // live data: little given back
  EXPECT_FALSE(f.step(0, 330));
  EXPECT_FALSE(f.step(40, 330));  // the connections close: a short burst frees 300 MiB
  EXPECT_LT(f.steps_until_trim(0, 330, 10), 10) << "trimmed again once idle";
}

TEST(IdleTrimPolicy, IdleAboveTheLowTrimsAgainEveryRetrimPeriod) {
  // Memory freed after the trim without CPU to speak of (late teardown)
  // is returned by a later trim all the same.
  Feed f;
  f.load_then_idle(340);
  f.trimmed(330);
  for (int i = 0; i < 9; ++i) EXPECT_FALSE(f.step(1, 330)) << "within 10 s of the trim: " << i;
  EXPECT_LT(f.steps_until_trim(1, 330, 5), 5) << "trimmed again 10 s after the last trim";
}

TEST(IdleTrimmer, SamplesThisProcess) {
  const Sample s = IdleTrimmer::sample_self();
  EXPECT_GT(s.rss, 0u);
  IdleTrimPolicy::Params p;
  p.idle_for = 20ms;
  p.min_activity = 0us;
  p.rss_slack = 0;
  p.idle_cpu_share = 1.0;  // a loaded machine: any sample counts as idle (this tests the thread)
  IdleTrimmer t("test", p, 5ms);
  for (int i = 0; i < 400 && t.trims() == 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_GE(t.trims(), 1u);
}

}  // namespace
}  // namespace osh

// The gateway's re-resolution off the main thread (cli/gateway_lookup.h):
// start() and poll() never wait for a hung lookup, a request made while one
// runs is queued (one at most) and run after it, and the destructor joins.
#include "cli/gateway_lookup.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace osh::cli {
namespace {

using namespace std::chrono_literals;

// A resolver that blocks until released, counting its calls.
struct Gate {
  std::mutex mu;
  std::promise<void> open;
  std::shared_future<void> opened = open.get_future().share();
  std::atomic<int> calls{0};
  std::string last_host;
  GatewayLookup::Resolver resolver() {
    return [this](const std::string& host, std::string*) -> std::optional<std::vector<IpAddress>> {
      ++calls;
      {
        std::lock_guard lk(mu);
        last_host = host;
      }
      opened.wait();
      return std::vector<IpAddress>{*IpAddress::parse("198.18.77.7")};
    };
  }
};

std::optional<GatewayLookup::Result> poll_until_done(GatewayLookup& l) {
  for (int i = 0; i < 500; ++i) {
    if (auto r = l.poll()) return r;
    std::this_thread::sleep_for(10ms);
  }
  return std::nullopt;
}

TEST(GatewayLookupTest, NeverWaitsForAHungLookup) {
  Gate g;
  GatewayLookup l(g.resolver());
  EXPECT_FALSE(l.poll());  // nothing started
  const auto t0 = std::chrono::steady_clock::now();
  l.start("gw.test");
  EXPECT_FALSE(l.poll());  // still running: no result, no wait
  EXPECT_TRUE(l.busy());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  g.open.set_value();
  const auto r = poll_until_done(l);
  ASSERT_TRUE(r);
  ASSERT_TRUE(r->addrs);
  EXPECT_EQ(r->addrs->at(0).to_string(), "198.18.77.7");
  EXPECT_FALSE(l.busy());
  EXPECT_FALSE(l.poll());  // collected once
}

TEST(GatewayLookupTest, ARequestWhileRunningIsQueuedNotLost) {
  Gate g;
  GatewayLookup l(g.resolver());
  l.start("gw.test");
  l.start("gw2.test");
  l.start("gw3.test");  // replaces the queued one: one at most
  while (g.calls == 0) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(g.calls, 1);  // no two at once
  g.open.set_value();
  ASSERT_TRUE(poll_until_done(l));  // the first; starts the queued one
  EXPECT_TRUE(l.busy());
  ASSERT_TRUE(poll_until_done(l));
  EXPECT_EQ(g.calls, 2);
  std::lock_guard lk(g.mu);
  EXPECT_EQ(g.last_host, "gw3.test");
}

TEST(GatewayLookupTest, FailuresAreResults) {
  GatewayLookup l([](const std::string&, std::string* err) -> std::optional<std::vector<IpAddress>> {
    *err = "Name or service not known";
    return std::nullopt;
  });
  l.start("nowhere.test");
  auto r = poll_until_done(l);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->addrs);
  EXPECT_EQ(r->error, "Name or service not known");

  GatewayLookup t([](const std::string&, std::string*) -> std::optional<std::vector<IpAddress>> {
    throw std::runtime_error("boom");
  });
  t.start("x.test");
  r = poll_until_done(t);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->addrs);
  EXPECT_EQ(r->error, "boom");
}

TEST(GatewayLookupTest, DestructorJoinsARunningLookup) {
  std::atomic<bool> finished{false};
  {
    GatewayLookup l([&](const std::string&, std::string*) -> std::optional<std::vector<IpAddress>> {
      std::this_thread::sleep_for(200ms);
      finished = true;
      return std::nullopt;
    });
    l.start("slow.test");
  }
  EXPECT_TRUE(finished);  // no thread outlived the object
}

}  // namespace
}  // namespace osh::cli

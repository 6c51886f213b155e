// common/event_loop: fd callbacks (interest, parking, unwatch from a
// callback), posted closures from other threads, timers, stop().
// Real fds (socketpairs), no namespaces; time bounds are generous.
#include "common/event_loop.h"

#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <thread>
#include <vector>

namespace osh {
namespace {

using namespace std::chrono_literals;

struct SocketPair {
  ScopedFd a, b;
  SocketPair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
    a.reset(fds[0]);
    b.reset(fds[1]);
  }
};

/// Runs @fn on the loop thread and waits for it.
template <class Fn>
void on_loop(EventLoop& loop, Fn fn) {
  std::promise<void> done;
  loop.post([&] {
    fn();
    done.set_value();
  });
  ASSERT_EQ(done.get_future().wait_for(5s), std::future_status::ready);
}

TEST(EventLoop, PostedClosuresRunInOrderOnTheLoopThread) {
  EventLoop loop;
  loop.start();
  std::vector<int> seen;
  std::thread::id loop_id;
  bool in_loop = false;
  for (int i = 0; i < 100; ++i) loop.post([&, i] { seen.push_back(i); });
  on_loop(loop, [&] {
    loop_id = std::this_thread::get_id();
    in_loop = loop.in_loop_thread();
  });
  EXPECT_NE(loop_id, std::this_thread::get_id());
  EXPECT_TRUE(in_loop);
  EXPECT_FALSE(loop.in_loop_thread());
  ASSERT_EQ(seen.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[i], i);
}

TEST(EventLoop, PostsFromManyThreadsAllRun) {
  EventLoop loop;
  loop.start();
  std::atomic<int> n{0};
  std::vector<std::thread> posters;
  for (int t = 0; t < 4; ++t)
    posters.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) loop.post([&] { n++; });
    });
  for (auto& t : posters) t.join();
  on_loop(loop, [] {});
  EXPECT_EQ(n.load(), 4000);
}

TEST(EventLoop, ReadableFdCallsItsHandlerUntilParked) {
  SocketPair sp;  // outlives the loop (its thread reads the fds)
  EventLoop loop;
  std::promise<uint32_t> got;
  int calls = 0;
  ASSERT_EQ(loop.watch(sp.a.get(), EPOLLIN, [&](uint32_t ev) {
    if (++calls == 1) got.set_value(ev);
    // Not read: level-triggered, it stays readable; parking stops the calls.
    loop.modify(sp.a.get(), 0);
  }), 0);
  loop.start();
  ASSERT_EQ(::write(sp.b.get(), "x", 1), 1);
  auto f = got.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(f.get() & EPOLLIN);
  std::this_thread::sleep_for(50ms);
  on_loop(loop, [&] { EXPECT_EQ(calls, 1); });
  // Interest again: the byte is still there.
  on_loop(loop, [&] { EXPECT_EQ(loop.modify(sp.a.get(), EPOLLIN), 0); });
  on_loop(loop, [&] {});
  on_loop(loop, [&] { EXPECT_EQ(calls, 2); });
}

TEST(EventLoop, WritableAndHangupAreReported) {
  SocketPair sp;  // outlives the loop (its thread reads the fds)
  EventLoop loop;
  std::promise<uint32_t> writable, hangup;
  ASSERT_EQ(loop.watch(sp.a.get(), EPOLLOUT, [&](uint32_t ev) {
    writable.set_value(ev);
    loop.modify(sp.a.get(), EPOLLIN);
    loop.unwatch(sp.a.get());
    loop.watch(sp.a.get(), EPOLLIN, [&](uint32_t ev2) {
      loop.unwatch(sp.a.get());
      hangup.set_value(ev2);
    });
  }), 0);
  loop.start();
  auto w = writable.get_future();
  ASSERT_EQ(w.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(w.get() & EPOLLOUT);
  sp.b.reset();
  auto h = hangup.get_future();
  ASSERT_EQ(h.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(h.get() & (EPOLLHUP | EPOLLIN));
}

TEST(EventLoop, WatchTwiceIsEexistAndModifyUnknownIsEnoent) {
  SocketPair sp;  // outlives the loop (its thread reads the fds)
  EventLoop loop;
  EXPECT_EQ(loop.watch(sp.a.get(), EPOLLIN, [](uint32_t) {}), 0);
  EXPECT_EQ(loop.watch(sp.a.get(), EPOLLIN, [](uint32_t) {}), EEXIST);
  EXPECT_EQ(loop.modify(sp.b.get(), EPOLLIN), ENOENT);
  EXPECT_EQ(loop.watch(-1, EPOLLIN, [](uint32_t) {}), EBADF);
  loop.unwatch(sp.b.get());  // not watched: no-op
  loop.unwatch(sp.a.get());
  EXPECT_EQ(loop.modify(sp.a.get(), EPOLLIN), ENOENT);
}

TEST(EventLoop, AnEventForAnFdUnwatchedEarlierInTheBatchIsNotDelivered) {
  SocketPair one, two;
  EventLoop loop;
  int calls = 0;
  // Both readable before the loop runs: one epoll_wait returns both. The
  // first handler to run unwatches the other fd.
  auto handler = [&](int other) {
    return [&, other](uint32_t) {
      ++calls;
      loop.unwatch(one.a.get());
      loop.unwatch(two.a.get());
      (void)other;
    };
  };
  ASSERT_EQ(loop.watch(one.a.get(), EPOLLIN, handler(two.a.get())), 0);
  ASSERT_EQ(loop.watch(two.a.get(), EPOLLIN, handler(one.a.get())), 0);
  ASSERT_EQ(::write(one.b.get(), "x", 1), 1);
  ASSERT_EQ(::write(two.b.get(), "x", 1), 1);
  loop.start();
  on_loop(loop, [] {});
  EXPECT_EQ(calls, 1);
}

TEST(EventLoop, OneShotTimerRunsOnceAfterItsDelay) {
  EventLoop loop;
  std::promise<EventLoop::Clock::time_point> fired;
  int runs = 0;
  const auto t0 = EventLoop::Clock::now();
  loop.add_timer(30ms, [&] {
    if (++runs == 1) fired.set_value(EventLoop::Clock::now());
  });
  loop.start();
  auto f = fired.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_GE(f.get() - t0, 30ms);
  std::this_thread::sleep_for(60ms);
  on_loop(loop, [&] { EXPECT_EQ(runs, 1); });
}

TEST(EventLoop, PeriodicTimerRepeatsUntilCancelledFromItsOwnTask) {
  EventLoop loop;
  std::promise<void> third;
  int runs = 0;
  EventLoop::TimerId id = 0;
  id = loop.add_timer(5ms, [&] {
    if (++runs == 3) {
      EXPECT_TRUE(loop.cancel_timer(id));
      third.set_value();
    }
  }, 5ms);
  loop.start();
  ASSERT_EQ(third.get_future().wait_for(5s), std::future_status::ready);
  std::this_thread::sleep_for(40ms);
  on_loop(loop, [&] {
    EXPECT_EQ(runs, 3);
    EXPECT_FALSE(loop.cancel_timer(id));
  });
}

TEST(EventLoop, CancelledTimerNeverRunsAndTimersRunInDeadlineOrder) {
  EventLoop loop;
  std::vector<int> order;
  std::promise<void> done;
  const auto late = loop.add_timer(20ms, [&] { order.push_back(99); });
  loop.add_timer(30ms, [&] { order.push_back(3); done.set_value(); });
  loop.add_timer(10ms, [&] { order.push_back(1); });
  loop.add_timer(20ms, [&] { order.push_back(2); });
  EXPECT_TRUE(loop.cancel_timer(late));
  loop.start();
  ASSERT_EQ(done.get_future().wait_for(5s), std::future_status::ready);
  on_loop(loop, [&] { EXPECT_EQ(order, (std::vector<int>{1, 2, 3})); });
}

TEST(EventLoop, RunOnTheCallersThreadReturnsAfterStopFromATask) {
  EventLoop loop;
  int ran = 0;
  loop.post([&] { ++ran; });
  loop.post([&] { loop.stop(); });
  loop.post([&] { ++ran; });  // after stop(): destroyed unrun
  loop.run();
  EXPECT_EQ(ran, 1);
  loop.post([&] { ++ran; });  // stopped: dropped
  EXPECT_EQ(ran, 1);
}

TEST(EventLoop, StopFromAnotherThreadDropsQueuedTasksAndIsIdempotent) {
  auto counter = std::make_shared<int>(0);
  {
    EventLoop loop;
    loop.start();
    std::promise<void> blocked;
    std::promise<void> release;
    auto rel = release.get_future().share();
    loop.post([&] {
      blocked.set_value();
      rel.wait();
    });
    blocked.get_future().wait();
    loop.post([counter] { ++*counter; });  // queued behind the blocked task
    std::thread stopper([&] { loop.stop(); });
    std::this_thread::sleep_for(20ms);
    release.set_value();
    stopper.join();
    loop.stop();
    EXPECT_THROW(loop.start(), std::runtime_error);
  }
  EXPECT_EQ(*counter, 0);
  EXPECT_EQ(counter.use_count(), 1);  // the unrun task was destroyed
}

}  // namespace
}  // namespace osh

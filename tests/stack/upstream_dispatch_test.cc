// UpstreamDispatch (stack/upstream_dispatch.h): every call reaches the
// target once, in call order, on the dispatch thread (never the caller's);
// a send skips the hop only when nothing is queued or being made and the
// target takes it (Upstream::try_send_queued), and a read_more the same way
// (Upstream::try_read_more_in_place); finish() makes what was queued and
// drops what comes after.
#include "stack/upstream_dispatch.h"

#include <gtest/gtest.h>

#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace osh::stack {
namespace {

/// Records each call as one line ("send 3 <bytes>", ...) and the thread it
/// came on. `accept_direct` makes try_send_queued take the bytes (as the
/// relay does while a write is in flight), `accept_read_more_in_place`
/// try_read_more_in_place (the relay with a read in flight); `gate` (if set) holds open()
/// until it is fulfilled, standing in for a slow call on the dispatch thread.
class RecordingUpstream final : public Upstream {
 public:
  struct Rec {
    std::string line;
    std::thread::id thread;
  };
  bool accept_direct = false;
  bool accept_read_more_in_place = false;
  std::shared_future<void> gate;

  void open(const OpenRequest& r) override {
    if (gate.valid()) gate.wait();
    add("open " + std::to_string(r.id) + " " + r.sandbox + ":" + std::to_string(r.port));
  }
  void send(ConnId id, std::string b) override { add("send " + std::to_string(id) + " " + b); }
  bool try_send_queued(ConnId id, std::string& b) override {
    if (!accept_direct) return false;
    add("queued " + std::to_string(id) + " " + std::exchange(b, {}));
    return true;
  }
  void read_more(ConnId id) override { add("read_more " + std::to_string(id)); }
  bool try_read_more_in_place(ConnId id) override {
    if (!accept_read_more_in_place) return false;
    add("read_more in place " + std::to_string(id));
    return true;
  }
  void close_write(ConnId id) override { add("close_write " + std::to_string(id)); }
  void abort(ConnId id) override { add("abort " + std::to_string(id)); }

  std::vector<Rec> recs() {
    std::lock_guard lk(mu_);
    return recs_;
  }
  std::vector<std::string> lines() {
    std::vector<std::string> out;
    for (const Rec& r : recs()) out.push_back(r.line);
    return out;
  }

 private:
  void add(std::string line) {
    std::lock_guard lk(mu_);
    recs_.push_back({std::move(line), std::this_thread::get_id()});
  }
  std::mutex mu_;
  std::vector<Rec> recs_;
};

OpenRequest req(ConnId id, uint16_t port) {
  OpenRequest r;
  r.id = id;
  r.sandbox = "sbx";
  r.port = port;
  return r;
}

// A frame whose content says which connection and which piece it is, and is
// long enough (64 KiB) that a lost, duplicated or torn one shows.
std::string frame(ConnId id, int n) {
  std::string s = "c" + std::to_string(id) + "f" + std::to_string(n) + ":";
  s.resize(kMaxFrameBytes, static_cast<char>('a' + (id * 7 + n) % 26));
  return s;
}

TEST(UpstreamDispatch, MakesEveryCallInOrderOnItsOwnThread) {
  RecordingUpstream target;
  UpstreamDispatch d(target);
  d.start();
  std::vector<std::string> want;
  for (ConnId id = 1; id <= 3; ++id) {
    d.open(req(id, static_cast<uint16_t>(8000 + id)));
    want.push_back("open " + std::to_string(id) + " sbx:" + std::to_string(8000 + id));
  }
  for (int n = 0; n < 50; ++n) {
    for (ConnId id = 1; id <= 3; ++id) {
      d.send(id, frame(id, n));
      want.push_back("send " + std::to_string(id) + " " + frame(id, n));
      if (n % 10 == 0) {
        d.read_more(id);
        want.push_back("read_more " + std::to_string(id));
      }
    }
  }
  d.close_write(1);
  d.abort(2);
  d.close_write(3);
  want.insert(want.end(), {"close_write 1", "abort 2", "close_write 3"});
  d.finish();  // makes everything queued before it returns

  EXPECT_EQ(target.lines(), want);
  for (const auto& r : target.recs()) EXPECT_NE(r.thread, std::this_thread::get_id()) << r.line;
  const UpstreamDispatch::Stats s = d.stats();
  EXPECT_EQ(s.queued, want.size());
  EXPECT_EQ(s.direct_sends, 0u);
  EXPECT_LE(s.wakeups, s.queued);
}

TEST(UpstreamDispatch, SendGoesStraightToTheTargetsQueueWhenNothingIsPending) {
  RecordingUpstream target;
  target.accept_direct = true;
  UpstreamDispatch d(target);
  d.start();
  d.send(7, frame(7, 0));
  EXPECT_EQ(target.lines(), std::vector<std::string>{"queued 7 " + frame(7, 0)});
  // Made on the caller's thread at once: no hop.
  EXPECT_EQ(target.recs().at(0).thread, std::this_thread::get_id());
  EXPECT_EQ(d.stats().direct_sends, 1u);
  EXPECT_EQ(d.stats().queued, 0u);
  d.finish();
}

// The ordering rule: while an earlier call (here an open) is still queued
// or being made on the dispatch thread, neither a send nor a read_more may
// overtake it through the target's own paths, even if the target would
// take them.
TEST(UpstreamDispatch, SendAndReadMoreDoNotOvertakeAnEarlierCallStillPending) {
  RecordingUpstream target;
  target.accept_direct = true;
  target.accept_read_more_in_place = true;
  std::promise<void> release;
  target.gate = release.get_future().share();
  UpstreamDispatch d(target);
  d.start();
  d.open(req(1, 80));          // the dispatch thread blocks inside it
  d.send(1, frame(1, 0));      // must be queued behind it
  d.read_more(1);
  d.send(1, frame(1, 1));
  EXPECT_EQ(d.stats().direct_sends, 0u);
  EXPECT_EQ(d.stats().direct_read_mores, 0u);
  release.set_value();
  d.finish();
  EXPECT_EQ(target.lines(), (std::vector<std::string>{"open 1 sbx:80", "send 1 " + frame(1, 0), "read_more 1",
                                                      "send 1 " + frame(1, 1)}));
  EXPECT_EQ(d.stats().queued, 4u);
}

TEST(UpstreamDispatch, ReadMoreIsRecordedInPlaceWhenNothingIsPending) {
  RecordingUpstream target;
  target.accept_read_more_in_place = true;
  UpstreamDispatch d(target);
  d.start();
  d.read_more(7);
  EXPECT_EQ(target.lines(), std::vector<std::string>{"read_more in place 7"});
  // Made on the caller's thread at once: no hop.
  EXPECT_EQ(target.recs().at(0).thread, std::this_thread::get_id());
  EXPECT_EQ(d.stats().direct_read_mores, 1u);
  EXPECT_EQ(d.stats().queued, 0u);
  d.finish();
}

TEST(UpstreamDispatch, CallsAfterFinishAreDropped) {
  RecordingUpstream target;
  target.accept_direct = true;
  UpstreamDispatch d(target);
  d.start();
  d.read_more(1);
  d.finish();
  d.open(req(2, 80));
  d.send(2, frame(2, 0));  // not even through the target's queue
  d.read_more(2);
  d.close_write(2);
  d.abort(2);
  d.finish();  // idempotent
  EXPECT_EQ(target.lines(), std::vector<std::string>{"read_more 1"});
}

TEST(UpstreamDispatch, FinishWithoutStartDropsTheQueuedCalls) {
  RecordingUpstream target;
  {
    UpstreamDispatch d(target);
    d.open(req(1, 80));
    d.send(1, "x");
    d.finish();
  }
  EXPECT_TRUE(target.lines().empty());
}

// Callers on two threads (the stack reader and lwIP's tcpip thread), one
// at a time as under the core lock: each connection's calls stay in order.
TEST(UpstreamDispatch, TwoCallerThreadsKeepEachConnectionsOrder) {
  RecordingUpstream target;
  UpstreamDispatch d(target);
  d.start();
  std::mutex core;  // stands in for the lwIP core lock
  auto caller = [&](ConnId id) {
    for (int n = 0; n < 200; ++n) {
      std::lock_guard lk(core);
      d.send(id, frame(id, n));
    }
  };
  std::thread a(caller, 1), b(caller, 2);
  a.join();
  b.join();
  d.finish();
  int next[3] = {0, 0, 0};
  for (const std::string& line : target.lines()) {
    const ConnId id = line[5] == '1' ? 1 : 2;
    ASSERT_EQ(line, "send " + std::to_string(id) + " " + frame(id, next[id]));
    ++next[id];
  }
  EXPECT_EQ(next[1], 200);
  EXPECT_EQ(next[2], 200);
}

}  // namespace
}  // namespace osh::stack

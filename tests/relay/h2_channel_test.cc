// The relay's own HTTP/2 channel (relay/h2_channel.h) under ForwardManager,
// against the in-process grpc++ gateway of fake_gateway.h (interop: a real
// gRPC server on the other end). The ForwardManager behaviour tests all run
// on it too (tests/relay/CMakeLists.txt, prefix h2/); these check what only
// this transport promises: a stream whose reader stops holds at most its
// starting window here (issue 15.1), every byte still arrives once the
// reader resumes, and the pure helpers.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fake_gateway.h"
#include "relay/forward.h"
#include "relay/gateway_client_impl.h"
#include "relay/h2_channel.h"
#include "relay/h2_reactor.h"

namespace osh::relay {
namespace {

using namespace std::chrono_literals;
using testing::FakeGateway;
using testing::Script;
using testing::SeenInit;
using Clock = std::chrono::steady_clock;

// Collects one stream's bytes; reads on only when told to.
class Reader final : public ForwardObserver {
 public:
  void on_open_ok(StreamId) override {}
  void on_data(StreamId, std::string bytes) override {
    std::lock_guard lk(mu_);
    data_ += bytes;
    ++frames_;
    cv_.notify_all();
  }
  void on_remote_fin(StreamId) override {}
  void on_write_done(StreamId, size_t) override {}
  void on_closed(StreamId, EndKind kind, std::string) override {
    std::lock_guard lk(mu_);
    closed_ = true;
    kind_ = kind;
    cv_.notify_all();
  }
  size_t frames() {
    std::lock_guard lk(mu_);
    return frames_;
  }
  /// Reads until the stream ends (read_more after each frame); false after @limit.
  bool drain(ForwardManager& mgr, StreamId id, std::chrono::milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    std::unique_lock lk(mu_);
    size_t seen = 0;
    while (!closed_) {
      if (frames_ != seen) {
        seen = frames_;
        lk.unlock();
        mgr.read_more(id);
        lk.lock();
        continue;
      }
      if (cv_.wait_until(lk, deadline) == std::cv_status::timeout && frames_ == seen && !closed_) return false;
    }
    return true;
  }
  std::string data() {
    std::lock_guard lk(mu_);
    return data_;
  }
  EndKind kind() {
    std::lock_guard lk(mu_);
    return kind_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string data_;
  size_t frames_ = 0;
  bool closed_ = false;
  EndKind kind_ = EndKind::kOk;
};

GatewayOptions h2_options(const FakeGateway& fake) {
  GatewayOptions o;
  std::string err;
  o.endpoint = *parse_endpoint(fake.endpoint(), &err);
  o.force_generation = Generation::k0_1;
  o.forward_transport = ForwardTransport::kH2;
  return o;
}

ForwardTarget target() {
  ForwardTarget t;
  t.sandbox = {"0b6c1f7e-uuid", "demo"};
  t.host = "127.0.0.1";
  t.port = 8080;
  return t;
}

// 64 frames of 64 KiB, each filled with its own index: 4 MiB that show any
// lost, repeated or reordered frame.
std::vector<std::string> numbered_frames(size_t n, size_t size) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.emplace_back(size, static_cast<char>('A' + i % 50));
  return out;
}

// Waits until @value() has not changed for @quiet (the sender is blocked by
// the window), at most @limit; returns the last value.
template <class Fn>
uint64_t settled(Fn value, std::chrono::milliseconds quiet, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  uint64_t last = value();
  auto since = Clock::now();
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    const uint64_t v = value();
    if (v != last) {
      last = v;
      since = Clock::now();
    } else if (Clock::now() - since >= quiet) {
      break;
    }
  }
  return last;
}

// Issue 15.1: a download whose reader stops. With grpc++'s channel such a
// stream took the transport-wide window (>= 4 MiB); here the gateway can put
// at most the stream's starting window (256 KiB) into the tunnel, and once
// the reader resumes every byte arrives, in order.
TEST(H2Channel, AStalledStreamHoldsAtMostItsStartingWindowAndLosesNothing) {
  const auto frames = numbered_frames(64, 64 << 10);
  FakeGateway fake(Generation::k0_1, [&](const SeenInit&) {
    Script s;
    s.frames = frames;
    return s;
  });
  GatewayClient gw(h2_options(fake));
  ASSERT_TRUE(gw.impl().h2) << "the h2 transport was not set up";
  Reader rd;
  ForwardOptions fo;
  fo.read_ahead_frames = 1;
  ForwardManager mgr(gw, rd, fo);
  mgr.open(1, target());
  // The reader takes the first frame and then stops (no read_more).
  const auto deadline = Clock::now() + 20s;
  while (rd.frames() < 1 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(rd.frames(), 1u);
  h2::Channel& ch = *gw.impl().h2;
  const uint64_t held = settled([&] { return ch.stats().bytes_buffered; }, 1500ms, 20s);
  std::printf("stalled stream: %llu bytes unread in the h2 channel (window %u)\n",
              static_cast<unsigned long long>(held), ch.options().stream_window);
  EXPECT_LE(held, ch.options().stream_window);
  EXPECT_EQ(rd.frames(), 1u) << "a frame came without read_more()";
  ASSERT_TRUE(rd.drain(mgr, 1, 60s));
  EXPECT_EQ(rd.kind(), EndKind::kOk);
  std::string all;
  for (const auto& f : frames) all += f;
  EXPECT_EQ(rd.data().size(), all.size());
  EXPECT_TRUE(rd.data() == all) << "bytes lost, repeated or out of order";
  EXPECT_EQ(ch.stats().bytes_buffered, 0u);
  EXPECT_EQ(ch.stats().connects, 1u);
}

// Several streams on one connection, each stalled: the gateway's sends stop
// at each stream's window, independently; all of them finish once read.
TEST(H2Channel, ManyStalledStreamsEachHoldAtMostTheirWindow) {
  constexpr int kStreams = 8;
  const auto frames = numbered_frames(16, 64 << 10);
  FakeGateway fake(Generation::k0_1, [&](const SeenInit&) {
    Script s;
    s.frames = frames;
    return s;
  });
  GatewayClient gw(h2_options(fake));
  std::vector<std::unique_ptr<Reader>> readers;
  // One manager per stream, so that each has its own observer.
  std::vector<std::unique_ptr<ForwardManager>> mgrs;
  ForwardOptions fo;
  fo.read_ahead_frames = 1;
  for (int i = 0; i < kStreams; ++i) {
    readers.push_back(std::make_unique<Reader>());
    mgrs.push_back(std::make_unique<ForwardManager>(gw, *readers.back(), fo));
    mgrs.back()->open(1, target());
  }
  h2::Channel& ch = *gw.impl().h2;
  const uint64_t held = settled([&] { return ch.stats().bytes_buffered; }, 1500ms, 30s);
  std::printf("%d stalled streams: %llu bytes unread in the h2 channel\n", kStreams,
              static_cast<unsigned long long>(held));
  EXPECT_LE(held, uint64_t{kStreams} * ch.options().stream_window);
  std::string all;
  for (const auto& f : frames) all += f;
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(readers[i]->drain(*mgrs[i], 1, 60s)) << "stream " << i;
    EXPECT_TRUE(readers[i]->data() == all) << "stream " << i;
  }
  EXPECT_EQ(ch.stats().connects, 1u) << "the streams did not share one connection";
}

// A gateway that is not there: the call ends UNAVAILABLE without headers,
// counted as a connect failure; its hold keeps on_done until removed.
class CallRecorder final : public h2::CallEvents {
 public:
  void on_initial_metadata(bool ok, const std::vector<h2::Header>&) override { add(ok ? "md" : "md:fail"); }
  void on_write_done(bool ok) override { add(ok ? "write" : "write:fail"); }
  void on_writes_done_done(bool ok) override { add(ok ? "wd" : "wd:fail"); }
  void on_read_done(bool ok, std::string, bool) override { add(ok ? "read" : "read:end"); }
  void on_done(int code, std::string) override {
    std::lock_guard lk(mu_);
    code_ = code;
    events_.push_back("done");
    cv_.notify_all();
  }
  bool wait_done(std::chrono::milliseconds limit) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, limit, [&] { return code_ >= 0; });
  }
  std::vector<std::string> events() {
    std::lock_guard lk(mu_);
    return events_;
  }
  int code() {
    std::lock_guard lk(mu_);
    return code_;
  }

 private:
  void add(std::string e) {
    std::lock_guard lk(mu_);
    events_.push_back(std::move(e));
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> events_;
  int code_ = -1;
};

TEST(H2Channel, NoGatewayEndsTheCallUnavailableAfterItsHolds) {
  int port = 0;
  {
    FakeGateway gone(Generation::k0_1, [](const SeenInit&) { return Script{}; });
    port = std::stoi(gone.endpoint().substr(gone.endpoint().rfind(':') + 1));
  }
  h2::ChannelOptions o;
  std::string err;
  o.endpoint = *parse_endpoint("http://127.0.0.1:" + std::to_string(port), &err);
  h2::Channel ch(o);
  CallRecorder rec;
  h2::Call call = ch.create_call("/openshell.v1.OpenShell/ForwardTcp", {}, &rec);
  call.add_holds(1);
  call.write({{"init"}, nullptr});
  call.read();
  call.start();
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(rec.code(), -1) << "on_done before the hold was removed";
  call.remove_hold();
  ASSERT_TRUE(rec.wait_done(20s));
  EXPECT_EQ(rec.code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(rec.events(), (std::vector<std::string>{"md:fail", "write:fail", "read:end", "done"}));
  EXPECT_EQ(ch.stats().connect_failures, 1u);
  EXPECT_EQ(ch.stats().calls_active, 0u);
}

// A call cancelled before it started ends CANCELLED without a connection.
TEST(H2Channel, ACallCancelledBeforeItsStartEndsCancelled) {
  h2::ChannelOptions o;
  std::string err;
  o.endpoint = *parse_endpoint("http://127.0.0.1:9", &err);
  h2::Channel ch(o);
  CallRecorder rec;
  h2::Call call = ch.create_call("/x", {}, &rec);
  call.cancel();
  call.start();
  ASSERT_TRUE(rec.wait_done(5s));
  EXPECT_EQ(rec.code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(ch.stats().connects + ch.stats().connect_failures, 0u);
}

TEST(H2Helpers, StatusMappingAndPercentDecoding) {
  EXPECT_EQ(h2::grpc_status_for_http(401), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(h2::grpc_status_for_http(503), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(h2::grpc_status_for_http(404), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(h2::grpc_status_for_http(500), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(h2::grpc_status_for_rst(0x7 /*REFUSED_STREAM*/), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(h2::grpc_status_for_rst(0x8 /*CANCEL*/), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(h2::grpc_status_for_rst(0xb /*ENHANCE_YOUR_CALM*/), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(h2::percent_decode("a%20b%3A%zz%"), "a b:%zz%");
  EXPECT_EQ(h2::percent_decode("Connection refused (os error 111)"), "Connection refused (os error 111)");
}

TEST(H2Helpers, ADataMessageKeepsItsStringAndOthersParse) {
  openshell::v1::g01::TcpForwardFrame f;
  f.set_data(std::string(300, 'x'));
  std::string wire = f.SerializeAsString();
  openshell::v1::g01::TcpForwardFrame got;
  ASSERT_TRUE(ParseFrameInto(wire, &got));
  EXPECT_EQ(got.data(), std::string(300, 'x'));
  openshell::v1::g01::TcpForwardFrame init;
  init.mutable_init()->set_sandbox("demo");
  ASSERT_TRUE(ParseFrameInto(init.SerializeAsString(), &got));
  EXPECT_EQ(got.init().sandbox(), "demo");
  EXPECT_FALSE(ParseFrameInto(std::string("\x12\x05" "ab", 4), &got));
}

}  // namespace
}  // namespace osh::relay

namespace osh::relay {
namespace {
// A reader that keeps up with a sender that runs into the window: the
// window grows (issue 15.1: windows that grow with consumption), and every
// byte arrives in order.
TEST(H2Channel, AReaderThatKeepsUpGrowsItsWindow) {
  const auto frames = numbered_frames(512, 64 << 10);  // 32 MiB
  FakeGateway fake(Generation::k0_1, [&](const SeenInit&) {
    Script s;
    s.frames = frames;
    return s;
  });
  GatewayClient gw(h2_options(fake));
  Reader rd;
  ForwardOptions fo;
  fo.read_ahead_frames = 2;
  ForwardManager mgr(gw, rd, fo);
  const auto t0 = Clock::now();
  mgr.open(1, target());
  ASSERT_TRUE(rd.drain(mgr, 1, 120s));
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const auto st = gw.impl().h2->stats();
  std::printf("32 MiB in %.3f s (%.0f Mbit/s); window growths %llu, set back %llu\n", secs,
              32 * 8.388608 / secs, static_cast<unsigned long long>(st.window_growths),
              static_cast<unsigned long long>(st.window_shrinks));
  EXPECT_EQ(rd.data().size(), frames.size() * frames[0].size());
  EXPECT_GE(st.window_growths, 1u);
}
}  // namespace
}  // namespace osh::relay

// ---- without gRPC (runs in the ThreadSanitizer build too) ----
#include "h2_echo_server.h"

namespace osh::relay {
namespace {

// One call's events for the echo tests: reads on after every message (from
// the loop thread, through the Call), and lets the test thread wait.
class EchoEvents final : public h2::CallEvents {
 public:
  void set_call(h2::Call* call) { call_ = call; }
  void on_initial_metadata(bool, const std::vector<h2::Header>&) override {}
  void on_write_done(bool ok) override { bump(ok ? &writes_ : &failed_); }
  void on_writes_done_done(bool ok) override { bump(ok ? &wd_ : &failed_); }
  void on_read_done(bool ok, std::string m, bool) override {
    if (!ok) return bump(&read_end_);
    {
      std::lock_guard lk(mu_);
      echoed_ += m;
      cv_.notify_all();
    }
    call_->read();
  }
  void on_done(int code, std::string) override {
    std::lock_guard lk(mu_);
    code_ = code;
    cv_.notify_all();
  }
  /// Waits until @pred (called under the lock: it may use the plain
  /// accessors below, not echoed()).
  template <class Pred>
  bool wait(Pred pred) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, 60s, [&] { return pred(); });
  }
  int writes() const { return writes_; }
  int wd() const { return wd_; }
  int read_end() const { return read_end_; }
  int failed() const { return failed_; }
  int code() const { return code_; }
  /// Inside wait() predicates only (they run under the lock).
  size_t echoed_size() const { return echoed_.size(); }
  std::string echoed() {
    std::lock_guard lk(mu_);
    return echoed_;
  }

 private:
  void bump(int* n) {
    std::lock_guard lk(mu_);
    ++*n;
    cv_.notify_all();
  }
  h2::Call* call_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string echoed_;
  int writes_ = 0, wd_ = 0, read_end_ = 0, failed_ = 0, code_ = -1;
};

h2::ChannelOptions echo_options(const testing::H2EchoServer& srv) {
  h2::ChannelOptions o;
  std::string err;
  o.endpoint = *parse_endpoint("http://127.0.0.1:" + std::to_string(srv.port()), &err);
  return o;
}

// Starts @call with one hold (for the reads @ev starts after each message)
// and its first read.
void start_echo(h2::Call& call, EchoEvents& ev) {
  ev.set_call(&call);
  call.add_holds(1);
  call.read();
  call.start();
}

// Calls from several threads at once on one channel: every message comes
// back whole and in order, every operation completes once, every call ends
// OK after its hold is removed.
TEST(H2Echo, CallsFromManyThreadsEchoEveryByte) {
  testing::H2EchoServer srv;
  h2::Channel ch(echo_options(srv));
  constexpr int kThreads = 6, kCalls = 3, kMessages = 12;
  std::atomic<int> ok_calls{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int c = 0; c < kCalls; ++c) {
        EchoEvents ev;
        h2::Call call = ch.create_call("/echo", {{"x-test", std::to_string(t)}}, &ev);
        start_echo(call, ev);
        std::string sent;
        for (int m = 0; m < kMessages; ++m) {
          // 1 byte to 64 KiB (the receive limit): messages across DATA frames and windows.
          auto msg = std::make_shared<std::string>(1 + (m * 7919 + t * 131 + c) % (64 << 10),
                                                   static_cast<char>('a' + (t + c + m) % 26));
          sent += *msg;
          call.write({{std::string_view(*msg)}, msg});
          if (!ev.wait([&] { return ev.writes() + ev.failed() > m; })) return;
        }
        call.writes_done();
        if (!ev.wait([&] { return ev.wd() + ev.failed() > 0 && ev.read_end() > 0; })) return;
        call.remove_hold();
        if (!ev.wait([&] { return ev.code() >= 0; })) return;
        if (ev.code() == 0 && ev.failed() == 0 && ev.echoed() == sent) ok_calls++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok_calls.load(), kThreads * kCalls);
  EXPECT_EQ(ch.stats().connects, 1u);
  EXPECT_EQ(ch.stats().calls_active, 0u);
  EXPECT_EQ(ch.stats().bytes_buffered, 0u);
}

// A call cancelled in the middle (its hold kept until the end): it ends
// CANCELLED, its pending operations fail once, and the connection stays
// usable for the next call.
TEST(H2Echo, ACancelledCallEndsCancelledAndTheConnectionCarriesOn) {
  testing::H2EchoServer srv;
  h2::Channel ch(echo_options(srv));
  {
    EchoEvents ev;
    h2::Call call = ch.create_call("/echo", {}, &ev);
    start_echo(call, ev);
    auto msg = std::make_shared<std::string>(1000, 'x');
    call.write({{std::string_view(*msg)}, msg});
    ASSERT_TRUE(ev.wait([&] { return ev.echoed_size() == 1000; }));
    call.cancel();
    // The hold stands for the read the events start after each message
    // (as ForwardReactor's read hold): removed once a read ended.
    ASSERT_TRUE(ev.wait([&] { return ev.read_end() > 0; }));
    EXPECT_EQ(ev.code(), -1) << "on_done before the hold was removed";
    call.remove_hold();
    ASSERT_TRUE(ev.wait([&] { return ev.code() >= 0; }));
    EXPECT_EQ(ev.code(), grpc::StatusCode::CANCELLED);
    EXPECT_EQ(ev.read_end(), 1);
  }
  EchoEvents ev;
  h2::Call call = ch.create_call("/echo", {}, &ev);
  start_echo(call, ev);
  auto msg = std::make_shared<std::string>("again");
  call.write({{std::string_view(*msg)}, msg});
  call.writes_done();
  ASSERT_TRUE(ev.wait([&] { return ev.read_end() > 0; }));
  call.remove_hold();
  ASSERT_TRUE(ev.wait([&] { return ev.code() >= 0; }));
  EXPECT_EQ(ev.code(), 0);
  EXPECT_EQ(ev.echoed(), "again");
  EXPECT_EQ(ch.stats().connects, 1u);
}

// A gateway that answers trailers-only and never resets the stream (RFC
// 9113 lets it): the call ends with that status without waiting for our
// side, which the channel ends itself (RST_STREAM NO_ERROR).
TEST(H2Echo, ATrailersOnlyAnswerWithoutAResetEndsTheCall) {
  testing::H2EchoServer srv(testing::H2EchoServer::kTrailersOnly);
  h2::Channel ch(echo_options(srv));
  EchoEvents ev;
  h2::Call call = ch.create_call("/echo", {}, &ev);
  start_echo(call, ev);
  ASSERT_TRUE(ev.wait([&] { return ev.read_end() > 0; }));
  call.remove_hold();
  ASSERT_TRUE(ev.wait([&] { return ev.code() >= 0; }));
  EXPECT_EQ(ev.code(), grpc::StatusCode::NOT_FOUND);
}

// A gateway that ends with END_STREAM on DATA and no trailers: every byte
// it sent is read, then the call ends INTERNAL (no status).
TEST(H2Echo, AnEndWithoutTrailersIsInternalAfterTheData) {
  testing::H2EchoServer srv(testing::H2EchoServer::kNoTrailers);
  h2::Channel ch(echo_options(srv));
  EchoEvents ev;
  h2::Call call = ch.create_call("/echo", {}, &ev);
  start_echo(call, ev);
  auto msg = std::make_shared<std::string>("bye");
  call.write({{std::string_view(*msg)}, msg});
  call.writes_done();
  ASSERT_TRUE(ev.wait([&] { return ev.read_end() > 0; }));
  call.remove_hold();
  ASSERT_TRUE(ev.wait([&] { return ev.code() >= 0; }));
  EXPECT_EQ(ev.code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(ev.echoed(), "bye");
}

// A call still queued behind the gateway's SETTINGS_MAX_CONCURRENT_STREAMS
// (nghttp2 has not sent its HEADERS) that is cancelled ends at once, not
// when a slot frees.
TEST(H2Echo, ACallQueuedBehindTheStreamLimitEndsWhenCancelled) {
  testing::H2EchoServer srv(testing::H2EchoServer::kEcho, 1);
  h2::Channel ch(echo_options(srv));
  EchoEvents first;
  h2::Call a = ch.create_call("/echo", {}, &first);
  start_echo(a, first);
  auto msg = std::make_shared<std::string>("hold");
  a.write({{std::string_view(*msg)}, msg});
  ASSERT_TRUE(first.wait([&] { return first.echoed_size() == 4; }));  // a holds the one slot
  EchoEvents second;
  h2::Call b = ch.create_call("/echo", {}, &second);
  start_echo(b, second);
  std::this_thread::sleep_for(100ms);  // b is queued in nghttp2
  b.cancel();
  ASSERT_TRUE(second.wait([&] { return second.read_end() > 0; }));
  b.remove_hold();
  ASSERT_TRUE(second.wait([&] { return second.code() >= 0; }));
  EXPECT_EQ(second.code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(first.code(), -1) << "the first call must be untouched";
  a.writes_done();
  ASSERT_TRUE(first.wait([&] { return first.read_end() > 0; }));
  a.remove_hold();
  ASSERT_TRUE(first.wait([&] { return first.code() >= 0; }));
  EXPECT_EQ(first.code(), 0);
}

}  // namespace
}  // namespace osh::relay

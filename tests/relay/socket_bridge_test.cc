// relay::SocketBridge against a real loopback TCP pair (127.0.0.1, port 0):
// the test holds the client end, the bridge the accepted end. The stream
// side is either FakeStreams, which the test plays by hand (every call the
// bridge makes is recorded; the test answers through the bridge's
// observer), or a real ForwardManager against the in-process scripted
// gateway (fake_gateway.h). Checked: 4 MiB each way intact, half-close in
// each direction, a failed stream resets the socket, a reset socket aborts
// the stream, and back-pressure both ways (a stalled reader or a stalled
// gRPC write holds the bridge to one frame / kBridgeUpWindow).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <future>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/event_loop.h"
#include "common/scoped_fd.h"
#include "fake_gateway.h"
#include "relay/forward.h"
#include "relay/socket_bridge.h"

namespace osh::relay {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr size_t kMiB = 1024 * 1024;

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& ch : s) ch = static_cast<char>(rng());
  return s;
}

/// FNV-1a, 64 bit: the checksum compared after a transfer.
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

/// A connected loopback TCP pair: {client, server}. Blocking, with 10 s
/// send/receive timeouts so a broken bridge fails the test instead of
/// hanging it.
std::pair<ScopedFd, ScopedFd> tcp_pair() {
  ScopedFd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(l.get(), reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(l.get(), 1) != 0 ||
      ::getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return {};
  ScopedFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (::connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return {};
  ScopedFd s(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
  timeval tv{10, 0};
  setsockopt(c.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(c.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return {std::move(c), std::move(s)};
}

bool write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

/// Reads until EOF (true) or an error/timeout (false, errno kept).
bool read_to_eof(int fd, std::string* out, size_t limit = SIZE_MAX) {
  char buf[65536];
  while (out->size() < limit) {
    const ssize_t n = ::recv(fd, buf, std::min(sizeof buf, limit - out->size()), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    out->append(buf, static_cast<size_t>(n));
  }
  return true;
}

/// The stream side, played by the test. The bridge calls it on the loop
/// thread; the test reads what it saw and waits on it from its own thread.
class FakeStreams final : public ForwardStreams {
 public:
  explicit FakeStreams(ForwardObserver& obs) : obs_(obs) {}

  void open(StreamId id, ForwardTarget) override {
    std::lock_guard lk(mu_);
    opened_ = id;
    cv_.notify_all();
  }
  void send(StreamId id, std::string bytes) override {
    std::lock_guard lk(mu_);
    sent_ += bytes;
    // The observer only posts to the loop: safe to call from here.
    if (auto_ack_) obs_.on_write_done(id, bytes.size());
    else unacked_ += bytes.size();
    cv_.notify_all();
  }
  void read_more(StreamId) override {
    std::lock_guard lk(mu_);
    ++read_mores_;
    cv_.notify_all();
  }
  void close_write(StreamId) override {
    std::lock_guard lk(mu_);
    write_closed_ = true;
    cv_.notify_all();
  }
  void abort(StreamId id) override {
    {
      std::lock_guard lk(mu_);
      aborted_ = true;
      cv_.notify_all();
    }
    obs_.on_closed(id, EndKind::kReset, "aborted");  // "on_closed still follows"
  }

  /// Waits up to @limit for @pred (called under the lock).
  template <class Pred>
  bool wait(Pred pred, std::chrono::milliseconds limit = 10s) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, limit, [&] { return pred(*this); });
  }
  /// Waits until @value() (called under the lock) stays the same for
  /// @quiet: the flow stalled.
  template <class Get>
  auto wait_stall(Get value, std::chrono::milliseconds quiet = 400ms) {
    auto locked = [&] {
      std::lock_guard lk(mu_);
      return value(*this);
    };
    auto last = locked();
    for (;;) {
      std::this_thread::sleep_for(quiet);
      auto now = locked();
      if (now == last) return now;
      last = now;
    }
  }
  /// Acknowledges every unacknowledged byte and does so for later sends.
  void ack_all(StreamId id) {
    size_t n;
    {
      std::lock_guard lk(mu_);
      auto_ack_ = true;
      n = std::exchange(unacked_, 0);
    }
    if (n) obs_.on_write_done(id, n);
  }
  void set_auto_ack(bool on) {
    std::lock_guard lk(mu_);
    auto_ack_ = on;
  }

  // Read under the lock (wait()'s predicate) or via these accessors.
  template <class F>
  auto get(F f) {
    std::lock_guard lk(mu_);
    return f(*this);
  }
  StreamId opened() { return get([](FakeStreams& f) { return f.opened_; }); }
  std::string sent() { return get([](FakeStreams& f) { return f.sent_; }); }
  size_t sent_size() { return get([](FakeStreams& f) { return f.sent_.size(); }); }
  uint64_t read_mores() { return get([](FakeStreams& f) { return f.read_mores_; }); }
  bool write_closed() { return get([](FakeStreams& f) { return f.write_closed_; }); }
  bool aborted() { return get([](FakeStreams& f) { return f.aborted_; }); }

  StreamId opened_ = 0;
  std::string sent_;
  size_t unacked_ = 0;
  uint64_t read_mores_ = 0;
  bool write_closed_ = false, aborted_ = false, auto_ack_ = true;

 private:
  ForwardObserver& obs_;
  std::mutex mu_;
  std::condition_variable cv_;
};

class SocketBridgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bridge_ = std::make_unique<SocketBridge>(loop_, "test", [this](ForwardObserver& o) {
      auto f = std::make_unique<FakeStreams>(o);
      fake_ = f.get();
      obs_ = &o;
      return f;
    });
    auto [client, served] = tcp_pair();
    ASSERT_TRUE(client.valid() && served.valid());
    client_ = std::move(client);
    id_ = bridge_->add_socket(std::move(served), ForwardTarget{}, [this](const BridgeEnd& e) {
      std::lock_guard lk(mu_);
      ends_.push_back(e);
      cv_.notify_all();
    });
    loop_.start();
    ASSERT_TRUE(fake_->wait([&](FakeStreams& f) { return f.opened_ == id_; }));
  }
  void TearDown() override { bridge_->shutdown(); }

  /// Runs @f on the loop thread and returns its result.
  template <class F>
  auto on_loop(F f) {
    std::promise<decltype(f())> p;
    loop_.post([&] { p.set_value(f()); });
    return p.get_future().get();
  }
  /// Waits for the EndHandler's report.
  std::optional<BridgeEnd> wait_end() {
    std::unique_lock lk(mu_);
    if (!cv_.wait_for(lk, 10s, [&] { return !ends_.empty(); })) return std::nullopt;
    return ends_.front();
  }
  /// Feeds @data to the bridge as frames of @frame bytes, each after the
  /// previous one's read_more (as a ForwardManager reads). Test thread.
  void feed(const std::string& data, size_t frame = kBridgeChunk) {
    const uint64_t base = fake_->read_mores();
    uint64_t i = 0;
    for (size_t off = 0; off < data.size(); off += frame, ++i) {
      ASSERT_TRUE(fake_->wait([&](FakeStreams& f) { return f.read_mores_ >= base + i; }))
          << "no read_more after frame " << i;
      obs_->on_data(id_, data.substr(off, frame));
    }
  }

  osh::EventLoop loop_;  // declared first: outlives the bridge
  std::unique_ptr<SocketBridge> bridge_;
  FakeStreams* fake_ = nullptr;
  ForwardObserver* obs_ = nullptr;
  ScopedFd client_;
  StreamId id_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<BridgeEnd> ends_;
};

TEST_F(SocketBridgeTest, FourMiBEachWayIntactThenOkEnd) {
  const std::string up = random_bytes(4 * kMiB, 1), down = random_bytes(4 * kMiB, 2);
  obs_->on_open_ok(id_);
  std::thread writer([&] {
    EXPECT_TRUE(write_all(client_.get(), up));
    ::shutdown(client_.get(), SHUT_WR);
  });
  std::thread feeder([&] {
    feed(down);
    obs_->on_remote_fin(id_);
  });
  std::string got;
  EXPECT_TRUE(read_to_eof(client_.get(), &got)) << std::strerror(errno);
  writer.join();
  feeder.join();
  EXPECT_EQ(got.size(), down.size());
  EXPECT_EQ(fnv1a(got), fnv1a(down));
  ASSERT_TRUE(fake_->wait([&](FakeStreams& f) { return f.write_closed_; }));
  EXPECT_EQ(fake_->sent_size(), up.size());
  EXPECT_EQ(fnv1a(fake_->sent()), fnv1a(up));

  obs_->on_closed(id_, EndKind::kOk, "");
  auto end = wait_end();
  ASSERT_TRUE(end);
  EXPECT_EQ(end->cause, BridgeEnd::Cause::kStream);
  EXPECT_EQ(end->end, EndKind::kOk);
  EXPECT_TRUE(end->was_open);
  EXPECT_EQ(on_loop([&] { return bridge_->connections(); }), 0u);
  const auto c = on_loop([&] { return bridge_->counters(); });
  EXPECT_EQ(c.ok, 1u);
  EXPECT_EQ(c.bytes_up, up.size());
  EXPECT_EQ(c.bytes_down, down.size());
}

TEST_F(SocketBridgeTest, NothingIsReadBeforeTheStreamIsOpen) {
  ASSERT_TRUE(write_all(client_.get(), "early"));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(fake_->sent_size(), 0u);
  obs_->on_open_ok(id_);
  EXPECT_TRUE(fake_->wait([&](FakeStreams& f) { return f.sent_ == "early"; }));
}

TEST_F(SocketBridgeTest, ClientHalfCloseFirstRepliesStillFlow) {
  obs_->on_open_ok(id_);
  ASSERT_TRUE(write_all(client_.get(), "request"));
  ::shutdown(client_.get(), SHUT_WR);
  ASSERT_TRUE(fake_->wait([&](FakeStreams& f) { return f.write_closed_; }));
  EXPECT_EQ(fake_->sent(), "request");
  obs_->on_data(id_, "reply");
  obs_->on_remote_fin(id_);
  std::string got;
  EXPECT_TRUE(read_to_eof(client_.get(), &got));
  EXPECT_EQ(got, "reply");
  obs_->on_closed(id_, EndKind::kOk, "");
  ASSERT_TRUE(wait_end());
}

TEST_F(SocketBridgeTest, TargetHalfCloseFirstClientBytesStillFlow) {
  obs_->on_open_ok(id_);
  obs_->on_data(id_, "greeting");
  obs_->on_remote_fin(id_);
  std::string got;
  EXPECT_TRUE(read_to_eof(client_.get(), &got));  // FIN after the bytes
  EXPECT_EQ(got, "greeting");
  ASSERT_TRUE(write_all(client_.get(), "late bytes"));
  ASSERT_TRUE(fake_->wait([&](FakeStreams& f) { return f.sent_ == "late bytes"; }));
  EXPECT_FALSE(fake_->write_closed());
  ::shutdown(client_.get(), SHUT_WR);
  EXPECT_TRUE(fake_->wait([&](FakeStreams& f) { return f.write_closed_; }));
  obs_->on_closed(id_, EndKind::kOk, "");
  ASSERT_TRUE(wait_end());
  EXPECT_EQ(on_loop([&] { return bridge_->connections(); }), 0u);
}

TEST_F(SocketBridgeTest, StreamErrorResetsTheSocket) {
  obs_->on_open_ok(id_);
  obs_->on_data(id_, "partial");
  obs_->on_closed(id_, EndKind::kReset, "relay lost");
  auto end = wait_end();
  ASSERT_TRUE(end);
  EXPECT_EQ(end->end, EndKind::kReset);
  EXPECT_EQ(end->reason, "relay lost");
  std::string got;
  const bool clean = read_to_eof(client_.get(), &got);
  const int err = errno;
  EXPECT_FALSE(clean) << "a clean EOF instead of a reset";
  EXPECT_EQ(err, ECONNRESET) << std::strerror(err);
  EXPECT_EQ(on_loop([&] { return bridge_->counters().reset; }), 1u);
}

TEST_F(SocketBridgeTest, RefusedBeforeOpenResetsTheSocket) {
  obs_->on_closed(id_, EndKind::kRefused, "Connection refused (os error 111)");
  auto end = wait_end();
  ASSERT_TRUE(end);
  EXPECT_FALSE(end->was_open);
  char b;
  const ssize_t n = ::recv(client_.get(), &b, 1, 0);
  const int err = errno;
  EXPECT_LT(n, 0);
  EXPECT_EQ(err, ECONNRESET) << std::strerror(err);
  EXPECT_EQ(on_loop([&] { return bridge_->counters().refused; }), 1u);
}

TEST_F(SocketBridgeTest, ClientResetAbortsTheStream) {
  obs_->on_open_ok(id_);
  linger lg{1, 0};
  setsockopt(client_.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  client_.reset();
  EXPECT_TRUE(fake_->wait([&](FakeStreams& f) { return f.aborted_; }));
  auto end = wait_end();
  ASSERT_TRUE(end);
  EXPECT_EQ(end->cause, BridgeEnd::Cause::kReadError);
  EXPECT_EQ(end->error, ECONNRESET);
  // The fake's on_closed after abort erases the connection.
  const auto deadline = Clock::now() + 10s;
  while (on_loop([&] { return bridge_->connections(); }) != 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(on_loop([&] { return bridge_->connections(); }), 0u);
}

TEST_F(SocketBridgeTest, StalledReaderHoldsTheStream) {
  // The client reads nothing: the bridge must stop asking for frames once
  // the kernel's socket buffers are full, holding at most one frame.
  const std::string down = random_bytes(48 * kMiB, 3);
  obs_->on_open_ok(id_);
  std::atomic<bool> done{false};
  std::thread feeder([&] {
    feed(down);
    obs_->on_remote_fin(id_);
    done = true;
  });
  const uint64_t reads = fake_->wait_stall([](FakeStreams& f) { return f.read_mores_; });
  EXPECT_FALSE(done.load());
  const uint64_t delivered = std::min<uint64_t>(reads + 1, down.size() / kBridgeChunk);
  EXPECT_LT(delivered * kBridgeChunk, 24 * kMiB) << "socket buffers cannot hold this much";
  EXPECT_LE(on_loop([&] { return bridge_->buffered_down_bytes(); }), kBridgeChunk);
  // Reading resumes the flow, every byte intact.
  std::string got;
  EXPECT_TRUE(read_to_eof(client_.get(), &got));
  feeder.join();
  EXPECT_EQ(got.size(), down.size());
  EXPECT_EQ(fnv1a(got), fnv1a(down));
}

TEST_F(SocketBridgeTest, StalledStreamWritesHoldTheSocket) {
  // No on_write_done: the bridge reads at most kBridgeUpWindow bytes.
  fake_->set_auto_ack(false);
  const std::string up = random_bytes(8 * kMiB, 4);
  obs_->on_open_ok(id_);
  std::thread writer([&] {
    EXPECT_TRUE(write_all(client_.get(), up));
    ::shutdown(client_.get(), SHUT_WR);
  });
  const size_t held = fake_->wait_stall([](FakeStreams& f) { return f.sent_.size(); });
  EXPECT_LE(held, kBridgeUpWindow);
  EXPECT_GT(held, 0u);
  fake_->ack_all(id_);
  writer.join();
  ASSERT_TRUE(fake_->wait([&](FakeStreams& f) { return f.write_closed_; }));
  EXPECT_EQ(fnv1a(fake_->sent()), fnv1a(up));
}

// ---- with a real ForwardManager and the scripted gateway ----

TEST(SocketBridgeGateway, FourMiBEachWayAndBothFinsThroughForwardTcp) {
  const std::string up = random_bytes(4 * kMiB, 5), down = random_bytes(4 * kMiB, 6);
  testing::FakeGateway gwfake(Generation::k0_1, [&](const testing::SeenInit&) {
    testing::Script s;
    s.confirm_ext = "connect-ack,fin-frame";
    for (size_t off = 0; off < down.size(); off += kBridgeChunk) s.frames.push_back(down.substr(off, kBridgeChunk));
    s.frames.push_back("");  // the target's FIN
    s.wait_for_half_close = true;
    return s;
  });
  GatewayOptions o;
  std::string err;
  o.endpoint = *parse_endpoint(gwfake.endpoint(), &err);
  o.force_generation = Generation::k0_1;
  o.workspace = "default";
  GatewayClient gw(o);

  osh::EventLoop loop;
  SocketBridge bridge(loop, "test", [&](ForwardObserver& obs) {
    return std::make_unique<ForwardManager>(gw, obs, ForwardOptions{});
  });
  auto [client, served] = tcp_pair();
  ASSERT_TRUE(client.valid() && served.valid());
  std::promise<BridgeEnd> ended;
  ForwardTarget t;
  t.sandbox = {"0b6c1f7e-uuid", "demo"};
  t.host = "127.0.0.1";
  t.port = 8080;
  bridge.add_socket(std::move(served), t, [&](const BridgeEnd& e) { ended.set_value(e); });
  loop.start();

  std::thread writer([&] {
    EXPECT_TRUE(write_all(client.get(), up));
    ::shutdown(client.get(), SHUT_WR);
  });
  std::string got;
  EXPECT_TRUE(read_to_eof(client.get(), &got)) << std::strerror(errno);
  writer.join();
  auto f = ended.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  const BridgeEnd e = f.get();
  EXPECT_EQ(e.cause, BridgeEnd::Cause::kStream);
  EXPECT_EQ(e.end, EndKind::kOk);
  EXPECT_EQ(got.size(), down.size());
  EXPECT_EQ(fnv1a(got), fnv1a(down));
  EXPECT_EQ(gwfake.received(0).size(), up.size());
  EXPECT_EQ(fnv1a(gwfake.received(0)), fnv1a(up));
  EXPECT_TRUE(gwfake.half_closed(0));
  bridge.shutdown();
}

}  // namespace
}  // namespace osh::relay

// relay/ units without a network: the status table (docs/ARCHITECTURE.md
// "Connection semantics and the error table"), endpoint parsing, the
// forward policy (forward_policy.h: settle window, failure kinds, loopback
// fallback, back-off) and the gateway channel's arguments.
#include <grpc/grpc.h>
#include <grpcpp/support/status.h>
#include <gtest/gtest.h>

#include <optional>
#include <string_view>

#include "relay/endpoint.h"
#include "relay/gateway_client_impl.h"
#include "relay/forward_policy.h"
#include "relay/status_map.h"
#include "fuzz/corpus_files.h"
#include "fuzz/frame_check.h"

namespace osh::relay {
namespace {

using grpc::StatusCode;

// The integer value of channel argument @key, or nullopt when unset.
std::optional<int> int_arg(const grpc::ChannelArguments& args, std::string_view key) {
  grpc_channel_args c{};
  args.SetChannelArgs(&c);
  for (size_t i = 0; i < c.num_args; ++i)
    if (key == c.args[i].key && c.args[i].type == GRPC_ARG_INTEGER) return c.args[i].value.integer;
  return std::nullopt;
}

// Issue 16.6: the retry filter's per-call state cost an idle connection
// ~8 KiB of the tunnel's RSS (31 instead of 21-23 KiB); our service config
// has no retry policy, so the channel runs without it.
TEST(ChannelArguments, NoRetryFilter) {
  const auto args = channel_arguments(GatewayOptions{});
  EXPECT_EQ(int_arg(args, GRPC_ARG_ENABLE_RETRIES), 0);
  EXPECT_EQ(int_arg(args, GRPC_ARG_KEEPALIVE_TIME_MS), 10000);  // the rest stays as it was
}

TEST(StatusMap, BeforeHeaders) {
  struct Case {
    StatusCode code;
    const char* msg;
    EndKind want;
  } cases[] = {
      {StatusCode::OK, "", EndKind::kOk},
      {StatusCode::UNAVAILABLE, "Connection refused (os error 111)", EndKind::kRefused},
      {StatusCode::UNAVAILABLE, "supervisor relay failed: supervisor session not connected",
       EndKind::kUnreachable},
      {StatusCode::UNAVAILABLE,
       "failed to connect to all addresses; last error: UNKNOWN: ipv4:192.0.2.2:17670: "
       "Failed to connect to remote host: Connection refused",
       EndKind::kUnreachable},
      {StatusCode::UNAVAILABLE, "relay lost", EndKind::kUnreachable},
      {StatusCode::NOT_FOUND, "sandbox not found", EndKind::kUnreachable},
      {StatusCode::FAILED_PRECONDITION, "sandbox is not ready", EndKind::kUnreachable},
      {StatusCode::DEADLINE_EXCEEDED, "relay open timed out", EndKind::kUnreachable},
      {StatusCode::UNAUTHENTICATED, "SSH session token expired", EndKind::kUnreachable},
      {StatusCode::PERMISSION_DENIED, "scope 'sandbox:write' required", EndKind::kUnreachable},
      {StatusCode::RESOURCE_EXHAUSTED, "sandbox SSH connection limit reached", EndKind::kRefused},
      // the pending-relay caps, still refused at the queue deadline: RST
      {StatusCode::UNAVAILABLE, "supervisor relay failed: relay capacity reached", EndKind::kRefused},
      {StatusCode::INVALID_ARGUMENT, "tcp target host must be loopback", EndKind::kRefused},
      {StatusCode::CANCELLED, "", EndKind::kReset},
      {StatusCode::INTERNAL, "fetch sandbox failed", EndKind::kReset},
  };
  for (const auto& c : cases)
    EXPECT_EQ(map_forward_status(c.code, c.msg, false), c.want) << c.code << " " << c.msg;
}

TEST(StatusMap, AfterHeadersEveryFailureIsAReset) {
  EXPECT_EQ(map_forward_status(StatusCode::OK, "", true), EndKind::kOk);
  for (auto code : {StatusCode::UNAVAILABLE, StatusCode::CANCELLED, StatusCode::NOT_FOUND,
                    StatusCode::RESOURCE_EXHAUSTED, StatusCode::INTERNAL})
    EXPECT_EQ(map_forward_status(code, "Connection refused (os error 111)", true), EndKind::kReset);
}

TEST(StatusMap, SessionErrors) {
  EXPECT_EQ(map_session_status(StatusCode::FAILED_PRECONDITION, "sandbox is not ready"),
            EndKind::kUnreachable);
  EXPECT_EQ(map_session_status(StatusCode::NOT_FOUND, "sandbox not found"), EndKind::kUnreachable);
  EXPECT_EQ(map_session_status(StatusCode::UNAVAILABLE, "failed to connect"), EndKind::kUnreachable);
}

TEST(Endpoint, Parses) {
  std::string err;
  auto e = parse_endpoint("http://192.0.2.2:17670", &err);
  ASSERT_TRUE(e) << err;
  EXPECT_FALSE(e->tls);
  EXPECT_EQ(e->grpc_target(), "192.0.2.2:17670");
  e = parse_endpoint("https://gw.example:443/", &err);
  ASSERT_TRUE(e) << err;
  EXPECT_TRUE(e->tls);
  EXPECT_EQ(e->host, "gw.example");
  e = parse_endpoint("http://[::1]:9000", &err);
  ASSERT_TRUE(e) << err;
  EXPECT_EQ(e->host, "::1");
  EXPECT_EQ(e->grpc_target(), "[::1]:9000");
  e = parse_endpoint("https://127.0.0.1", &err);
  ASSERT_TRUE(e) << err;
  EXPECT_EQ(e->port, 17670);
}

TEST(Endpoint, RejectsWithAReason) {
  for (const char* bad : {"192.0.2.2:17670", "ftp://x:1", "http://", "http://h:0", "http://h:70000",
                          "http://h:12x", "http://[::1", "http://h:1/path"}) {
    std::string err;
    EXPECT_FALSE(parse_endpoint(bad, &err)) << bad;
    EXPECT_NE(err.find("invalid gateway endpoint"), std::string::npos) << bad;
  }
}

// ---- forward policy ----

using std::chrono::microseconds;
using namespace std::chrono_literals;

TEST(SettleWindow, StartsAtTwiceTheHeaderLatencyPlusSlack) {
  SettleWindow w;
  EXPECT_EQ(w.window(), 0us);
  w.observe_header_latency(2000us);
  EXPECT_EQ(w.window(), 4000us + SettleWindow::kSchedulingSlack);
  w.observe_header_latency(6000us);  // smoothed: (3 * 2000 + 6000) / 4
  EXPECT_EQ(w.header_latency(), 3000us);
  EXPECT_EQ(w.window(), 6000us + SettleWindow::kSchedulingSlack);
}

TEST(SettleWindow, LearnsFromDialFailures) {
  SettleWindow w;
  w.observe_header_latency(1000us);
  w.observe_dial_failure(8000us);  // slower than headers: 2 x the slowest
  EXPECT_EQ(w.window(), 16000us + SettleWindow::kSchedulingSlack);
  w.observe_dial_failure(3000us);
  EXPECT_EQ(w.window(), 16000us + SettleWindow::kSchedulingSlack);
  for (int i = 0; i < 16; ++i) w.observe_dial_failure(2000us);  // the slow one aged out
  EXPECT_EQ(w.window(), 4000us + SettleWindow::kSchedulingSlack);
}

TEST(SettleWindow, IsCappedAndCanBeOverridden) {
  SettleWindow w;
  w.observe_header_latency(40000us);
  EXPECT_EQ(w.window(), SettleWindow::kDefaultCap);
  w.observe_dial_failure(900000us);
  EXPECT_EQ(w.window(), 25000us);
  SettleWindow fixed(microseconds(100000));  // above the cap: an override wins
  fixed.observe_header_latency(1000us);
  EXPECT_EQ(fixed.window(), 100000us);
  SettleWindow none(microseconds(0));
  none.observe_dial_failure(5000us);
  EXPECT_EQ(none.window(), 0us);
}

TEST(OpenFailure, ToldApartByMessage) {
  struct Case {
    StatusCode code;
    const char* msg;
    OpenFailure want;
  } cases[] = {
      {StatusCode::RESOURCE_EXHAUSTED, "SSH session connection limit reached", OpenFailure::kTokenCap},
      {StatusCode::RESOURCE_EXHAUSTED, "sandbox SSH connection limit reached", OpenFailure::kSandboxCap},
      {StatusCode::RESOURCE_EXHAUSTED, "gRPC rate limit exceeded", OpenFailure::kRateLimit},
      {StatusCode::RESOURCE_EXHAUSTED, "something new", OpenFailure::kSandboxCap},
      // gRPC's own receive limit (issue 14.8): an oversize frame, not a cap.
      {StatusCode::RESOURCE_EXHAUSTED, "Received message larger than max (66561 vs. 66560)", OpenFailure::kFinal},
      {StatusCode::UNAVAILABLE,
       "supervisor relay failed: status: ResourceExhausted, message: \"relay capacity reached\"",
       OpenFailure::kRelayCapacity},
      {StatusCode::UNAVAILABLE, "Connection refused (os error 111)", OpenFailure::kDialRefused},
      {StatusCode::UNAVAILABLE, "Cannot assign requested address (os error 99)", OpenFailure::kDialFamily},
      {StatusCode::UNAVAILABLE, "Network is unreachable (os error 101)", OpenFailure::kDialFamily},
      {StatusCode::UNAVAILABLE, "Connection timed out (os error 110)", OpenFailure::kFinal},
      {StatusCode::UNAVAILABLE, "supervisor relay failed: supervisor session not connected",
       OpenFailure::kFinal},
      {StatusCode::UNAVAILABLE, "relay lost", OpenFailure::kFinal},
      {StatusCode::UNAUTHENTICATED, "SSH session token expired", OpenFailure::kUnauthenticated},
      {StatusCode::NOT_FOUND, "sandbox not found", OpenFailure::kFinal},
  };
  for (const auto& c : cases)
    EXPECT_EQ(classify_open_failure(c.code, c.msg), c.want) << c.code << " " << c.msg;
  EXPECT_TRUE(is_dial_failure(StatusCode::UNAVAILABLE, "Connection refused (os error 111)"));
  EXPECT_FALSE(is_dial_failure(StatusCode::UNAVAILABLE, "relay lost"));
  EXPECT_FALSE(is_dial_failure(StatusCode::INTERNAL, "Connection refused (os error 111)"));
}

TEST(OpenFailure, RateLimitBackOffDoublesToTwoSeconds) {
  EXPECT_EQ(rate_limit_backoff(0), 50ms);
  EXPECT_EQ(rate_limit_backoff(1), 100ms);
  EXPECT_EQ(rate_limit_backoff(5), 1600ms);
  EXPECT_EQ(rate_limit_backoff(6), 2000ms);
  EXPECT_EQ(rate_limit_backoff(60), 2000ms);
}

TEST(OpenFailure, OtherLoopback) {
  EXPECT_EQ(other_loopback("127.0.0.1"), "::1");
  EXPECT_EQ(other_loopback("::1"), "127.0.0.1");
  EXPECT_EQ(other_loopback("127.0.0.2"), std::nullopt);
  EXPECT_EQ(other_loopback("localhost"), std::nullopt);
}

TEST(LoopbackMemory, RemembersPerSandboxAndPortUntilTheTtl) {
  using C = LoopbackMemory::Clock;
  const C::time_point t0{};
  LoopbackMemory m(60000ms, 16);
  EXPECT_EQ(m.preferred("sb", 8080, t0), std::nullopt);
  m.answered("sb", 8080, "127.0.0.1", t0);
  EXPECT_EQ(m.preferred("sb", 8080, t0 + 59s), "127.0.0.1");
  EXPECT_EQ(m.preferred("sb", 8081, t0), std::nullopt);
  EXPECT_EQ(m.preferred("sb2", 8080, t0), std::nullopt);
  EXPECT_EQ(m.preferred("sb", 8080, t0 + 60s), std::nullopt);  // expired, and dropped
  EXPECT_EQ(m.size(), 0u);
  m.answered("sb", 8080, "::1", t0);
  m.answered("sb", 8080, "::1", t0 + 30s);  // a refresh
  EXPECT_EQ(m.preferred("sb", 8080, t0 + 80s), "::1");
}

TEST(LoopbackMemory, ARefusalOfTheRememberedFamilyForgetsIt) {
  const LoopbackMemory::Clock::time_point t0{};
  LoopbackMemory m;
  m.answered("sb", 22000, "127.0.0.1", t0);
  m.refused("sb", 22000, "::1");  // the other family: no news
  EXPECT_EQ(m.preferred("sb", 22000, t0), "127.0.0.1");
  m.refused("sb", 22000, "127.0.0.1");
  EXPECT_EQ(m.preferred("sb", 22000, t0), std::nullopt);
}

TEST(LoopbackMemory, IsBoundedLeastRecentlyUsedFirst) {
  const LoopbackMemory::Clock::time_point t0{};
  LoopbackMemory m(60000ms, 3);
  for (uint16_t port = 1; port <= 3; ++port) m.answered("sb", port, "::1", t0);
  EXPECT_EQ(m.preferred("sb", 1, t0), "::1");  // 1 is now the most recent; 2 the least
  m.answered("sb", 4, "::1", t0);
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(m.preferred("sb", 2, t0), std::nullopt);
  EXPECT_EQ(m.preferred("sb", 1, t0), "::1");
  EXPECT_EQ(m.preferred("sb", 3, t0), "::1");
  EXPECT_EQ(m.preferred("sb", 4, t0), "::1");
  LoopbackMemory off(60000ms, 0);
  off.answered("sb", 1, "::1", t0);
  EXPECT_EQ(off.preferred("sb", 1, t0), std::nullopt);
}

TEST(StreamBudget, AdmitsWhileTheReservationsFitTheCeiling) {
  const StreamBudget b(size_t{256} << 20, size_t{4} << 20);  // --max-buffer-mib 256 (default 0: off)
  EXPECT_EQ(b.max_streams(), 64u);
  EXPECT_TRUE(b.admits(0));
  EXPECT_TRUE(b.admits(63));
  EXPECT_FALSE(b.admits(64));
}

TEST(StreamBudget, NoCeilingAndTinyCeilings) {
  EXPECT_TRUE(StreamBudget(0, 1 << 18).admits(1000000));  // 0: no ceiling
  const StreamBudget tiny(1000, 1 << 18);                   // below one reservation
  EXPECT_EQ(tiny.max_streams(), 1u);                        // one stream always goes
  EXPECT_TRUE(tiny.admits(0));
  EXPECT_FALSE(tiny.admits(1));
  EXPECT_EQ(StreamBudget(3 << 20, 1 << 20).max_streams(), 3u);
}

// Replays fuzz/corpus/frame through frame_fuzz's rules (fuzz/frame_check.h):
// the extension header and ForwardTcp frames as a hostile gateway sends them.
TEST(FrameCorpus, EveryFrameDecodesAlikeInBothGenerations) {
  const auto files = osh::fuzz::corpus_files(OSH_FRAME_CORPUS_DIR);
  for (const auto& [name, bytes] : files) EXPECT_EQ(osh::fuzz::check_frame(bytes), "") << name;
  EXPECT_GE(files.size(), 20u);
}

}  // namespace
}  // namespace osh::relay

// End-to-end tests of the mini peers, in process: a MiniGateway on
// 127.0.0.1:0, MiniSupervisor instances against it, small TCP targets on
// ephemeral loopback ports, and a plain gRPC sync client playing the tunnel.
// Both peers speak the 0.0 generation here (the generated stub's types);
// peers_generations_test.cc covers 0.1 and the differences. Calls that test
// the project's extensions ask for them (x-osh-tunnel-ext, tunnel_ext.h);
// the others get upstream's behaviour.
// No sleeps for synchronisation: readiness is polled with a deadline, and
// every client call carries a deadline so a hang fails instead of blocking.
#include <gtest/gtest.h>

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "openshell.grpc.pb.h"
#include "peers/common/frame_pool.h"
#include "peers/common/socket.h"
#include "common/tunnel_ext.h"
#include "peers/gateway/mini_gateway.h"
#include "peers/supervisor/mini_supervisor.h"
#include "tcp_test_server.h"

namespace osh::peers {
namespace {

namespace v1 = openshell::v1;
using testing::CloseObserver;
using testing::TcpTestServer;
using ForwardClientStream = grpc::ClientReaderWriter<v1::TcpForwardFrame, v1::TcpForwardFrame>;
using namespace std::chrono_literals;

constexpr char kDemoId[] = "5b3c1c7e-0000-4000-8000-000000000001";
constexpr char kIdleId[] = "5b3c1c7e-0000-4000-8000-000000000002";
constexpr char kSpareId[] = "5b3c1c7e-0000-4000-8000-000000000003";
constexpr auto kCallTimeout = 20s;
constexpr auto kPollTimeout = 5s;

/// One ForwardTcp call from the test client's point of view.
struct ForwardCall {
  grpc::ClientContext ctx;
  std::unique_ptr<ForwardClientStream> stream;
};

/// Reads data frames into @data until an EMPTY data frame (the gateway's
/// "target sent FIN", returns true) or the end of the stream (false).
bool ReadUntilFin(ForwardClientStream* stream, std::string* data) {
  v1::TcpForwardFrame frame;
  while (stream->Read(&frame)) {
    if (!frame.has_data()) continue;
    if (frame.data().empty()) return true;
    data->append(frame.data());
  }
  return false;
}

/// Reads exactly @n bytes of data (no FIN expected). Return: false on FIN/end.
bool ReadExactly(ForwardClientStream* stream, size_t n, std::string* data) {
  v1::TcpForwardFrame frame;
  while (data->size() < n) {
    if (!stream->Read(&frame)) return false;
    if (frame.data().empty()) return false;
    data->append(frame.data());
  }
  return data->size() == n;
}

bool WriteData(ForwardClientStream* stream, const std::string& data) {
  v1::TcpForwardFrame frame;
  frame.set_data(data);
  return stream->Write(frame);
}

std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed;
  for (auto& c : s) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

/// Polls @pred until it holds or kPollTimeout passes. Return: the last value.
bool Eventually(const std::function<bool()>& pred) {
  const auto deadline = std::chrono::steady_clock::now() + kPollTimeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);  // poll interval, not synchronisation
  }
  return true;
}

class PeersTest : public ::testing::Test {
 protected:
  void EchoThrough(size_t total, size_t frame_bytes);

  void TearDown() override {
    for (auto& s : supervisors_) s->Stop();
    if (gateway_) gateway_->Shutdown(200ms);
  }

  void StartGateway(const std::function<void(GatewayConfig&)>& tweak = nullptr) {
    GatewayConfig config;
    config.listen = "127.0.0.1:0";
    config.sandboxes = {{"demo", kDemoId}, {"idle", kIdleId}, {"spare", kSpareId}};
    config.supervisor_wait = 2s;
    config.relay_claim_timeout = 5s;
    config.version = "mini-gateway test";
    config.protocol = Protocol::kV0_0;
    config.tunnel_extensions = true;  // offered; calls get them only when they ask
    if (tweak) tweak(config);
    gateway_ = std::make_unique<MiniGateway>(config);
    gateway_->Start();
    ASSERT_NE(gateway_->port(), 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(gateway_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::OpenShell::NewStub(channel_);
  }

  MiniSupervisor& StartSupervisor(const std::string& sandbox_id,
                                  const std::string& ssh_target = "127.0.0.1:9",
                                  std::chrono::milliseconds backoff = 50ms) {
    SupervisorConfig config;
    config.gateway_endpoint = "http://127.0.0.1:" + std::to_string(gateway_->port());
    config.sandbox_id = sandbox_id;
    config.ssh_target = ssh_target;
    config.protocol = Protocol::kV0_0;
    config.initial_backoff = backoff;
    config.max_backoff = std::max(backoff, config.max_backoff);
    supervisors_.push_back(std::make_unique<MiniSupervisor>(config));
    MiniSupervisor& supervisor = *supervisors_.back();
    supervisor.Start();
    EXPECT_TRUE(Eventually([&] { return supervisor.session_active(); }));
    EXPECT_TRUE(WaitForPhase(sandbox_id, v1::SANDBOX_PHASE_READY));
    return supervisor;
  }

  /// Gateway plus a supervisor for the demo sandbox.
  void StartStack(const std::string& ssh_target = "127.0.0.1:9") {
    StartGateway();
    StartSupervisor(kDemoId, ssh_target);
  }

  /// Polls ListSandboxes until sandbox @id has @phase, or kPollTimeout.
  bool WaitForPhase(const std::string& id, v1::SandboxPhase phase) {
    const auto deadline = std::chrono::steady_clock::now() + kPollTimeout;
    while (std::chrono::steady_clock::now() < deadline) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 2s);
      v1::ListSandboxesRequest req;
      v1::ListSandboxesResponse resp;
      if (stub_->ListSandboxes(&ctx, req, &resp).ok()) {
        for (const auto& sb : resp.sandboxes()) {
          if (sb.metadata().id() == id && sb.status().phase() == phase) return true;
        }
      }
      std::this_thread::sleep_for(5ms);  // poll interval, not synchronisation
    }
    return false;
  }

  std::string Token(const std::string& sandbox_id = kDemoId) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    v1::CreateSshSessionRequest req;
    req.set_sandbox_id(sandbox_id);
    v1::CreateSshSessionResponse resp;
    const grpc::Status st = stub_->CreateSshSession(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.token();
  }

  static v1::TcpForwardInit TcpInit(const std::string& token, uint32_t port,
                                    const std::string& host = "127.0.0.1",
                                    const std::string& sandbox_id = kDemoId) {
    v1::TcpForwardInit init;
    init.set_sandbox_id(sandbox_id);
    init.set_authorization_token(token);
    init.mutable_tcp()->set_host(host);
    init.mutable_tcp()->set_port(port);
    return init;
  }

  /// Opens ForwardTcp and writes @init; @ext: the extensions to ask for
  /// (x-osh-tunnel-ext), "" for upstream behaviour.
  std::unique_ptr<ForwardCall> OpenForward(const v1::TcpForwardInit& init, const std::string& ext = "") {
    auto call = std::make_unique<ForwardCall>();
    call->ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    if (!ext.empty()) call->ctx.AddMetadata(std::string(tunnel_ext::kHeader), ext);
    call->stream = stub_->ForwardTcp(&call->ctx);
    v1::TcpForwardFrame frame;
    *frame.mutable_init() = init;
    EXPECT_TRUE(call->stream->Write(frame));
    return call;
  }

  /// Opens a ForwardTcp that the gateway is expected to refuse; returns its status.
  grpc::Status Rejected(const v1::TcpForwardInit& init) {
    auto call = OpenForward(init);
    v1::TcpForwardFrame frame;
    while (call->stream->Read(&frame)) {
      ADD_FAILURE() << "unexpected frame on a stream that should fail";
    }
    return call->stream->Finish();
  }

  /// Half-closes @call, drains it and returns its final status.
  static grpc::Status Close(ForwardCall& call) {
    call.stream->WritesDone();
    v1::TcpForwardFrame frame;
    while (call.stream->Read(&frame)) {
    }
    return call.stream->Finish();
  }

  /// Opens a stream to an echo target and proves it works with a round trip.
  std::unique_ptr<ForwardCall> OpenEcho(const std::string& token, uint16_t port,
                                        const std::string& ext = "") {
    auto call = OpenForward(TcpInit(token, port), ext);
    EXPECT_TRUE(WriteData(call->stream.get(), "ping"));
    std::string got;
    EXPECT_TRUE(ReadExactly(call->stream.get(), 4, &got));
    EXPECT_EQ(got, "ping");
    return call;
  }

  std::unique_ptr<MiniGateway> gateway_;
  std::vector<std::unique_ptr<MiniSupervisor>> supervisors_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::OpenShell::Stub> stub_;
};

#define EXPECT_STATUS(st, code, msg)               \
  do {                                             \
    const grpc::Status s_ = (st);                  \
    EXPECT_EQ(s_.error_code(), (code)) << s_.error_message(); \
    EXPECT_EQ(s_.error_message(), (msg));          \
  } while (0)

// ---- sandboxes and sessions ----

TEST_F(PeersTest, HealthAndSandboxPhases) {
  StartGateway();
  {
    grpc::ClientContext ctx;
    v1::HealthResponse resp;
    ASSERT_TRUE(stub_->Health(&ctx, v1::HealthRequest(), &resp).ok());
    EXPECT_EQ(resp.status(), v1::SERVICE_STATUS_HEALTHY);
    EXPECT_EQ(resp.version(), "mini-gateway test");
  }
  EXPECT_TRUE(WaitForPhase(kDemoId, v1::SANDBOX_PHASE_PROVISIONING));
  StartSupervisor(kDemoId);  // (1) READY once the supervisor connected
  EXPECT_TRUE(gateway_->IsSupervisorConnected(kDemoId));
  {
    grpc::ClientContext ctx;
    v1::ListSandboxesResponse resp;
    ASSERT_TRUE(stub_->ListSandboxes(&ctx, v1::ListSandboxesRequest(), &resp).ok());
    ASSERT_EQ(resp.sandboxes_size(), 3);
    EXPECT_EQ(resp.sandboxes(0).metadata().name(), "demo");  // not status.sandbox_name: gone in 0.1
    EXPECT_EQ(resp.sandboxes(0).status().phase(), v1::SANDBOX_PHASE_READY);
    EXPECT_EQ(resp.sandboxes(1).metadata().id(), kIdleId);
    EXPECT_EQ(resp.sandboxes(1).status().phase(), v1::SANDBOX_PHASE_PROVISIONING);
  }
  {
    grpc::ClientContext ctx;
    v1::GetSandboxRequest req;
    req.set_name("demo");
    v1::SandboxResponse resp;
    ASSERT_TRUE(stub_->GetSandbox(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.sandbox().metadata().id(), kDemoId);
    EXPECT_EQ(resp.sandbox().status().phase(), v1::SANDBOX_PHASE_READY);
  }
  {
    grpc::ClientContext ctx;
    v1::GetSandboxRequest req;
    req.set_name("nope");
    v1::SandboxResponse resp;
    EXPECT_STATUS(stub_->GetSandbox(&ctx, req, &resp), grpc::StatusCode::NOT_FOUND,
                  "sandbox not found");
  }
}

TEST_F(PeersTest, CreateAndRevokeSshSession) {
  StartStack();
  auto create = [&](const std::string& id, v1::CreateSshSessionResponse* resp) {
    grpc::ClientContext ctx;
    v1::CreateSshSessionRequest req;
    req.set_sandbox_id(id);
    return stub_->CreateSshSession(&ctx, req, resp);
  };
  v1::CreateSshSessionResponse resp;
  EXPECT_STATUS(create("", &resp), grpc::StatusCode::INVALID_ARGUMENT, "sandbox_id is required");
  EXPECT_STATUS(create("no-such-id", &resp), grpc::StatusCode::NOT_FOUND, "sandbox not found");
  EXPECT_STATUS(create(kIdleId, &resp), grpc::StatusCode::FAILED_PRECONDITION,
                "sandbox is not ready");
  ASSERT_TRUE(create(kDemoId, &resp).ok());
  EXPECT_EQ(resp.sandbox_id(), kDemoId);
  EXPECT_EQ(resp.token().size(), 36u);
  EXPECT_EQ(resp.gateway_host(), "127.0.0.1");
  EXPECT_EQ(resp.gateway_port(), gateway_->port());
  EXPECT_EQ(resp.gateway_scheme(), "http");
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  EXPECT_GT(resp.expires_at_ms(), now_ms + 86000 * 1000LL);

  auto revoke = [&](const std::string& token) {
    grpc::ClientContext ctx;
    v1::RevokeSshSessionRequest req;
    req.set_token(token);
    v1::RevokeSshSessionResponse r;
    EXPECT_TRUE(stub_->RevokeSshSession(&ctx, req, &r).ok());
    return r.revoked();
  };
  EXPECT_TRUE(revoke(resp.token()));
  EXPECT_FALSE(revoke(resp.token()));
  EXPECT_FALSE(revoke("not-a-token"));
}

// ---- data path ----

// Echoes @total bytes written in data frames of @frame_bytes through the
// gateway and the supervisor (extensions on), then half-closes; expects the
// same bytes back, the target's FIN and OK.
void PeersTest::EchoThrough(size_t total, size_t frame_bytes) {
  TcpTestServer echo(testing::EchoHandler);
  auto call = OpenForward(TcpInit(Token(), echo.port()), "connect-ack,fin-frame");
  call->stream->WaitForInitialMetadata();  // connect-ack: the target is connected
  const std::string sent = Pattern(total, 42);
  std::thread writer([&] {
    for (size_t off = 0; off < sent.size(); off += frame_bytes) {
      if (!WriteData(call->stream.get(), sent.substr(off, frame_bytes))) return;
    }
    call->stream->WritesDone();
  });
  std::string got;
  const bool fin = ReadUntilFin(call->stream.get(), &got);
  writer.join();
  EXPECT_TRUE(fin) << "no empty data frame (target FIN)";
  v1::TcpForwardFrame extra;
  EXPECT_FALSE(call->stream->Read(&extra));
  const grpc::Status st = call->stream->Finish();
  EXPECT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  EXPECT_EQ(got.size(), sent.size());
  EXPECT_TRUE(got == sent) << "echoed bytes differ";
}

TEST_F(PeersTest, EchoRoundTripsOneMiB) {  // (2)
  StartStack();
  EchoThrough(1 << 20, 64 * 1024);
}

// Issue 16.2: data frames pass the peers without an allocation per frame:
// the supervisor reads its target into FramePool buffers that come back once
// gRPC has sent them (the gateway passes frames through as they came).
TEST_F(PeersTest, BulkEchoReusesTheSupervisorsFrameBuffers) {
  StartStack();
  EchoThrough(1 << 20, 64 * 1024);  // warm-up: the pool fills to what one stream needs
  const uint64_t before = FramePool::Frames().allocations();
  EchoThrough(16 << 20, 64 * 1024);  // 256 frames each way
  EXPECT_LE(FramePool::Frames().allocations() - before, 16u)
      << "frame buffers allocated per frame instead of reused";
}

// Issue 16.2: the supervisor's reactions write to and read from the target
// inline on gRPC's threads while its event loop handles the same relays'
// socket events (EAGAIN both ways: the echo target blocks on its writes
// while the client reads). Several bulk echoes at once, each both ways at
// once: every byte back intact, every stream OK.
TEST_F(PeersTest, ConcurrentBulkEchoesStayIntact) {
  StartStack();  // EchoThrough takes a token per stream: 6 streams are under every cap
  std::vector<std::thread> echoes;
  for (int i = 0; i < 6; ++i) {
    echoes.emplace_back([this, i] { EchoThrough(size_t{4} << 20, i % 2 ? 64 * 1024 : 5000 + i); });
  }
  for (auto& echo : echoes) echo.join();
}

// Frames over 64 KiB (or encoded otherwise) take the decoding path: split
// into 64 KiB frames towards the supervisor, bytes intact.
TEST_F(PeersTest, OversizedFramesAreSplitAndIntact) {
  StartStack();
  EchoThrough(1 << 20, 200 * 1024 + 3);
}

TEST_F(PeersTest, ClientHalfCloseThenReplyThenFinThenOk) {  // (3)
  TcpTestServer digest(testing::DigestHandler);
  StartStack();
  auto call = OpenForward(TcpInit(Token(), digest.port()), "fin-frame");
  const std::string request = Pattern(200 * 1024 + 17, 7);
  for (size_t off = 0; off < request.size(); off += 64 * 1024) {
    ASSERT_TRUE(WriteData(call->stream.get(), request.substr(off, 64 * 1024)));
  }
  // An empty data frame from the client is skipped, as upstream does.
  ASSERT_TRUE(WriteData(call->stream.get(), ""));
  ASSERT_TRUE(call->stream->WritesDone());
  std::string reply;
  EXPECT_TRUE(ReadUntilFin(call->stream.get(), &reply));
  v1::TcpForwardFrame extra;
  EXPECT_FALSE(call->stream->Read(&extra));
  const grpc::Status st = call->stream->Finish();
  EXPECT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  EXPECT_EQ(reply, testing::DigestLine(request) + testing::BigReply());
}

TEST_F(PeersTest, TargetClosesFirst) {  // (4)
  TcpTestServer closer(testing::WriteThenCloseHandler);
  StartStack();
  auto call = OpenForward(TcpInit(Token(), closer.port()), "fin-frame");
  std::string got;
  EXPECT_TRUE(ReadUntilFin(call->stream.get(), &got));
  EXPECT_EQ(got, testing::Greeting());
  // The stream stays open until the client half-closes too.
  ASSERT_TRUE(call->stream->WritesDone());
  v1::TcpForwardFrame extra;
  EXPECT_FALSE(call->stream->Read(&extra));
  const grpc::Status st = call->stream->Finish();
  EXPECT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
}

TEST_F(PeersTest, RefusedTargetIsUnavailable) {  // (5)
  testing::RefusedPort refused;
  StartStack();
  const grpc::Status st = Rejected(TcpInit(Token(), refused.port()));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(st.error_message(), "Connection refused (os error 111)");
}

TEST_F(PeersTest, SshTargetDialsTheSupervisorsSshTarget) {
  TcpTestServer fake_sshd(testing::EchoHandler);
  StartStack("127.0.0.1:" + std::to_string(fake_sshd.port()));
  v1::TcpForwardInit init;
  init.set_sandbox_id(kDemoId);
  init.set_authorization_token(Token());
  init.mutable_ssh();
  auto call = OpenForward(init);
  ASSERT_TRUE(WriteData(call->stream.get(), "SSH-2.0-test\r\n"));
  std::string got;
  ASSERT_TRUE(ReadExactly(call->stream.get(), 14, &got));
  EXPECT_EQ(got, "SSH-2.0-test\r\n");
  EXPECT_TRUE(Close(*call).ok());
}

TEST_F(PeersTest, LocalhostAndIpv6LoopbackTargets) {
  TcpTestServer echo4(testing::EchoHandler);
  TcpTestServer echo6(testing::EchoHandler, /*ipv6=*/true);
  StartStack();
  const std::string token = Token();
  for (const auto& [host, port] : std::vector<std::pair<std::string, uint16_t>>{
           {" LocalHost ", echo4.port()}, {"::1", echo6.port()}, {"0:0:0:0:0:0:0:1", echo6.port()}}) {
    auto call = OpenForward(TcpInit(token, port, host));
    ASSERT_TRUE(WriteData(call->stream.get(), "hi " + host));
    std::string got;
    ASSERT_TRUE(ReadExactly(call->stream.get(), 3 + host.size(), &got)) << host;
    EXPECT_EQ(got, "hi " + host);
    EXPECT_TRUE(Close(*call).ok()) << host;
  }
}

// ---- ForwardTcp rejections (protocol §2.3) ----

TEST_F(PeersTest, ForwardTcpValidation) {  // (6)
  TcpTestServer echo(testing::EchoHandler);
  StartStack();
  const std::string token = Token();
  using grpc::StatusCode;

  {  // no frame at all
    ForwardCall call;
    call.ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    call.stream = stub_->ForwardTcp(&call.ctx);
    call.stream->WritesDone();
    EXPECT_STATUS(call.stream->Finish(), StatusCode::INVALID_ARGUMENT, "empty ForwardTcp stream");
  }
  {  // data before init
    ForwardCall call;
    call.ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    call.stream = stub_->ForwardTcp(&call.ctx);
    WriteData(call.stream.get(), "x");
    EXPECT_STATUS(call.stream->Finish(), StatusCode::INVALID_ARGUMENT,
                  "first TcpForwardFrame must be init");
  }
  v1::TcpForwardInit init = TcpInit(token, echo.port());
  init.clear_sandbox_id();
  EXPECT_STATUS(Rejected(init), StatusCode::INVALID_ARGUMENT, "sandbox_id is required");
  init = TcpInit(token, echo.port());
  init.clear_tcp();
  EXPECT_STATUS(Rejected(init), StatusCode::INVALID_ARGUMENT, "tcp forward target is required");
  EXPECT_STATUS(Rejected(TcpInit(token, 0)), StatusCode::INVALID_ARGUMENT,
                "tcp target port must be between 1 and 65535");
  EXPECT_STATUS(Rejected(TcpInit(token, 65536)), StatusCode::INVALID_ARGUMENT,
                "tcp target port must be between 1 and 65535");
  EXPECT_STATUS(Rejected(TcpInit(token, echo.port(), " ")), StatusCode::INVALID_ARGUMENT,
                "tcp target host is required");
  for (const char* host : {"[::1]", "::ffff:127.0.0.1", "10.0.0.1", "example.com"}) {
    EXPECT_STATUS(Rejected(TcpInit(token, echo.port(), host)), StatusCode::INVALID_ARGUMENT,
                  "tcp target host must be loopback");
  }
  EXPECT_STATUS(Rejected(TcpInit(token, echo.port(), "127.0.0.1", "no-such-sandbox")),
                StatusCode::NOT_FOUND, "sandbox not found");
  EXPECT_STATUS(Rejected(TcpInit("", echo.port())), StatusCode::UNAUTHENTICATED,
                "authorization_token is required for ForwardTcp");
  EXPECT_STATUS(Rejected(TcpInit("  \t", echo.port())), StatusCode::UNAUTHENTICATED,
                "authorization_token is required for ForwardTcp");
  EXPECT_STATUS(Rejected(TcpInit("no-such-token", echo.port())), StatusCode::UNAUTHENTICATED,
                "SSH session token not found");
  // A token padded with whitespace is trimmed and still valid.
  auto padded = OpenEcho(" " + token + " ", echo.port());
  EXPECT_TRUE(Close(*padded).ok());
}

TEST_F(PeersTest, TokenForOtherSandboxOrRevokedIsNotValid) {
  TcpTestServer echo(testing::EchoHandler);
  StartStack();
  StartSupervisor(kSpareId);
  const std::string spare_token = Token(kSpareId);
  EXPECT_STATUS(Rejected(TcpInit(spare_token, echo.port())), grpc::StatusCode::UNAUTHENTICATED,
                "SSH session token is not valid");
  const std::string token = Token();
  {
    grpc::ClientContext ctx;
    v1::RevokeSshSessionRequest req;
    req.set_token(token);
    v1::RevokeSshSessionResponse resp;
    ASSERT_TRUE(stub_->RevokeSshSession(&ctx, req, &resp).ok());
    ASSERT_TRUE(resp.revoked());
  }
  EXPECT_STATUS(Rejected(TcpInit(token, echo.port())), grpc::StatusCode::UNAUTHENTICATED,
                "SSH session token is not valid");
}

TEST_F(PeersTest, ExpiredTokenIsRejected) {
  StartGateway([](GatewayConfig& c) { c.token_ttl = 1ms; });
  StartSupervisor(kDemoId);
  const std::string token = Token();
  // While the token is still valid the attempt fails later, at the dial.
  testing::RefusedPort refused;
  grpc::Status last;
  EXPECT_TRUE(Eventually([&] {
    last = Rejected(TcpInit(token, refused.port()));
    return last.error_code() == grpc::StatusCode::UNAUTHENTICATED;
  }));
  EXPECT_EQ(last.error_message(), "SSH session token expired");
}

TEST_F(PeersTest, PerTokenConnectionCap) {  // (7)
  TcpTestServer echo(testing::EchoHandler);
  StartStack();
  const std::string token = Token();
  std::vector<std::unique_ptr<ForwardCall>> calls;
  for (int i = 0; i < 3; ++i) calls.push_back(OpenEcho(token, echo.port()));
  EXPECT_STATUS(Rejected(TcpInit(token, echo.port())), grpc::StatusCode::RESOURCE_EXHAUSTED,
                "SSH session connection limit reached");
  // Another token of the same sandbox is not affected.
  auto other = OpenEcho(Token(), echo.port());
  EXPECT_TRUE(Close(*other).ok());
  // A slot is free again once a stream has ended.
  EXPECT_TRUE(Close(*calls.front()).ok());
  calls.erase(calls.begin());
  calls.push_back(OpenEcho(token, echo.port()));
  for (auto& call : calls) EXPECT_TRUE(Close(*call).ok());
}

TEST_F(PeersTest, PerSandboxConnectionCap) {
  TcpTestServer echo(testing::EchoHandler);
  StartGateway([](GatewayConfig& c) { c.max_streams_per_sandbox = 2; });
  StartSupervisor(kDemoId);
  auto a = OpenEcho(Token(), echo.port());
  auto b = OpenEcho(Token(), echo.port());
  EXPECT_STATUS(Rejected(TcpInit(Token(), echo.port())), grpc::StatusCode::RESOURCE_EXHAUSTED,
                "sandbox SSH connection limit reached");
  EXPECT_TRUE(Close(*a).ok());
  EXPECT_TRUE(Close(*b).ok());
}

TEST_F(PeersTest, SandboxWithoutSupervisorIsNotReady) {  // (8)
  TcpTestServer echo(testing::EchoHandler);
  StartStack();
  EXPECT_STATUS(Rejected(TcpInit(Token(), echo.port(), "127.0.0.1", kIdleId)),
                grpc::StatusCode::FAILED_PRECONDITION, "sandbox is not ready");
}

// ---- endings ----

TEST_F(PeersTest, ClientCancelResetsTheTarget) {
  CloseObserver observer;
  TcpTestServer target(observer.Handler());
  StartStack();
  auto call = OpenForward(TcpInit(Token(), target.port()), "connect-ack");
  call->stream->WaitForInitialMetadata();  // connect-ack: the target is connected
  ASSERT_TRUE(WriteData(call->stream.get(), "some bytes"));
  call->ctx.TryCancel();
  int result = -1;
  ASSERT_TRUE(observer.Wait(5000, &result)) << "target connection did not end";
  EXPECT_EQ(result, ECONNRESET) << "target saw a clean FIN instead of a reset";
  EXPECT_EQ(call->stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(PeersTest, RelayLostIsUnavailableWithRelayError) {
  TcpTestServer echo(testing::EchoHandler);
  StartGateway();
  MiniSupervisor& supervisor = StartSupervisor(kDemoId);
  auto call = OpenEcho(Token(), echo.port(), "relay-error");
  supervisor.Stop();  // the supervisor "dies": its relays and session go away
  v1::TcpForwardFrame frame;
  while (call->stream->Read(&frame)) {
    EXPECT_FALSE(frame.has_data() && frame.data().empty()) << "unexpected target FIN";
  }
  EXPECT_STATUS(call->stream->Finish(), grpc::StatusCode::UNAVAILABLE, "relay lost");
  EXPECT_TRUE(WaitForPhase(kDemoId, v1::SANDBOX_PHASE_PROVISIONING));
  EXPECT_FALSE(gateway_->IsSupervisorConnected(kDemoId));
}

TEST_F(PeersTest, NewerSupervisorSessionSupersedesTheOlder) {
  TcpTestServer echo(testing::EchoHandler);
  StartGateway();
  // The first supervisor waits a minute before reconnecting, so the second
  // one's session stays current for the rest of the test.
  MiniSupervisor& first = StartSupervisor(kDemoId, "127.0.0.1:9", 60s);
  ASSERT_EQ(first.sessions_accepted(), 1u);
  MiniSupervisor& second = StartSupervisor(kDemoId);
  EXPECT_TRUE(Eventually([&] { return !first.session_active(); }))
      << "older session was not cancelled";
  EXPECT_TRUE(second.session_active());
  EXPECT_EQ(first.sessions_accepted(), 1u);
  EXPECT_TRUE(gateway_->IsSupervisorConnected(kDemoId));  // still READY
  auto call = OpenEcho(Token(), echo.port());
  EXPECT_TRUE(Close(*call).ok());
}

// ---- the supervisor's event loop: socket errors, many relays, Stop() ----

TEST_F(PeersTest, TargetResetCancelsTheRelay) {
  // The target reads the client's bytes, then resets the connection: the
  // supervisor's socket read or write fails, it cancels the RelayStream, and
  // the client (asking for relay-error) sees the relay lost rather than a
  // FIN; upstream's OK for a lost relay: peers_generations_test.cc.
  TcpTestServer target([](int fd) {
    char buf[4];
    for (size_t got = 0; got < sizeof buf;) {
      const ssize_t n = ::read(fd, buf + got, sizeof buf - got);
      if (n <= 0) return;
      got += static_cast<size_t>(n);
    }
    SetLingerZero(fd);  // the server's close() now sends an RST
  });
  StartStack();
  auto call = OpenForward(TcpInit(Token(), target.port()), "relay-error");
  ASSERT_TRUE(WriteData(call->stream.get(), "boom"));
  v1::TcpForwardFrame frame;
  while (call->stream->Read(&frame)) {
    EXPECT_FALSE(frame.has_data() && frame.data().empty()) << "unexpected target FIN";
  }
  EXPECT_STATUS(call->stream->Finish(), grpc::StatusCode::UNAVAILABLE, "relay lost");
}

/// Echoes on every connection and records how each one ended (0 = FIN,
/// else the errno of the failed read or write).
class EndRecorder {
 public:
  TcpTestServer::Handler Handler() {
    return [this](int fd) {
      char buf[4096];
      int result = 0;
      for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
          result = WriteAll(fd, buf, static_cast<size_t>(n));
          if (result != 0) break;
        } else if (n == 0) {
          break;
        } else if (errno != EINTR) {
          result = errno;
          break;
        }
      }
      std::lock_guard lock(mu_);
      results_.push_back(result);
    };
  }
  size_t Count(int result) {
    std::lock_guard lock(mu_);
    return static_cast<size_t>(std::count(results_.begin(), results_.end(), result));
  }

 private:
  std::mutex mu_;
  std::vector<int> results_;
};

TEST_F(PeersTest, StopWithManyRelaysResetsEveryTarget) {
  // Many relays live at once on the supervisor's one event loop; Stop()
  // cancels them all and every target sees an RST. (That Stop() returns only
  // after every reactor's OnDone is checked by the ASan build of this test:
  // an early return would free relays that gRPC still calls.)
  constexpr size_t kRelays = 100;
  EndRecorder ends;
  TcpTestServer target(ends.Handler());
  StartGateway([](GatewayConfig& c) {
    c.max_streams_per_sandbox = static_cast<int>(kRelays);
    c.max_streams_per_token = static_cast<int>(kRelays);
  });
  MiniSupervisor& supervisor = StartSupervisor(kDemoId);
  const std::string token = Token();
  std::vector<std::unique_ptr<ForwardCall>> calls;
  for (size_t i = 0; i < kRelays; ++i) calls.push_back(OpenEcho(token, target.port(), "relay-error"));
  supervisor.Stop();
  for (auto& call : calls) {
    v1::TcpForwardFrame frame;
    while (call->stream->Read(&frame)) {
    }
    EXPECT_STATUS(call->stream->Finish(), grpc::StatusCode::UNAVAILABLE, "relay lost");
  }
  EXPECT_TRUE(Eventually([&] { return ends.Count(ECONNRESET) == kRelays; }))
      << ends.Count(ECONNRESET) << " of " << kRelays << " targets saw a reset";
}

// ---- scale ----

/// One ForwardTcp stream on the gRPC callback client API, so that a test can
/// hold thousands open without a thread each: it writes init and @payload,
/// counts itself echoed once @payload came back, and after Close() half-closes,
/// reads up to the target's FIN and records the final status.
class EchoStreamReactor
    : public grpc::ClientBidiReactor<v1::TcpForwardFrame, v1::TcpForwardFrame> {
 public:
  struct Counters {
    std::mutex mu;
    std::condition_variable cv;
    int echoed = 0;      // guarded by mu
    int read_ended = 0;  // guarded by mu; the gateway ended the stream (reads over)
    int done = 0;        // guarded by mu
  };

  EchoStreamReactor(v1::OpenShell::Stub* stub, const v1::TcpForwardInit& init,
                    const std::string& payload, std::chrono::seconds timeout, Counters* counters)
      : payload_(payload), counters_(counters) {
    ctx_.set_deadline(std::chrono::system_clock::now() + timeout);
    ctx_.AddMetadata(std::string(tunnel_ext::kHeader), std::string(tunnel_ext::kFinFrame));
    *init_.mutable_init() = init;
    data_.set_data(payload);
    stub->async()->ForwardTcp(&ctx_, this);
    AddHold();  // Close() starts WritesDone from outside the reactions
    StartWrite(&init_);
    StartRead(&in_);
    StartCall();
  }

  /// Half-closes the stream once its writes are done. Thread: any;
  /// idempotent.
  void Close() {
    {
      std::lock_guard lock(mu_);
      if (close_wanted_) return;
      close_wanted_ = true;
      if (writes_finished_) StartWritesDone();
    }
    RemoveHold();
  }

  /// Cancels the call and releases the hold, so OnDone comes (cleanup after
  /// a failed assertion). Thread: any.
  void Cancel() {
    ctx_.TryCancel();
    Close();
  }

  bool saw_fin() const { return saw_fin_; }          // valid after OnDone
  const grpc::Status& status() const { return status_; }  // valid after OnDone

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    if (ok && !data_sent_) {
      data_sent_ = true;
      StartWrite(&data_);
      return;
    }
    writes_finished_ = true;
    if (close_wanted_) StartWritesDone();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the stream is over; OnDone follows once Close() released the hold
      std::lock_guard lock(counters_->mu);
      ++counters_->read_ended;
      counters_->cv.notify_all();
      return;
    }
    if (in_.has_data() && in_.data().empty()) {
      saw_fin_ = true;
    } else {
      got_.append(in_.data());
      if (got_ == payload_) {
        std::lock_guard lock(counters_->mu);
        ++counters_->echoed;
        counters_->cv.notify_all();
      }
    }
    StartRead(&in_);
  }

  void OnDone(const grpc::Status& status) override {
    status_ = status;
    std::lock_guard lock(counters_->mu);
    ++counters_->done;
    counters_->cv.notify_all();
  }

 private:
  const std::string payload_;
  Counters* const counters_;
  grpc::ClientContext ctx_;
  v1::TcpForwardFrame init_, data_, in_;
  std::string got_;                  // reactions only (one read at a time)
  bool saw_fin_ = false;             // reactions only
  grpc::Status status_;
  std::mutex mu_;
  bool data_sent_ = false;           // mu_
  bool writes_finished_ = false;     // mu_
  bool close_wanted_ = false;        // mu_
};

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kManyStreams = 300;  // sanitizer builds: TcpTestServer's thread per connection is costly
#else
constexpr int kManyStreams = 2000;
#endif

TEST_F(PeersTest, ThousandsOfConcurrentStreamsThroughOneGateway) {
  TcpTestServer echo(testing::EchoHandler);
  StartGateway([](GatewayConfig& c) {
    c.max_streams_per_sandbox = kManyStreams;
    c.max_streams_per_token = kManyStreams + 1;  // the sandbox cap is the one reached
    // Thousands of relays may be unclaimed at once (upstream allows 32 per
    // sandbox: that cap has its own test in peers_generations_test.cc).
    c.max_pending_relays_per_sandbox = kManyStreams;
    c.max_pending_relays = kManyStreams;
    // Thousands of opens queue behind each other on a loaded 2-core CI
    // machine (and the echo target has a thread per connection): longer than
    // the usual test timeouts. That neither peer has a thread per stream is
    // asserted by vm_vanish (10,000 streams), not here.
    c.supervisor_wait = 60s;
    c.relay_claim_timeout = 60s;
  });
  StartSupervisor(kDemoId);
  const std::string token = Token();
  constexpr auto kTimeout = 120s;
  EchoStreamReactor::Counters counters;
  std::vector<std::unique_ptr<EchoStreamReactor>> streams;
  // However the test ends, no reactor is destroyed before its OnDone.
  struct Drain {
    std::vector<std::unique_ptr<EchoStreamReactor>>& streams;
    EchoStreamReactor::Counters& counters;
    ~Drain() {
      for (auto& stream : streams) stream->Cancel();
      std::unique_lock lock(counters.mu);
      if (!counters.cv.wait_for(lock, 60s, [&] {
            return counters.done == static_cast<int>(streams.size());
          })) {
        std::abort();  // reactors still running: destroying them would be use-after-free
      }
    }
  } drain{streams, counters};
  for (int i = 0; i < kManyStreams; ++i) {
    streams.push_back(std::make_unique<EchoStreamReactor>(
        stub_.get(), TcpInit(token, echo.port()), "stream " + std::to_string(i), kTimeout,
        &counters));
  }
  {
    std::unique_lock lock(counters.mu);
    ASSERT_TRUE(counters.cv.wait_for(lock, kTimeout, [&] {
      return counters.echoed == kManyStreams || counters.read_ended > 0;
    })) << counters.echoed << " of " << kManyStreams << " streams echoed";
    ASSERT_EQ(counters.echoed, kManyStreams) << counters.read_ended << " streams ended early";
  }
  // Every stream holds its slot at the same time: the next one is refused.
  EXPECT_STATUS(Rejected(TcpInit(token, echo.port())), grpc::StatusCode::RESOURCE_EXHAUSTED,
                "sandbox SSH connection limit reached");
  for (auto& stream : streams) stream->Close();
  {
    std::unique_lock lock(counters.mu);
    ASSERT_TRUE(counters.cv.wait_for(lock, kTimeout, [&] { return counters.done == kManyStreams; }))
        << counters.done << " of " << kManyStreams << " streams ended";
  }
  int ok = 0, fin = 0;
  for (const auto& stream : streams) {
    ok += stream->status().ok() ? 1 : 0;
    fin += stream->saw_fin() ? 1 : 0;
  }
  EXPECT_EQ(ok, kManyStreams);
  EXPECT_EQ(fin, kManyStreams);
  // The slots are free again.
  auto again = OpenEcho(token, echo.port());
  EXPECT_TRUE(Close(*again).ok());
}

}  // namespace
}  // namespace osh::peers

// Tests of the mini peers' two wire generations (--protocol 0.0 / 0.1),
// their upstream default behaviour and the negotiated extensions
// (common/tunnel_ext.h). In process, like peers_e2e_test.cc: a
// MiniGateway on 127.0.0.1:0, MiniSupervisors or a scripted fake supervisor,
// and a gRPC client typed with the generation's own messages (the generated
// stub is typed with 0.0 messages, so 0.1 calls go through the same
// factories the generated stubs use).
#include <gtest/gtest.h>

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/client_unary_call.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "openshell.grpc.pb.h"
#include "openshell_0_1.pb.h"
#include "common/tunnel_ext.h"
#include "peers/gateway/mini_gateway.h"
#include "peers/gateway/rate_limiter.h"
#include "peers/supervisor/mini_supervisor.h"
#include "tcp_test_server.h"

namespace osh::peers {
namespace {

namespace v1 = openshell::v1;
namespace g01 = openshell::v1::g01;
using grpc::StatusCode;
using testing::TcpTestServer;
using namespace std::chrono_literals;

constexpr char kDemoId[] = "5b3c1c7e-0000-4000-8000-000000000001";
constexpr char kIdleId[] = "5b3c1c7e-0000-4000-8000-000000000002";
constexpr char kOtherWsId[] = "5b3c1c7e-0000-4000-8000-000000000003";
constexpr char kFingerprint[] = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
constexpr auto kCallTimeout = 20s;
constexpr auto kPollTimeout = 5s;

std::string Path(const char* method) { return std::string("/openshell.v1.OpenShell/") + method; }

bool Eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = kPollTimeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);  // poll interval, not synchronisation
  }
  return true;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

#define EXPECT_STATUS(st, code, msg)                          \
  do {                                                        \
    const grpc::Status s_ = (st);                             \
    EXPECT_EQ(s_.error_code(), (code)) << s_.error_message(); \
    EXPECT_EQ(s_.error_message(), (msg));                     \
  } while (0)

/// A unary call typed with @Req / @Resp (either generation).
template <class Req, class Resp>
grpc::Status Unary(grpc::Channel* channel, const char* method, const Req& req, Resp* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  const std::string path = Path(method);  // RpcMethod keeps the pointer
  const grpc::internal::RpcMethod rpc(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC);
  return grpc::internal::BlockingUnaryCall(channel, rpc, &ctx, req, resp);
}

g01::WorkspaceSelector Workspace(const std::string& name) {
  g01::WorkspaceSelector sel;
  sel.set_workspace(name);
  return sel;
}

/// One sync ForwardTcp call typed with @Frame.
template <class Frame>
struct Forward {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderWriter<Frame, Frame>> stream;

  Forward(grpc::Channel* channel, const std::string& ext) {
    ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    if (!ext.empty()) ctx.AddMetadata(std::string(tunnel_ext::kHeader), ext);
    static const grpc::internal::RpcMethod rpc("/openshell.v1.OpenShell/ForwardTcp",
                                               grpc::internal::RpcMethod::BIDI_STREAMING);
    stream.reset(grpc::internal::ClientReaderWriterFactory<Frame, Frame>::Create(channel, rpc, &ctx));
  }
  bool Write(const std::string& data) {
    Frame frame;
    frame.set_data(data);
    return stream->Write(frame);
  }
  /// Reads data until @n bytes arrived. Return: false on end or empty frame.
  bool ReadExactly(size_t n, std::string* out) {
    Frame frame;
    while (out->size() < n) {
      if (!stream->Read(&frame) || frame.data().empty()) return false;
      out->append(frame.data());
    }
    return out->size() == n;
  }
  /// Reads to the end of the stream. Return: the status; @data gets the
  /// bytes, @empty_frames counts empty data frames.
  grpc::Status Drain(std::string* data = nullptr, int* empty_frames = nullptr) {
    Frame frame;
    while (stream->Read(&frame)) {
      if (frame.has_data() && frame.data().empty() && empty_frames) ++*empty_frames;
      if (data) data->append(frame.data());
    }
    return stream->Finish();
  }
  /// The response initial metadata value of the extension header ("" if none).
  std::string ExtAnswer() {
    const auto& md = ctx.GetServerInitialMetadata();
    const auto it = md.find(std::string(tunnel_ext::kHeader));
    return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
  }
};

/// A ForwardTcp call on the callback API that records whether response
/// headers arrived (OnReadInitialMetadataDone(true); false = trailers-only),
/// every frame, and the final status.
template <class Frame>
class HeaderProbe : public grpc::ClientBidiReactor<Frame, Frame> {
 public:
  HeaderProbe(grpc::Channel* channel, const Frame& init, const std::string& ext) : init_(init) {
    ctx_.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    if (!ext.empty()) ctx_.AddMetadata(std::string(tunnel_ext::kHeader), ext);
    static const grpc::internal::RpcMethod rpc("/openshell.v1.OpenShell/ForwardTcp",
                                               grpc::internal::RpcMethod::BIDI_STREAMING);
    grpc::internal::ClientCallbackReaderWriterFactory<Frame, Frame>::Create(channel, rpc, &ctx_, this);
    this->StartWrite(&init_);
    this->StartRead(&in_);
    this->StartCall();
  }
  void OnReadInitialMetadataDone(bool ok) override {
    std::lock_guard lock(mu_);
    headers_ = ok ? 1 : 0;
    if (ok) {
      const auto& md = ctx_.GetServerInitialMetadata();
      const auto it = md.find(std::string(tunnel_ext::kHeader));
      if (it != md.end()) ext_answer_.assign(it->second.data(), it->second.size());
    }
    cv_.notify_all();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    {
      std::lock_guard lock(mu_);
      ++frames_;
    }
    this->StartRead(&in_);
  }
  void OnWriteDone(bool) override {}
  void OnDone(const grpc::Status& status) override {
    std::lock_guard lock(mu_);
    status_ = status;
    done_ = true;
    cv_.notify_all();
  }
  /// -1 while unknown, 1 headers arrived, 0 trailers-only.
  int headers() {
    std::lock_guard lock(mu_);
    return headers_;
  }
  bool WaitHeaders(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return headers_ != -1; });
  }
  grpc::Status Wait() {
    std::unique_lock lock(mu_);
    EXPECT_TRUE(cv_.wait_for(lock, kCallTimeout, [&] { return done_; }));
    return status_;
  }
  std::string ext_answer() {
    std::lock_guard lock(mu_);
    return ext_answer_;
  }
  ~HeaderProbe() override {
    ctx_.TryCancel();
    Wait();
  }

 private:
  grpc::ClientContext ctx_;
  Frame init_, in_;
  std::mutex mu_;
  std::condition_variable cv_;
  int headers_ = -1;
  int frames_ = 0;
  bool done_ = false;
  grpc::Status status_;
  std::string ext_answer_;
};

/// A scripted 0.1 supervisor: holds a ConnectSupervisor session and records
/// every relay_open; the test answers (or not) with Answer(). It never
/// claims a relay, so every relay it was sent stays pending.
class FakeSupervisor {
 public:
  FakeSupervisor(grpc::Channel* channel, const std::string& sandbox_id) {
    static const grpc::internal::RpcMethod rpc("/openshell.v1.OpenShell/ConnectSupervisor",
                                               grpc::internal::RpcMethod::BIDI_STREAMING);
    stream_.reset(grpc::internal::ClientReaderWriterFactory<g01::SupervisorMessage, g01::GatewayMessage>::Create(
        channel, rpc, &ctx_));
    g01::SupervisorMessage hello;
    hello.mutable_hello()->set_sandbox_id(sandbox_id);
    hello.mutable_hello()->set_instance_id("fake");
    hello.mutable_hello()->set_connection_epoch(1);
    EXPECT_TRUE(stream_->Write(hello));
    g01::GatewayMessage msg;
    EXPECT_TRUE(stream_->Read(&msg));
    EXPECT_TRUE(msg.has_session_accepted());
    accepted_ = msg.session_accepted();
    reader_ = std::thread([this] {
      g01::GatewayMessage in;
      while (stream_->Read(&in)) {
        if (!in.has_relay_open()) continue;
        std::lock_guard lock(mu_);
        opens_.push_back(in.relay_open());
        cv_.notify_all();
      }
    });
  }
  ~FakeSupervisor() {
    ctx_.TryCancel();
    reader_.join();
    stream_->Finish();
  }
  const g01::SessionAccepted& accepted() const { return accepted_; }
  /// Waits until @n relay_opens arrived. Return: whether they did.
  bool WaitOpens(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kPollTimeout, [&] { return opens_.size() >= n; });
  }
  v1::RelayOpen open(size_t i) {
    std::lock_guard lock(mu_);
    return opens_.at(i);
  }
  void Answer(const std::string& channel_id, bool success, const std::string& error) {
    g01::SupervisorMessage msg;
    msg.mutable_relay_open_result()->set_channel_id(channel_id);
    msg.mutable_relay_open_result()->set_success(success);
    msg.mutable_relay_open_result()->set_error(error);
    std::lock_guard lock(write_mu_);
    EXPECT_TRUE(stream_->Write(msg));
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<g01::SupervisorMessage, g01::GatewayMessage>> stream_;
  g01::SessionAccepted accepted_;
  std::thread reader_;
  std::mutex write_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<v1::RelayOpen> opens_;  // mu_
};

class GenerationsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (auto& s : supervisors_) s->Stop();
    if (gateway_) gateway_->Shutdown(200ms);
  }

  void StartGateway(Protocol protocol, const std::function<void(GatewayConfig&)>& tweak = nullptr) {
    protocol_ = protocol;
    GatewayConfig config;
    config.listen = "127.0.0.1:0";
    config.protocol = protocol;
    config.sandboxes = {{"demo", kDemoId, "default", 0, kFingerprint},
                        {"idle", kIdleId},
                        {"demo", kOtherWsId, "team"}};
    config.supervisor_wait = 2s;
    config.relay_claim_timeout = 5s;
    config.tunnel_extensions = true;  // offered; calls get them only when they ask
    if (tweak) tweak(config);
    gateway_ = std::make_unique<MiniGateway>(config);
    gateway_->Start();
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(gateway_->port()),
                                   grpc::InsecureChannelCredentials());
  }

  MiniSupervisor& StartSupervisor(const std::string& sandbox_id) {
    SupervisorConfig config;
    config.gateway_endpoint = "http://127.0.0.1:" + std::to_string(gateway_->port());
    config.sandbox_id = sandbox_id;
    config.ssh_target = "127.0.0.1:9";
    config.protocol = protocol_;
    config.initial_backoff = 50ms;
    supervisors_.push_back(std::make_unique<MiniSupervisor>(config));
    supervisors_.back()->Start();
    EXPECT_TRUE(Eventually([&] { return gateway_->IsSupervisorConnected(sandbox_id); }));
    return *supervisors_.back();
  }

  // ---- 0.1 helpers ----

  grpc::Status Create01(const std::string& name, const std::string& ws,
                        g01::CreateSshSessionResponse* resp) {
    g01::CreateSshSessionRequest req;
    req.set_sandbox(name);
    *req.mutable_workspace_scope() = Workspace(ws);
    return Unary(channel_.get(), "CreateSshSession", req, resp);
  }
  std::string Token01(const std::string& name = "demo", const std::string& ws = "default") {
    g01::CreateSshSessionResponse resp;
    const grpc::Status st = Create01(name, ws, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.token();
  }
  static g01::TcpForwardFrame Init01(const std::string& token, uint32_t port,
                                     const std::string& name = "demo",
                                     const std::string& ws = "default") {
    g01::TcpForwardFrame frame;
    frame.mutable_init()->set_sandbox(name);
    frame.mutable_init()->set_workspace(ws);
    frame.mutable_init()->set_authorization_token(token);
    frame.mutable_init()->mutable_tcp()->set_host("127.0.0.1");
    frame.mutable_init()->mutable_tcp()->set_port(port);
    return frame;
  }
  std::unique_ptr<Forward<g01::TcpForwardFrame>> Open01(const g01::TcpForwardFrame& init,
                                                        const std::string& ext = "") {
    auto call = std::make_unique<Forward<g01::TcpForwardFrame>>(channel_.get(), ext);
    EXPECT_TRUE(call->stream->Write(init));
    return call;
  }

  // ---- 0.0 helpers ----

  std::string Token00(const std::string& id = kDemoId) {
    v1::CreateSshSessionRequest req;
    req.set_sandbox_id(id);
    v1::CreateSshSessionResponse resp;
    const grpc::Status st = Unary(channel_.get(), "CreateSshSession", req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.token();
  }
  static v1::TcpForwardFrame Init00(const std::string& token, uint32_t port,
                                    const std::string& id = kDemoId) {
    v1::TcpForwardFrame frame;
    frame.mutable_init()->set_sandbox_id(id);
    frame.mutable_init()->set_authorization_token(token);
    frame.mutable_init()->mutable_tcp()->set_host("127.0.0.1");
    frame.mutable_init()->mutable_tcp()->set_port(port);
    return frame;
  }
  std::unique_ptr<Forward<v1::TcpForwardFrame>> Open00(const v1::TcpForwardFrame& init,
                                                       const std::string& ext = "") {
    auto call = std::make_unique<Forward<v1::TcpForwardFrame>>(channel_.get(), ext);
    EXPECT_TRUE(call->stream->Write(init));
    return call;
  }

  Protocol protocol_ = Protocol::kV0_1;
  std::unique_ptr<MiniGateway> gateway_;
  std::vector<std::unique_ptr<MiniSupervisor>> supervisors_;
  std::shared_ptr<grpc::Channel> channel_;
};

// ---- Health: the default version tells the generation (protocol-0.1 §2) ----

TEST_F(GenerationsTest, HealthVersionMatchesTheGeneration) {
  for (const auto& [protocol, version] :
       std::vector<std::pair<Protocol, std::string>>{{Protocol::kV0_0, "0.0.111"},
                                                     {Protocol::kV0_1, "0.1.11"}}) {
    StartGateway(protocol);
    v1::HealthResponse resp;
    ASSERT_TRUE(Unary(channel_.get(), "Health", v1::HealthRequest(), &resp).ok());
    EXPECT_EQ(resp.version(), version);
    EXPECT_EQ(resp.status(), v1::SERVICE_STATUS_HEALTHY);
    gateway_->Shutdown(0ms);
  }
  StartGateway(Protocol::kV0_1, [](GatewayConfig& c) { c.version = "0.0.0"; });  // probe tests
  v1::HealthResponse resp;
  ASSERT_TRUE(Unary(channel_.get(), "Health", v1::HealthRequest(), &resp).ok());
  EXPECT_EQ(resp.version(), "0.0.0");
}

// ---- 0.0 unary calls, field by field (protocol §1.3, §1.4) ----

TEST_F(GenerationsTest, V00UnaryCalls) {
  const int64_t before = NowMs();
  StartGateway(Protocol::kV0_0);
  StartSupervisor(kDemoId);
  {
    v1::ListSandboxesResponse resp;  // empty request: workspace "default", limit 100
    ASSERT_TRUE(Unary(channel_.get(), "ListSandboxes", v1::ListSandboxesRequest(), &resp).ok());
    ASSERT_EQ(resp.sandboxes_size(), 2);
    const v1::Sandbox& sb = resp.sandboxes(0);
    EXPECT_EQ(sb.metadata().id(), kDemoId);
    EXPECT_EQ(sb.metadata().name(), "demo");
    EXPECT_EQ(sb.metadata().workspace(), "default");
    EXPECT_GE(sb.metadata().created_at_ms(), before);
    EXPECT_LE(sb.metadata().created_at_ms(), NowMs());
    EXPECT_EQ(sb.status().sandbox_name(), "demo");
    EXPECT_EQ(sb.status().phase(), v1::SANDBOX_PHASE_READY);
    EXPECT_EQ(resp.sandboxes(1).status().phase(), v1::SANDBOX_PHASE_PROVISIONING);
  }
  {
    v1::ListSandboxesRequest req;  // offsets
    req.set_limit(1);
    req.set_offset(1);
    v1::ListSandboxesResponse resp;
    ASSERT_TRUE(Unary(channel_.get(), "ListSandboxes", req, &resp).ok());
    ASSERT_EQ(resp.sandboxes_size(), 1);
    EXPECT_EQ(resp.sandboxes(0).metadata().id(), kIdleId);
    req.set_workspace("team");
    req.set_offset(0);
    ASSERT_TRUE(Unary(channel_.get(), "ListSandboxes", req, &resp).ok());
    ASSERT_EQ(resp.sandboxes_size(), 1);
    EXPECT_EQ(resp.sandboxes(0).metadata().id(), kOtherWsId);
    req.set_all_workspaces(true);
    req.clear_workspace();
    EXPECT_STATUS(Unary(channel_.get(), "ListSandboxes", req, &resp), StatusCode::PERMISSION_DENIED,
                  "platform admin role required for cross-workspace operations");
  }
  {
    v1::GetSandboxRequest req;
    req.set_name("demo");
    v1::SandboxResponse resp;
    ASSERT_TRUE(Unary(channel_.get(), "GetSandbox", req, &resp).ok());
    EXPECT_EQ(resp.sandbox().metadata().id(), kDemoId);
    req.set_workspace("team");
    ASSERT_TRUE(Unary(channel_.get(), "GetSandbox", req, &resp).ok());
    EXPECT_EQ(resp.sandbox().metadata().id(), kOtherWsId);
  }
  {
    v1::CreateSshSessionRequest req;
    req.set_sandbox_id(kDemoId);
    v1::CreateSshSessionResponse resp;
    ASSERT_TRUE(Unary(channel_.get(), "CreateSshSession", req, &resp).ok());
    EXPECT_EQ(resp.sandbox_id(), kDemoId);
    EXPECT_EQ(resp.token().size(), 36u);
    EXPECT_EQ(resp.gateway_host(), "127.0.0.1");
    EXPECT_EQ(resp.gateway_port(), gateway_->port());
    EXPECT_EQ(resp.gateway_scheme(), "http");
    EXPECT_EQ(resp.host_key_fingerprint(), kFingerprint);
    EXPECT_GT(resp.expires_at_ms(), NowMs() + 86000 * 1000LL);
    req.set_sandbox_id("demo");  // 0.0 addresses by UUID, not by name
    EXPECT_STATUS(Unary(channel_.get(), "CreateSshSession", req, &resp), StatusCode::NOT_FOUND,
                  "sandbox not found");
    v1::RevokeSshSessionRequest revoke;
    revoke.set_token(Token00());
    v1::RevokeSshSessionResponse revoked;
    ASSERT_TRUE(Unary(channel_.get(), "RevokeSshSession", revoke, &revoked).ok());
    EXPECT_TRUE(revoked.revoked());
    ASSERT_TRUE(Unary(channel_.get(), "RevokeSshSession", revoke, &revoked).ok());
    EXPECT_FALSE(revoked.revoked());
  }
}

// ---- 0.1 unary calls, field by field (protocol-0.1 §3) ----

TEST_F(GenerationsTest, V01ListSandboxesPages150Sandboxes) {
  const int64_t before = NowMs();
  StartGateway(Protocol::kV0_1, [](GatewayConfig& c) {
    for (auto& decl : GenerateSandboxes("sb", 150)) c.sandboxes.push_back(decl);
  });
  StartSupervisor(kDemoId);
  g01::ListSandboxesRequest req;
  g01::ListSandboxesResponse resp;
  EXPECT_STATUS(Unary(channel_.get(), "ListSandboxes", req, &resp), StatusCode::INVALID_ARGUMENT,
                "workspace_scope is required");
  req.mutable_workspace_scope()->mutable_all_workspaces();
  EXPECT_STATUS(Unary(channel_.get(), "ListSandboxes", req, &resp), StatusCode::PERMISSION_DENIED,
                "platform admin role required for cross-workspace operations");
  *req.mutable_workspace_scope() = Workspace("default");
  req.set_page_size(-1);
  EXPECT_EQ(Unary(channel_.get(), "ListSandboxes", req, &resp).error_code(), StatusCode::INVALID_ARGUMENT);

  // page_size 0 means 100: 152 sandboxes in "default" come in two pages.
  req.set_page_size(0);
  std::vector<std::string> names;
  std::string token;
  int pages = 0;
  do {
    req.set_page_token(token);
    resp.Clear();
    const grpc::Status st = Unary(channel_.get(), "ListSandboxes", req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    for (const auto& sb : resp.sandboxes()) {
      names.push_back(sb.metadata().name());
      EXPECT_EQ(sb.metadata().workspace(), "default");
      EXPECT_GE(sb.metadata().created_time().seconds() * 1000, before - 1000);
      if (sb.metadata().name() == "demo") {
        EXPECT_EQ(sb.metadata().id(), kDemoId);
        EXPECT_EQ(sb.status().phase(), g01::SANDBOX_PHASE_READY);
        EXPECT_EQ(sb.host_key_fingerprint(), kFingerprint);
      } else {
        EXPECT_EQ(sb.status().phase(), g01::SANDBOX_PHASE_PROVISIONING);
      }
    }
    EXPECT_EQ(resp.sandboxes_size(), pages == 0 ? 100 : 52);
    token = resp.next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 2);
  ASSERT_EQ(names.size(), 152u);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), 152u);

  // A page token only fits the request it came from (only page_size may change).
  req.set_page_size(7);
  req.set_page_token("");
  ASSERT_TRUE(Unary(channel_.get(), "ListSandboxes", req, &resp).ok());
  ASSERT_EQ(resp.sandboxes_size(), 7);
  ASSERT_FALSE(resp.next_page_token().empty());
  const std::string seven = resp.next_page_token();
  req.set_page_token(seven);
  req.set_page_size(3);
  ASSERT_TRUE(Unary(channel_.get(), "ListSandboxes", req, &resp).ok());
  EXPECT_EQ(resp.sandboxes(0).metadata().name(), names[7]);
  *req.mutable_workspace_scope() = Workspace("team");
  EXPECT_STATUS(Unary(channel_.get(), "ListSandboxes", req, &resp), StatusCode::INVALID_ARGUMENT,
                "page_token does not match the request");
  req.set_page_token("garbage");
  EXPECT_EQ(Unary(channel_.get(), "ListSandboxes", req, &resp).error_code(), StatusCode::INVALID_ARGUMENT);

  // Above 1000 is 1000: everything on one page, no next token.
  *req.mutable_workspace_scope() = Workspace("default");
  req.set_page_token("");
  req.set_page_size(5000);
  ASSERT_TRUE(Unary(channel_.get(), "ListSandboxes", req, &resp).ok());
  EXPECT_EQ(resp.sandboxes_size(), 152);
  EXPECT_EQ(resp.next_page_token(), "");
}

TEST_F(GenerationsTest, V01GetCreateRevoke) {
  StartGateway(Protocol::kV0_1);
  StartSupervisor(kDemoId);
  {
    g01::GetSandboxRequest req;
    g01::SandboxResponse resp;
    req.set_name("demo");
    EXPECT_STATUS(Unary(channel_.get(), "GetSandbox", req, &resp), StatusCode::INVALID_ARGUMENT,
                  "workspace_scope is required");
    req.mutable_workspace_scope()->mutable_all_workspaces();
    EXPECT_STATUS(Unary(channel_.get(), "GetSandbox", req, &resp), StatusCode::INVALID_ARGUMENT,
                  "all_workspaces is not supported by this request");
    *req.mutable_workspace_scope() = Workspace("default");
    ASSERT_TRUE(Unary(channel_.get(), "GetSandbox", req, &resp).ok());
    EXPECT_EQ(resp.sandbox().metadata().id(), kDemoId);
    EXPECT_EQ(resp.sandbox().status().phase(), g01::SANDBOX_PHASE_READY);
    EXPECT_EQ(resp.sandbox().host_key_fingerprint(), kFingerprint);
    *req.mutable_workspace_scope() = Workspace("team");
    ASSERT_TRUE(Unary(channel_.get(), "GetSandbox", req, &resp).ok());
    EXPECT_EQ(resp.sandbox().metadata().id(), kOtherWsId);
    *req.mutable_workspace_scope() = Workspace("elsewhere");
    EXPECT_STATUS(Unary(channel_.get(), "GetSandbox", req, &resp), StatusCode::NOT_FOUND,
                  "sandbox not found");
    req.set_name(kDemoId);  // by UUID: not a name
    *req.mutable_workspace_scope() = Workspace("default");
    EXPECT_STATUS(Unary(channel_.get(), "GetSandbox", req, &resp), StatusCode::NOT_FOUND,
                  "sandbox not found");
  }
  {
    g01::CreateSshSessionRequest req;
    g01::CreateSshSessionResponse resp;
    req.set_sandbox("demo");
    EXPECT_STATUS(Unary(channel_.get(), "CreateSshSession", req, &resp), StatusCode::INVALID_ARGUMENT,
                  "workspace_scope is required");
    ASSERT_TRUE(Create01("demo", "default", &resp).ok());
    EXPECT_EQ(resp.sandbox_id(), kDemoId);
    EXPECT_EQ(resp.token().size(), 36u);
    EXPECT_EQ(resp.gateway_host(), "127.0.0.1");
    EXPECT_EQ(resp.gateway_port(), gateway_->port());
    EXPECT_EQ(resp.gateway_scheme(), "http");
    EXPECT_EQ(resp.host_key_fingerprint(), kFingerprint);
    ASSERT_TRUE(resp.has_expiration_time());
    EXPECT_GT(resp.expiration_time().seconds(), NowMs() / 1000 + 86000);
    EXPECT_STATUS(Create01("demo", "team", &resp), StatusCode::FAILED_PRECONDITION,
                  "sandbox is not ready");
    EXPECT_STATUS(Create01("nope", "default", &resp), StatusCode::NOT_FOUND, "sandbox not found");
    EXPECT_STATUS(Create01(kDemoId, "default", &resp), StatusCode::NOT_FOUND, "sandbox not found");
  }
  {
    g01::RevokeSshSessionRequest req;
    g01::RevokeSshSessionResponse resp;
    EXPECT_STATUS(Unary(channel_.get(), "RevokeSshSession", req, &resp), StatusCode::INVALID_ARGUMENT,
                  "token is required");
    req.set_token("no-such-token");
    EXPECT_EQ(Unary(channel_.get(), "RevokeSshSession", req, &resp).error_code(), StatusCode::NOT_FOUND);
    req.set_allow_missing(true);
    ASSERT_TRUE(Unary(channel_.get(), "RevokeSshSession", req, &resp).ok());
    EXPECT_EQ(resp.outcome(), g01::DELETION_OUTCOME_ALREADY_ABSENT);
    req.set_token(Token01());
    req.set_allow_missing(false);
    ASSERT_TRUE(Unary(channel_.get(), "RevokeSshSession", req, &resp).ok());
    EXPECT_EQ(resp.outcome(), g01::DELETION_OUTCOME_COMPLETED);
    ASSERT_TRUE(Unary(channel_.get(), "RevokeSshSession", req, &resp).ok());  // already revoked
    EXPECT_EQ(resp.outcome(), g01::DELETION_OUTCOME_COMPLETED);
  }
}

TEST_F(GenerationsTest, V01NoExpirationWithoutTtl) {
  StartGateway(Protocol::kV0_1, [](GatewayConfig& c) { c.token_ttl = 0ms; });
  StartSupervisor(kDemoId);
  g01::CreateSshSessionResponse resp;
  ASSERT_TRUE(Create01("demo", "default", &resp).ok());
  EXPECT_FALSE(resp.has_expiration_time());
}

TEST_F(GenerationsTest, V01ReadinessGate) {
  // READY, or COMPLETED/ERROR with a live supervisor session (protocol-0.1 §3).
  StartGateway(Protocol::kV0_1, [](GatewayConfig& c) {
    c.sandboxes = {{"done", kDemoId, "default", g01::SANDBOX_PHASE_COMPLETED},
                   {"broken", kIdleId, "default", g01::SANDBOX_PHASE_ERROR},
                   {"stopped", kOtherWsId, "default", g01::SANDBOX_PHASE_STOPPED}};
  });
  g01::CreateSshSessionResponse resp;
  for (const char* name : {"done", "broken", "stopped"}) {
    SCOPED_TRACE(name);
    EXPECT_STATUS(Create01(name, "default", &resp), StatusCode::FAILED_PRECONDITION,
                  "sandbox is not ready");
  }
  StartSupervisor(kDemoId);
  StartSupervisor(kIdleId);
  StartSupervisor(kOtherWsId);
  EXPECT_TRUE(Create01("done", "default", &resp).ok());
  EXPECT_TRUE(Create01("broken", "default", &resp).ok());
  EXPECT_STATUS(Create01("stopped", "default", &resp), StatusCode::FAILED_PRECONDITION,
                "sandbox is not ready");
  g01::GetSandboxRequest get;
  get.set_name("done");
  *get.mutable_workspace_scope() = Workspace("default");
  g01::SandboxResponse got;
  ASSERT_TRUE(Unary(channel_.get(), "GetSandbox", get, &got).ok());
  EXPECT_EQ(got.sandbox().status().phase(), g01::SANDBOX_PHASE_COMPLETED);
  // A COMPLETED sandbox with its session is reachable through ForwardTcp too.
  TcpTestServer echo(testing::EchoHandler);
  auto call = Open01(Init01(Token01("done"), echo.port(), "done"));
  ASSERT_TRUE(call->Write("hi"));
  std::string back;
  EXPECT_TRUE(call->ReadExactly(2, &back));
  call->stream->WritesDone();
  EXPECT_TRUE(call->Drain().ok());
}

TEST_F(GenerationsTest, V00GateIsReadyOnly) {
  StartGateway(Protocol::kV0_0, [](GatewayConfig& c) {
    c.sandboxes = {{"broken", kDemoId, "default", v1::SANDBOX_PHASE_ERROR}};
  });
  StartSupervisor(kDemoId);
  v1::CreateSshSessionRequest req;
  req.set_sandbox_id(kDemoId);
  v1::CreateSshSessionResponse resp;
  EXPECT_STATUS(Unary(channel_.get(), "CreateSshSession", req, &resp), StatusCode::FAILED_PRECONDITION,
                "sandbox is not ready");
  GatewayConfig bad;
  bad.protocol = Protocol::kV0_0;
  bad.sandboxes = {{"done", kDemoId, "default", 9}};  // COMPLETED is 0.1 only
  EXPECT_THROW(ValidateGatewayConfig(bad), std::invalid_argument);
}

// ---- ForwardTcp in 0.1: names, workspace, target FIN ends the call ----

TEST_F(GenerationsTest, V01ForwardByNameAndTargetFinEndsTheCallOk) {
  TcpTestServer closer(testing::WriteThenCloseHandler);
  TcpTestServer echo(testing::EchoHandler);
  StartGateway(Protocol::kV0_1);
  StartSupervisor(kDemoId);
  const std::string token = Token01();
  {
    auto call = Open01(Init01(token, echo.port()));
    const std::string big(1 << 20, 'x');  // one 1 MiB frame: forwarded in <= 64 KiB frames
    std::thread writer([&] { EXPECT_TRUE(call->Write(big)); });
    std::string got;
    g01::TcpForwardFrame frame;
    size_t largest = 0;
    while (got.size() < big.size() && call->stream->Read(&frame)) {
      largest = std::max(largest, frame.data().size());
      got += frame.data();
    }
    writer.join();
    EXPECT_EQ(got, big);
    EXPECT_LE(largest, 64u * 1024);
    EXPECT_EQ(call->ExtAnswer(), "");  // not asked: no confirmation
    call->stream->WritesDone();
    EXPECT_TRUE(call->Drain().ok());
  }
  {
    // The target writes and closes; the client never half-closes.
    auto call = Open01(Init01(token, closer.port()));
    std::string data;
    int empty = 0;
    const grpc::Status st = call->Drain(&data, &empty);
    EXPECT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(data, testing::Greeting());
    EXPECT_EQ(empty, 0) << "an empty frame without fin-frame";
  }
  EXPECT_STATUS(Open01(Init01(token, echo.port(), kDemoId))->Drain(), StatusCode::NOT_FOUND,
                "sandbox not found");
  EXPECT_STATUS(Open01(Init01(token, echo.port(), "demo", ""))->Drain(), StatusCode::NOT_FOUND,
                "sandbox not found");
  EXPECT_STATUS(Open01(Init01(token, echo.port(), "demo", "team"))->Drain(),
                StatusCode::FAILED_PRECONDITION, "sandbox is not ready");
  g01::TcpForwardFrame no_name = Init01(token, echo.port());
  no_name.mutable_init()->clear_sandbox();
  EXPECT_STATUS(Open01(no_name)->Drain(), StatusCode::INVALID_ARGUMENT, "sandbox is required");
}

TEST_F(GenerationsTest, V01FinFrameExtensionKeepsTheCallOpen) {
  TcpTestServer closer(testing::WriteThenCloseHandler);
  StartGateway(Protocol::kV0_1);
  StartSupervisor(kDemoId);
  auto call = Open01(Init01(Token01(), closer.port()), "fin-frame");
  std::string data;
  g01::TcpForwardFrame frame;
  while (call->stream->Read(&frame) && !frame.data().empty()) data += frame.data();
  EXPECT_TRUE(frame.has_data() && frame.data().empty()) << "no empty frame (target FIN)";
  EXPECT_EQ(data, testing::Greeting());
  EXPECT_EQ(call->ExtAnswer(), "fin-frame");
  call->stream->WritesDone();
  EXPECT_TRUE(call->Drain().ok());
}

// ---- ForwardTcp in 0.0: the target's FIN waits for the client (protocol §2.6) ----

TEST_F(GenerationsTest, V00TargetFinIsHeldUntilTheClientHalfCloses) {
  TcpTestServer closer(testing::WriteThenCloseHandler);
  StartGateway(Protocol::kV0_0);
  StartSupervisor(kDemoId);
  auto call = Open00(Init00(Token00(), closer.port()));
  std::string data;
  ASSERT_TRUE(call->ReadExactly(testing::Greeting().size(), &data));
  EXPECT_EQ(data, testing::Greeting());
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  Clock::time_point half_closed;
  std::thread closer_thread([&] {
    std::this_thread::sleep_for(300ms);  // the end must not come before this
    half_closed = Clock::now();
    call->stream->WritesDone();
  });
  int empty = 0;
  const grpc::Status st = call->Drain(nullptr, &empty);
  const auto ended = Clock::now();
  closer_thread.join();
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(empty, 0);
  EXPECT_GE(ended, half_closed) << "the call ended before the client half-closed";
  EXPECT_GE(ended - start, 300ms);
}

// ---- headers before the dial; the dial failure in the trailers ----

TEST_F(GenerationsTest, HeadersGoOutBeforeTheDialByDefault) {
  StartGateway(Protocol::kV0_1);
  FakeSupervisor fake(channel_.get(), kDemoId);
  EXPECT_EQ(fake.accepted().heartbeat_interval().seconds(), 15);
  ASSERT_TRUE(Eventually([&] { return gateway_->IsSupervisorConnected(kDemoId); }));
  HeaderProbe<g01::TcpForwardFrame> probe(channel_.get(), Init01(Token01(), 4242), "");
  ASSERT_TRUE(fake.WaitOpens(1));
  EXPECT_EQ(fake.open(0).tcp().port(), 4242u);
  // The supervisor has not answered: headers are already there.
  ASSERT_TRUE(probe.WaitHeaders(kPollTimeout));
  EXPECT_EQ(probe.headers(), 1);
  EXPECT_EQ(probe.ext_answer(), "");
  fake.Answer(fake.open(0).channel_id(), false, "Connection refused (os error 111)");
  EXPECT_STATUS(probe.Wait(), StatusCode::UNAVAILABLE, "Connection refused (os error 111)");
}

TEST_F(GenerationsTest, ConnectAckWaitsForTheDialAndFailsTrailersOnly) {
  StartGateway(Protocol::kV0_1);
  FakeSupervisor fake(channel_.get(), kDemoId);
  ASSERT_TRUE(Eventually([&] { return gateway_->IsSupervisorConnected(kDemoId); }));
  const std::string token = Token01();
  {
    HeaderProbe<g01::TcpForwardFrame> probe(channel_.get(), Init01(token, 4242), "connect-ack");
    ASSERT_TRUE(fake.WaitOpens(1));
    EXPECT_FALSE(probe.WaitHeaders(200ms)) << "headers before the supervisor answered";
    fake.Answer(fake.open(0).channel_id(), false, "Connection refused (os error 111)");
    EXPECT_STATUS(probe.Wait(), StatusCode::UNAVAILABLE, "Connection refused (os error 111)");
    EXPECT_EQ(probe.headers(), 0) << "not a trailers-only response";
  }
  {
    HeaderProbe<g01::TcpForwardFrame> probe(channel_.get(), Init01(token, 4243), "connect-ack");
    ASSERT_TRUE(fake.WaitOpens(2));
    EXPECT_FALSE(probe.WaitHeaders(100ms));
    fake.Answer(fake.open(1).channel_id(), true, "");
    ASSERT_TRUE(probe.WaitHeaders(kPollTimeout));
    EXPECT_EQ(probe.headers(), 1);
    EXPECT_EQ(probe.ext_answer(), "connect-ack");
  }
}

TEST_F(GenerationsTest, RefusedPortWithARealSupervisorInBothModes) {
  testing::RefusedPort refused;
  StartGateway(Protocol::kV0_0);
  StartSupervisor(kDemoId);
  const std::string token = Token00();
  for (const std::string ext : {"", "connect-ack"}) {
    HeaderProbe<v1::TcpForwardFrame> probe(channel_.get(), Init00(token, refused.port()), ext);
    EXPECT_STATUS(probe.Wait(), StatusCode::UNAVAILABLE, "Connection refused (os error 111)");
    EXPECT_EQ(probe.headers(), ext.empty() ? 1 : 0) << "ext '" << ext << "'";
  }
}

// ---- extension negotiation ----

TEST_F(GenerationsTest, ExtensionsAreConfirmedOnlyWhenAsked) {
  TcpTestServer echo(testing::EchoHandler);
  StartGateway(Protocol::kV0_0);
  StartSupervisor(kDemoId);
  const std::string token = Token00();
  for (const auto& [asked, answer] : std::vector<std::pair<std::string, std::string>>{
           {"", ""},
           {"bogus", ""},
           {"relay-error", "relay-error"},
           {" FIN-frame , connect-ack,bogus", "connect-ack,fin-frame"},
           {"connect-ack,fin-frame,relay-error", "connect-ack,fin-frame,relay-error"}}) {
    auto call = Open00(Init00(token, echo.port()), asked);
    ASSERT_TRUE(call->Write("x"));
    std::string got;
    ASSERT_TRUE(call->ReadExactly(1, &got)) << asked;
    EXPECT_EQ(call->ExtAnswer(), answer) << "asked '" << asked << "'";
    call->stream->WritesDone();
    EXPECT_TRUE(call->Drain().ok());
  }
}

TEST_F(GenerationsTest, ExtensionsAreNotOfferedByDefault) {
  // Upstream ignores metadata it does not know; so does a mini-gateway
  // without --tunnel-extensions, even for a call that asks for everything.
  TcpTestServer echo(testing::EchoHandler);
  StartGateway(Protocol::kV0_1, [](GatewayConfig& c) { c.tunnel_extensions = false; });
  StartSupervisor(kDemoId);
  auto call = Open01(Init01(Token01(), echo.port()), std::string(tunnel_ext::kRequestAll));
  ASSERT_TRUE(call->Write("x"));
  std::string got;
  ASSERT_TRUE(call->ReadExactly(1, &got));
  EXPECT_EQ(call->ExtAnswer(), "");
  call->stream->WritesDone();
  EXPECT_TRUE(call->Drain().ok());
}

// ---- relay loss ----

TEST_F(GenerationsTest, LostRelayEndsOkByDefaultAndUnavailableWithRelayError) {
  TcpTestServer echo(testing::EchoHandler);
  StartGateway(Protocol::kV0_1);
  MiniSupervisor& supervisor = StartSupervisor(kDemoId);
  const std::string token = Token01();
  auto plain = Open01(Init01(token, echo.port()));
  auto asked = Open01(Init01(token, echo.port()), "relay-error");
  for (auto* call : {plain.get(), asked.get()}) {
    ASSERT_TRUE(call->Write("ping"));
    std::string got;
    ASSERT_TRUE(call->ReadExactly(4, &got));
  }
  supervisor.Stop();  // the supervisor "dies": its relays go away
  EXPECT_TRUE(plain->Drain().ok());
  EXPECT_STATUS(asked->Drain(), StatusCode::UNAVAILABLE, "relay lost");
}

// ---- pending-relay caps (protocol §2.8) ----

TEST_F(GenerationsTest, PendingRelayCapPerSandbox) {
  StartGateway(Protocol::kV0_1, [](GatewayConfig& c) {
    c.max_streams_per_sandbox = 100;
    c.max_streams_per_token = 100;
    c.relay_claim_timeout = 60s;  // the relays stay pending for the whole test
  });
  FakeSupervisor fake(channel_.get(), kDemoId);  // never claims: every relay stays pending
  ASSERT_TRUE(Eventually([&] { return gateway_->IsSupervisorConnected(kDemoId); }));
  const std::string token = Token01();
  std::vector<std::unique_ptr<HeaderProbe<g01::TcpForwardFrame>>> pending;
  for (int i = 0; i < 32; ++i) {
    pending.push_back(std::make_unique<HeaderProbe<g01::TcpForwardFrame>>(
        channel_.get(), Init01(token, 4000), ""));
    ASSERT_TRUE(fake.WaitOpens(static_cast<size_t>(i) + 1));
  }
  EXPECT_STATUS(Open01(Init01(token, 4000))->Drain(), StatusCode::UNAVAILABLE,
                "supervisor relay failed: relay capacity reached");
  // A relay that ends (dial failed) frees its place.
  fake.Answer(fake.open(0).channel_id(), false, "Connection refused (os error 111)");
  EXPECT_EQ(pending.front()->Wait().error_code(), StatusCode::UNAVAILABLE);
  pending.push_back(std::make_unique<HeaderProbe<g01::TcpForwardFrame>>(channel_.get(),
                                                                        Init01(token, 4000), ""));
  EXPECT_TRUE(fake.WaitOpens(33));
}

TEST_F(GenerationsTest, PendingRelayCapInAll) {
  StartGateway(Protocol::kV0_1, [](GatewayConfig& c) {
    c.max_pending_relays = 2;
    c.relay_claim_timeout = 60s;
  });
  FakeSupervisor fake(channel_.get(), kDemoId);
  ASSERT_TRUE(Eventually([&] { return gateway_->IsSupervisorConnected(kDemoId); }));
  const std::string token = Token01();
  HeaderProbe<g01::TcpForwardFrame> a(channel_.get(), Init01(token, 4000), "");
  HeaderProbe<g01::TcpForwardFrame> b(channel_.get(), Init01(Token01(), 4000), "");
  ASSERT_TRUE(fake.WaitOpens(2));
  EXPECT_STATUS(Open01(Init01(Token01(), 4000))->Drain(), StatusCode::UNAVAILABLE,
                "supervisor relay failed: relay capacity reached");
}

// ---- the global rate limit ----

TEST_F(GenerationsTest, RateLimitRefusesCallsOverTheLimit) {
  StartGateway(Protocol::kV0_1, [](GatewayConfig& c) { c.rate_limit = RateLimit{3, 60s}; });
  g01::ListSandboxesRequest req;
  *req.mutable_workspace_scope() = Workspace("default");
  g01::ListSandboxesResponse resp;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(Unary(channel_.get(), "ListSandboxes", req, &resp).ok());
  EXPECT_STATUS(Unary(channel_.get(), "ListSandboxes", req, &resp), StatusCode::RESOURCE_EXHAUSTED,
                "gRPC rate limit exceeded");
  {
    // Refused before the gateway reads anything: the init write may fail.
    Forward<g01::TcpForwardFrame> call(channel_.get(), "");
    call.stream->Write(Init01("t", 1));
    EXPECT_STATUS(call.Drain(), StatusCode::RESOURCE_EXHAUSTED, "gRPC rate limit exceeded");
  }
  v1::HealthResponse health;  // Health is not limited
  EXPECT_TRUE(Unary(channel_.get(), "Health", v1::HealthRequest(), &health).ok());
}

TEST(RateLimiterTest, TokenBucketRefillsContinuously) {
  const auto t0 = RateLimiter::Clock::time_point{} + 1h;
  RateLimiter limiter(RateLimit{2, 1000ms}, t0);
  EXPECT_TRUE(limiter.TryAcquire(t0));
  EXPECT_TRUE(limiter.TryAcquire(t0));
  EXPECT_FALSE(limiter.TryAcquire(t0 + 100ms));
  EXPECT_TRUE(limiter.TryAcquire(t0 + 500ms));  // one token back after half the period
  EXPECT_FALSE(limiter.TryAcquire(t0 + 600ms));
  EXPECT_TRUE(limiter.TryAcquire(t0 + 10s));
  EXPECT_TRUE(limiter.TryAcquire(t0 + 10s));  // refilled to the bucket size, not more
  EXPECT_FALSE(limiter.TryAcquire(t0 + 10s));
  RateLimiter off(RateLimit{}, t0);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(off.TryAcquire(t0));
}

// ---- the supervisor's generations (protocol-0.1 §4) ----

TEST_F(GenerationsTest, SupervisorReadsTheGenerationsHeartbeatInterval) {
  auto secs = [](MiniSupervisor& s) {
    EXPECT_TRUE(Eventually([&] { return s.heartbeat_secs() != 0; }));
    return s.heartbeat_secs();
  };
  StartGateway(Protocol::kV0_1, [](GatewayConfig& c) { c.heartbeat_interval = 7s; });
  EXPECT_EQ(secs(StartSupervisor(kDemoId)), 7u);  // from the 0.1 Duration
  for (auto& s : supervisors_) s->Stop();
  supervisors_.clear();
  gateway_->Shutdown(0ms);
  StartGateway(Protocol::kV0_0, [](GatewayConfig& c) { c.heartbeat_interval = 8s; });
  EXPECT_EQ(secs(StartSupervisor(kDemoId)), 8u);  // heartbeat_interval_secs
  // A 0.1 supervisor finds no Duration in a 0.0 SessionAccepted: its 5 s floor.
  protocol_ = Protocol::kV0_1;
  EXPECT_EQ(secs(StartSupervisor(kIdleId)), 5u);
}

}  // namespace
}  // namespace osh::peers

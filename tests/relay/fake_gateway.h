// An in-process, scriptable stand-in for the gateway's ForwardTcp (and the
// CreateSshSession / RevokeSshSession calls a stream needs), for the relay's
// unit tests. Built on gRPC's callback generic service, so one server speaks
// either generation: it decodes each init frame as the generation it was
// told to expect and records what it saw. Each ForwardTcp call follows a
// Script chosen from its init by a test-supplied function; a driver thread
// per call plays it (test code: a thread per call is fine here).
#pragma once

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "openshell.pb.h"
#include "openshell_0_1.pb.h"
#include "relay/gateway_client.h"

namespace osh::relay::testing {

/// What the fake gateway read from one ForwardTcp's init frame and metadata.
struct SeenInit {
  std::string sandbox_id;  ///< 0.0: TcpForwardInit.sandbox_id
  std::string sandbox;     ///< 0.1: TcpForwardInit.sandbox (a name)
  std::string workspace;   ///< 0.1: TcpForwardInit.workspace
  std::string token, service_id, host;
  uint32_t port = 0;
  bool ssh = false;
  std::string ext_request;  ///< the x-osh-tunnel-ext request metadata ("" = none)
  int call_index = 0;       ///< 0-based count of ForwardTcp calls so far
};

/// How the fake answers one ForwardTcp call.
struct Script {
  /// Trailers-only answer (no headers): the checks before the relay, or a
  /// connect-ack gateway's failed dial.
  std::optional<grpc::Status> reject;
  /// Never answer: no headers, no status, until the client cancels (a
  /// gateway that hangs; issue 14.5's open deadline).
  bool hang = false;
  /// Response initial metadata x-osh-tunnel-ext ("" = none: upstream).
  std::string confirm_ext;
  /// After the headers, before the frames: wait until at least this many
  /// client data bytes arrived on the call (0 = do not wait), and/or for
  /// the client's half-close (a target that answers a complete request).
  size_t wait_for_bytes = 0;
  bool half_close_first = false;
  /// After the headers: data frames ("" = an empty frame), each after `gap`.
  std::vector<std::string> frames;
  std::chrono::milliseconds gap{0};
  /// After the frames: one frame echoing every client byte received so far.
  bool echo = false;
  /// Then, before the end: wait this long, and/or for the client's half-close.
  std::chrono::milliseconds end_delay{0};
  bool wait_for_half_close = false;
  grpc::Status end = grpc::Status::OK;
};

class FakeGateway {
 public:
  using Scripter = std::function<Script(const SeenInit&)>;

  FakeGateway(Generation gen, Scripter scripter) : gen_(gen), scripter_(std::move(scripter)) {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterCallbackGenericService(&service_);
    server_ = b.BuildAndStart();
  }
  ~FakeGateway() {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, std::chrono::seconds(5), [&] { return drivers_ == 0; });
  }

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<SeenInit> inits() const {
    std::lock_guard lk(mu_);
    return inits_;
  }
  int tokens_minted() const {
    std::lock_guard lk(mu_);
    return minted_;
  }
  int tokens_revoked() const {
    std::lock_guard lk(mu_);
    return revoked_;
  }
  /// From now on CreateSshSession / RevokeSshSession answer after @d (a
  /// slow gateway: the reaction sleeps, one of gRPC's server threads).
  void set_unary_delay(std::chrono::milliseconds d) {
    std::lock_guard lk(mu_);
    unary_delay_ = d;
  }
  /// Bytes the client sent on call @index (data frames, concatenated).
  std::string received(size_t index) const {
    std::lock_guard lk(mu_);
    return index < received_.size() ? received_[index] : std::string();
  }
  /// Sizes of the data frames the client sent on call @index, in order.
  std::vector<size_t> frame_sizes(size_t index) const {
    std::lock_guard lk(mu_);
    return index < frame_sizes_.size() ? frame_sizes_[index] : std::vector<size_t>();
  }
  /// Whether the client half-closed (WritesDone) call @index.
  bool half_closed(size_t index) const {
    std::lock_guard lk(mu_);
    return index < half_closed_.size() && half_closed_[index];
  }

 private:
  class ForwardReactor;
  class UnaryReactor;

  class Service final : public grpc::CallbackGenericService {
   public:
    explicit Service(FakeGateway& gw) : gw_(gw) {}
    grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override;

   private:
    FakeGateway& gw_;
  };

  SeenInit decode_init(const std::string& bytes) const {
    SeenInit s;
    if (gen_ == Generation::k0_1) {
      openshell::v1::g01::TcpForwardFrame f;
      f.ParseFromString(bytes);
      s.sandbox = f.init().sandbox();
      s.workspace = f.init().workspace();
      s.token = f.init().authorization_token();
      s.service_id = f.init().service_id();
      s.ssh = f.init().has_ssh();
      s.host = f.init().tcp().host();
      s.port = f.init().tcp().port();
    } else {
      openshell::v1::TcpForwardFrame f;
      f.ParseFromString(bytes);
      s.sandbox_id = f.init().sandbox_id();
      s.token = f.init().authorization_token();
      s.service_id = f.init().service_id();
      s.ssh = f.init().has_ssh();
      s.host = f.init().tcp().host();
      s.port = f.init().tcp().port();
    }
    return s;
  }

  std::string data_of(const std::string& bytes) const {
    openshell::v1::TcpForwardFrame f;  // data = 2 in both generations
    f.ParseFromString(bytes);
    return f.data();
  }

  static std::string frame_bytes(const std::string& data) {
    openshell::v1::TcpForwardFrame f;
    f.set_data(data);
    return f.SerializeAsString();
  }

  const Generation gen_;
  const Scripter scripter_;
  Service service_{*this};
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<SeenInit> inits_;
  std::vector<std::string> received_;
  std::vector<std::vector<size_t>> frame_sizes_;
  std::vector<bool> half_closed_;
  int minted_ = 0;
  int revoked_ = 0;
  std::chrono::milliseconds unary_delay_{0};
  int drivers_ = 0;
};

// CreateSshSession / RevokeSshSession / anything else unary: one request,
// one answer. The response fields the client reads have the same numbers in
// both generations (token = 2), except RevokeSshSession's outcome (0.1).
class FakeGateway::UnaryReactor final : public grpc::ServerGenericBidiReactor {
 public:
  UnaryReactor(FakeGateway& gw, std::string method) : gw_(gw), method_(std::move(method)) {
    StartRead(&in_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request"));
      return;
    }
    std::string reply;
    std::chrono::milliseconds delay;
    {
      std::lock_guard lk(gw_.mu_);
      delay = gw_.unary_delay_;
    }
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    if (method_.ends_with("/CreateSshSession")) {
      openshell::v1::CreateSshSessionResponse r;
      std::lock_guard lk(gw_.mu_);
      r.set_token("tok-" + std::to_string(++gw_.minted_));
      r.set_sandbox_id("uuid");
      reply = r.SerializeAsString();
    } else if (method_.ends_with("/RevokeSshSession")) {
      {
        std::lock_guard lk(gw_.mu_);
        ++gw_.revoked_;
      }
      if (gw_.gen_ == Generation::k0_1) {
        openshell::v1::g01::RevokeSshSessionResponse r;
        r.set_outcome(openshell::v1::g01::DELETION_OUTCOME_COMPLETED);
        reply = r.SerializeAsString();
      } else {
        openshell::v1::RevokeSshSessionResponse r;
        r.set_revoked(true);
        reply = r.SerializeAsString();
      }
    } else {
      Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, method_));
      return;
    }
    grpc::Slice slice(reply);
    out_ = grpc::ByteBuffer(&slice, 1);
    StartWriteAndFinish(&out_, grpc::WriteOptions(), grpc::Status::OK);
  }
  void OnDone() override { delete this; }

 private:
  FakeGateway& gw_;
  const std::string method_;
  grpc::ByteBuffer in_, out_;
};

// ForwardTcp: read the init, choose a Script, play it on a driver thread
// while the reactions keep reading the client's frames.
class FakeGateway::ForwardReactor final : public grpc::ServerGenericBidiReactor {
 public:
  ForwardReactor(FakeGateway& gw, grpc::GenericCallbackServerContext* ctx) : gw_(gw), ctx_(ctx) {
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    std::unique_lock lk(mu_);
    if (!ok) {
      half_closed_ = true;
      if (have_init_) {
        std::lock_guard g(gw_.mu_);
        gw_.half_closed_[index_] = true;
      }
      cv_.notify_all();
      return;
    }
    std::string bytes = to_string(in_);
    if (!have_init_) {
      have_init_ = true;
      lk.unlock();
      begin(bytes);
    } else {
      const std::string data = gw_.data_of(bytes);
      received_bytes_ += data.size();
      cv_.notify_all();
      std::lock_guard g(gw_.mu_);
      gw_.received_[index_] += data;
      gw_.frame_sizes_[index_].push_back(data.size());
    }
    StartRead(&in_);
  }
  void OnSendInitialMetadataDone(bool) override { signal_done(); }
  void OnCancel() override {
    std::lock_guard lk(mu_);
    cancelled_ = true;
    cv_.notify_all();
  }
  void OnWriteDone(bool) override { signal_done(); }
  void OnDone() override {
    {
      std::lock_guard lk(mu_);
      done_ = true;
      cv_.notify_all();
    }
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return !driving_; });
    lk.unlock();
    delete this;
  }

 private:
  static std::string to_string(const grpc::ByteBuffer& b) {
    std::vector<grpc::Slice> slices;
    (void)b.Dump(&slices);
    std::string s;
    for (const auto& sl : slices) s.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    return s;
  }

  void begin(const std::string& init_bytes) {
    SeenInit seen = gw_.decode_init(init_bytes);
    const auto& md = ctx_->client_metadata();
    if (auto it = md.find("x-osh-tunnel-ext"); it != md.end())
      seen.ext_request.assign(it->second.data(), it->second.size());
    {
      std::lock_guard lk(gw_.mu_);
      seen.call_index = index_ = static_cast<int>(gw_.inits_.size());
      gw_.inits_.push_back(seen);
      gw_.received_.emplace_back();
      gw_.frame_sizes_.emplace_back();
      gw_.half_closed_.push_back(false);
      gw_.drivers_++;
    }
    Script script = gw_.scripter_(seen);
    {
      std::lock_guard lk(mu_);
      driving_ = true;
    }
    std::thread([this, script = std::move(script)] { drive(script); }).detach();
  }

  void drive(const Script& s) {
    if (s.reject) {
      finish(*s.reject);
      return;
    }
    if (s.hang) {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return cancelled_ || done_; });  // the client cancelled
      lk.unlock();
      finish(grpc::Status(grpc::StatusCode::CANCELLED, "hung"));
      return;
    }
    if (!s.confirm_ext.empty()) ctx_->AddInitialMetadata("x-osh-tunnel-ext", s.confirm_ext);
    StartSendInitialMetadata();
    wait_op();
    if (s.wait_for_bytes > 0 || s.half_close_first) {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] {
        return done_ || ((!s.half_close_first || half_closed_) &&
                         (received_bytes_ >= s.wait_for_bytes || half_closed_));
      });
    }
    std::vector<std::string> frames = s.frames;
    if (s.echo) frames.push_back(gw_.received(index_));
    for (const auto& f : frames) {
      if (s.gap.count() > 0) std::this_thread::sleep_for(s.gap);
      out_ = make_buffer(frame_bytes(f));
      StartWrite(&out_);
      if (!wait_op()) break;
    }
    if (s.end_delay.count() > 0) std::this_thread::sleep_for(s.end_delay);
    if (s.wait_for_half_close) {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return half_closed_ || done_; });
    }
    finish(s.end);
  }

  void finish(const grpc::Status& st) {
    FakeGateway& gw = gw_;
    {
      std::lock_guard lk(mu_);
      driving_ = false;
      cv_.notify_all();
    }
    Finish(st);  // `this` may be gone once it returns
    std::lock_guard lk(gw.mu_);
    gw.drivers_--;
    gw.cv_.notify_all();
  }

  bool wait_op() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return op_done_ || done_; });
    op_done_ = false;
    return !done_;
  }
  void signal_done() {
    std::lock_guard lk(mu_);
    op_done_ = true;
    cv_.notify_all();
  }
  static grpc::ByteBuffer make_buffer(const std::string& bytes) {
    grpc::Slice slice(bytes);
    return grpc::ByteBuffer(&slice, 1);
  }

  FakeGateway& gw_;
  grpc::GenericCallbackServerContext* ctx_;
  grpc::ByteBuffer in_, out_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool have_init_ = false, half_closed_ = false, op_done_ = false, done_ = false, driving_ = false;
  bool cancelled_ = false;
  size_t received_bytes_ = 0;
  int index_ = 0;
};

inline grpc::ServerGenericBidiReactor* FakeGateway::Service::CreateReactor(
    grpc::GenericCallbackServerContext* ctx) {
  if (ctx->method().ends_with("/ForwardTcp")) return new ForwardReactor(gw_, ctx);
  return new UnaryReactor(gw_, ctx->method());
}

}  // namespace osh::relay::testing

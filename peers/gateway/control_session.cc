// Theory of operation: a supervisor control session
// =================================================
//
// ConnectSupervisor (protocol §3.1) runs on the gRPC callback API with raw
// ByteBuffer messages, so one gateway speaks one generation's message types
// (0.0: openshell::v1, 0.1: openshell::v1::g01; protocol-0.1 §4) and no
// thread exists per session. One ControlReactor per call forwards its
// reactions to a shared ControlSession (the hub keeps it by shared_ptr).
//
//   read 1     must be hello (else INVALID_ARGUMENT "empty ConnectSupervisor
//              stream" / "first SupervisorMessage must be hello"; bytes that
//              do not parse: INTERNAL). The hub checks it (NOT_FOUND "sandbox
//              not found"); then session_accepted{session_id, 0.0:
//              heartbeat_interval_secs / 0.1: heartbeat_interval Duration} is
//              queued *before* the hub registers the session, so no relay_open
//              can overtake it.
//   reads      relay_open_result -> the hub hands it to its ForwardTcp call;
//              heartbeats are ignored; relay_close and a second hello are
//              logged. The read side ending (the supervisor closed the
//              stream, it broke, or Cancel()) ends the session: no more
//              writes, the hub unregisters it, and the call is finished
//              CANCELLED.
//   writes     one StartWrite at a time from a queue: relay_open messages
//              (SendRelayOpen, from ForwardTcp reactions; never blocks) and a
//              heartbeat every heartbeat_interval (a grpc::Alarm). A failed
//              write closes the session for further sends.
//
// Locking: mu_ guards the reactor pointer, the write side and the finish
// flag. Start*() and Finish() are called with mu_ held (gRPC never runs a
// server reaction inline in them). The hub is always called without mu_, so
// hub -> ForwardCall -> SendRelayOpen cannot deadlock. OnDone clears the
// reactor pointer; nothing touches the call afterwards.
#include "peers/gateway/control_session.h"

#include <utility>

#include "peers/common/log.h"
#include "peers/common/uuid.h"

namespace osh::peers {
namespace {

std::shared_ptr<spdlog::logger> Log() {
  static const auto logger = PeerLogger("mini-gateway");
  return logger;
}

}  // namespace

struct ControlSession::Private {};

/// The ConnectSupervisor reactor: forwards every reaction to its session.
class ControlReactor final : public ControlSessionReactor {
 public:
  explicit ControlReactor(std::shared_ptr<ControlSession> session) : session_(std::move(session)) {}
  void OnReadDone(bool ok) override { session_->OnReadDone(ok); }
  void OnWriteDone(bool ok) override { session_->OnWriteDone(ok); }
  void OnDone() override {
    session_->OnDone();
    delete this;
  }

 private:
  const std::shared_ptr<ControlSession> session_;
};

ControlSessionReactor* NewControlSessionReactor(SessionHub& hub, grpc::CallbackServerContext* ctx) {
  auto session = std::make_shared<ControlSession>(ControlSession::Private{}, hub, ctx);
  auto* reactor = new ControlReactor(session);
  std::lock_guard lock(session->mu_);
  session->reactor_ = reactor;
  session->StartReadLocked();
  return reactor;
}

ControlSession::ControlSession(const Private&, SessionHub& hub, grpc::CallbackServerContext* ctx)
    : hub_(hub), ctx_(ctx) {}

ControlSession::~ControlSession() = default;

bool ControlSession::SendRelayOpen(const openshell::v1::RelayOpen& open) {
  grpc::ByteBuffer msg = EncodeRelayOpen(hub_.protocol(), open);
  std::lock_guard lock(mu_);
  return EnqueueLocked(std::move(msg));
}

void ControlSession::Cancel() {
  std::lock_guard lock(mu_);
  if (reactor_ != nullptr) ctx_->TryCancel();
}

// ---- reactions ----

void ControlSession::OnReadDone(bool ok) {
  if (!accepted_) {
    HandleHello(ok);
  } else if (!ok) {
    EndSession();
  } else {
    HandleMessage();
  }
}

void ControlSession::OnWriteDone(bool ok) {
  std::lock_guard lock(mu_);
  write_in_flight_ = false;
  if (!ok) {
    closed_ = true;  // broken: refuse further sends; the read side ends too
    queue_.clear();
    return;
  }
  if (!finished_) WriteNextLocked();
}

void ControlSession::OnDone() {
  std::lock_guard lock(mu_);
  reactor_ = nullptr;
  closed_ = true;
  queue_.clear();
  heartbeat_.reset();
}

void ControlSession::OnHeartbeatTimer() {
  grpc::ByteBuffer msg = EncodeGatewayHeartbeat(hub_.protocol());
  std::lock_guard lock(mu_);
  if (EnqueueLocked(std::move(msg))) ArmHeartbeatLocked();
}

// ---- the read side ----

void ControlSession::HandleHello(bool ok) {
  grpc::Status status;
  SupervisorEvent hello;
  if (!ok) {
    status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty ConnectSupervisor stream");
  } else if (!DecodeSupervisorMessage(hub_.protocol(), &in_, &hello)) {
    status = grpc::Status(grpc::StatusCode::INTERNAL, "failed to decode SupervisorMessage");
  } else if (hello.kind != SupervisorEvent::Kind::kHello) {
    status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "first SupervisorMessage must be hello");
  } else {
    status = hub_.CheckHello(hello);
  }
  if (!status.ok()) {
    std::lock_guard lock(mu_);
    FinishLocked(status);
    return;
  }
  sandbox_id_ = hello.sandbox_id;
  session_id_ = NewUuidV4();
  grpc::ByteBuffer accepted =
      EncodeSessionAccepted(hub_.protocol(), session_id_, hub_.heartbeat_interval());
  {
    std::lock_guard lock(mu_);
    if (!EnqueueLocked(std::move(accepted))) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "supervisor stream closed"));
      return;
    }
    ArmHeartbeatLocked();
  }
  accepted_ = true;
  auto self = shared_from_this();
  hub_.RegisterSession(self, hello);
  Log()->info("supervisor session {} connected for sandbox {} (instance {}, epoch {}, protocol {})",
              session_id_, sandbox_id_, hello.instance_id, hello.connection_epoch,
              ProtocolName(hub_.protocol()));
  std::lock_guard lock(mu_);
  StartReadLocked();
}

void ControlSession::HandleMessage() {
  SupervisorEvent event;
  if (!DecodeSupervisorMessage(hub_.protocol(), &in_, &event)) {
    Log()->warn("session {}: a SupervisorMessage did not decode; ending the session", session_id_);
    Cancel();
    EndSession();
    return;
  }
  switch (event.kind) {
    case SupervisorEvent::Kind::kRelayOpenResult:
      hub_.OnRelayOpenResult(shared_from_this(), event.result);
      break;
    case SupervisorEvent::Kind::kRelayClose:
      Log()->info("supervisor closed relay {}: {}", event.close.channel_id(), event.close.reason());
      break;
    case SupervisorEvent::Kind::kHello:
      Log()->warn("session {}: ignoring a second hello", session_id_);
      break;
    case SupervisorEvent::Kind::kHeartbeat:
    case SupervisorEvent::Kind::kNone:
      break;
  }
  std::lock_guard lock(mu_);
  StartReadLocked();
}

void ControlSession::EndSession() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    queue_.clear();
    heartbeat_.reset();
  }
  hub_.OnSessionEnded(shared_from_this());
  Log()->info("supervisor session {} for sandbox {} ended", session_id_, sandbox_id_);
  std::lock_guard lock(mu_);
  FinishLocked(grpc::Status::CANCELLED);
}

void ControlSession::StartReadLocked() {
  if (finished_ || reactor_ == nullptr) return;
  in_.Clear();
  reactor_->StartRead(&in_);
}

// ---- the write side (mu_ held) ----

bool ControlSession::EnqueueLocked(grpc::ByteBuffer msg) {
  if (closed_ || finished_ || reactor_ == nullptr) return false;
  queue_.push_back(std::move(msg));
  if (!write_in_flight_) WriteNextLocked();
  return true;
}

void ControlSession::WriteNextLocked() {
  if (queue_.empty() || reactor_ == nullptr) return;
  out_ = std::move(queue_.front());
  queue_.pop_front();
  write_in_flight_ = true;
  reactor_->StartWrite(&out_);
}

void ControlSession::ArmHeartbeatLocked() {
  const gpr_timespec deadline =
      gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                   gpr_time_from_seconds(hub_.heartbeat_interval().count(), GPR_TIMESPAN));
  heartbeat_ = std::make_unique<grpc::Alarm>();  // destroying the previous one cancels it
  heartbeat_->Set(deadline, [weak = weak_from_this()](bool fired) {
    if (!fired) return;
    if (auto session = weak.lock()) session->OnHeartbeatTimer();
  });
}

void ControlSession::FinishLocked(const grpc::Status& status) {
  if (finished_ || reactor_ == nullptr) return;
  finished_ = true;
  closed_ = true;
  queue_.clear();
  heartbeat_.reset();
  reactor_->Finish(status);
}

}  // namespace osh::peers

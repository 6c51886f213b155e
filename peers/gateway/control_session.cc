// Theory of operation: a supervisor control session's writes
// =========================================================
//
// ConnectSupervisor stays on the gRPC sync API (sessions are few: one per
// sandbox). Its handler thread reads; gRPC allows one Read and one Write in
// flight at a time, so all writes go through one writer thread per session:
//   - session_accepted is written by the handler itself (WriteNow) before the
//     session is registered and before the writer starts, so no relay_open
//     can overtake it;
//   - relay_open messages are queued by ForwardTcp reactions (Send), which
//     must never block: the queue is unbounded but holds at most one message
//     per admitted ForwardTcp stream (each holds a connection slot);
//   - a heartbeat goes out every heartbeat_interval (15 s by default).
// A failed write (the stream is broken or cancelled) closes the session for
// Send(): later relay opens fail at once with "supervisor session
// disconnected", and relays whose relay_open was queued but never written
// are failed by the handler when its read side ends (it is broken too).
// Close() runs on the handler thread after it cancelled the call, so a write
// blocked on a supervisor that stopped reading returns and the join ends.
#include "peers/gateway/control_session.h"

#include <utility>

namespace osh::peers {

namespace v1 = openshell::v1;

ControlSession::ControlSession(std::string sandbox_id, std::string session_id,
                               grpc::ServerContext* ctx, Stream* stream,
                               std::chrono::seconds heartbeat_interval)
    : sandbox_id_(std::move(sandbox_id)),
      session_id_(std::move(session_id)),
      stream_(stream),
      heartbeat_interval_(heartbeat_interval),
      ctx_(ctx) {}

ControlSession::~ControlSession() { Close(); }

bool ControlSession::WriteNow(const v1::GatewayMessage& msg) { return stream_->Write(msg); }

void ControlSession::StartWriter() { writer_ = std::thread([this] { WriterLoop(); }); }

bool ControlSession::Send(v1::GatewayMessage msg) {
  {
    std::lock_guard lock(mu_);
    if (closed_) return false;
    queue_.push_back(std::move(msg));
  }
  cv_.notify_one();
  return true;
}

void ControlSession::Cancel() {
  std::lock_guard lock(life_mu_);
  if (ctx_ != nullptr) ctx_->TryCancel();
}

void ControlSession::Close() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

void ControlSession::Detach() {
  std::lock_guard lock(life_mu_);
  ctx_ = nullptr;
}

void ControlSession::WriterLoop() {
  auto next_heartbeat = std::chrono::steady_clock::now() + heartbeat_interval_;
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait_until(lock, next_heartbeat, [&] { return closed_ || !queue_.empty(); });
    if (closed_) return;
    v1::GatewayMessage msg;
    if (!queue_.empty()) {
      msg = std::move(queue_.front());
      queue_.pop_front();
    } else if (std::chrono::steady_clock::now() >= next_heartbeat) {
      msg.mutable_heartbeat();
      next_heartbeat += heartbeat_interval_;
    } else {
      continue;  // spurious wake-up
    }
    lock.unlock();
    const bool ok = stream_->Write(msg);
    lock.lock();
    if (!ok) {
      closed_ = true;  // broken: refuse further sends; the handler fails waiting relays
      queue_.clear();
      return;
    }
  }
}

}  // namespace osh::peers

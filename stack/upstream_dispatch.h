// Upstream calls off the confined threads (issue 14.6): with
// StackConfig::confine set, the stack reader and lwIP's tcpip thread run
// without capabilities and under a seccomp allow-list
// (common/thread_sandbox.h). The product's Upstream is gRPC, which does
// socket I/O, DNS resolution and connects on the calling thread, and starts
// threads of its own there (they would inherit the filter). So Connections
// talk to an UpstreamDispatch, which queues each call for a thread of its
// own (unconfined, an osh::EventLoop) that makes it on the real Upstream.
#pragma once

#include <string>

#include "common/event_loop.h"
#include "stack/upstream.h"

namespace osh::stack {

/// An Upstream that runs every call on its own thread, in call order.
/// Calls: any thread, never block (a closure is queued). The target's
/// calls are made WITHOUT the lwIP core lock; the target must tolerate that
/// (the relay does; upstream.h's "core lock held" is then not given).
class UpstreamDispatch final : public Upstream {
 public:
  /// @target must outlive this object.
  explicit UpstreamDispatch(Upstream& target) : target_(target) {}
  ~UpstreamDispatch() override { finish(); }
  UpstreamDispatch(const UpstreamDispatch&) = delete;
  UpstreamDispatch& operator=(const UpstreamDispatch&) = delete;

  /// Starts the dispatch thread. Thread: the owner's (NOT a confined one:
  /// the new thread inherits its creator's capabilities and filter).
  void start() {
    loop_.start();
    started_ = true;
  }
  /// Makes every call queued so far, then stops the thread; later calls are
  /// dropped. Idempotent. Thread: any but the dispatch thread.
  void finish();

  void open(const OpenRequest& req) override {
    loop_.post([this, req] { target_.open(req); });
  }
  void send(ConnId id, std::string bytes) override {
    loop_.post([this, id, b = std::move(bytes)]() mutable { target_.send(id, std::move(b)); });
  }
  void read_more(ConnId id) override {
    loop_.post([this, id] { target_.read_more(id); });
  }
  void close_write(ConnId id) override {
    loop_.post([this, id] { target_.close_write(id); });
  }
  void abort(ConnId id) override {
    loop_.post([this, id] { target_.abort(id); });
  }

 private:
  Upstream& target_;
  EventLoop loop_;
  bool started_ = false;  // owner's thread
};

}  // namespace osh::stack

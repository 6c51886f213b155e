// Upstream calls off the confined threads (issue 14.6): with
// StackConfig::confine set, the stack reader and lwIP's tcpip thread run
// without capabilities and under a seccomp allow-list
// (common/thread_sandbox.h). The product's Upstream is gRPC, which does
// socket I/O, DNS resolution and connects on the calling thread, and starts
// threads of its own there (they would inherit the filter). So Connections
// talk to an UpstreamDispatch, which queues each call for a thread of its
// own (unconfined) that makes it on the real Upstream.
//
// The hop's cost (issue 16; docs/BENCHMARKS.md "The upstream dispatch
// hop"): each call used to be a closure on an osh::EventLoop (an allocation
// for a send, an eventfd write, epoll_wait and an eventfd read per wake-up).
// Now:
//   - the queue is a vector of plain Call records under one mutex, and the
//     thread sleeps on a condition variable: a wake-up is one futex wake
//     (only when the thread sleeps), and the thread takes every call queued
//     meanwhile in one batch;
//   - send() skips the hop when nothing is queued or running here and the
//     target can queue the bytes behind a write in flight without running
//     transport code (Upstream::try_send_queued; the relay's frame queue,
//     drained by gRPC's own threads). Nothing queued or running means every
//     earlier call was made, so per-connection order holds;
//   - read_more() skips it the same way when the target needs no transport
//     call for it (Upstream::try_read_more_in_place: the relay then has a
//     read in flight, or a frame in delivery that starts the next read on
//     gRPC's thread): one hop fewer per frame downloaded and per response
//     of a request/response exchange.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "stack/upstream.h"

namespace osh::stack {

/// An Upstream that makes every call on its own thread, in call order,
/// except sends the target queues itself (try_send_queued, above) and
/// read_mores it records in place (try_read_more_in_place).
/// Calls: any thread (the stack's callers hold the lwIP core lock, which
/// serialises them), never block beyond a short mutex hold. The target's
/// calls on the dispatch thread are made WITHOUT the core lock (the relay
/// tolerates that; upstream.h's "core lock held" is then not given);
/// try_send_queued and try_read_more_in_place are made on the caller's
/// thread under this object's mutex.
class UpstreamDispatch final : public Upstream {
 public:
  /// @target must outlive this object.
  explicit UpstreamDispatch(Upstream& target) : target_(target) {}
  ~UpstreamDispatch() override { finish(); }
  UpstreamDispatch(const UpstreamDispatch&) = delete;
  UpstreamDispatch& operator=(const UpstreamDispatch&) = delete;

  /// Starts the dispatch thread ("osh-dispatch"). Thread: the owner's (NOT a confined one:
  /// the new thread inherits its creator's capabilities and filter).
  /// @throws std::system_error if the thread cannot be created.
  void start();
  /// Makes every call queued so far (if started; else drops them), then
  /// stops the thread; later calls are dropped, sends included. Idempotent.
  /// Thread: any but the dispatch thread.
  void finish();

  void open(const OpenRequest& req) override;
  /// Straight into the target's queue when possible (see the file comment),
  /// else queued for the dispatch thread like every other call.
  void send(ConnId id, std::string bytes) override;
  /// In place when possible (see the file comment), else queued.
  void read_more(ConnId id) override;
  void close_write(ConnId id) override;
  void abort(ConnId id) override;

  /// What the dispatch did so far (for tests and benchmarks).
  struct Stats {
    uint64_t queued = 0;        ///< calls queued for the dispatch thread
    uint64_t wakeups = 0;       ///< times the sleeping thread was woken for them
    uint64_t direct_sends = 0;  ///< sends the target queued itself (no hop)
    uint64_t direct_read_mores = 0;  ///< read_mores the target recorded in place (no hop)
  };
  Stats stats() const;

 private:
  enum class Op : uint8_t { kOpen, kSend, kReadMore, kCloseWrite, kAbort };
  struct Call {
    Op op;
    ConnId id;
    std::string bytes;                  // kSend
    std::unique_ptr<OpenRequest> open;  // kOpen
  };

  void enqueue(Call call);
  // The target's own path for a call (try_send_queued,
  // try_read_more_in_place), taken only when nothing is queued or being made
  // here; counts it in @counter. False: enqueue() the call.
  template <class Try>
  bool made_in_place(Try&& try_in_place, uint64_t Stats::*counter);
  void run();                 // the dispatch thread
  void make(Call& call);      // one call on the target

  Upstream& target_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Call> queue_;   // mu_
  size_t outstanding_ = 0;    // mu_: calls queued or in the batch being made
  bool sleeping_ = false;     // mu_: the thread waits on cv_ and was not notified yet
  bool stopping_ = false;     // mu_: finish() began; calls are dropped
  Stats stats_;               // mu_
  std::thread thread_;        // owner's thread (start/finish)
};

}  // namespace osh::stack

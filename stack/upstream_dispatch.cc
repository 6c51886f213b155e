#include "stack/upstream_dispatch.h"

#include <pthread.h>

#include <utility>

namespace osh::stack {

void UpstreamDispatch::start() {
  thread_ = std::thread([this] {
    (void)pthread_setname_np(pthread_self(), "osh-dispatch");  // for profiles and ps; cosmetic
    run();
  });
}

void UpstreamDispatch::finish() {
  std::vector<Call> dropped;  // destroyed after mu_ is released
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
    if (!thread_.joinable()) dropped.swap(queue_);  // never started: nobody makes them
  }
  cv_.notify_all();
  // The thread makes what is queued, then returns (run()).
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void UpstreamDispatch::enqueue(Call call) {
  bool wake = false;
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;  // @call is destroyed on return, unmade
    queue_.push_back(std::move(call));
    ++outstanding_;
    ++stats_.queued;
    wake = std::exchange(sleeping_, false);
    if (wake) ++stats_.wakeups;
  }
  if (wake) cv_.notify_one();
}

void UpstreamDispatch::run() {
  std::vector<Call> batch;
  for (;;) {
    {
      std::unique_lock lk(mu_);
      outstanding_ -= batch.size();  // the previous batch is made
      batch.clear();
      while (queue_.empty() && !stopping_) {
        sleeping_ = true;
        cv_.wait(lk);
      }
      sleeping_ = false;
      if (queue_.empty()) return;  // stopping, and everything queued was made
      batch.swap(queue_);
    }
    for (Call& c : batch) make(c);
  }
}

void UpstreamDispatch::make(Call& c) {
  switch (c.op) {
    case Op::kOpen: target_.open(*c.open); return;
    case Op::kSend: target_.send(c.id, std::move(c.bytes)); return;
    case Op::kReadMore: target_.read_more(c.id); return;
    case Op::kCloseWrite: target_.close_write(c.id); return;
    case Op::kAbort: target_.abort(c.id); return;
  }
}

void UpstreamDispatch::open(const OpenRequest& req) {
  enqueue(Call{Op::kOpen, req.id, {}, std::make_unique<OpenRequest>(req)});
}

template <class Try>
bool UpstreamDispatch::made_in_place(Try&& try_in_place, uint64_t Stats::*counter) {
  std::lock_guard lk(mu_);
  // Nothing queued or being made: every earlier call for the connection was
  // made, so the target's own path cannot overtake one. Under mu_, so no
  // other call can be queued in between. Stopping: enqueue() drops it.
  if (stopping_ || outstanding_ != 0 || !try_in_place()) return false;
  ++(stats_.*counter);
  return true;
}

void UpstreamDispatch::send(ConnId id, std::string bytes) {
  if (made_in_place([&] { return target_.try_send_queued(id, bytes); }, &Stats::direct_sends)) return;
  enqueue(Call{Op::kSend, id, std::move(bytes), nullptr});
}

void UpstreamDispatch::read_more(ConnId id) {
  if (made_in_place([&] { return target_.try_read_more_in_place(id); }, &Stats::direct_read_mores)) return;
  enqueue(Call{Op::kReadMore, id, {}, nullptr});
}
void UpstreamDispatch::close_write(ConnId id) { enqueue(Call{Op::kCloseWrite, id, {}, nullptr}); }
void UpstreamDispatch::abort(ConnId id) { enqueue(Call{Op::kAbort, id, {}, nullptr}); }

UpstreamDispatch::Stats UpstreamDispatch::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

}  // namespace osh::stack

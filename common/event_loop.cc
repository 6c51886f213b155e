// Theory of operation: the event loop
// ===================================
//
// One thread blocks in epoll_wait() on the fds its owners registered and on
// one eventfd; the timeout is the time to the earliest timer (rounded up to
// whole milliseconds, so a timer never fires early), or infinite without
// timers. Level-triggered throughout: an owner expresses what it waits for
// by its interest mask and parks an fd (mask 0: out of the epoll set) when
// it waits for nothing, so a socket that stays readable, or in error, cannot
// spin the loop while its owner waits for something else.
//
// Per wake-up, in this order:
//   1. every ready fd is dispatched, in the order epoll returned them. The
//      epoll data is a registration key, never reused, not the fd: an event
//      for an fd that an earlier callback of the same batch unwatched (and
//      perhaps closed, and its number reused by a new watch) finds no
//      registration and is dropped;
//   2. due timers run in deadline order (a periodic timer is re-armed from
//      its previous deadline, skipping missed periods; it is not run twice
//      to catch up);
//   3. if the eventfd fired, the posted tasks run in FIFO order. Tasks run
//      after the fd events of the same wake-up, so a task that destroys an
//      object cannot leave a stale event behind for it in the batch.
//
// post() appends under mu_ and writes the eventfd only if no wake-up is
// pending yet (at most one write per batch of tasks). stop() sets
// stopping_ and wakes the thread; run() returns after the callback, timer or
// task that is running, and tasks still queued are destroyed without running.
//
// Origin: the mini-supervisor's loop (peers/supervisor, token dispatch),
// generalised with per-fd callbacks and timers for the stack reader.

#include "common/event_loop.h"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace osh {
namespace {

/// Epoll key of the wake-up eventfd (registration keys start at 1).
constexpr uint64_t kWakeKey = 0;
/// Events fetched per epoll_wait() call.
constexpr int kMaxEvents = 256;

void wake_up(int fd) {
  const uint64_t one = 1;
  // Only EAGAIN can fail here (counter at its maximum), and then a wake-up
  // is pending anyway.
  while (::write(fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

}  // namespace

EventLoop::EventLoop()
    : epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)), wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!epoll_fd_.valid()) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  if (!wake_fd_.valid()) throw std::system_error(errno, std::generic_category(), "eventfd");
  if (epoll_set(EPOLL_CTL_ADD, wake_fd_.get(), EPOLLIN, kWakeKey) != 0)
    throw std::system_error(errno, std::generic_category(), "epoll_ctl(eventfd)");
}

EventLoop::~EventLoop() { stop(); }

void EventLoop::start(Task at_start) {
  std::lock_guard join_lock(join_mu_);
  {
    std::lock_guard lock(mu_);
    if (thread_.joinable() || stopping_ || running_)
      throw std::runtime_error("event loop already started or stopped");
  }
  thread_ = std::thread([this, at_start = std::move(at_start)] {
    if (at_start) at_start();
    run();
  });
}

void EventLoop::stop() {
  std::lock_guard join_lock(join_mu_);
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    stop_requested_ = true;
  }
  wake_up(wake_fd_.get());
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
  std::vector<Task> dropped;
  {
    std::lock_guard lock(mu_);
    if (!running_) dropped.swap(tasks_);  // destroyed here, unrun
  }
}

void EventLoop::post(Task task) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;  // @task is destroyed on return, unrun
    tasks_.push_back(std::move(task));
    wake = !wake_pending_;
    wake_pending_ = true;
  }
  if (wake) wake_up(wake_fd_.get());
}

bool EventLoop::in_loop_thread() const {
  std::lock_guard lock(mu_);
  return running_ && loop_thread_ == std::this_thread::get_id();
}

int EventLoop::epoll_set(int op, int fd, uint32_t events, uint64_t key) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = key;
  return ::epoll_ctl(epoll_fd_.get(), op, fd, &ev) == 0 ? 0 : errno;
}

int EventLoop::watch(int fd, uint32_t events, FdHandler handler) {
  if (keys_.contains(fd)) return EEXIST;
  const uint64_t key = next_key_++;
  if (events != 0) {
    if (const int err = epoll_set(EPOLL_CTL_ADD, fd, events, key); err != 0) return err;
  }
  watches_.emplace(key, Watch{fd, events, std::make_shared<FdHandler>(std::move(handler))});
  keys_.emplace(fd, key);
  return 0;
}

int EventLoop::modify(int fd, uint32_t events) {
  const auto k = keys_.find(fd);
  if (k == keys_.end()) return ENOENT;
  Watch& w = watches_.at(k->second);
  if (w.events == events) return 0;
  const int op = w.events == 0 ? EPOLL_CTL_ADD : events == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
  if (const int err = epoll_set(op, fd, events, k->second); err != 0) return err;
  w.events = events;
  return 0;
}

void EventLoop::unwatch(int fd) {
  const auto k = keys_.find(fd);
  if (k == keys_.end()) return;
  const auto w = watches_.find(k->second);
  // An fd closed before unwatch() has left the epoll set already (EBADF).
  if (w->second.events != 0) (void)epoll_set(EPOLL_CTL_DEL, fd, 0, k->second);
  watches_.erase(w);
  keys_.erase(k);
}

EventLoop::TimerId EventLoop::add_timer(Clock::duration delay, Task task, Clock::duration period) {
  const TimerId id = next_timer_++;
  const Clock::time_point due = Clock::now() + delay;
  timers_.emplace(TimerKey{due, id}, Timer{std::move(task), period});
  timer_deadlines_.emplace(id, due);
  return id;
}

bool EventLoop::cancel_timer(TimerId id) {
  const auto it = timer_deadlines_.find(id);
  if (it == timer_deadlines_.end()) return false;
  timers_.erase(TimerKey{it->second, id});
  timer_deadlines_.erase(it);
  return true;
}

int EventLoop::next_timeout_ms() const {
  if (timers_.empty()) return -1;
  const auto left = timers_.begin()->first.first - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return static_cast<int>(std::min<int64_t>(ms, 24 * 3600 * 1000));
}

void EventLoop::run_timers() {
  const Clock::time_point now = Clock::now();
  while (!stop_requested_.load(std::memory_order_relaxed) && !timers_.empty() &&
         timers_.begin()->first.first <= now) {
    auto node = timers_.extract(timers_.begin());
    const TimerId id = node.key().second;
    Timer& t = node.mapped();
    if (t.period > Clock::duration::zero()) {
      // Re-armed before it runs, so the task may cancel it.
      Clock::time_point due = node.key().first + t.period;
      if (due <= now) due = now + t.period;
      Task task = t.task;  // a copy runs: the stored one stays armed
      timer_deadlines_[id] = due;
      node.key() = TimerKey{due, id};
      timers_.insert(std::move(node));
      task();
    } else {
      timer_deadlines_.erase(id);
      t.task();
    }
  }
}

void EventLoop::run_tasks() {
  uint64_t count;
  while (::read(wake_fd_.get(), &count, sizeof count) < 0 && errno == EINTR) {
  }
  std::vector<Task> batch;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    batch.swap(tasks_);
    wake_pending_ = false;
  }
  for (auto& task : batch) {
    if (stop_requested_.load(std::memory_order_relaxed)) return;  // the rest: destroyed unrun
    task();
  }
}

void EventLoop::run() {
  {
    std::lock_guard lock(mu_);
    if (running_) throw std::runtime_error("event loop already running");
    running_ = true;
    loop_thread_ = std::this_thread::get_id();
  }
  std::array<epoll_event, kMaxEvents> events;
  const auto stopping = [this] { return stop_requested_.load(std::memory_order_relaxed); };
  while (!stopping()) {
    const int n = ::epoll_wait(epoll_fd_.get(), events.data(), kMaxEvents, next_timeout_ms());
    if (n < 0) {
      if (errno == EINTR) continue;
      // EBADF/EFAULT/EINVAL: the epoll fd is broken, a programming error.
      spdlog::critical("event loop: epoll_wait failed: {}", std::strerror(errno));
      std::abort();
    }
    bool wake = false;
    for (int i = 0; i < n; ++i) {
      const uint64_t key = events[i].data.u64;
      if (key == kWakeKey) {
        wake = true;
        continue;
      }
      const auto w = watches_.find(key);
      if (w == watches_.end()) continue;  // unwatched by an earlier callback
      const std::shared_ptr<FdHandler> handler = w->second.handler;
      (*handler)(events[i].events);
      if (stopping()) break;
    }
    if (stopping()) break;
    run_timers();
    if (wake) run_tasks();
  }
  std::vector<Task> dropped;
  std::lock_guard lock(mu_);
  running_ = false;
  dropped.swap(tasks_);  // destroyed unrun (after mu_ is released: declared first)
}

}  // namespace osh

// Theory of operation: the mini-supervisor's event loop
// =====================================================
//
// One thread blocks in epoll_wait() (no timeout: nothing here is timed) on
// the sockets its owner registered and on one eventfd. Level-triggered
// throughout: the owner expresses what it waits for by its interest mask
// (Watch) and drops the socket from the set when it waits for nothing, so a
// socket that stays readable, or in error, cannot spin the loop while its
// owner waits for something else (e.g. a gRPC write to complete).
//
// Per wake-up: every ready socket is dispatched by token, in the order
// epoll returned them; then, if the eventfd fired, the posted tasks run in
// FIFO order. Tasks run after the socket events of the same wake-up, so a
// task that destroys an object cannot leave a stale event behind for it in
// the batch being processed (and the owner's token lookup ignores events
// for tokens it no longer knows anyway).
//
// Post() appends under mu_ and writes the eventfd only if no wake-up is
// pending yet (at most one write per batch of tasks). Stop() sets
// stopping_, wakes the thread and joins it; tasks still queued are
// destroyed on the stopping thread without running.

#include "peers/supervisor/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <system_error>

#include "peers/common/log.h"
#include "peers/common/socket.h"

namespace osh::peers {
namespace {

/// Epoll token of the wake-up eventfd (owners' tokens are never 0).
constexpr uint64_t kWakeToken = 0;
/// Events fetched per epoll_wait() call.
constexpr int kMaxEvents = 256;

void WakeUp(int fd) {
  const uint64_t one = 1;
  // Only EAGAIN can fail here (counter at its maximum), and then a wake-up
  // is pending anyway.
  while (::write(fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

}  // namespace

EventLoop::EventLoop(Dispatch dispatch)
    : dispatch_(std::move(dispatch)),
      epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!epoll_fd_.valid()) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  if (!wake_fd_.valid()) throw std::system_error(errno, std::generic_category(), "eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeToken;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &ev) != 0) {
    throw std::system_error(errno, std::generic_category(), "epoll_ctl(eventfd)");
  }
}

EventLoop::~EventLoop() { Stop(); }

void EventLoop::Start() {
  std::lock_guard join_lock(join_mu_);
  {
    std::lock_guard lock(mu_);
    if (thread_.joinable() || stopping_) throw std::runtime_error("event loop already started or stopped");
  }
  thread_ = std::thread([this] { Run(); });
}

void EventLoop::Stop() {
  std::lock_guard join_lock(join_mu_);
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  WakeUp(wake_fd_.get());
  if (thread_.joinable()) thread_.join();
  std::vector<Task> dropped;
  {
    std::lock_guard lock(mu_);
    dropped.swap(tasks_);
  }
}

void EventLoop::Post(Task task) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;  // @task is destroyed on return, unrun
    tasks_.push_back(std::move(task));
    wake = !wake_pending_;
    wake_pending_ = true;
  }
  if (wake) WakeUp(wake_fd_.get());
}

int EventLoop::Watch(int fd, uint64_t token, uint32_t old_events, uint32_t new_events) {
  if (old_events == new_events) return 0;
  epoll_event ev{};
  ev.events = new_events;
  ev.data.u64 = token;
  const int op = old_events == 0 ? EPOLL_CTL_ADD : new_events == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
  return ::epoll_ctl(epoll_fd_.get(), op, fd, &ev) == 0 ? 0 : errno;
}

void EventLoop::Run() {
  std::array<epoll_event, kMaxEvents> events;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    const int n = ::epoll_wait(epoll_fd_.get(), events.data(), kMaxEvents, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      // EBADF/EFAULT/EINVAL: the epoll fd is broken, a programming error.
      PeerLogger("mini-supervisor")->critical("epoll_wait failed: {}", OsErrorText(errno));
      std::abort();
    }
    bool wake = false;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == kWakeToken) {
        wake = true;
      } else {
        dispatch_(events[i].data.u64, events[i].events);
      }
    }
    if (wake) RunTasks();
  }
}

void EventLoop::RunTasks() {
  uint64_t count;
  while (::read(wake_fd_.get(), &count, sizeof count) < 0 && errno == EINTR) {
  }
  std::vector<Task> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(tasks_);
    wake_pending_ = false;
  }
  for (auto& task : batch) task();
}

}  // namespace osh::peers

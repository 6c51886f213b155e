// One epoll thread for the mini-supervisor: socket readiness plus a queue of
// posted tasks (see event_loop.cc for the theory of operation).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "common/scoped_fd.h"

namespace osh::peers {

/// A single-threaded epoll loop. Sockets are registered under a caller-chosen
/// 64-bit token (never 0); readiness is reported to the dispatch function with
/// that token, so the owner can look the token up and ignore events for
/// objects it has already destroyed. Tasks posted from any thread run on the
/// loop thread in FIFO order.
///
/// Lifecycle: construct, Start(), ..., Stop() (the destructor stops too).
/// Not copyable or movable.
class EventLoop {
 public:
  /// Called on the loop thread for every ready socket: @token as given to
  /// Watch(), @events the epoll bits (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP).
  using Dispatch = std::function<void(uint64_t token, uint32_t events)>;
  /// A unit of work for the loop thread.
  using Task = std::function<void()>;

  /// EventLoop() - creates the epoll instance and its wake-up eventfd.
  /// @dispatch: the readiness callback (see Dispatch).
  /// @throws std::system_error if epoll_create1() or eventfd() fails.
  explicit EventLoop(Dispatch dispatch);
  /// Calls Stop().
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  /// Start() - starts the loop thread. @throws std::runtime_error if already
  /// started. Thread: any.
  void Start();

  /// Stop() - ends the loop thread after its current iteration and joins it.
  /// Tasks not yet run are destroyed without running, here. Idempotent.
  /// Thread: any except the loop thread.
  void Stop();

  /// Post() - queues @task for the loop thread (FIFO). After Stop() the task
  /// is destroyed without running. Thread: any; never blocks on the loop.
  void Post(Task task);

  /// Watch() - changes the epoll interest of socket @fd from @old_events to
  /// @new_events (each a mask of EPOLLIN/EPOLLOUT; 0 = not registered):
  /// EPOLL_CTL_ADD, _MOD or _DEL as needed, nothing if they are equal.
  /// Sockets without interest are removed rather than kept with an empty
  /// mask, because EPOLLERR/EPOLLHUP are always reported and, level-triggered,
  /// would wake the loop again and again while the owner waits for something
  /// else. @token: non-zero, passed back to the dispatch function.
  /// Return: 0, or the errno of the failed epoll_ctl() (the registration is
  /// then unchanged, i.e. still @old_events). Thread: the loop thread.
  int Watch(int fd, uint64_t token, uint32_t old_events, uint32_t new_events);

 private:
  void Run();
  void RunTasks();

  Dispatch dispatch_;
  ScopedFd epoll_fd_;
  ScopedFd wake_fd_;  // eventfd: "tasks are queued" or "stop"
  std::thread thread_;
  std::mutex join_mu_;  // serializes Start() and Stop()

  std::mutex mu_;
  std::vector<Task> tasks_;   // mu_
  bool wake_pending_ = false; // mu_: the eventfd was written and not yet drained
  bool stopping_ = false;     // mu_
};

}  // namespace osh::peers

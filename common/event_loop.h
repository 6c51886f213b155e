// One epoll event loop for every single-threaded component of the project:
// fd readiness callbacks, closures posted from any thread, and timers
// (see event_loop.cc for the theory of operation).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/scoped_fd.h"

namespace osh {

/// A single-threaded, level-triggered epoll loop.
///
/// - fds: watch() registers a callback per fd with an interest mask
///   (EPOLLIN/EPOLLOUT); it is called on the loop thread with the ready
///   epoll bits (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP). modify() changes the
///   mask; a mask of 0 takes the fd out of the epoll set but keeps the
///   callback (EPOLLERR/EPOLLHUP are always reported and, level-triggered,
///   would otherwise spin the loop while the owner waits for something
///   else). unwatch() forgets the fd; call it before closing the fd. A
///   callback may watch, modify or unwatch any fd, itself included: an event
///   already fetched for an fd unwatched meanwhile is not delivered.
/// - post(): closures from any thread, run on the loop thread in FIFO order.
/// - timers: add_timer() runs a closure once after a delay, or periodically;
///   cancel_timer() stops it. steady_clock, millisecond resolution (epoll).
///
/// Lifecycle: construct; register fds/timers (any thread while the loop is
/// not running); then either run() on a thread of the caller's, or start()
/// for a thread of the loop's own; stop() from any thread. Not copyable or
/// movable.
class EventLoop {
 public:
  using Task = std::function<void()>;
  /// Called on the loop thread with the ready epoll bits of the fd.
  using FdHandler = std::function<void(uint32_t events)>;
  using Clock = std::chrono::steady_clock;
  /// Identifies a timer; never 0, never reused by one loop.
  using TimerId = uint64_t;

  /// EventLoop() - creates the epoll instance and its wake-up eventfd.
  /// @throws std::system_error if epoll_create1() or eventfd() fails.
  EventLoop();
  /// Calls stop() (joins the loop's own thread if start() made one).
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  /// run() - runs the loop on the calling thread until stop(). Thread: one
  /// at a time; not while start()'s thread runs.
  void run();

  /// start() - runs the loop on a new thread of its own; @at_start (if set)
  /// runs first on that thread, before the loop looks at any fd (e.g.
  /// confine_this_thread(), common/thread_sandbox.h).
  /// @throws std::runtime_error if started or stopped before.
  void start(Task at_start = {});

  /// stop() - ends the loop after its current callback and, from any thread
  /// but the loop's, joins the thread start() made. Posted closures not yet
  /// run are destroyed without running (here, or at the end of run()); later
  /// post()s are dropped. Idempotent; a stopped loop cannot run again.
  /// Thread: any.
  void stop();

  /// post() - queues @task for the loop thread (FIFO). After stop() the task
  /// is destroyed without running. Thread: any; never blocks on the loop.
  void post(Task task);

  /// True on the thread currently inside run().
  bool in_loop_thread() const;

  /// watch() - registers @fd with interest @events (EPOLLIN|EPOLLOUT, or 0
  /// for registered-but-parked) and its @handler. Not owned: the caller
  /// unwatch()es before closing it.
  /// Return: 0, or the errno of the failed epoll_ctl() (EEXIST if @fd is
  /// already registered); nothing is registered then.
  /// Thread: the loop thread, or any while the loop is not running.
  int watch(int fd, uint32_t events, FdHandler handler);

  /// modify() - changes the interest of a watched @fd (EPOLL_CTL_ADD, _MOD
  /// or _DEL as needed; nothing if unchanged). Return: 0, ENOENT if @fd is
  /// not watched, or the errno of the failed epoll_ctl() (the interest is
  /// then unchanged). Thread: as watch().
  int modify(int fd, uint32_t events);

  /// unwatch() - forgets @fd and its handler (no-op if not watched). Events
  /// of the current wake-up for it are not delivered. Thread: as watch().
  void unwatch(int fd);

  /// add_timer() - runs @task on the loop thread once @delay has passed,
  /// then every @period if it is non-zero (until cancelled). Due timers run
  /// in deadline order, after the fd callbacks of the same wake-up.
  /// Return: the id for cancel_timer(). Thread: as watch().
  TimerId add_timer(Clock::duration delay, Task task, Clock::duration period = Clock::duration::zero());

  /// cancel_timer() - the timer will not run again (safe from its own task).
  /// Return: false if @id is unknown (ran once, or cancelled already).
  /// Thread: as watch().
  bool cancel_timer(TimerId id);

 private:
  struct Watch {
    int fd = -1;
    uint32_t events = 0;  // current interest; 0: not in the epoll set
    std::shared_ptr<FdHandler> handler;  // shared: survives its own unwatch()
  };
  struct Timer {
    Task task;
    Clock::duration period;
  };
  using TimerKey = std::pair<Clock::time_point, TimerId>;

  int epoll_set(int op, int fd, uint32_t events, uint64_t key);
  int next_timeout_ms() const;
  void run_timers();
  void run_tasks();

  ScopedFd epoll_fd_;
  ScopedFd wake_fd_;  // eventfd: "tasks are queued" or "stop"

  // Loop thread only (or setup before the loop runs).
  std::unordered_map<uint64_t, Watch> watches_;  // by registration key (epoll data)
  std::unordered_map<int, uint64_t> keys_;       // fd -> registration key
  uint64_t next_key_ = 1;                        // 0 is the eventfd
  std::map<TimerKey, Timer> timers_;
  std::unordered_map<TimerId, Clock::time_point> timer_deadlines_;
  TimerId next_timer_ = 1;

  std::mutex join_mu_;  // serialises start() and stop()
  std::thread thread_;

  mutable std::mutex mu_;
  std::vector<Task> tasks_;        // mu_
  bool wake_pending_ = false;      // mu_: the eventfd was written and not yet drained
  bool stopping_ = false;          // mu_
  std::atomic<bool> stop_requested_{false};  // stopping_, readable without mu_
  bool running_ = false;           // mu_: inside run()
  std::thread::id loop_thread_{};  // mu_
};

}  // namespace osh

// Memory given back on idle (issue 15.2): glibc keeps freed heap memory in
// its arenas, so after a load (many connections' buffers) ends the process
// keeps its peak RSS. Returning memory on every large free is not the answer
// (it costs ~4 s of CPU per GiB moved when buffers are freed and faulted in
// again per frame), so the trimmer calls malloc_trim(0) once a busy period
// has been followed by an idle one: see idle_trim.cc.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

namespace osh {

/// IdleTrimPolicy - when to trim, from periodic samples of the process's CPU
/// time and RSS (pure logic; IdleTrimmer feeds it). Trims when all hold:
///   - idle: over the last Params::idle_for, CPU time was below
///     Params::idle_cpu_share of the wall time;
///   - something happened since the last trim: at least Params::min_activity
///     of CPU time (so an idle process is trimmed once, not every sample),
///     or Params::retrim_every has passed since it (memory freed after a
///     trim with next to no CPU - streams torn down late - stays in glibc's
///     arenas, since the thresholds of malloc_tuning.h keep it there);
///   - RSS is at least Params::rss_slack above the lowest RSS seen (nothing
///     worth returning otherwise).
/// Not thread-safe: one caller (IdleTrimmer's thread, or a test).
class IdleTrimPolicy {
 public:
  using Clock = std::chrono::steady_clock;
  struct Params {
    std::chrono::milliseconds idle_for{3000};
    double idle_cpu_share = 0.02;               ///< CPU s per wall s below which the process is idle
    std::chrono::microseconds min_activity{20000};
    std::chrono::milliseconds retrim_every{10000};
    size_t rss_slack = size_t{4} << 20;         ///< bytes
  };
  struct Sample {
    Clock::time_point now;
    std::chrono::microseconds cpu{0};  ///< the process's user + system CPU time so far
    size_t rss = 0;                    ///< resident set size, bytes
  };

  explicit IdleTrimPolicy(Params p) : p_(p) {}
  IdleTrimPolicy() : IdleTrimPolicy(Params{}) {}

  /// observe() - records @s (samples in time order). Returns true when the
  /// caller should trim now; it then calls trimmed() with a sample taken
  /// after the trim.
  bool observe(const Sample& s);
  /// trimmed() - the trim is done; @after is a sample taken after it (its
  /// CPU time, the trim's own included, starts the next activity count).
  void trimmed(const Sample& after);

 private:
  Params p_;
  std::deque<Sample> window_;  // samples within idle_for of the newest
  bool have_trim_ = false;
  std::chrono::microseconds cpu_at_trim_{0};
  Clock::time_point trim_time_{};
  size_t rss_low_ = SIZE_MAX;
};

/// IdleTrimmer - a thread that samples the process every @interval
/// (getrusage, /proc/self/statm) and calls malloc_trim(0) when
/// IdleTrimPolicy says so. One per process is enough (it trims every arena);
/// more are harmless. Logs each trim at debug level with RSS before/after.
class IdleTrimmer {
 public:
  /// Starts the thread. @name: for the log line.
  explicit IdleTrimmer(std::string name, IdleTrimPolicy::Params params = {},
                       std::chrono::milliseconds interval = std::chrono::milliseconds(1000));
  /// Stops and joins the thread.
  ~IdleTrimmer();
  IdleTrimmer(const IdleTrimmer&) = delete;
  IdleTrimmer& operator=(const IdleTrimmer&) = delete;

  /// trims() - how many times malloc_trim ran. Thread: any.
  uint64_t trims() const;

  /// sample_self() - this process's CPU time and RSS now (0 RSS when
  /// /proc/self/statm cannot be read). Thread: any.
  static IdleTrimPolicy::Sample sample_self();

 private:
  void run();

  const std::string name_;
  IdleTrimPolicy policy_;
  const std::chrono::milliseconds interval_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t trims_ = 0;
  std::thread thread_;
};

}  // namespace osh

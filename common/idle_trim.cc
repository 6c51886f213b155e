// Theory of operation: after a load, glibc's arenas keep the pages of freed
// buffers (HTTP/2 slices, frames, pbufs) and RSS stays at its peak: measured
// 314 MiB kept by the tunnel and 461 MiB by the mini-gateway 30 s after 20
// stalled downloads closed (vm_memory, issue 15). malloc_trim(0) returns
// every free page of every arena (madvise(MADV_DONTNEED) in the middle of the
// heap, sbrk at its top). Calling it per free (M_TRIM_THRESHOLD low) would
// make busy processes fault the same pages in again per frame, so it runs
// only when a busy period is over: IdleTrimPolicy watches the process's CPU
// time (getrusage) and RSS once a second; after at least min_activity of CPU
// since the last trim, and idle_for with less than idle_cpu_share of a core,
// with RSS at least rss_slack above the lowest seen, it trims once. A stalled
// connection's live data is not freed by this (its bound is the gRPC quota's
// business); a steady load never idles and is never trimmed. While idle with
// RSS still above the slack, it trims again every retrim_every (10 s): memory
// freed after a trim with little CPU (a stream's buffers released late)
// would otherwise stay in the arenas, which malloc_tuning.h's thresholds no
// longer shrink on free (vm_memory's slow downloads: the gateway kept 10-36
// MiB without this). Cost: one
// getrusage and one read of /proc/self/statm per second, and one trim per
// busy-then-idle period (vm_memory: RSS back within 8 MiB of its level
// before the load 0-5 s after 20 stalled or 150 slow downloads closed, in
// the tunnel, the mini-gateway and the mini-supervisor).
#include "common/idle_trim.h"

#include <malloc.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>

namespace osh {

bool IdleTrimPolicy::observe(const Sample& s) {
  window_.push_back(s);
  if (s.rss > 0 && s.rss < rss_low_) rss_low_ = s.rss;
  // Keep one sample at or before the window's start, so the window spans it.
  while (window_.size() > 1 && s.now - window_[1].now >= p_.idle_for) window_.pop_front();
  const Sample& first = window_.front();
  const auto span = s.now - first.now;
  if (span < p_.idle_for) return false;  // not observed long enough
  const double cpu_s = std::chrono::duration<double>(s.cpu - first.cpu).count();
  const double wall_s = std::chrono::duration<double>(span).count();
  if (cpu_s > p_.idle_cpu_share * wall_s) return false;  // busy
  const auto since = have_trim_ ? s.cpu - cpu_at_trim_ : s.cpu;
  const bool retrim_due = have_trim_ && s.now - trim_time_ >= p_.retrim_every;
  if (since < p_.min_activity && !retrim_due) return false;  // nothing happened since the last trim
  return s.rss >= rss_low_ + p_.rss_slack;
}

void IdleTrimPolicy::trimmed(const Sample& after) {
  have_trim_ = true;
  cpu_at_trim_ = after.cpu;
  trim_time_ = after.now;
  if (after.rss > 0 && after.rss < rss_low_) rss_low_ = after.rss;
  window_.clear();
  window_.push_back(after);
}

IdleTrimPolicy::Sample IdleTrimmer::sample_self() {
  IdleTrimPolicy::Sample s;
  s.now = IdleTrimPolicy::Clock::now();
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) == 0) {
    s.cpu = std::chrono::seconds(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
            std::chrono::microseconds(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  }
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    unsigned long size = 0, resident = 0;
    if (std::fscanf(f, "%lu %lu", &size, &resident) == 2)
      s.rss = resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
    std::fclose(f);
  }
  return s;
}

IdleTrimmer::IdleTrimmer(std::string name, IdleTrimPolicy::Params params,
                         std::chrono::milliseconds interval)
    : name_(std::move(name)), policy_(params), interval_(interval) {
  thread_ = std::thread([this] { run(); });
}

IdleTrimmer::~IdleTrimmer() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

uint64_t IdleTrimmer::trims() const {
  std::lock_guard lk(mu_);
  return trims_;
}

void IdleTrimmer::run() {
  std::unique_lock lk(mu_);
  while (!cv_.wait_for(lk, interval_, [this] { return stop_; })) {
    lk.unlock();
    const auto before = sample_self();
    if (policy_.observe(before)) {
      malloc_trim(0);
      const auto after = sample_self();
      policy_.trimmed(after);
      spdlog::debug("{}: idle: returned free heap memory to the kernel, RSS {} -> {} KiB", name_,
                    before.rss >> 10, after.rss >> 10);
      lk.lock();
      ++trims_;
      continue;
    }
    lk.lock();
  }
}

}  // namespace osh

// Rate limit for repeated log lines (issue 14.7): a client that opens
// thousands of connections to a closed port, or a gateway that refuses every
// stream, must not write one line per connection into the log. Each call site
// of a per-connection line owns a LogLimiter (OSH_LOG_LIMITED declares one):
// a token bucket lets a burst through, then about one line per refill
// interval; the lines it held back are counted and named in the next line that
// passes ("[N similar lines suppressed]").
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace osh {

/// LogLimiter - token bucket of one kind of log line. Thread-safe (a mutex;
/// called from the stack's, the relay's and gRPC's threads alike).
class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  /// Default: 10 lines at once, then one line per second.
  static constexpr uint32_t kBurst = 10;
  static constexpr std::chrono::milliseconds kRefill{1000};

  /// @burst:  lines let through back to back (at least 1)
  /// @refill: time for one more line's token to come back
  explicit LogLimiter(uint32_t burst = kBurst, std::chrono::milliseconds refill = kRefill)
      : burst_(burst ? burst : 1), refill_(refill), tokens_(burst_) {}

  /// allow() - whether the line due at @now may be written.
  /// @now:        the current time (tests pass their own)
  /// @suppressed: on true, how many lines were held back since the last one
  ///              that passed (then reset to 0); untouched on false
  bool allow(Clock::time_point now, uint64_t* suppressed) {
    std::lock_guard lk(mu_);
    if (!started_) {
      started_ = true;
      last_ = now;
    }
    if (refill_.count() > 0 && now > last_) {
      const auto earned = (now - last_) / refill_;
      if (earned > 0) {
        tokens_ = static_cast<uint32_t>(std::min<int64_t>(burst_, tokens_ + static_cast<int64_t>(earned)));
        last_ += earned * refill_;
        if (tokens_ == burst_) last_ = now;
      }
    }
    if (tokens_ == 0) {
      ++suppressed_;
      return false;
    }
    --tokens_;
    *suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }

 private:
  std::mutex mu_;
  const uint32_t burst_;
  const std::chrono::milliseconds refill_;
  uint32_t tokens_;
  uint64_t suppressed_ = 0;
  bool started_ = false;
  Clock::time_point last_{};
};

/// The " [N similar lines suppressed]" suffix (empty for 0).
inline std::string suppressed_suffix(uint64_t n) {
  return n == 0 ? std::string{} : fmt::format(" [{} similar lines suppressed]", n);
}

}  // namespace osh

/// OSH_LOG_LIMITED(level, fmt, args...) - spdlog::log(level, ...) through a
/// LogLimiter of this call site (a function-local static, so one bucket per
/// source line for the whole process). The arguments are not evaluated when
/// the line is held back.
#define OSH_LOG_LIMITED(level, ...)                                                       \
  do {                                                                                    \
    static ::osh::LogLimiter osh_log_limiter_;                                            \
    uint64_t osh_log_suppressed_ = 0;                                                     \
    if (spdlog::should_log(level) &&                                                      \
        osh_log_limiter_.allow(::osh::LogLimiter::Clock::now(), &osh_log_suppressed_))    \
      spdlog::log(level, "{}{}", fmt::format(__VA_ARGS__),                                \
                  ::osh::suppressed_suffix(osh_log_suppressed_));                         \
  } while (0)

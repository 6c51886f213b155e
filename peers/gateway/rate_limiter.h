// The mini-gateway's optional global rate limit (protocol-0.1 §3: upstream's
// global limiter answers RESOURCE_EXHAUSTED "gRPC rate limit exceeded").
#pragma once

#include <chrono>
#include <mutex>

#include "peers/gateway/gateway_config.h"

namespace osh::peers {

/// A token bucket: @limit.count tokens, refilled continuously at
/// @limit.count per @limit.period; every admitted call takes one. A limit
/// with count 0 admits everything. Thread-safe.
class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  /// Starts with a full bucket at @now.
  explicit RateLimiter(RateLimit limit, Clock::time_point now = Clock::now());

  /// TryAcquire() - takes one token at time @now (monotonic; earlier times
  /// than a previous call are treated as that call's time). Return: true if
  /// the call may proceed, false if it is over the limit. Thread: any.
  bool TryAcquire(Clock::time_point now = Clock::now());

 private:
  const RateLimit limit_;
  std::mutex mu_;
  double tokens_;             // mu_
  Clock::time_point last_;    // mu_
};

}  // namespace osh::peers

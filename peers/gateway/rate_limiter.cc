#include "peers/gateway/rate_limiter.h"

#include <algorithm>

namespace osh::peers {

RateLimiter::RateLimiter(RateLimit limit, Clock::time_point now)
    : limit_(limit), tokens_(limit.count), last_(now) {}

bool RateLimiter::TryAcquire(Clock::time_point now) {
  if (limit_.count <= 0) return true;
  std::lock_guard lock(mu_);
  if (now > last_) {
    const double elapsed_ms = std::chrono::duration<double, std::milli>(now - last_).count();
    const double refill = elapsed_ms * limit_.count / static_cast<double>(limit_.period.count());
    tokens_ = std::min<double>(limit_.count, tokens_ + refill);
    last_ = now;
  }
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

}  // namespace osh::peers

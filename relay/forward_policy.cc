#include "relay/forward_policy.h"

#include <grpcpp/support/status.h>

#include <algorithm>
#include <cctype>

namespace osh::relay {
namespace {

bool contains(std::string_view s, std::string_view what) {
  return s.find(what) != std::string_view::npos;
}

}  // namespace

void SettleWindow::observe_header_latency(Duration d) {
  if (!have_header_) {
    header_ewma_ = d;
    have_header_ = true;
    return;
  }
  header_ewma_ = (header_ewma_ * 3 + d) / 4;
}

void SettleWindow::observe_dial_failure(Duration d) {
  have_failure_ = true;
  failures_[failures_next_] = d;
  failures_next_ = (failures_next_ + 1) % failures_.size();
}

SettleWindow::Duration SettleWindow::window() const {
  if (override_) return *override_;
  if (!have_header_ && !have_failure_) return Duration::zero();
  const Duration slowest_failure = *std::max_element(failures_.begin(), failures_.end());
  const Duration w = std::max(header_ewma_ * 2, slowest_failure * 2) + kSchedulingSlack;
  return std::min(w, cap_);
}

bool is_dial_failure(int code, std::string_view msg) {
  // The supervisor's dial error is the Rust io::Error text, "... (os error
  // N)" (protocol §2.3); the gateway's own UNAVAILABLE texts never carry it.
  return code == grpc::StatusCode::UNAVAILABLE && contains(msg, "os error") &&
         !contains(msg, "supervisor relay failed") && !contains(msg, "relay capacity reached");
}

OpenFailure classify_open_failure(int code, std::string_view msg) {
  switch (code) {
    case grpc::StatusCode::UNAUTHENTICATED:
      return OpenFailure::kUnauthenticated;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      // Our own receive limit (gateway_client.h kMaxForwardFrameBytes; gRPC's
      // "Received message larger than max (N vs. M)"): the gateway sent an
      // oversize frame; final, no retry.
      if (contains(msg, "larger than max")) return OpenFailure::kFinal;
      // Told apart by message (protocol-0.1 §3 ForwardTcp).
      if (contains(msg, "rate limit")) return OpenFailure::kRateLimit;
      if (contains(msg, "SSH session connection limit")) return OpenFailure::kTokenCap;
      return OpenFailure::kSandboxCap;  // "sandbox SSH connection limit reached", or unknown
    case grpc::StatusCode::UNAVAILABLE:
      if (contains(msg, "relay capacity reached")) return OpenFailure::kRelayCapacity;
      if (!is_dial_failure(code, msg)) return OpenFailure::kFinal;
      if (contains(msg, "os error 111") || contains(msg, "Connection refused"))
        return OpenFailure::kDialRefused;
      if (contains(msg, "os error 99") || contains(msg, "os error 101") || contains(msg, "os error 97"))
        return OpenFailure::kDialFamily;
      return OpenFailure::kFinal;
    default:
      return OpenFailure::kFinal;
  }
}

std::optional<std::string> other_loopback(std::string_view host) {
  if (host == "127.0.0.1") return std::string("::1");
  if (host == "::1") return std::string("127.0.0.1");
  return std::nullopt;
}

std::string LoopbackMemory::key_of(const std::string& sandbox, uint16_t port) {
  std::string k = sandbox;
  k.push_back('\0');  // sandbox keys are ids or names: never a NUL
  k.append(std::to_string(port));
  return k;
}

std::optional<std::string> LoopbackMemory::preferred(const std::string& sandbox, uint16_t port,
                                                     Clock::time_point now) {
  auto it = index_.find(key_of(sandbox, port));
  if (it == index_.end()) return std::nullopt;
  if (now >= it->second->expires) {
    lru_.erase(it->second);
    index_.erase(it);
    return std::nullopt;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->host;
}

void LoopbackMemory::answered(const std::string& sandbox, uint16_t port, const std::string& host,
                              Clock::time_point now) {
  if (capacity_ == 0) return;
  std::string key = key_of(sandbox, port);
  if (auto it = index_.find(key); it != index_.end()) {
    it->second->host = host;
    it->second->expires = now + ttl_;
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  while (index_.size() >= capacity_) {
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  lru_.push_front(Entry{key, host, now + ttl_});
  index_.emplace(std::move(key), lru_.begin());
}

void LoopbackMemory::refused(const std::string& sandbox, uint16_t port, const std::string& host) {
  auto it = index_.find(key_of(sandbox, port));
  if (it == index_.end() || it->second->host != host) return;
  lru_.erase(it->second);
  index_.erase(it);
}

std::chrono::milliseconds rate_limit_backoff(int n) {
  constexpr std::chrono::milliseconds kFirst{50}, kCap{2000};
  if (n < 0) n = 0;
  if (n >= 6) return kCap;  // 50 << 6 = 3200 > cap
  return std::min(kCap, kFirst * (1 << n));
}

}  // namespace osh::relay

// The decisions relay/forward.cc makes about one ForwardTcp open, kept free
// of gRPC so that tests/relay can check them directly: how long to hold a
// client's SYN after upstream-style response headers (the settle window),
// what a failed open means (retry how, or give up), and the loopback family
// fallback. docs/ARCHITECTURE.md "Connection semantics" and "SSH-session
// tokens and caps" describe the behaviour these implement.
#pragma once

#include <array>
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace osh::relay {

/// SettleWindow - how long after the response headers a stream is still
/// treated as "not yet connected" when the gateway did not confirm the
/// connect-ack extension.
///
/// Upstream sends ForwardTcp's headers before the supervisor dials the target
/// (protocol §2.4); a closed port arrives shortly after as a trailing
/// UNAVAILABLE with the OS error text. Holding the client's SYN for a short
/// window lets that failure still become a refusal (ECONNREFUSED) instead of
/// connect-then-reset. The window is
///
///   min(cap, max(2 x smoothed header latency, 2 x the slowest of the last
///   16 dial failures this gateway has shown) + scheduling slack)
///
/// where header latency = call start -> response headers (EWMA, 1/4 weight
/// per sample) and a dial failure's latency = headers -> its trailing status.
/// The slack (4 ms) covers a loaded host: a dial failure crosses three
/// processes (gateway, supervisor, gateway) and each wake-up can wait a
/// scheduler slice behind a busy CPU; without it a 2-core machine running
/// two CPU hogs turned about one closed-port connect in 40 into a reset.
/// An override (ForwardOptions::connect_settle, --connect-settle-ms) replaces
/// the formula, 0 included. Not thread-safe: the owner serialises calls.
class SettleWindow {
 public:
  using Duration = std::chrono::microseconds;
  static constexpr Duration kDefaultCap{25000};
  static constexpr Duration kSchedulingSlack{4000};

  explicit SettleWindow(std::optional<Duration> override_window = std::nullopt,
                        Duration cap = kDefaultCap)
      : override_(override_window), cap_(cap) {}

  /// One call's time from its start to its response headers.
  void observe_header_latency(Duration d);
  /// One dial failure's time from the response headers to its status.
  void observe_dial_failure(Duration d);
  /// The window to apply now: the override if set, else the formula above
  /// (0 before any observation). Never above the cap unless overridden.
  Duration window() const;

  /// Smoothed header latency (0 before the first observation).
  Duration header_latency() const { return header_ewma_; }

 private:
  std::optional<Duration> override_;
  Duration cap_;
  Duration header_ewma_{0};
  bool have_header_ = false;
  bool have_failure_ = false;
  std::array<Duration, 16> failures_{};  // ring of the latest dial-failure latencies
  size_t failures_next_ = 0;
};

/// What a ForwardTcp that ended before the stream was reported open means
/// for the open (protocol §2.3 tables, protocol-0.1 §3 "RESOURCE_EXHAUSTED").
enum class OpenFailure {
  kFinal,           ///< nothing to retry: map the status (status_map.h)
  kUnauthenticated, ///< token unknown/expired/revoked: fresh token, retry
  kTokenCap,        ///< RESOURCE_EXHAUSTED "SSH session connection limit reached" (3 per token)
  kSandboxCap,      ///< RESOURCE_EXHAUSTED "sandbox SSH connection limit reached" (20 per
                    ///< sandbox), or a RESOURCE_EXHAUSTED with another text
  kRateLimit,       ///< RESOURCE_EXHAUSTED "gRPC rate limit exceeded" (global limiter)
  kRelayCapacity,   ///< UNAVAILABLE "... relay capacity reached" (pending-relay caps, 32/256)
  kDialRefused,     ///< UNAVAILABLE "Connection refused (os error 111)": target port closed
  kDialFamily,      ///< UNAVAILABLE with an OS error saying the address family is unusable
                    ///< (EADDRNOTAVAIL 99, ENETUNREACH 101, EAFNOSUPPORT 97): no ::1 / 127.0.0.1
};

/// classify_open_failure() - @code is a grpc::StatusCode value, @message the
/// status message. Thread: any.
OpenFailure classify_open_failure(int code, std::string_view message);

/// is_dial_failure() - the status is the supervisor's failed dial of the
/// target (UNAVAILABLE carrying an OS error text, protocol §2.3 "after
/// response headers"), the kind a settle window waits for.
bool is_dial_failure(int code, std::string_view message);

/// other_loopback() - "::1" for "127.0.0.1" and the reverse; nullopt for any
/// other host (only the two loopback families are tried, protocol §2.2).
std::optional<std::string> other_loopback(std::string_view host);

/// LoopbackMemory - which loopback family ("127.0.0.1" or "::1") answered
/// for one (sandbox, port) after the other one refused, so that later
/// connections to that port, from clients of either family, try it first
/// (issue 12.3: a service bound to one family only; each wrong first try
/// costs a round trip, or a replay after the settle window).
///
/// An entry is made by answered() when a connection reached its target on
/// a family chosen by a fallback (or by this memory: that refreshes it), and
/// is dropped by refused() when that family later refuses, or after `ttl`
/// without a refresh (services move: a restart may bind the other family).
/// At most `capacity` entries; the least recently used goes first. Times are
/// passed in (steady clock) so that tests need not sleep. Not thread-safe:
/// the owner (ForwardManager::Impl, under its mutex) serialises calls.
class LoopbackMemory {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kDefaultTtl{60000};
  static constexpr size_t kDefaultCapacity = 4096;

  explicit LoopbackMemory(std::chrono::milliseconds ttl = kDefaultTtl,
                          size_t capacity = kDefaultCapacity)
      : ttl_(ttl), capacity_(capacity) {}

  /// The family to try first for @sandbox (a pool key) and @port, if one is
  /// remembered and not expired at @now; marks the entry recently used.
  std::optional<std::string> preferred(const std::string& sandbox, uint16_t port, Clock::time_point now);
  /// @host (a loopback family) answered after a fallback at @now: remember
  /// it, or refresh it, for ttl.
  void answered(const std::string& sandbox, uint16_t port, const std::string& host, Clock::time_point now);
  /// @host refused: forget the entry if it named @host (no-op otherwise).
  void refused(const std::string& sandbox, uint16_t port, const std::string& host);

  size_t size() const { return index_.size(); }

 private:
  struct Entry {
    std::string key;
    std::string host;
    Clock::time_point expires;
  };
  static std::string key_of(const std::string& sandbox, uint16_t port);

  std::chrono::milliseconds ttl_;
  size_t capacity_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

/// rate_limit_backoff() - delay before retry number @n (0-based) of an open
/// the global rate limiter refused: 50 ms doubling, capped at 2 s.
std::chrono::milliseconds rate_limit_backoff(int n);

/// Delay between retries while a stream cap or the relay capacity refuses
/// (the caps free up as other streams end; protocol §2.8).
inline constexpr std::chrono::milliseconds kCapRetryDelay{100};

/// StreamBudget - the whole-process ceiling on stream buffers, as an
/// admission rule (ForwardOptions::max_buffer_bytes; docs/ARCHITECTURE.md
/// "Memory bounds"). Every open stream takes @share bytes of @ceiling (and
/// as much of the channel's gRPC quota). A new stream is admitted while the
/// shares of the streams already open plus its own fit in @ceiling;
/// otherwise it waits in the queue (up to queue_timeout, then it is refused
/// like any queued open). @ceiling 0 = no ceiling. Pure value type.
class StreamBudget {
 public:
  StreamBudget(size_t ceiling, size_t share) : ceiling_(ceiling), share_(share == 0 ? 1 : share) {}
  /// How many streams may be open at once (SIZE_MAX without a ceiling;
  /// at least 1: one stream is always admitted).
  size_t max_streams() const { return ceiling_ == 0 ? SIZE_MAX : std::max<size_t>(1, ceiling_ / share_); }
  /// Whether one more stream may open while @open are open (or starting).
  bool admits(size_t open) const { return open < max_streams(); }

 private:
  size_t ceiling_;
  size_t share_;
};

}  // namespace osh::relay

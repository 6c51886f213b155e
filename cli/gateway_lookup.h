// The gateway's name looked up off the main thread (`up`'s re-resolution
// while the gateway is unreachable): getaddrinfo can block for the
// resolver's timeouts (10-30 s when DNS is down, which is when the gateway
// tends to be unreachable), and the main thread is the one that waits for
// SIGTERM, SIGHUP and the refresh tick. A lookup runs on its own thread; the
// main thread picks the result up on a later tick without waiting.
#pragma once

#include <functional>
#include <future>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.h"

namespace osh::cli {

class GatewayLookup {
 public:
  /// The lookup itself: relay::resolve_host() in the daemon, a stand-in in
  /// tests. Called on the worker thread; must not touch the caller's
  /// objects (it gets the host by value).
  using Resolver = std::function<std::optional<std::vector<IpAddress>>(const std::string& host, std::string* error)>;

  struct Result {
    std::optional<std::vector<IpAddress>> addrs;  ///< nullopt: the name did not resolve
    std::string error;                            ///< the resolver's message when addrs is nullopt
  };

  /// @param resolve  defaults to relay::resolve_host()
  explicit GatewayLookup(Resolver resolve = {});
  /// Waits for a lookup still running (bounded by the resolver's own
  /// timeouts): no thread outlives this object.
  ~GatewayLookup();
  GatewayLookup(const GatewayLookup&) = delete;
  GatewayLookup& operator=(const GatewayLookup&) = delete;

  /// start() - looks `host` up on a new thread and returns at once. While a
  /// lookup runs, another is queued instead (one at most) and starts when
  /// poll() collects the running one, so a request is never lost and no two
  /// lookups run at once.
  /// Thread: the owner's (not thread-safe). Never throws: a thread that
  /// cannot be created makes a Result with the error, returned by poll().
  void start(const std::string& host);

  /// poll() - the finished lookup's result, or nullopt when none is finished
  /// (none started, or still running). Never blocks. Collecting a result
  /// starts the queued lookup, if any.
  /// Thread: the owner's (not thread-safe). Never throws.
  std::optional<Result> poll();

  /// True while a lookup runs or one is queued.
  bool busy() const noexcept { return running_.valid() || queued_.has_value(); }

 private:
  void launch(const std::string& host);

  Resolver resolve_;
  std::future<Result> running_;
  std::optional<std::string> queued_;
  std::optional<Result> failed_;  // a lookup that could not be started
};

}  // namespace osh::cli

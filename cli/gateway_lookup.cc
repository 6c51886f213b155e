#include "cli/gateway_lookup.h"

#include <chrono>
#include <exception>
#include <system_error>
#include <utility>

#include "relay/endpoint.h"

namespace osh::cli {

GatewayLookup::GatewayLookup(Resolver resolve)
    : resolve_(resolve ? std::move(resolve) : Resolver(relay::resolve_host)) {}

GatewayLookup::~GatewayLookup() {
  if (running_.valid()) running_.wait();
}

void GatewayLookup::launch(const std::string& host) {
  try {
    // The worker gets copies only: nothing of the owner is touched there.
    running_ = std::async(std::launch::async, [resolve = resolve_, host]() -> Result {
      Result r;
      try {
        r.addrs = resolve(host, &r.error);
      } catch (const std::exception& e) {
        r.addrs.reset();
        r.error = e.what();
      }
      return r;
    });
  } catch (const std::system_error& e) {
    failed_ = Result{std::nullopt, std::string("cannot start the lookup: ") + e.what()};
  }
}

void GatewayLookup::start(const std::string& host) {
  if (running_.valid() || failed_) {
    queued_ = host;
    return;
  }
  launch(host);
}

std::optional<GatewayLookup::Result> GatewayLookup::poll() {
  std::optional<Result> out;
  if (failed_) {
    out = std::move(failed_);
    failed_.reset();
  } else if (running_.valid() && running_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    out = running_.get();  // leaves running_ invalid
  }
  if (out && queued_) {
    const std::string host = std::move(*queued_);
    queued_.reset();
    launch(host);
  }
  return out;
}

}  // namespace osh::cli

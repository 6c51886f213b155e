// Glue between stack/ and relay/ (design.md §2 "who may know whom"): the
// stack's Upstream interface implemented with relay's ForwardManager, and
// relay's events handed back to the stack.
#pragma once

#include <mutex>
#include <string>
#include <unordered_map>

#include "relay/forward.h"
#include "stack/upstream.h"

namespace osh::cli {

/// Thread-safe. Routes' sandbox keys are sandbox ids. Port 22 goes to the
/// gateway's SSH target; any other port to TCP 127.0.0.1:PORT (IPv4
/// clients) or [::1]:PORT (IPv6 clients), on the sandbox's loopback.
class RelayUpstream final : public stack::Upstream, public relay::ForwardObserver {
 public:
  /// @opts as given, except read_ahead_frames, at least 2: the stack queues
  /// received frames (stack/conn.h Conn::tx) and calls read_more() once it
  /// took all of them, so the relay reads one frame ahead.
  RelayUpstream(relay::GatewayClient& gw, relay::ForwardOptions opts);
  ~RelayUpstream() override;

  /// Where events go; nullptr drops them (set before the stack stops).
  void set_events(stack::UpstreamEvents* ev);
  /// The served sandboxes' names by id: a 0.1 gateway addresses a sandbox
  /// by name (protocol-0.1 §3), the stack's routes only know the id. `up`
  /// calls this whenever the sandbox set changes, before the new routes.
  void set_sandbox_names(std::unordered_map<std::string, std::string> name_by_id);
  relay::ForwardManager& manager() { return mgr_; }

  // stack::Upstream
  void open(const stack::OpenRequest& req) override;
  void send(stack::ConnId id, std::string bytes) override;
  bool try_send_queued(stack::ConnId id, std::string& bytes) override;
  void read_more(stack::ConnId id) override;
  bool try_read_more_in_place(stack::ConnId id) override;
  void close_write(stack::ConnId id) override;
  void abort(stack::ConnId id) override;

  // relay::ForwardObserver
  void on_open_ok(relay::StreamId id) override;
  void on_data(relay::StreamId id, std::string bytes) override;
  void on_remote_fin(relay::StreamId id) override;
  void on_write_done(relay::StreamId id, size_t bytes) override;
  void on_closed(relay::StreamId id, relay::EndKind kind, std::string reason) override;

 private:
  std::mutex mu_;
  stack::UpstreamEvents* ev_ = nullptr;
  std::unordered_map<std::string, std::string> name_by_id_;  // guarded by mu_
  relay::ForwardManager mgr_;
};

}  // namespace osh::cli

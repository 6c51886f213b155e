#include "cli/relay_upstream.h"

#include <algorithm>

namespace osh::cli {

namespace {
stack::CloseKind to_close_kind(relay::EndKind k) {
  switch (k) {
    case relay::EndKind::kOk: return stack::CloseKind::kOk;
    case relay::EndKind::kRefused: return stack::CloseKind::kRefused;
    case relay::EndKind::kUnreachable: return stack::CloseKind::kUnreachable;
    case relay::EndKind::kReset: return stack::CloseKind::kReset;
  }
  return stack::CloseKind::kReset;
}

relay::ForwardOptions with_read_ahead(relay::ForwardOptions o) {
  o.read_ahead_frames = std::max<size_t>(o.read_ahead_frames, 2);
  return o;
}
}  // namespace

RelayUpstream::RelayUpstream(relay::GatewayClient& gw, relay::ForwardOptions opts)
    : mgr_(gw, *this, with_read_ahead(std::move(opts))) {}

RelayUpstream::~RelayUpstream() {
  set_events(nullptr);
  mgr_.shutdown();
}

void RelayUpstream::set_events(stack::UpstreamEvents* ev) {
  std::lock_guard lk(mu_);
  ev_ = ev;
}

void RelayUpstream::set_sandbox_names(std::unordered_map<std::string, std::string> name_by_id) {
  std::lock_guard lk(mu_);
  name_by_id_ = std::move(name_by_id);
}

void RelayUpstream::open(const stack::OpenRequest& req) {
  relay::ForwardTarget t;
  t.sandbox.id = req.sandbox;
  {
    std::lock_guard lk(mu_);
    if (auto it = name_by_id_.find(req.sandbox); it != name_by_id_.end()) t.sandbox.name = it->second;
  }
  t.ssh = req.port == 22;
  t.host = req.sandbox_addr.is_v6() ? "::1" : "127.0.0.1";
  t.port = req.port;
  t.service_id = "openshell-tunnel:" + req.sandbox + ":" + std::to_string(req.port);
  mgr_.open(req.id, std::move(t));
}

void RelayUpstream::send(stack::ConnId id, std::string bytes) { mgr_.send(id, std::move(bytes)); }
bool RelayUpstream::try_send_queued(stack::ConnId id, std::string& bytes) {
  return mgr_.try_send_queued(id, bytes);
}
void RelayUpstream::read_more(stack::ConnId id) { mgr_.read_more(id); }
bool RelayUpstream::try_read_more_in_place(stack::ConnId id) { return mgr_.try_read_more_in_place(id); }
void RelayUpstream::close_write(stack::ConnId id) { mgr_.close_write(id); }
void RelayUpstream::abort(stack::ConnId id) { mgr_.abort(id); }

void RelayUpstream::on_open_ok(relay::StreamId id) {
  std::lock_guard lk(mu_);
  if (ev_) ev_->on_open_ok(id);
}
void RelayUpstream::on_data(relay::StreamId id, std::string bytes) {
  std::lock_guard lk(mu_);
  if (ev_) ev_->on_data(id, std::move(bytes));
}
void RelayUpstream::on_remote_fin(relay::StreamId id) {
  std::lock_guard lk(mu_);
  if (ev_) ev_->on_remote_fin(id);
}
void RelayUpstream::on_write_done(relay::StreamId id, size_t bytes) {
  std::lock_guard lk(mu_);
  if (ev_) ev_->on_write_done(id, bytes);
}
void RelayUpstream::on_closed(relay::StreamId id, relay::EndKind kind, std::string reason) {
  std::lock_guard lk(mu_);
  if (ev_) ev_->on_closed(id, to_close_kind(kind), std::move(reason));
}

}  // namespace osh::cli

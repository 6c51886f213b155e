// Theory of operation
// ===================
// open() queues a request; the worker thread admits it when the sandbox is
// under its stream cap (otherwise it waits, up to queue_timeout, then is
// refused), takes a token from the sandbox's pool (minting one with
// CreateSshSession when every token already carries max_streams_per_token
// streams), and starts a ForwardCall.
//
// ForwardCall is one gRPC callback bidi reactor per connection
// (grpc-notes.md, style.md §12): init frame first (the gateway reads it
// before it answers, protocol §0.4), then at most one write and one read in
// flight. It keeps two holds, one per direction, because writes and reads are
// started from outside reactions (the stack thread):
//   write hold: released after WritesDone completes, a write fails, the read
//               side ended with nothing in flight, or abort();
//   read hold:  released when a read returns !ok, or abort() with no read in
//               flight.
// OnDone runs once both are gone; it returns the stream's slot and token to
// the pool and reports on_closed. Reactions may run inline inside Start*()
// calls, so no mutex is held while calling Start*/RemoveHold, and objects
// stay alive through shared_ptr copies taken before each call.
//
// Wire conventions: client bytes are coalesced into frames of ≤ max_frame
// bytes while a write is in flight; an empty data frame from the gateway
// means "target sent FIN" (our extension; upstream gateways never send it and
// end the stream instead, which we also treat as FIN).
#include "relay/forward.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "relay/gateway_client_impl.h"

namespace osh::relay {
namespace {

using Clock = std::chrono::steady_clock;
using openshell::v1::TcpForwardFrame;

struct TokenEntry {
  std::string sandbox_id;
  std::string token;
  size_t active = 0;
  bool bad = false;
  Clock::time_point idle_since = Clock::now();  // valid while active == 0
};

}  // namespace

class ForwardCall;

struct ForwardManager::Impl : std::enable_shared_from_this<ForwardManager::Impl> {
  struct PendingOpen {
    StreamId id;
    ForwardTarget target;
    Clock::time_point deadline;           // refused (queue timeout) after this
    int attempt = 0;                       // retries so far
    Clock::time_point not_before{};        // retry back-off
  };

  GatewayClient& gw;
  ForwardObserver& obs;
  ForwardOptions opts;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<PendingOpen> pending;
  std::unordered_map<StreamId, std::shared_ptr<ForwardCall>> calls;
  std::unordered_set<StreamId> starting;        // admitted, token being fetched
  std::unordered_set<StreamId> abort_requested; // aborted while starting
  std::unordered_map<std::string, size_t> active_per_sandbox;
  std::unordered_map<std::string, std::vector<std::shared_ptr<TokenEntry>>> tokens;
  std::vector<std::shared_ptr<TokenEntry>> retired;  // out of the pool, to revoke once idle
  ForwardStats st;
  bool stopping = false;
  std::thread worker;

  Impl(GatewayClient& g, ForwardObserver& o, ForwardOptions op) : gw(g), obs(o), opts(op) {}

  void run();
  void start_one(PendingOpen p);
  std::shared_ptr<TokenEntry> acquire_token(const std::string& sandbox_id, CallStatus* err);
  /// Returns the stream's slot and token; if `retry` is set and the manager
  /// is running, puts the open back in the queue (same id: the stack still
  /// holds the SYN) in the same critical section, and returns true.
  /// `queue_timeout`: the gateway still refused (RESOURCE_EXHAUSTED) at the
  /// queue deadline; counted with the tunnel's own queue timeouts.
  bool release(StreamId id, const std::string& sandbox_id, const std::shared_ptr<TokenEntry>& tok,
               int code, const PendingOpen* retry, bool queue_timeout = false);
  std::shared_ptr<ForwardCall> find(StreamId id) {
    std::lock_guard lk(mu);
    auto it = calls.find(id);
    return it == calls.end() ? nullptr : it->second;
  }
};

class ForwardCall final : public grpc::ClientBidiReactor<TcpForwardFrame, TcpForwardFrame>,
                          public std::enable_shared_from_this<ForwardCall> {
 public:
  ForwardCall(std::shared_ptr<ForwardManager::Impl> mgr, ForwardManager::Impl::PendingOpen open,
              std::shared_ptr<TokenEntry> token)
      : mgr_(std::move(mgr)), id_(open.id), target_(std::move(open.target)), token_(std::move(token)),
        deadline_(open.deadline), attempt_(open.attempt) {}

  void start() {
    auto* init = init_.mutable_init();
    init->set_sandbox_id(target_.sandbox_id);
    init->set_service_id(target_.service_id);
    init->set_authorization_token(token_->token);
    if (target_.ssh) {
      init->mutable_ssh();
    } else {
      init->mutable_tcp()->set_host(target_.host);
      init->mutable_tcp()->set_port(target_.port);
    }
    mgr_->gw.impl().prepare(ctx_);
    mgr_->gw.impl().stub->async()->ForwardTcp(&ctx_, this);
    AddMultipleHolds(2);
    write_in_flight_ = true;
    read_in_flight_ = true;
    StartWrite(&init_);
    StartRead(&rx_);
    StartCall();
  }

  void send(std::string bytes) {
    std::unique_lock lk(mu_);
    if (w_closed_ || wd_requested_ || aborted_) return;
    pending_.append(bytes);
    if (write_in_flight_) return;
    prepare_write_locked();
    lk.unlock();
    StartWrite(&tx_);
  }

  void read_more() {
    std::unique_lock lk(mu_);
    if (r_closed_ || read_in_flight_ || aborted_) return;
    read_in_flight_ = true;
    lk.unlock();
    StartRead(&rx_);
  }

  void close_write() {
    std::unique_lock lk(mu_);
    if (w_closed_ || wd_requested_ || aborted_) return;
    wd_requested_ = true;
    if (write_in_flight_ || !pending_.empty()) return;
    write_in_flight_ = true;
    lk.unlock();
    StartWritesDone();
  }

  void abort() {
    std::unique_lock lk(mu_);
    if (aborted_) return;
    aborted_ = true;
    int holds = 0;
    if (!read_in_flight_) holds += release_read_locked();
    if (!write_in_flight_) holds += release_write_locked();
    lk.unlock();
    ctx_.TryCancel();
    remove_holds(holds);
  }

  void OnReadInitialMetadataDone(bool ok) override {
    if (!ok) return;  // trailers-only: OnDone reports the status
    established_ = true;
    mgr_->obs.on_open_ok(id_);
  }

  void OnWriteDone(bool ok) override {
    auto self = shared_from_this();
    std::unique_lock lk(mu_);
    write_in_flight_ = false;
    const size_t done = inflight_bytes_;
    inflight_bytes_ = 0;
    // r_closed_: the read side already saw the end of the call (e.g. a
    // trailers-only RESOURCE_EXHAUSTED that overtook the init write's
    // completion). Nothing more will be written; keeping the write hold
    // would delay OnDone until the channel dies and hang the held SYN.
    if (!ok || aborted_ || r_closed_) {
      const int holds = release_write_locked();
      lk.unlock();
      remove_holds(holds);
      return;
    }
    enum { kNone, kWrite, kWritesDone } next = kNone;
    if (!pending_.empty()) {
      prepare_write_locked();
      next = kWrite;
    } else if (wd_requested_) {
      write_in_flight_ = true;
      next = kWritesDone;
    }
    lk.unlock();
    if (done) mgr_->obs.on_write_done(id_, done);
    if (next == kWrite) StartWrite(&tx_);
    else if (next == kWritesDone) StartWritesDone();
  }

  void OnWritesDoneDone(bool) override {
    auto self = shared_from_this();
    std::unique_lock lk(mu_);
    write_in_flight_ = false;
    const int holds = release_write_locked();
    lk.unlock();
    remove_holds(holds);
  }

  void OnReadDone(bool ok) override {
    auto self = shared_from_this();
    std::unique_lock lk(mu_);
    read_in_flight_ = false;
    if (!ok || aborted_) {
      int holds = release_read_locked();
      // The stream is over: nothing more can be written either.
      if (!write_in_flight_) holds += release_write_locked();
      lk.unlock();
      remove_holds(holds);
      return;
    }
    if (rx_.payload_case() == TcpForwardFrame::kData && !rx_.data().empty()) {
      std::string bytes;
      bytes.swap(*rx_.mutable_data());
      rx_.Clear();
      lk.unlock();
      mgr_->obs.on_data(id_, std::move(bytes));
      return;  // the next read waits for read_more()
    }
    const bool fin = rx_.payload_case() == TcpForwardFrame::kData;  // empty data frame
    rx_.Clear();
    read_in_flight_ = true;
    lk.unlock();
    if (fin) mgr_->obs.on_remote_fin(id_);
    StartRead(&rx_);
  }

  void OnDone(const grpc::Status& s) override {
    auto self = shared_from_this();
    EndKind kind = aborted_ ? EndKind::kReset
                            : map_forward_status(s.error_code(), s.error_message(), established_);
    // Before the headers, two failures are worth another try rather than a
    // refusal (protocol §8.1-8.2): a token the gateway no longer knows
    // (expired, revoked, or the gateway restarted) -> fresh token; the
    // gateway's stream caps -> wait for a slot, until the queue deadline.
    std::optional<ForwardManager::Impl::PendingOpen> retry;
    bool waited_out = false;  // still RESOURCE_EXHAUSTED at the queue deadline
    if (!aborted_ && !established_) {
      const auto now = Clock::now();
      waited_out = s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED && now >= deadline_;
      if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED && attempt_ < 2)
        retry = ForwardManager::Impl::PendingOpen{id_, target_, deadline_, attempt_ + 1, now};
      else if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED && now < deadline_)
        retry = ForwardManager::Impl::PendingOpen{id_, target_, deadline_, attempt_ + 1,
                                                  now + std::chrono::milliseconds(100)};
    }
    if (mgr_->release(id_, target_.sandbox_id, token_, s.error_code(), retry ? &*retry : nullptr,
                      waited_out)) {
      spdlog::debug("stream {}: {} before headers: retrying", id_, from_grpc(s).to_string());
      return;
    }
    if (waited_out) {
      spdlog::warn("stream {}: refused: the gateway had no stream slot for {} ms ({})", id_,
                   mgr_->opts.queue_timeout.count(), from_grpc(s).to_string());
    }
    std::string reason = s.ok() ? "stream ended" : from_grpc(s).to_string();
    spdlog::debug("stream {}: done: {} -> {}", id_, reason, to_string(kind));
    mgr_->obs.on_closed(id_, kind, std::move(reason));
  }

 private:
  void prepare_write_locked() {
    const size_t n = std::min(pending_.size(), mgr_->opts.max_frame);
    if (n == pending_.size()) {
      tx_.mutable_data()->swap(pending_);
      pending_.clear();
    } else {
      tx_.set_data(pending_.substr(0, n));
      pending_.erase(0, n);
    }
    inflight_bytes_ = n;
    write_in_flight_ = true;
  }
  int release_read_locked() {
    r_closed_ = true;
    if (r_released_) return 0;
    r_released_ = true;
    return 1;
  }
  int release_write_locked() {
    w_closed_ = true;
    if (w_released_) return 0;
    w_released_ = true;
    return 1;
  }
  void remove_holds(int n) {
    for (int i = 0; i < n; ++i) RemoveHold();
  }

  std::shared_ptr<ForwardManager::Impl> mgr_;
  const StreamId id_;
  const ForwardTarget target_;
  const std::shared_ptr<TokenEntry> token_;
  const Clock::time_point deadline_;
  const int attempt_;
  grpc::ClientContext ctx_;
  TcpForwardFrame init_, tx_, rx_;
  std::atomic<bool> established_{false};

  std::mutex mu_;
  std::string pending_;       // client bytes not yet in a frame
  size_t inflight_bytes_ = 0; // bytes of the write in flight
  bool write_in_flight_ = false, read_in_flight_ = false;
  bool wd_requested_ = false, w_closed_ = false, r_closed_ = false;
  bool w_released_ = false, r_released_ = false;
  std::atomic<bool> aborted_{false};
};

// ---- manager ----

void ForwardManager::Impl::run() {
  std::unique_lock lk(mu);
  while (!stopping) {
    cv.wait_for(lk, std::chrono::milliseconds(100));
    if (stopping) break;
    const auto now = Clock::now();
    std::vector<PendingOpen> admit, expired;
    for (auto it = pending.begin(); it != pending.end();) {
      size_t& active = active_per_sandbox[it->target.sandbox_id];
      if (now < it->not_before) {
        ++it;
      } else if (active < opts.max_streams_per_sandbox) {
        ++active;
        starting.insert(it->id);
        admit.push_back(std::move(*it));
        it = pending.erase(it);
      } else if (now >= it->deadline) {
        expired.push_back(std::move(*it));
        it = pending.erase(it);
      } else {
        ++it;
      }
    }
    st.queue_timeouts += expired.size();
    st.queued_now = pending.size();
    // Idle tokens: revoked after token_idle_timeout without a stream.
    std::vector<std::string> idle;
    for (auto& [sb, v] : tokens) {
      for (auto it = v.begin(); it != v.end();) {
        if ((*it)->active == 0 && now - (*it)->idle_since >= opts.token_idle_timeout) {
          idle.push_back((*it)->token);
          it = v.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto it = retired.begin(); it != retired.end();) {
      if ((*it)->active == 0) {
        idle.push_back((*it)->token);
        it = retired.erase(it);
      } else {
        ++it;
      }
    }
    st.tokens_revoked += idle.size();
    lk.unlock();
    for (const auto& t : idle) {
      CallStatus s = gw.revoke_ssh_session(t);
      if (!s.ok()) spdlog::debug("revoking an idle token: {}", s.to_string());
    }
    for (auto& p : expired) {
      spdlog::warn("stream {}: refused: waited {} ms for one of the sandbox's {} stream slots",
                   p.id, opts.queue_timeout.count(), opts.max_streams_per_sandbox);
      obs.on_closed(p.id, EndKind::kRefused, "stream queue timeout");
    }
    for (auto& p : admit) start_one(std::move(p));
    lk.lock();
  }
}

std::shared_ptr<TokenEntry> ForwardManager::Impl::acquire_token(const std::string& sandbox_id,
                                                                CallStatus* err) {
  {
    std::lock_guard lk(mu);
    for (auto& t : tokens[sandbox_id]) {
      if (!t->bad && t->active < opts.max_streams_per_token) {
        ++t->active;
        return t;
      }
    }
  }
  SshSession session;
  CallStatus s = gw.create_ssh_session(sandbox_id, &session);
  if (!s.ok()) {
    *err = s;
    return nullptr;
  }
  auto t = std::make_shared<TokenEntry>();
  t->sandbox_id = sandbox_id;
  t->token = session.token;
  t->active = 1;
  std::lock_guard lk(mu);
  tokens[sandbox_id].push_back(t);
  st.tokens++;
  return t;
}

void ForwardManager::Impl::start_one(PendingOpen p) {
  CallStatus err;
  auto token = acquire_token(p.target.sandbox_id, &err);
  std::unique_lock lk(mu);
  starting.erase(p.id);
  const bool aborted = abort_requested.erase(p.id) > 0;
  if (!token || aborted || stopping) {
    if (token) --token->active;
    --active_per_sandbox[p.target.sandbox_id];
    st.open_failed++;
    cv.notify_all();
    lk.unlock();
    if (!token) {
      EndKind kind = map_session_status(err.code, err.message);
      spdlog::info("stream {}: CreateSshSession failed: {}", p.id, err.to_string());
      obs.on_closed(p.id, kind, "CreateSshSession: " + err.to_string());
    } else {
      obs.on_closed(p.id, EndKind::kReset, aborted ? "aborted" : "shutting down");
    }
    return;
  }
  const StreamId id = p.id;
  auto call = std::make_shared<ForwardCall>(shared_from_this(), std::move(p), token);
  calls.emplace(id, call);
  st.opened++;
  st.active_now = calls.size();
  lk.unlock();
  call->start();
}

bool ForwardManager::Impl::release(StreamId id, const std::string& sandbox_id,
                                   const std::shared_ptr<TokenEntry>& tok, int code,
                                   const PendingOpen* retry, bool queue_timeout) {
  std::lock_guard lk(mu);
  if (queue_timeout) st.queue_timeouts++;
  calls.erase(id);
  st.active_now = calls.size();
  --active_per_sandbox[sandbox_id];
  if (--tok->active == 0) tok->idle_since = Clock::now();
  if (code == grpc::StatusCode::UNAUTHENTICATED && !tok->bad) {
    // Token expired or revoked, or the gateway restarted and forgot every
    // token (protocol §8.1). Which is unknown, so hand out none of the
    // sandbox's pooled tokens again: after a restart each retry would
    // otherwise draw the next dead one and fail (streams already open on
    // them are unaffected). The retry mints a fresh token.
    auto& v = tokens[sandbox_id];
    for (auto& t : v) {
      t->bad = true;
      if (t != tok) retired.push_back(t);  // maybe still valid: revoked once idle
    }
    tok->bad = true;
    v.clear();
  }
  cv.notify_all();
  if (!retry || stopping) return false;
  pending.push_back(*retry);
  st.retries++;
  st.queued_now = pending.size();
  return true;
}

ForwardManager::ForwardManager(GatewayClient& gateway, ForwardObserver& observer,
                               ForwardOptions opts)
    : impl_(std::make_shared<Impl>(gateway, observer, opts)) {
  impl_->worker = std::thread([impl = impl_.get()] { impl->run(); });
}

ForwardManager::~ForwardManager() { shutdown(); }

void ForwardManager::open(StreamId id, ForwardTarget target) {
  std::lock_guard lk(impl_->mu);
  if (impl_->stopping) {
    // Reported from the worker's thread of control would be nicer, but the
    // contract is only "not synchronously from a manager call": defer.
    std::thread([obs = &impl_->obs, id] {
      obs->on_closed(id, EndKind::kUnreachable, "tunnel shutting down");
    }).detach();
    return;
  }
  impl_->pending.push_back({id, std::move(target), Clock::now() + impl_->opts.queue_timeout, 0, {}});
  impl_->st.queued_now = impl_->pending.size();
  impl_->cv.notify_all();
}

void ForwardManager::send(StreamId id, std::string bytes) {
  if (auto c = impl_->find(id)) c->send(std::move(bytes));
}

void ForwardManager::read_more(StreamId id) {
  if (auto c = impl_->find(id)) c->read_more();
}

void ForwardManager::close_write(StreamId id) {
  if (auto c = impl_->find(id)) c->close_write();
}

void ForwardManager::abort(StreamId id) {
  std::shared_ptr<ForwardCall> call;
  bool was_pending = false;
  {
    std::lock_guard lk(impl_->mu);
    auto it = std::find_if(impl_->pending.begin(), impl_->pending.end(),
                           [id](const auto& p) { return p.id == id; });
    if (it != impl_->pending.end()) {
      impl_->pending.erase(it);
      was_pending = true;
    } else if (impl_->starting.contains(id)) {
      impl_->abort_requested.insert(id);
      return;
    } else if (auto c = impl_->calls.find(id); c != impl_->calls.end()) {
      call = c->second;
    }
  }
  if (call) call->abort();
  if (was_pending) {
    std::thread([obs = &impl_->obs, id] { obs->on_closed(id, EndKind::kReset, "aborted"); })
        .detach();
  }
}

void ForwardManager::shutdown(std::chrono::milliseconds grace) {
  std::vector<std::shared_ptr<ForwardCall>> live;
  std::deque<Impl::PendingOpen> queued;
  {
    std::lock_guard lk(impl_->mu);
    if (impl_->stopping) return;
    impl_->stopping = true;
    queued.swap(impl_->pending);
    for (auto& [id, c] : impl_->calls) live.push_back(c);
    impl_->cv.notify_all();
  }
  if (impl_->worker.joinable()) impl_->worker.join();
  for (auto& p : queued) impl_->obs.on_closed(p.id, EndKind::kReset, "tunnel shutting down");
  for (auto& c : live) c->abort();
  live.clear();
  {
    std::unique_lock lk(impl_->mu);
    impl_->cv.wait_for(lk, grace, [&] { return impl_->calls.empty(); });
  }
  std::vector<std::string> to_revoke;
  {
    std::lock_guard lk(impl_->mu);
    for (auto& [sb, v] : impl_->tokens)
      for (auto& t : v) to_revoke.push_back(t->token);
    for (auto& t : impl_->retired) to_revoke.push_back(t->token);
    impl_->tokens.clear();
    impl_->retired.clear();
  }
  for (const auto& t : to_revoke) {
    CallStatus s = impl_->gw.revoke_ssh_session(t);
    if (!s.ok()) spdlog::debug("revoke token: {}", s.to_string());
  }
}

ForwardStats ForwardManager::stats() const {
  std::lock_guard lk(impl_->mu);
  ForwardStats s = impl_->st;
  s.tokens_pooled = 0;
  for (const auto& [sb, v] : impl_->tokens) s.tokens_pooled += v.size();
  return s;
}

}  // namespace osh::relay

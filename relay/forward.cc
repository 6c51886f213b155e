// Theory of operation
// ===================
// open() refuses at once (RST) past the global caps (max_pending_opens
// queued, max_streams open or starting), else queues a request; the
// admission worker admits it when the sandbox is under its stream cap
// (otherwise it waits, up to queue_timeout, then is refused), takes a token
// from the sandbox's pool, or, when every token already carries
// max_streams_per_token streams, hands the open to the token worker, which
// mints one with CreateSshSession (a blocking unary call, kept off the
// admission worker, like RevokeSshSession of idle tokens), and starts a
// ForwardCall in the gateway's protocol generation
// (GatewayClient::Impl::generation, set by health()): ForwardReactor<Frame>
// is one implementation over the two frame types, 0.0's
// openshell::v1::TcpForwardFrame (sandbox by UUID, generated stub) and 0.1's
// openshell::v1::g01::TcpForwardFrame (sandbox by name + workspace, generic
// stub on the same method path). Exactly one encoding per call.
//
// Every open has a deadline (open_timeout, from open()): the queue expires
// it at queue_timeout at the latest, the token worker refuses it if it is
// past when its turn comes, and each call arms an alarm for it that cancels
// a call not reported open by then (a gateway that never answers): refused,
// open_timeouts. No thread is detached: answers that must not come from the
// API call itself (refused by a cap, aborted while queued, made during
// shutdown) are deferred to the admission worker, which runs until the
// destructor; the token worker is joined by shutdown().
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
// the pool and reports on_closed, or puts the open back in the queue when a
// retry is worth it (forward_policy.h classify_open_failure). Reactions may
// run inline inside Start*() calls, so no mutex is held while calling
// Start*/RemoveHold, and objects stay alive through shared_ptr copies taken
// before each call.
//
// When is a stream open (on_open_ok)? Every call asks for the project's
// extensions (common/tunnel_ext.h). If the response headers confirm connect-ack,
// they mean "target connected". Otherwise (upstream, protocol §2.4) they only
// mean "relay requested": the stream is reported open at the first byte from
// the target, the call's end, or when the settle window (SettleWindow, one
// per manager = per gateway) elapses on a grpc::Alarm, whichever is first. A
// dial failure before that is still a refusal, and may be retried once on the
// other loopback family (a new call through the queue: the SYN is still held).
//
// Late loopback fallback (issue 12.3: on a loaded machine the refusal often
// comes after the window): a "Connection refused" (or unusable-family) end of
// a call already reported open, before any byte or FIN from the target, is
// retried on the other family by a successor reactor - a new call with its
// own ClientContext, the same StreamId, stream slot and token - created in
// the failed call's OnDone. Until the target's first byte each call keeps a
// copy of every client byte (replay_, at most late_fallback_replay_bytes;
// past that the copy is dropped and a late refusal stays a reset). The copy
// becomes the successor's first data frames, followed by WritesDone if the
// client had half-closed. on_write_done stays exactly-once per byte: the
// successor skips the offsets its predecessor already reported
// (reported_upto_); bytes of the failed call's last write were never
// reported and are reported by the successor. The hand-over happens under
// the manager's mu and the old call's mu_ (in that order): the map entry is
// replaced and the old call's successor_ set, so an API call that still
// reaches the old object is forwarded; bytes sent between the old call's
// write failure and its OnDone were kept in replay_. Only when the second
// family refuses too is it a reset (late_refusals).
//
// Family memory (LoopbackMemory, under mu): the family that answered after a
// fallback is tried first by later opens of the same (sandbox, port) from
// clients of either family, for loopback_memory_ttl; a refusal of that
// family forgets it.
//
// Wire conventions: client bytes are queued as the frames send() was given,
// each written as wire bytes whose payload slice is the frame's own string
// (relay/data_frame.h: no copy, no protobuf serialisation; the stack hands
// 64 KiB frames while a write is in flight, stack/conn.cc "Upload frames");
// small pieces join the last queued frame, larger ones are split, so no frame
// exceeds max_frame. Data frames and bytes each way are counted
// (ForwardStats::frames_sent ...). With fin-frame confirmed an empty data
// frame from the gateway means "target sent FIN"; without it empty frames are
// skipped (as upstream clients do) and the call's OK end is the FIN. Data
// frames after a FIN frame are dropped (logged once): the stack has already
// given the client the FIN (tests/relay/forward_test.cc ForwardHostileGateway).
#include "relay/forward.h"

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/idle_trim.h"
#include "common/log_escape.h"
#include "common/log_limiter.h"
#include "relay/data_frame.h"
#include "relay/forward_policy.h"
#include "relay/message_buffer.h"
#include "relay/gateway_client_impl.h"
#include "relay/h2_reactor.h"
#include "common/tunnel_ext.h"

namespace osh::relay {
namespace {

using Clock = std::chrono::steady_clock;
using Frame00 = openshell::v1::TcpForwardFrame;
using Frame01 = openshell::v1::g01::TcpForwardFrame;

/// How long a token the gateway called full ("SSH session connection limit
/// reached") is passed over: its slots free up as the gateway notices our
/// streams on it ended.
constexpr auto kTokenFullPause = std::chrono::seconds(1);

struct TokenEntry {
  std::string token;
  size_t active = 0;
  bool bad = false;
  Clock::time_point full_until{};               // passed over until then
  Clock::time_point idle_since = Clock::now();  // valid while active == 0
};

/// The key of a sandbox's token pool and stream count: its id, which both
/// generations return (0.1 only addresses by name).
std::string pool_key(const SandboxRef& s) { return s.id.empty() ? s.name : s.id; }

// ---- the two encodings (protocol §1.2; protocol-0.1 §3 ForwardTcp) ----

template <class Init>
void fill_common_init(Init& init, const ForwardTarget& t, const std::string& token) {
  init.set_service_id(t.service_id);
  init.set_authorization_token(token);
  if (t.ssh) {
    init.mutable_ssh();
  } else {
    init.mutable_tcp()->set_host(t.host);
    init.mutable_tcp()->set_port(t.port);
  }
}

void fill_init(openshell::v1::TcpForwardInit& init, const ForwardTarget& t, const std::string& token,
               const std::string& /*workspace: 0.0 has none on ForwardTcp*/) {
  init.set_sandbox_id(t.sandbox.id);
  fill_common_init(init, t, token);
}

void fill_init(openshell::v1::g01::TcpForwardInit& init, const ForwardTarget& t,
               const std::string& token, const std::string& workspace) {
  init.set_sandbox(t.sandbox.name);
  init.set_workspace(workspace.empty() ? "default" : workspace);
  fill_common_init(init, t, token);
}

// ForwardTcp's method path; gRPC keeps a pointer to it.
const std::string& forward_path() {
  static const std::string path(method::kForwardTcp);
  return path;
}

// Frames are written as wire bytes (data_frame.h), read as messages.
void bind_call(GatewayClient::Impl& gw, grpc::ClientContext* ctx,
               grpc::ClientBidiReactor<grpc::ByteBuffer, Frame00>* reactor) {
  gw.forward00->PrepareBidiStreamingCall(ctx, forward_path(), grpc::StubOptions(), reactor);
}

void bind_call(GatewayClient::Impl& gw, grpc::ClientContext* ctx,
               grpc::ClientBidiReactor<grpc::ByteBuffer, Frame01>* reactor) {
  gw.forward01->PrepareBidiStreamingCall(ctx, forward_path(), grpc::StubOptions(), reactor);
}

// The same call on the nghttp2 channel (ForwardTransport::kH2).
template <class Frame>
void bind_call(GatewayClient::Impl& gw, H2Context* ctx, H2BidiReactor<Frame>* reactor) {
  reactor->Bind(*gw.h2, ctx, forward_path());
}

/// The two transports of a ForwardTcp call (GatewayOptions::forward_transport):
/// grpc++'s callback reactor on the gateway channel, or the same surface on
/// the nghttp2 channel (relay/h2_reactor.h).
struct GrpcTransport {
  template <class Frame>
  using Reactor = grpc::ClientBidiReactor<grpc::ByteBuffer, Frame>;
  using Context = grpc::ClientContext;
};
struct H2Transport {
  template <class Frame>
  using Reactor = H2BidiReactor<Frame>;
  using Context = H2Context;
};

}  // namespace

/// One stream, whatever its encoding; what the manager and the public API
/// call. Thread-safe.
class ForwardCall : public std::enable_shared_from_this<ForwardCall> {
 public:
  virtual ~ForwardCall() = default;
  virtual void start() = 0;
  virtual void send(std::string bytes) = 0;
  /// ForwardStreams::try_send_queued for this call; under the manager's mu.
  virtual bool try_send_queued(std::string& bytes) = 0;
  virtual void read_more() = 0;
  /// ForwardStreams::try_read_more_in_place for this call; under the
  /// manager's mu.
  virtual bool try_read_more_in_place() = 0;
  virtual void close_write() = 0;
  virtual void abort() = 0;
};

struct ForwardManager::Impl : std::enable_shared_from_this<ForwardManager::Impl> {
  struct PendingOpen {
    StreamId id;
    ForwardTarget target;
    Clock::time_point deadline;        // refused (queue timeout) after this
    Clock::time_point give_up_at{};    // refused (open timeout) after this, wherever it is
    int attempt = 0;                   // UNAUTHENTICATED retries so far
    int rate_limited = 0;              // rate-limit refusals so far (back-off exponent)
    bool fallback_tried = false;       // the other loopback family was tried
    bool remembered = false;           // target.host is the family LoopbackMemory named
    Clock::time_point not_before{};    // retry back-off
    bool waited_for_budget = false;    // counted in buffer_waits
  };

  GatewayClient& gw;
  ForwardObserver& obs;
  ForwardOptions opts;

  mutable std::mutex mu;
  std::condition_variable cv;
  bool kicked = false;  // the queue changed: the worker looks again at once
  std::deque<PendingOpen> pending;
  std::unordered_map<StreamId, std::shared_ptr<ForwardCall>> calls;
  std::unordered_set<StreamId> starting;        // admitted, token being fetched
  std::unordered_set<StreamId> abort_requested; // aborted while starting
  std::unordered_map<std::string, size_t> active_per_sandbox;
  std::unordered_map<std::string, std::vector<std::shared_ptr<TokenEntry>>> tokens;
  std::vector<std::shared_ptr<TokenEntry>> retired;  // out of the pool, to revoke once idle
  SettleWindow settle;
  LoopbackMemory family_memory;  // guarded by mu
  const StreamBudget budget;     // the whole-process ceiling (max_buffer_bytes)
  Clock::time_point admit_not_before{};  // global rate limiter: admit nothing before
  ForwardStats st;
  // Data frames each way (ForwardStats::frames_sent ...): counted by the
  // streams' reactions without mu.
  std::atomic<uint64_t> frames_sent{0}, frame_bytes_sent{0}, frames_received{0}, frame_bytes_received{0};
  static void count_frame(std::atomic<uint64_t>& frames, std::atomic<uint64_t>& bytes, size_t n) {
    frames.fetch_add(1, std::memory_order_relaxed);
    bytes.fetch_add(n, std::memory_order_relaxed);
  }
  bool stopping = false;
  std::thread worker;
  std::optional<IdleTrimmer> trimmer;  // ForwardOptions::trim_when_idle

  // on_closed calls the worker reports (an open refused by a global cap,
  // aborted while queued, or made during shutdown): never from the API call
  // itself (ForwardObserver contract) and never from a thread of its own.
  struct Deferred {
    StreamId id;
    EndKind kind;
    std::string reason;
  };
  std::vector<Deferred> deferred;
  bool exiting = false;  // the destructor: the worker ends once `deferred` is empty

  // The token worker: the blocking unary calls (CreateSshSession for an
  // admitted open without a pooled token, a first Health, RevokeSshSession
  // of idle tokens), off the admission worker. Jobs in order; shutdown()
  // sets token_exit and joins it once the queue is done.
  struct TokenJob {
    std::optional<PendingOpen> open;  // mint (if needed) and start this open
    std::string revoke;               // or revoke this token
  };
  std::deque<TokenJob> token_jobs;
  std::condition_variable token_cv;
  bool token_exit = false;
  std::thread token_worker;

  Impl(GatewayClient& g, ForwardObserver& o, ForwardOptions op)
      : gw(g),
        obs(o),
        opts(op),
        settle(settle_override(op), op.connect_settle_cap),
        family_memory(op.loopback_memory_ttl, op.loopback_memory_entries),
        budget(op.max_buffer_bytes, op.stream_buffer_share) {}

  static std::optional<SettleWindow::Duration> settle_override(const ForwardOptions& o) {
    if (!o.connect_settle) return std::nullopt;
    return std::chrono::duration_cast<SettleWindow::Duration>(*o.connect_settle);
  }

  void run();
  void token_run();
  /// An admitted open: starts its call at once with a pooled token (the
  /// admission worker), or hands it to the token worker. Thread: the worker.
  void start_one(PendingOpen p);
  /// The token worker's part of an open: the generation, a token (minted if
  /// none is pooled), then finish_start. Thread: the token worker.
  void mint_and_start(PendingOpen p);
  /// Ends the start of admitted @p: with @token, the call starts; without
  /// (@err says why) the open is queued again (@retry), or answered:
  /// refused at its open deadline (@timed_out), or the token call's error.
  void finish_start(PendingOpen p, Generation gen, std::shared_ptr<TokenEntry> token, const CallStatus& err,
                    std::optional<PendingOpen> retry, bool waited_out, bool timed_out);
  /// A pooled token of @key with a free slot (its count taken), or nullptr. Takes mu.
  std::shared_ptr<TokenEntry> pooled_token(const std::string& key);
  /// Reports on_closed(@id) from the worker (see `deferred`). Under mu.
  void defer_close_locked(StreamId id, EndKind kind, std::string reason) {
    deferred.push_back({id, kind, std::move(reason)});
    kick_locked();
  }
  /// The open deadline passed before the call was reported open: counted.
  void count_open_timeout() {
    std::lock_guard lk(mu);
    st.open_timeouts++;
  }
  std::shared_ptr<TokenEntry> acquire_token(const SandboxRef& sandbox, CallStatus* err);
  std::shared_ptr<ForwardCall> make_call(Generation g, PendingOpen p, std::shared_ptr<TokenEntry> tok);
  /// What to do with an open that ended with (@code, @message) before it was
  /// reported open: the PendingOpen to queue again, or nullopt (then
  /// *waited_out says whether a retryable refusal met the queue deadline).
  /// Counts the kinds; marks @tok full on the per-token cap. Takes mu.
  std::optional<PendingOpen> plan_retry(const PendingOpen& p, int code, const std::string& message,
                                        const std::shared_ptr<TokenEntry>& tok, bool* waited_out);
  /// Returns the stream's slot and token; if `retry` is set and the manager
  /// is running, puts the open back in the queue (same id: the stack still
  /// holds the SYN) in the same critical section, and returns true.
  /// `queue_timeout`: the gateway still refused (a cap) at the queue
  /// deadline; counted with the tunnel's own queue timeouts.
  bool release(StreamId id, const std::string& key, const std::shared_ptr<TokenEntry>& tok, int code,
               const PendingOpen* retry, bool queue_timeout = false);
  /// A call's response headers arrived after @latency (no connect-ack):
  /// learns it and returns the settle window to apply.
  SettleWindow::Duration headers_arrived(Clock::duration latency);
  /// A dial failure arrived @latency after its call's headers.
  void dial_failed_after_headers(Clock::duration latency, bool late);
  /// Family memory (LoopbackMemory): @p reached its target on a family a
  /// fallback or the memory chose / was refused on its family. Take mu.
  void note_answered(const PendingOpen& p);
  void note_refused(const PendingOpen& p);

  /// Sizes the gateway channel's gRPC quota for @open streams (open or
  /// starting): clamp(open x stream_buffer_share, grpc_quota_floor,
  /// max_buffer_bytes). Grows at once (before admitted streams start);
  /// shrinks only once the target is below half the current size, to twice
  /// the target, so that it never drops under what the remaining streams
  /// hold (gRPC cancels a stream when its quota is exhausted). Thread: the
  /// worker, or the constructor before the worker starts.
  void resize_quota(size_t open) {
    auto& quota = gw.impl().quota;
    if (!quota || opts.max_buffer_bytes == 0) return;
    const size_t cap = opts.max_buffer_bytes;
    const size_t floor = std::min(opts.grpc_quota_floor, cap);
    const size_t target = std::clamp(open * opts.stream_buffer_share, floor, cap);
    size_t want = quota_size;
    if (target > quota_size) want = target;
    else if (target <= quota_size / 2) want = std::clamp(2 * target, floor, cap);
    if (want == quota_size) return;
    quota_size = want;
    quota->Resize(want);
  }
  size_t quota_size = 0;  // the size last given to the quota (worker)

  void kick_locked() {
    kicked = true;
    cv.notify_all();
  }
  std::shared_ptr<ForwardCall> find(StreamId id) {
    std::lock_guard lk(mu);
    auto it = calls.find(id);
    return it == calls.end() ? nullptr : it->second;
  }
  // The fast paths for a caller that must not run gRPC code: @fn on the
  // live call @id under mu (lock order: it, then the call's mu_), so that
  // the map keeps the call alive: the caller's thread never drops the last
  // reference (a reactor's destruction is gRPC code). False if unknown.
  template <class Fn>
  bool try_on_call(StreamId id, Fn&& fn) {
    std::lock_guard lk(mu);
    const auto it = calls.find(id);
    return it != calls.end() && fn(*it->second);
  }
};

namespace {

using PendingOpen = ForwardManager::Impl::PendingOpen;

template <class Frame, class Transport>
class ForwardReactor final : public ForwardCall, public Transport::template Reactor<Frame> {
 public:
  ForwardReactor(std::shared_ptr<ForwardManager::Impl> mgr, PendingOpen open,
                 std::shared_ptr<TokenEntry> token)
      : mgr_(std::move(mgr)), open_(std::move(open)), id_(open_.id), token_(std::move(token)) {
    // Until start() has issued the init frame (always the first write) and
    // the first read, bytes sent meanwhile wait in frames_.
    write_in_flight_ = true;
    read_in_flight_ = true;
    // Keep a copy of the client's bytes while a late refusal could still be
    // moved to the other loopback family (late_fallback()).
    recording_ = mgr_->opts.late_fallback_replay_bytes > 0 && !open_.target.ssh &&
                 !open_.fallback_tried && other_loopback(open_.target.host).has_value();
  }

  void start() override {
    Frame init;
    fill_init(*init.mutable_init(), open_.target, token_->token, mgr_->gw.options().workspace);
    init_ = SerializeToBuffer(init);
    mgr_->gw.impl().prepare(ctx_);
    if (mgr_->opts.request_extensions) ctx_.AddMetadata(std::string(tunnel_ext::kHeader), std::string(tunnel_ext::kRequestAll));
    started_at_ = Clock::now();
    bind_call(mgr_->gw.impl(), &ctx_, this);
    this->AddMultipleHolds(2);
    this->StartWrite(&init_);
    this->StartRead(&rx_);
    this->StartCall();
    arm_open_deadline();
  }

  void send(std::string bytes) override {
    std::unique_lock lk(mu_);
    if (successor_) return forward_to_successor(lk, [&](ForwardCall& c) { c.send(std::move(bytes)); });
    if (wd_requested_ || aborted_) return;
    record_locked(bytes);
    if (w_closed_) return;  // the call is ending; kept for a late fallback if recording
    enqueue_locked(std::move(bytes));
    if (write_in_flight_ || frames_.empty()) return;
    prepare_write_locked();
    lk.unlock();
    this->StartWrite(&tx_);
  }

  // Only the plain case: a write in flight, nothing special about the
  // stream. Everything else goes through send(). No gRPC call here.
  bool try_send_queued(std::string& bytes) override {
    std::lock_guard lk(mu_);
    if (successor_ || wd_requested_ || aborted_ || w_closed_ || !write_in_flight_) return false;
    record_locked(bytes);
    enqueue_locked(std::move(bytes));
    return true;
  }

  // Whether read_more() has to start a gRPC read: not while one is in
  // flight, nor while a frame is being delivered (OnReadDone, mu_ released
  // around on_data, starts the next read itself once it is delivered: a
  // read started here could deliver its frame ahead of that one), nor once
  // the stream reads no more.
  bool read_must_start_locked() const { return !(r_closed_ || read_in_flight_ || aborted_ || delivering_); }

  void read_more() override {
    std::unique_lock lk(mu_);
    if (successor_) return forward_to_successor(lk, [](ForwardCall& c) { c.read_more(); });
    delivered_ahead_ = 0;  // the observer took every frame delivered so far
    if (!read_must_start_locked()) return;
    read_in_flight_ = true;
    lk.unlock();
    this->StartRead(&rx_);
  }

  // read_more() where it would start no read: the same state change, no
  // gRPC call. A moved stream (successor_) goes through read_more().
  bool try_read_more_in_place() override {
    std::lock_guard lk(mu_);
    if (successor_ || read_must_start_locked()) return false;
    delivered_ahead_ = 0;
    return true;
  }

  void close_write() override {
    std::unique_lock lk(mu_);
    if (successor_) return forward_to_successor(lk, [](ForwardCall& c) { c.close_write(); });
    if (wd_requested_ || aborted_) return;
    wd_requested_ = true;  // also when w_closed_: a late fallback replays it
    if (w_closed_ || write_in_flight_ || !frames_.empty()) return;
    write_in_flight_ = true;
    lk.unlock();
    this->StartWritesDone();
  }

  void abort() override {
    std::unique_lock lk(mu_);
    if (successor_) return forward_to_successor(lk, [](ForwardCall& c) { c.abort(); });
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
    // An empty frame that overtook this reaction left the call's next read
    // to this reaction's verdict (OnReadDone): started on every way out,
    // after open_mu_ is released.
    DeferredRead resume{this};
    if (!ok) {  // trailers-only: OnDone reports the status
      std::lock_guard lk(open_mu_);
      resume.go = std::exchange(pending_fin_, false);
      return;
    }
    const auto now = Clock::now();
    SettleWindow::Duration window;
    {
      std::lock_guard lk(open_mu_);
      const bool fin_pending = std::exchange(pending_fin_, false);
      resume.go = fin_pending;
      headers_at_ = now;
      headers_seen_ = true;
      load_ext_locked();
      if (open_timed_out_) return;  // being cancelled: OnDone refuses it
      if (ext_.connect_ack) {  // headers mean "target connected": no late refusal can come
        note_answered_locked();
        std::lock_guard g(mu_);  // lock order: open_mu_, then mu_
        stop_recording_locked();
      }
      if (fin_pending && ext_.fin_frame) {  // an empty frame overtook this reaction
        if (!open_reported_) report_open_locked();
        {
          std::lock_guard g(mu_);  // lock order: open_mu_, then mu_
          remote_fin_ = true;
        }
        mgr_->obs.on_remote_fin(id_);
      }
      if (open_reported_ || ended_) return;
      window = ext_.connect_ack ? SettleWindow::Duration::zero()
                                : mgr_->headers_arrived(now - started_at_);
      if (window <= SettleWindow::Duration::zero()) {
        report_open_locked();
        return;
      }
    }
    // Hold the SYN a little longer: a closed port's failure may follow. The
    // alarm only holds a weak reference: a call that ends first is simply gone.
    settle_alarm_.emplace();
    std::weak_ptr<ForwardCall> weak = weak_from_this();
    settle_alarm_->Set(std::chrono::system_clock::now() + window, [weak](bool fired) {
      if (!fired) return;  // cancelled: the call is gone
      if (auto self = weak.lock()) static_cast<ForwardReactor&>(*self).settle_elapsed();
    });
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
    // A failed write's bytes are not reported: a late fallback writes (and
    // reports) them again.
    if (!ok || aborted_ || r_closed_) {
      tx_.Clear();
      const int holds = release_write_locked();
      lk.unlock();
      remove_holds(holds);
      return;
    }
    // Exactly once per byte: a successor call replays bytes its predecessor
    // already reported; only what lies past reported_upto_ is new.
    written_ += done;
    if (done > 0) mgr_->count_frame(mgr_->frames_sent, mgr_->frame_bytes_sent, done);
    const size_t report = written_ > reported_upto_ ? written_ - reported_upto_ : 0;
    reported_upto_ = std::max(reported_upto_, written_);
    enum { kNone, kWrite, kWritesDone } next = kNone;
    if (!frames_.empty()) {
      prepare_write_locked();
      next = kWrite;
    } else {
      tx_.Clear();  // the written frame's buffer: not kept by an idle stream
      if (wd_requested_) {
        write_in_flight_ = true;
        next = kWritesDone;
      }
    }
    lk.unlock();
    if (report) mgr_->obs.on_write_done(id_, report);
    if (next == kWrite) this->StartWrite(&tx_);
    else if (next == kWritesDone) this->StartWritesDone();
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
    const bool is_data = rx_.payload_case() == Frame::kData;
    if (is_data && !rx_.data().empty() && remote_fin_) {
      // Bytes after the target's FIN (a broken gateway): not the
      // connection's any more; dropped, and said once.
      rx_.Clear();
      read_in_flight_ = true;
      const bool first = !dropped_after_fin_;
      dropped_after_fin_ = true;
      lk.unlock();
      if (first) spdlog::warn("stream {}: the gateway sent data after the target's FIN: dropped", id_);
      this->StartRead(&rx_);
      return;
    }
    if (is_data && !rx_.data().empty()) {
      std::string bytes;
      bytes.swap(*rx_.mutable_data());
      rx_.Clear();
      mgr_->count_frame(mgr_->frames_received, mgr_->frame_bytes_received, bytes.size());
      target_spoke_locked();
      ++delivered_ahead_;
      delivering_ = true;  // read_more() starts no read until on_data returned
      lk.unlock();
      target_spoke();  // the first byte proves the target connected
      mgr_->obs.on_data(id_, std::move(bytes));
      // Read ahead (ForwardOptions::read_ahead_frames): the next read starts
      // here, on gRPC's thread, while fewer frames than that await the
      // observer's read_more() (which may have come during on_data); else
      // read_more() starts it. Either way after on_data: frames stay in order.
      lk.lock();
      delivering_ = false;
      const bool next = !r_closed_ && !aborted_ && !read_in_flight_ &&
                        delivered_ahead_ < mgr_->opts.read_ahead_frames;
      if (next) read_in_flight_ = true;
      lk.unlock();
      if (next) this->StartRead(&rx_);
      return;
    }
    rx_.Clear();
    read_in_flight_ = true;
    lk.unlock();
    // An empty data frame is the target's FIN only where the gateway
    // confirmed fin-frame; otherwise it is skipped, as upstream clients do.
    // Before the headers' reaction has run that is not known yet: the next
    // read then waits for that reaction's verdict, so no later frame can be
    // delivered ahead of it (bytes after a FIN are not the connection's).
    const FinVerdict verdict = is_data ? fin_frame_verdict() : FinVerdict::kNotFin;
    if (verdict == FinVerdict::kPending) return;  // OnReadInitialMetadataDone starts the read
    if (verdict == FinVerdict::kFin) {
      {
        std::lock_guard g(mu_);
        target_spoke_locked();
        remote_fin_ = true;
      }
      target_spoke();
      mgr_->obs.on_remote_fin(id_);
    }
    this->StartRead(&rx_);
  }

  void OnDone(const grpc::Status& s) override {
    auto self = shared_from_this();
    bool reported = false, saw_headers = false, timed_out = false;
    Clock::time_point headers_at;
    {
      std::lock_guard lk(open_mu_);
      ended_ = true;  // a settle alarm firing now does nothing
      reported = open_reported_;
      timed_out = open_timed_out_ && !aborted_;
      saw_headers = headers_seen_;
      headers_at = headers_at_;
    }
    const int code = s.error_code();
    const std::string& msg = s.error_message();
    const OpenFailure failure = classify_open_failure(code, msg);
    if (failure == OpenFailure::kFinal && code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      std::lock_guard g(mgr_->mu);
      mgr_->st.oversize_frames++;  // our receive limit (forward_policy.cc): a broken or hostile gateway
    }
    const bool refused = failure == OpenFailure::kDialRefused || failure == OpenFailure::kDialFamily;
    if (refused && !aborted_) mgr_->note_refused(open_);
    if (s.ok() && !aborted_) note_answered();
    const bool dial_failure = is_dial_failure(code, msg);
    // Refused after the stream was reported open but before the target
    // spoke: move the connection to the other loopback family, unseen by
    // the client, if its bytes so far were kept.
    if (reported && refused && !got_data_ && !aborted_ && late_fallback()) {
      if (saw_headers) mgr_->dial_failed_after_headers(Clock::now() - headers_at, false);
      return;
    }
    const bool late_refusal = reported && dial_failure && !got_data_ && !aborted_;
    if (dial_failure && saw_headers)
      mgr_->dial_failed_after_headers(Clock::now() - headers_at, late_refusal);
    if (late_refusal)
      OSH_LOG_LIMITED(spdlog::level::info, "stream {}: the target refused after the settle window: reset ({}{})",
                      id_, log_escape(msg), open_.fallback_tried ? ", in both loopback families" : "");

    std::optional<PendingOpen> retry;
    bool waited_out = false;  // still refused by a cap at the queue deadline
    if (!aborted_ && !reported && !timed_out) retry = mgr_->plan_retry(open_, code, msg, token_, &waited_out);
    const std::string key = pool_key(open_.target.sandbox);
    if (mgr_->release(id_, key, token_, code, retry ? &*retry : nullptr, waited_out)) {
      spdlog::debug("stream {}: {} before it was open: retrying", id_, from_grpc(s).to_string());
      return;
    }
    if (waited_out) {
      OSH_LOG_LIMITED(spdlog::level::warn, "stream {}: refused: the gateway had no stream slot for {} ms ({})",
                      id_, mgr_->opts.queue_timeout.count(), log_escape(from_grpc(s).to_string()));
    }
    if (timed_out) {
      mgr_->count_open_timeout();
      OSH_LOG_LIMITED(spdlog::level::warn, "stream {}: refused: the gateway did not open it within {} ms", id_,
                      mgr_->opts.open_timeout.count());
      mgr_->obs.on_closed(id_, EndKind::kRefused, "open timeout");
      return;
    }
    // An OK end before the stream was reported open: the target accepted
    // and closed without a byte (or, upstream, the relay was lost, which
    // looks the same): the client connects and sees FIN.
    if (!aborted_ && !reported && s.ok()) mgr_->obs.on_open_ok(id_);
    const EndKind kind = aborted_ ? EndKind::kReset : map_forward_status(code, msg, reported);
    std::string reason = s.ok() ? "stream ended" : from_grpc(s).to_string();
    spdlog::debug("stream {}: done: {} -> {}", id_, reason, to_string(kind));
    mgr_->obs.on_closed(id_, kind, std::move(reason));
  }

 private:
  // The late loopback fallback (docs/ARCHITECTURE.md "Connection
  // semantics"): from OnDone of a call that was reported open and then
  // refused before any target byte. Starts a new call (new ClientContext,
  // same StreamId, slot and token) on the other family whose first frames
  // are the kept client bytes, then a replayed WritesDone if the client
  // half-closed; this call forwards every later API call to it. False (and
  // nothing changed) when the bytes were not kept (bound exceeded, SSH,
  // second family already), the stream was aborted, or the manager stops.
  bool late_fallback() {
    const auto other = other_loopback(open_.target.host);
    if (!other || open_.target.ssh || open_.fallback_tried) return false;
    PendingOpen next_open = open_;
    next_open.target.host = *other;
    next_open.fallback_tried = true;
    next_open.remembered = false;
    auto next = std::make_shared<ForwardReactor>(mgr_, std::move(next_open), token_);
    size_t replay_bytes = 0;
    bool replay_fin = false;
    {
      // Lock order: the manager's mu, then a call's mu_ (nothing takes them
      // the other way round). `next` is not shared yet: its fields are ours.
      std::lock_guard mlk(mgr_->mu);
      if (mgr_->stopping) return false;
      std::lock_guard lk(mu_);
      if (aborted_ || !recording_ || got_data_) return false;
      replay_bytes = replay_.size();
      replay_fin = wd_requested_;
      next->enqueue_locked(std::move(replay_));
      next->reported_upto_ = reported_upto_;
      next->wd_requested_ = wd_requested_;
      next->open_reported_ = true;  // the client's connection is open already
      recording_ = false;
      successor_ = next;
      mgr_->calls[id_] = next;  // same slot, same token: the counts stay
      mgr_->st.loopback_fallbacks++;
      mgr_->st.late_fallbacks++;
    }
    OSH_LOG_LIMITED(spdlog::level::info,
                    "stream {}: {}:{} refused after the settle window; moving to {} ({} client bytes{} replayed)",
                    id_, open_.target.host, open_.target.port, *other, replay_bytes, replay_fin ? " and FIN" : "");
    next->start();
    return true;
  }

  // Runs @fn on the successor without holding mu_ (its reactions may run
  // inline), keeping it alive through the call.
  template <class Fn>
  void forward_to_successor(std::unique_lock<std::mutex>& lk, Fn&& fn) {
    std::shared_ptr<ForwardCall> next = successor_;
    lk.unlock();
    fn(*next);
  }

  // Keeps @bytes for a late fallback, up to the bound; past it the copy is
  // dropped for good (a late refusal is then a reset).
  void record_locked(const std::string& bytes) {
    if (!recording_) return;
    if (replay_.size() + bytes.size() > mgr_->opts.late_fallback_replay_bytes) {
      recording_ = false;
      std::string().swap(replay_);
      return;
    }
    replay_.append(bytes);
  }

  // The target sent a byte or a FIN: it is connected, no fallback can
  // follow. Under mu_.
  void target_spoke_locked() {
    got_data_ = true;
    stop_recording_locked();
  }
  void stop_recording_locked() {
    if (!recording_) return;
    recording_ = false;
    std::string().swap(replay_);
  }

  // Reads the extensions the gateway confirmed (response initial metadata).
  // Only from OnReadInitialMetadataDone: ClientContext allows the read once
  // that operation completed, and a read's reaction may run before it.
  void load_ext_locked() {
    if (ext_loaded_) return;
    ext_loaded_ = true;
    if (!mgr_->opts.request_extensions) return;  // never asked: ignore any answer
    const auto& md = ctx_.GetServerInitialMetadata();
    const auto [first, last] = md.equal_range(grpc::string_ref(tunnel_ext::kHeader.data(), tunnel_ext::kHeader.size()));
    for (auto it = first; it != last; ++it)
      tunnel_ext::ParseInto(std::string_view(it->second.data(), it->second.size()), ext_);
  }

  // For an empty data frame: whether it is the target's FIN. If the
  // headers' reaction has not run yet, it decides (pending_fin_) and starts
  // the next read (DeferredRead).
  enum class FinVerdict { kFin, kNotFin, kPending };
  FinVerdict fin_frame_verdict() {
    std::lock_guard lk(open_mu_);
    if (!ext_loaded_) {
      pending_fin_ = true;
      return FinVerdict::kPending;
    }
    return ext_.fin_frame ? FinVerdict::kFin : FinVerdict::kNotFin;
  }
  // Starts the read a pending FIN verdict held back, when it goes out of
  // scope (after the locks of the reaction that declared it).
  struct DeferredRead {
    ForwardReactor* reactor;
    bool go = false;
    ~DeferredRead() {
      if (go) reactor->StartRead(&reactor->rx_);
    }
  };

  // The target sent something: it is connected. Reports the stream open if
  // the settle window still held it; either way, an on_open_ok being
  // reported on another thread has finished when this returns.
  void target_spoke() {
    std::lock_guard lk(open_mu_);
    note_answered_locked();
    if (!open_reported_ && !ended_ && !open_timed_out_) report_open_locked();
  }

  void settle_elapsed() {
    std::lock_guard lk(open_mu_);
    if (!open_reported_ && !ended_ && !open_timed_out_) report_open_locked();
  }

  // The open deadline (ForwardOptions::open_timeout, issue 14.5): a call
  // not reported open by PendingOpen::give_up_at is cancelled, and OnDone
  // refuses it. The alarm holds a weak reference, like the settle alarm.
  // A successor (late fallback) is open already: no deadline.
  void arm_open_deadline() {
    {
      std::lock_guard lk(open_mu_);
      if (open_reported_ || ended_) return;
    }
    const auto left = std::max(open_.give_up_at - Clock::now(), Clock::duration::zero());
    open_alarm_.emplace();
    std::weak_ptr<ForwardCall> weak = weak_from_this();
    open_alarm_->Set(std::chrono::system_clock::now() +
                         std::chrono::duration_cast<std::chrono::system_clock::duration>(left),
                     [weak](bool fired) {
                       if (!fired) return;
                       if (auto self = weak.lock()) static_cast<ForwardReactor&>(*self).open_deadline_passed();
                     });
  }
  void open_deadline_passed() {
    {
      std::lock_guard lk(open_mu_);
      if (open_reported_ || ended_) return;
      open_timed_out_ = true;
    }
    ctx_.TryCancel();
  }

  // The target is reached: if a fallback or the family memory chose this
  // family, (re)remember it for the (sandbox, port). Once per call.
  void note_answered() {
    std::lock_guard lk(open_mu_);
    note_answered_locked();
  }
  void note_answered_locked() {
    if (answered_noted_) return;
    answered_noted_ = true;
    if (open_.fallback_tried || open_.remembered) mgr_->note_answered(open_);
  }

  // Under open_mu_, so that no other event of this stream overtakes it.
  void report_open_locked() {
    open_reported_ = true;
    mgr_->obs.on_open_ok(id_);
  }

  // Queues @bytes as data frames of at most max_frame bytes. A frame the
  // stack coalesced (stack/conn.cc "Upload frames") is queued as it is and
  // later written from its own buffer: no copy. A piece that fits joins the
  // last queued frame (callers that send small pieces while a write is in
  // flight, e.g. the socket bridge); one over max_frame is split (copies:
  // only the late fallback's replay, or a caller that ignores the limit).
  void enqueue_locked(std::string bytes) {
    const size_t max = mgr_->opts.max_frame;
    if (bytes.size() > max) {
      for (size_t off = 0; off < bytes.size(); off += max) enqueue_locked(bytes.substr(off, max));
      return;
    }
    if (bytes.empty()) return;
    if (!frames_.empty() && frames_.back().size() + bytes.size() <= max) {
      frames_.back().append(bytes);
      return;
    }
    frames_.push_back(std::move(bytes));
  }

  // The next queued frame becomes the write: its string is the payload
  // slice (EncodeDataFrame, SliceOf: no copy, no protobuf serialisation),
  // freed when gRPC drops the slice.
  void prepare_write_locked() {
    inflight_bytes_ = frames_.front().size();
    tx_ = EncodeDataFrame(SliceOf(std::move(frames_.front())));
    frames_.pop_front();
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
    for (int i = 0; i < n; ++i) this->RemoveHold();
  }

  const std::shared_ptr<ForwardManager::Impl> mgr_;
  const PendingOpen open_;
  const StreamId id_;
  const std::shared_ptr<TokenEntry> token_;
  typename Transport::Context ctx_;
  grpc::ByteBuffer init_, tx_;  // the init frame; the data frame being written
  Frame rx_;
  Clock::time_point started_at_;

  // When the stream counts as open (guarded by open_mu_).
  std::mutex open_mu_;
  bool open_reported_ = false;  // on_open_ok sent: failures are resets now
  bool ended_ = false;          // OnDone ran
  bool headers_seen_ = false;
  bool answered_noted_ = false;  // note_answered ran
  Clock::time_point headers_at_;
  bool ext_loaded_ = false;
  bool pending_fin_ = false;  // an empty frame arrived before the headers' reaction
  tunnel_ext::Extensions ext_;
  std::optional<grpc::Alarm> settle_alarm_;
  std::optional<grpc::Alarm> open_alarm_;  // the open deadline (arm_open_deadline)
  bool open_timed_out_ = false;            // the open deadline cancelled the call

  std::mutex mu_;
  std::deque<std::string> frames_;  // client bytes not yet written: data frames of ≤ max_frame
  size_t inflight_bytes_ = 0; // bytes of the write in flight
  // Write accounting, in stream offsets from the client's first byte:
  // written_ = bytes this call wrote successfully; reported_upto_ = bytes
  // on_write_done covered (a successor starts with its predecessor's).
  size_t written_ = 0, reported_upto_ = 0;
  bool write_in_flight_ = false, read_in_flight_ = false;
  size_t delivered_ahead_ = 0;  // mu_: frames given to on_data since the last read_more()
  bool delivering_ = false;     // mu_: OnReadDone is in on_data (mu_ released)
  bool wd_requested_ = false, w_closed_ = false, r_closed_ = false;
  bool w_released_ = false, r_released_ = false;
  bool remote_fin_ = false;         // on_remote_fin reported: later data is dropped
  bool dropped_after_fin_ = false;  // and that was logged
  // Late fallback: every client byte since the stream began while
  // recording_ (until the target's first byte or the bound); successor_ is
  // the call that took the connection over (then every API call goes there).
  bool recording_ = false;
  std::string replay_;
  std::shared_ptr<ForwardCall> successor_;
  std::atomic<bool> got_data_{false};
  std::atomic<bool> aborted_{false};
};

}  // namespace

// ---- manager ----

void ForwardManager::Impl::run() {
  std::unique_lock lk(mu);
  auto wake = Clock::now() + std::chrono::milliseconds(100);
  for (;;) {
    cv.wait_until(lk, wake, [&] { return exiting || kicked; });
    kicked = false;
    if (!deferred.empty()) {
      std::vector<Deferred> out;
      out.swap(deferred);
      lk.unlock();
      for (auto& d : out) obs.on_closed(d.id, d.kind, std::move(d.reason));
      lk.lock();
    }
    if (exiting) {
      if (deferred.empty()) break;
      continue;
    }
    if (stopping) {  // only deferred answers from now on
      wake = Clock::now() + std::chrono::hours(1);
      continue;
    }
    const auto now = Clock::now();
    wake = now + std::chrono::milliseconds(100);
    std::vector<PendingOpen> admit, expired;
    for (auto it = pending.begin(); it != pending.end();) {
      size_t& active = active_per_sandbox[pool_key(it->target.sandbox)];
      const bool backing_off = now < it->not_before;
      const bool gated = backing_off || now < admit_not_before;
      // The whole-process ceiling (StreamBudget) and the global stream cap:
      // streams open or starting.
      const size_t open_streams = calls.size() + starting.size();
      const bool budget_ok = budget.admits(open_streams);
      if (!gated && !budget_ok && !it->waited_for_budget) {
        it->waited_for_budget = true;
        st.buffer_waits++;
      }
      if (!gated && budget_ok && open_streams < opts.max_streams && active < opts.max_streams_per_sandbox) {
        ++active;
        starting.insert(it->id);
        admit.push_back(std::move(*it));
        it = pending.erase(it);
      } else if (!backing_off && now >= it->deadline) {
        expired.push_back(std::move(*it));
        it = pending.erase(it);
      } else {
        if (backing_off) wake = std::min(wake, it->not_before);
        else if (now < admit_not_before) wake = std::min(wake, admit_not_before);
        ++it;
      }
    }
    st.queue_timeouts += expired.size();
    st.queued_now = pending.size();
    const size_t open_streams = calls.size() + starting.size();  // admitted ones included
    // Idle tokens: revoked after token_idle_timeout without a stream, on the
    // token worker (a blocking call).
    size_t revoked = 0;
    const auto revoke = [&](const std::shared_ptr<TokenEntry>& t) {
      token_jobs.push_back({std::nullopt, t->token});
      ++revoked;
    };
    for (auto& [sb, v] : tokens) {
      for (auto it = v.begin(); it != v.end();) {
        if ((*it)->active == 0 && now - (*it)->idle_since >= opts.token_idle_timeout) {
          revoke(*it);
          it = v.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto it = retired.begin(); it != retired.end();) {
      if ((*it)->active == 0) {
        revoke(*it);
        it = retired.erase(it);
      } else {
        ++it;
      }
    }
    st.tokens_revoked += revoked;
    if (revoked) token_cv.notify_all();
    lk.unlock();
    resize_quota(open_streams);
    for (auto& p : expired) {
      OSH_LOG_LIMITED(spdlog::level::warn, "stream {}: refused: waited {} ms for one of the sandbox's {} stream slots",
                      p.id, opts.queue_timeout.count(), opts.max_streams_per_sandbox);
      obs.on_closed(p.id, EndKind::kRefused, "stream queue timeout");
    }
    for (auto& p : admit) start_one(std::move(p));
    lk.lock();
  }
}

void ForwardManager::Impl::token_run() {
  std::unique_lock lk(mu);
  for (;;) {
    token_cv.wait(lk, [&] { return token_exit || !token_jobs.empty(); });
    if (token_jobs.empty()) return;  // token_exit, and nothing left
    TokenJob job = std::move(token_jobs.front());
    token_jobs.pop_front();
    lk.unlock();
    if (job.open) {
      mint_and_start(std::move(*job.open));
    } else {
      CallStatus s = gw.revoke_ssh_session(job.revoke);
      if (!s.ok()) spdlog::debug("revoking an idle token: {}", s.to_string());
    }
    lk.lock();
  }
}

std::shared_ptr<TokenEntry> ForwardManager::Impl::pooled_token(const std::string& key) {
  std::lock_guard lk(mu);
  const auto now = Clock::now();
  for (auto& t : tokens[key]) {
    if (!t->bad && now >= t->full_until && t->active < opts.max_streams_per_token) {
      ++t->active;
      return t;
    }
  }
  return nullptr;
}

std::shared_ptr<TokenEntry> ForwardManager::Impl::acquire_token(const SandboxRef& sandbox,
                                                                CallStatus* err) {
  const std::string key = pool_key(sandbox);
  if (auto t = pooled_token(key)) return t;
  SshSession session;
  CallStatus s = gw.create_ssh_session(sandbox, &session);
  if (!s.ok()) {
    *err = s;
    return nullptr;
  }
  auto t = std::make_shared<TokenEntry>();
  t->token = session.token;
  t->active = 1;
  std::lock_guard lk(mu);
  tokens[key].push_back(t);
  st.tokens++;
  return t;
}

namespace {
template <class Frame, class Transport>
std::shared_ptr<ForwardCall> make_reactor(std::shared_ptr<ForwardManager::Impl> mgr, PendingOpen p,
                                          std::shared_ptr<TokenEntry> tok) {
  return std::make_shared<ForwardReactor<Frame, Transport>>(std::move(mgr), std::move(p), std::move(tok));
}
}  // namespace

std::shared_ptr<ForwardCall> ForwardManager::Impl::make_call(Generation g, PendingOpen p,
                                                             std::shared_ptr<TokenEntry> tok) {
  auto self = shared_from_this();
  if (g == Generation::k0_1)
    return gw.impl().h2 ? make_reactor<Frame01, H2Transport>(std::move(self), std::move(p), std::move(tok))
                        : make_reactor<Frame01, GrpcTransport>(std::move(self), std::move(p), std::move(tok));
  return gw.impl().h2 ? make_reactor<Frame00, H2Transport>(std::move(self), std::move(p), std::move(tok))
                      : make_reactor<Frame00, GrpcTransport>(std::move(self), std::move(p), std::move(tok));
}

void ForwardManager::Impl::start_one(PendingOpen p) {
  // The generation is known once health() succeeded (protocol-0.1 §2); a
  // stream is never opened in a guessed encoding. With it and a pooled
  // token the call starts here; anything that needs a gateway call goes to
  // the token worker, so a slow CreateSshSession never stalls admission.
  const Generation gen = gw.generation();
  std::shared_ptr<TokenEntry> token;
  if (gen != Generation::kUnknown) token = pooled_token(pool_key(p.target.sandbox));
  if (!token) {
    std::unique_lock lk(mu);
    if (!stopping) {  // token_exit comes after stopping: the job is taken
      token_jobs.push_back({std::move(p), {}});
      token_cv.notify_all();
      return;
    }
  }
  finish_start(std::move(p), gen, std::move(token), {}, std::nullopt, false, false);
}

void ForwardManager::Impl::mint_and_start(PendingOpen p) {
  // Until the generation is known (a gateway that was down when the client
  // started), detect it here, like a token mint.
  CallStatus err;
  Generation gen = gw.generation();
  std::shared_ptr<TokenEntry> token;
  bool stop = false;
  {
    std::lock_guard lk(mu);
    stop = stopping;
  }
  const bool timed_out = !stop && Clock::now() >= p.give_up_at;
  if (!stop && !timed_out) {
    if (gen == Generation::kUnknown) {
      err = gw.health(nullptr);
      gen = gw.generation();
      if (err.ok() && gen == Generation::kUnknown)
        err = {grpc::StatusCode::FAILED_PRECONDITION, "the gateway's protocol generation is unknown"};
    }
    if (gen != Generation::kUnknown) token = acquire_token(p.target.sandbox, &err);
  }
  // CreateSshSession also passes the gateway's global rate limiter.
  bool waited_out = false;
  std::optional<PendingOpen> retry;
  if (!token && !stop && !timed_out && gen != Generation::kUnknown &&
      classify_open_failure(err.code, err.message) == OpenFailure::kRateLimit)
    retry = plan_retry(p, err.code, err.message, nullptr, &waited_out);
  finish_start(std::move(p), gen, std::move(token), err, std::move(retry), waited_out, timed_out);
}

void ForwardManager::Impl::finish_start(PendingOpen p, Generation gen, std::shared_ptr<TokenEntry> token,
                                        const CallStatus& err, std::optional<PendingOpen> retry,
                                        bool waited_out, bool timed_out) {
  const std::string key = pool_key(p.target.sandbox);
  std::unique_lock lk(mu);
  starting.erase(p.id);
  const bool aborted = abort_requested.erase(p.id) > 0;
  if (!token || aborted || stopping) {
    if (token) --token->active;
    --active_per_sandbox[key];
    if (retry && !aborted && !stopping) {
      pending.push_back(std::move(*retry));
      st.retries++;
      st.queued_now = pending.size();
      kick_locked();
      return;
    }
    st.open_failed++;
    if (waited_out) st.queue_timeouts++;
    if (timed_out && !aborted) st.open_timeouts++;
    if (!pending.empty()) kick_locked();  // a slot freed up
    cv.notify_all();
    const bool stopped = stopping;
    lk.unlock();
    if (aborted) {
      obs.on_closed(p.id, EndKind::kReset, "aborted");
    } else if (timed_out) {
      OSH_LOG_LIMITED(spdlog::level::warn, "stream {}: refused: no token within {} ms", p.id,
                      opts.open_timeout.count());
      obs.on_closed(p.id, EndKind::kRefused, "open timeout");
    } else if (stopped) {
      obs.on_closed(p.id, EndKind::kReset, "shutting down");
    } else {
      EndKind kind = map_session_status(err.code, err.message);
      OSH_LOG_LIMITED(spdlog::level::info, "stream {}: CreateSshSession failed: {}", p.id,
                      log_escape(err.to_string()));
      obs.on_closed(p.id, kind, "CreateSshSession: " + err.to_string());
    }
    return;
  }
  const StreamId id = p.id;
  auto call = make_call(gen, std::move(p), token);
  calls.emplace(id, call);
  st.opened++;
  st.active_now = calls.size();
  lk.unlock();
  call->start();
}

std::optional<PendingOpen> ForwardManager::Impl::plan_retry(const PendingOpen& p, int code,
                                                            const std::string& message,
                                                            const std::shared_ptr<TokenEntry>& tok,
                                                            bool* waited_out) {
  const auto now = Clock::now();
  const bool in_time = now < p.deadline;
  PendingOpen next = p;
  next.not_before = now;
  std::lock_guard lk(mu);
  switch (classify_open_failure(code, message)) {
    case OpenFailure::kFinal:
      return std::nullopt;
    case OpenFailure::kUnauthenticated:  // fresh token (release() retires the pool), twice at most
      if (p.attempt >= 2) return std::nullopt;
      next.attempt++;
      return next;
    case OpenFailure::kTokenCap:  // that token is full at the gateway: another or a new one
      st.token_cap_hits++;
      if (tok) tok->full_until = now + kTokenFullPause;
      break;
    case OpenFailure::kSandboxCap:
      st.sandbox_cap_hits++;
      next.not_before = now + kCapRetryDelay;
      break;
    case OpenFailure::kRelayCapacity:
      st.relay_capacity_hits++;
      next.not_before = now + kCapRetryDelay;
      break;
    case OpenFailure::kRateLimit: {
      // Global limiter: back off, and admit no other open meanwhile (each
      // open costs a call; pooled tokens already keep CreateSshSession rare).
      st.rate_limit_hits++;
      const auto delay = rate_limit_backoff(p.rate_limited);
      next.rate_limited++;
      next.not_before = now + delay;
      admit_not_before = std::max(admit_not_before, now + delay);
      break;
    }
    case OpenFailure::kDialRefused:
    case OpenFailure::kDialFamily: {
      // Nothing listens on this loopback family: try the other one before
      // answering the SYN (a service bound only to 127.0.0.1 or ::1).
      auto other = other_loopback(p.target.host);
      if (p.target.ssh || p.fallback_tried || !other) return std::nullopt;
      st.loopback_fallbacks++;
      spdlog::debug("stream {}: {}:{} refused; trying {}", p.id, p.target.host, p.target.port, *other);
      next.target.host = *other;
      next.fallback_tried = true;
      return next;
    }
  }
  // The caps: retry until the queue deadline (the last try at the deadline).
  if (!in_time) {
    *waited_out = true;
    return std::nullopt;
  }
  next.not_before = std::min(next.not_before, p.deadline);
  return next;
}

bool ForwardManager::Impl::release(StreamId id, const std::string& key,
                                   const std::shared_ptr<TokenEntry>& tok, int code,
                                   const PendingOpen* retry, bool queue_timeout) {
  std::lock_guard lk(mu);
  if (queue_timeout) st.queue_timeouts++;
  calls.erase(id);
  st.active_now = calls.size();
  --active_per_sandbox[key];
  if (--tok->active == 0) tok->idle_since = Clock::now();
  if (code == grpc::StatusCode::UNAUTHENTICATED && !tok->bad) {
    // Token expired or revoked, or the gateway restarted and forgot every
    // token (protocol §8.1). Which is unknown, so hand out none of the
    // sandbox's pooled tokens again: after a restart each retry would
    // otherwise draw the next dead one and fail (streams already open on
    // them are unaffected). The retry mints a fresh token.
    auto& v = tokens[key];
    for (auto& t : v) {
      t->bad = true;
      if (t != tok) retired.push_back(t);  // maybe still valid: revoked once idle
    }
    tok->bad = true;
    v.clear();
  }
  if (!pending.empty()) kick_locked();  // a slot or budget freed up: admit at once
  cv.notify_all();
  if (!retry || stopping) return false;
  pending.push_back(*retry);
  st.retries++;
  st.queued_now = pending.size();
  kick_locked();
  return true;
}

SettleWindow::Duration ForwardManager::Impl::headers_arrived(Clock::duration latency) {
  std::lock_guard lk(mu);
  settle.observe_header_latency(std::chrono::duration_cast<SettleWindow::Duration>(latency));
  const auto w = settle.window();
  st.settle_window_us = static_cast<uint64_t>(w.count());
  return w;
}

void ForwardManager::Impl::dial_failed_after_headers(Clock::duration latency, bool late) {
  std::lock_guard lk(mu);
  settle.observe_dial_failure(std::chrono::duration_cast<SettleWindow::Duration>(latency));
  st.settle_window_us = static_cast<uint64_t>(settle.window().count());
  if (late) st.late_refusals++;
}

void ForwardManager::Impl::note_answered(const PendingOpen& p) {
  std::lock_guard lk(mu);
  family_memory.answered(pool_key(p.target.sandbox), p.target.port, p.target.host, Clock::now());
}

void ForwardManager::Impl::note_refused(const PendingOpen& p) {
  std::lock_guard lk(mu);
  family_memory.refused(pool_key(p.target.sandbox), p.target.port, p.target.host);
}

ForwardManager::ForwardManager(GatewayClient& gateway, ForwardObserver& observer,
                               ForwardOptions opts)
    : impl_(std::make_shared<Impl>(gateway, observer, opts)) {
  impl_->resize_quota(0);
  if (opts.trim_when_idle) impl_->trimmer.emplace("relay");
  impl_->worker = std::thread([impl = impl_.get()] { impl->run(); });
  impl_->token_worker = std::thread([impl = impl_.get()] { impl->token_run(); });
}

ForwardManager::~ForwardManager() {
  shutdown();
  {
    std::lock_guard lk(impl_->mu);
    impl_->exiting = true;
    impl_->cv.notify_all();
  }
  if (impl_->worker.joinable()) impl_->worker.join();
}

void ForwardManager::open(StreamId id, ForwardTarget target) {
  std::lock_guard lk(impl_->mu);
  Impl& m = *impl_;
  // Answers that cannot wait come from the worker: not synchronously from
  // this call (ForwardObserver contract).
  if (m.stopping) {
    m.defer_close_locked(id, EndKind::kUnreachable, "tunnel shutting down");
    return;
  }
  // The global caps (issue 14.5): refused at once, RST to the client.
  if (m.pending.size() >= m.opts.max_pending_opens) {
    m.st.pending_cap_refusals++;
    OSH_LOG_LIMITED(spdlog::level::warn, "stream {}: refused: {} opens are queued already (--max-pending-opens)",
                    id, m.pending.size());
    m.defer_close_locked(id, EndKind::kRefused, "pending-open cap");
    return;
  }
  if (m.calls.size() + m.starting.size() >= m.opts.max_streams) {
    m.st.stream_cap_refusals++;
    OSH_LOG_LIMITED(spdlog::level::warn, "stream {}: refused: {} streams are open already (--max-streams)", id,
                    m.calls.size() + m.starting.size());
    m.defer_close_locked(id, EndKind::kRefused, "stream cap");
    return;
  }
  const auto now = Clock::now();
  Impl::PendingOpen p{id, std::move(target), now + std::min(m.opts.queue_timeout, m.opts.open_timeout)};
  p.give_up_at = now + m.opts.open_timeout;
  // A loopback port whose other family answered lately: go there first.
  if (!p.target.ssh && other_loopback(p.target.host)) {
    if (auto host = m.family_memory.preferred(pool_key(p.target.sandbox), p.target.port, now)) {
      p.remembered = true;
      if (*host != p.target.host) {
        p.target.host = std::move(*host);
        m.st.loopback_memory_hits++;
      }
    }
  }
  m.pending.push_back(std::move(p));
  m.st.queued_now = m.pending.size();
  m.kick_locked();
}

void ForwardManager::send(StreamId id, std::string bytes) {
  if (auto c = impl_->find(id)) c->send(std::move(bytes));
}

bool ForwardManager::try_send_queued(StreamId id, std::string& bytes) {
  return impl_->try_on_call(id, [&](ForwardCall& c) { return c.try_send_queued(bytes); });
}

void ForwardManager::read_more(StreamId id) {
  if (auto c = impl_->find(id)) c->read_more();
}

bool ForwardManager::try_read_more_in_place(StreamId id) {
  return impl_->try_on_call(id, [](ForwardCall& c) { return c.try_read_more_in_place(); });
}

void ForwardManager::close_write(StreamId id) {
  if (auto c = impl_->find(id)) c->close_write();
}

void ForwardManager::abort(StreamId id) {
  std::shared_ptr<ForwardCall> call;
  {
    std::lock_guard lk(impl_->mu);
    auto it = std::find_if(impl_->pending.begin(), impl_->pending.end(),
                           [id](const auto& p) { return p.id == id; });
    if (it != impl_->pending.end()) {
      impl_->pending.erase(it);
      impl_->st.queued_now = impl_->pending.size();
      impl_->defer_close_locked(id, EndKind::kReset, "aborted");
      return;
    } else if (impl_->starting.contains(id)) {
      impl_->abort_requested.insert(id);
      return;
    } else if (auto c = impl_->calls.find(id); c != impl_->calls.end()) {
      call = c->second;
    }
  }
  if (call) call->abort();
}

void ForwardManager::shutdown(std::chrono::milliseconds grace) {
  std::vector<std::shared_ptr<ForwardCall>> live;
  std::deque<Impl::PendingOpen> queued;
  {
    std::lock_guard lk(impl_->mu);
    if (impl_->stopping) return;
    impl_->stopping = true;
    queued.swap(impl_->pending);
    impl_->st.queued_now = 0;
    for (auto& [id, c] : impl_->calls) live.push_back(c);
    impl_->cv.notify_all();
    impl_->token_cv.notify_all();
  }
  // The admission worker admits nothing more (it keeps delivering deferred
  // answers until the destructor); opens in the token worker's queue end
  // there ("shutting down") without a gateway call.
  for (auto& p : queued) impl_->obs.on_closed(p.id, EndKind::kReset, "tunnel shutting down");
  for (auto& c : live) c->abort();
  live.clear();
  {
    std::unique_lock lk(impl_->mu);
    impl_->cv.wait_for(lk, grace, [&] { return impl_->calls.empty(); });
    impl_->token_exit = true;
    impl_->token_cv.notify_all();
  }
  if (impl_->token_worker.joinable()) impl_->token_worker.join();  // its revokes done
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
  s.frames_sent = impl_->frames_sent.load(std::memory_order_relaxed);
  s.frame_bytes_sent = impl_->frame_bytes_sent.load(std::memory_order_relaxed);
  s.frames_received = impl_->frames_received.load(std::memory_order_relaxed);
  s.frame_bytes_received = impl_->frame_bytes_received.load(std::memory_order_relaxed);
  s.tokens_pooled = 0;
  for (const auto& [sb, v] : impl_->tokens) s.tokens_pooled += v.size();
  if (const auto& h2 = impl_->gw.impl().h2) {
    s.transport = ForwardTransport::kH2;
    const h2::ChannelStats c = h2->stats();
    s.h2_connects = c.connects;
    s.h2_connect_failures = c.connect_failures;
    s.h2_window_growths = c.window_growths;
    s.h2_window_shrinks = c.window_shrinks;
    s.h2_bytes_buffered = c.bytes_buffered;
  }
  return s;
}

}  // namespace osh::relay

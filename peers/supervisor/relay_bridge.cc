// Theory of operation: the mini-supervisor's relays
// =================================================
//
// Threads. One event-loop thread (osh::EventLoop, common/event_loop.h:
// epoll, a callback per socket, posted tasks) owns the table of relays, the
// epoll interest of every target socket, dials, results and endings (a
// relay is created, closed and erased only there). gRPC runs the reactions
// (OnReadDone, OnWriteDone, OnWritesDoneDone, OnDone) on its own threads.
// Each Relay's state (target socket I/O, the RelayStream's frames and
// flags) is guarded by the relay's own mutex, held by whichever thread acts
// on it: the loop (socket events, dial, result, shutdown) or a reaction.
// OnReadDone, OnWriteDone and OnWritesDoneDone act inline on gRPC's thread
// (the non-blocking sendmsg()/read() and the next StartRead/StartWrite), so
// the data path needs no hop to the loop per frame (issue 16.2: the futex
// and epoll wake-ups of that hop were a fifth of the supervisor's CPU). A
// reaction that changes the socket's wanted epoll interest (EAGAIN: poll
// for EPOLLOUT or EPOLLIN; the call ended: stop polling) posts one
// UpdateWatch task to the loop (at most one pending per relay); events that
// arrive meanwhile are checked against the relay's flags and ignored if
// stale. OnDone only posts: the relay is erased on the loop. The mutex is
// never held across a wait: gRPC's client reactions are never run inline
// from Start*/TryCancel/RemoveHold (can_inline=false, grpcpp
// client_callback.h), and OnDone is scheduled only after the reaction that
// drops the last hold has returned. No thread per relay: 10,000 relays are
// 10,000 sockets in one epoll set and 10,000 reactors.
//
// Relay lifecycle (states, what each allows):
//   kDialing        non-blocking connect to each resolved address in turn
//                   (TargetDialer), waiting for EPOLLOUT, then SO_ERROR. No
//                   dial timeout, as before: loopback connects or is refused
//                   at once. All failed -> relay_open_result{success=false,
//                   error=OsErrorText(errno)}, e.g. "Connection refused (os
//                   error 111)" -> finished. Connected (TCP_NODELAY) ->
//                   relay_open_result{success=true} -> kResultPending.
//   kResultPending  the socket is not polled; the session's writer thread
//                   writes the result and reports back (posted). Written ->
//                   kStreaming; session gone, or shutting down -> SO_LINGER 0,
//                   close -> finished.
//   kStreaming      RelayStream on the supervisor's one channel; the first
//                   frame is init{channel_id}. Two holds (AddMultipleHolds(2)
//                   before StartCall), one per direction, because operations
//                   start from the loop thread, outside reactions
//                   (grpc-notes.md: hold both directions, or operations may
//                   start after OnDone).
//   finished        erased from the table on the loop thread; a streaming
//                   relay only after its OnDone task ran.
//
// Data, with back-pressure both ways and at most one frame buffered per
// direction:
//   target -> gateway: EPOLLIN is polled only while no write is outstanding
//     on the reactor (init included). Readable -> read() at most 64 KiB into
//     a buffer of FramePool::Frames() -> one data frame whose payload slice
//     is that buffer (EncodeDataFrame: no copy, no protobuf) -> StartWrite;
//     the buffer goes back to the pool when gRPC drops the slice. The
//     socket leaves the epoll set until OnWriteDone, which reads it at once
//     (and polls it only if it had nothing). read() == 0 (target
//     FIN) -> StartWritesDone (half-close; the other direction goes on) and
//     the socket is never read again. A read error -> cancel the relay.
//   gateway -> target: one StartRead outstanding at a time. OnReadDone with
//     data -> sendmsg() of the payload straight from gRPC's slices
//     (ParseDataFrame; other encodings through protobuf, copied) - what the
//     socket takes; if it would block, the rest stays in the received frame
//     and EPOLLOUT is polled; the next StartRead comes only once it is all
//     written. An EMPTY data frame is the client's FIN (the gateway's
//     half-close extension) -> shutdown(SHUT_WR). Frames without data are
//     skipped; a frame that does not parse cancels the relay. A write error
//     -> cancel the relay.
//   Frames are raw ByteBuffers (the RelayStream call is made through
//   grpc::GenericStub's callback API), so no frame's bytes are
//   parsed into or serialised from a protobuf string (issue 16.2).
//   A socket waiting for nothing is removed from the epoll set (EPOLLERR and
//   EPOLLHUP are always reported and would otherwise spin the loop).
//
// Endings. The call is over when a read or a write fails (status received,
// or cancelled) or the relay is cancelled (socket error, Shutdown): no new
// operations start, the socket leaves the epoll set, and each hold whose
// direction has nothing in flight is removed; an in-flight operation
// removes its hold when it completes. Target EOF removes the write hold
// once WritesDone completes. With both holds gone gRPC delivers OnDone,
// whose task closes the socket - after SO_LINGER 0 if the status is not OK,
// so the target sees an RST, not a clean FIN - and erases the relay. OK
// (both directions finished) closes normally.
//
// Known limit (as with the former blocking write): while the target does not
// read, no StartRead is outstanding, so a gateway-side cancel is noticed
// only when the target reads again, the target sends (the write fails), or
// at Shutdown.
//
// Shutdown: a posted task sets `stopping` (later Open()s are dropped),
// abandons dials, resets sockets waiting for their result and cancels every
// stream; the caller waits until the table is empty (every OnDone handled),
// then stops the loop thread.

#include "peers/supervisor/relay_bridge.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "relay/data_frame.h"
#include "peers/common/frame_pool.h"
#include "peers/common/log.h"
#include "relay/message_buffer.h"
#include "peers/common/socket.h"
#include "common/event_loop.h"

namespace osh::peers {
namespace {

using relay::DataFrameView;
using relay::EncodeDataFrame;
using relay::ParseDataFrame;
using relay::ParseFromBuffer;
using relay::SerializeToBuffer;

namespace v1 = openshell::v1;

constexpr char kRelayStreamPath[] = "/openshell.v1.OpenShell/RelayStream";
/// iovecs per sendmsg() to a target (a 64 KiB frame arrives in a few slices).
constexpr size_t kMaxIov = 64;

std::shared_ptr<spdlog::logger> Log() {
  static const auto logger = PeerLogger("mini-supervisor");
  return logger;
}

class Relay;

}  // namespace

/// The loop-side table of relays and what they share. All members are used
/// on the loop thread only, except loop.post() and WaitIdle().
class RelayBridgeCore {
 public:
  explicit RelayBridgeCore(std::shared_ptr<grpc::ChannelInterface> c) : stub(std::move(c)) {}

  /// Creates a relay for @request and starts its dial. Thread: loop.
  void Add(RelayOpenRequest request);
  /// Runs @fn on relay @id with its mutex held if it still exists, then
  /// erases it if it has finished. Thread: loop.
  template <class Fn>
  void WithRelay(uint64_t id, Fn&& fn);
  /// Sets stopping and ends or cancels every relay. Thread: loop.
  void ShutdownAll();
  /// Blocks until ShutdownAll() ran and no relay is left. Thread: not loop.
  void WaitIdle();
  /// Socket readiness of relay @id (ignored if it is gone). Thread: loop.
  void OnEvents(uint64_t id, uint32_t events);

  grpc::GenericStub stub;  // RelayStream with raw frames (ByteBuffer both ways)
  osh::EventLoop loop;
  bool stopping = false;

 private:
  std::unordered_map<uint64_t, std::unique_ptr<Relay>> relays_;
  uint64_t next_id_ = 1;
  std::atomic<size_t> live_{0};
  std::mutex idle_mu_;
  std::condition_variable idle_cv_;
  bool shutdown_ran_ = false;  // idle_mu_
};

namespace {

/// One relay; see the theory of operation. The public non-override methods
/// run on the loop thread with mu() held (RelayBridgeCore::WithRelay); the
/// overrides are gRPC reactions: they take mu() and act inline, except
/// OnDone, which posts.
class Relay final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  Relay(RelayBridgeCore* core, uint64_t id, RelayOpenRequest request)
      : core_(core), id_(id), channel_(std::move(request.channel_id)),
        where_(std::move(request.where)), results_(std::move(request.results)),
        dialer_(std::move(request.addresses)) {}

  /// Guards every member below that is not const. Thread: any.
  std::mutex& mu() { return mu_; }
  bool finished() const { return state_ == State::kFinished; }
  void BeginDial() { HandleDialStep(dialer_.Start()); }
  void OnSocketEvents(uint32_t events);
  void OnResultWritten(bool written);
  void OnShutdown();
  /// Applies the epoll interest a reaction asked for (PostWatchUpdate).
  void OnPostedWatchUpdate() {
    watch_update_posted_ = false;
    UpdateWatch();
  }

  // The reactions (gRPC's threads): see "Threads". The relay outlives them:
  // it is erased only after OnDone, which gRPC runs after every other one.
  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    HandleWriteDone(ok);
  }
  void OnWritesDoneDone(bool /*ok*/) override {
    std::lock_guard lock(mu_);
    HandleWritesDoneDone();
  }
  void OnReadDone(bool ok) override {
    std::lock_guard lock(mu_);
    HandleReadDone(ok);
  }
  void OnDone(const grpc::Status& status) override {
    // The last reaction: every earlier one has returned. The task may
    // destroy this relay, so nothing touches `this` after post().
    RelayBridgeCore* core = core_;
    const uint64_t id = id_;
    core->loop.post([core, id, status] {
      core->WithRelay(id, [&status](Relay& relay) { relay.HandleDone(status); });
    });
  }

 private:
  enum class State { kDialing, kResultPending, kStreaming, kFinished };

  void HandleDialStep(TargetDialer::Step step);
  void FailDial(int err);
  void StartStream();
  void ReadTarget();
  void FlushToTarget();
  void StartNextRead();
  bool TakeReceivedData(bool* data);
  void HandleWriteDone(bool ok);
  void HandleWritesDoneDone();
  void HandleReadDone(bool ok);
  void HandleDone(const grpc::Status& status);
  void EndCall(bool cancel);
  void ReleaseIdleHolds();
  void CloseSocket(bool reset);
  uint32_t WantedEvents() const;
  int UpdateWatch();
  void PostWatchUpdate();
  int SetInterest(int fd, uint32_t wanted);

  RelayBridgeCore* const core_;
  const uint64_t id_;
  const std::string channel_;
  const std::string where_;
  std::mutex mu_;  // see mu()
  std::shared_ptr<OpenResultSink> results_;  // until the result is written
  TargetDialer dialer_;
  ScopedFd fd_;  // the connected target socket
  State state_ = State::kDialing;
  uint32_t watched_ = 0;  // the socket's current epoll interest
  int watched_fd_ = -1;   // the socket registered with the loop while watched_ != 0
  bool watch_update_posted_ = false;  // an OnPostedWatchUpdate task is queued

  grpc::ClientContext ctx_;
  grpc::ByteBuffer tx_;       // the frame being written (init or data)
  grpc::ByteBuffer rx_;       // the frame being read
  DataFrameView rx_data_;     // rx_'s payload, until sent
  size_t rx_sent_ = 0;        // bytes of rx_data_'s payload already sent to the target
  bool draining_ = false;     // rx_ data waits for EPOLLOUT
  bool read_in_flight_ = false;
  bool write_in_flight_ = false;  // StartWrite or StartWritesDone
  bool read_hold_ = false;
  bool write_hold_ = false;
  bool target_eof_ = false;   // read() returned 0: WritesDone started
  bool call_over_ = false;    // no more operations; holds go as ops finish
};

}  // namespace

// ---- Relay: dial and result ----

void Relay::HandleDialStep(TargetDialer::Step step) {
  switch (step) {
    case TargetDialer::Step::kWaiting:
      if (const int err = UpdateWatch(); err != 0) FailDial(err);
      return;
    case TargetDialer::Step::kConnected: {
      fd_ = dialer_.TakeSocket();
      state_ = State::kResultPending;
      RelayBridgeCore* core = core_;
      const uint64_t id = id_;
      results_->SendOpenResult(channel_, true, std::string(), [core, id](bool written) {
        core->loop.post([core, id, written] {
          core->WithRelay(id, [written](Relay& relay) { relay.OnResultWritten(written); });
        });
      });
      return;
    }
    case TargetDialer::Step::kFailed:
      FailDial(dialer_.error());
      return;
  }
}

void Relay::FailDial(int err) {
  const std::string error = OsErrorText(err);
  Log()->info("relay {}: dial {} failed: {}", channel_, where_, error);
  SetInterest(dialer_.fd(), 0);
  results_->SendOpenResult(channel_, false, error, nullptr);
  results_.reset();
  state_ = State::kFinished;
}

void Relay::OnResultWritten(bool written) {
  if (state_ != State::kResultPending) return;
  results_.reset();
  if (!written) {
    Log()->warn("relay {}: control session gone before the result was sent", channel_);
    CloseSocket(/*reset=*/true);
    return;
  }
  if (core_->stopping) {
    CloseSocket(/*reset=*/true);
    return;
  }
  StartStream();
}

void Relay::StartStream() {
  state_ = State::kStreaming;
  static const std::string method(kRelayStreamPath);
  core_->stub.PrepareBidiStreamingCall(&ctx_, method, grpc::StubOptions(), this);
  AddMultipleHolds(2);
  read_hold_ = write_hold_ = true;
  v1::RelayFrame init;
  init.mutable_init()->set_channel_id(channel_);
  tx_ = SerializeToBuffer(init);
  write_in_flight_ = true;
  StartWrite(&tx_);
  read_in_flight_ = true;
  StartRead(&rx_);
  StartCall();
  Log()->debug("relay {} to {} open", channel_, where_);
}

void Relay::OnShutdown() {
  switch (state_) {
    case State::kDialing:  // abandoned: the session is gone or going
      SetInterest(dialer_.fd(), 0);
      results_.reset();
      state_ = State::kFinished;
      return;
    case State::kResultPending:
      results_.reset();
      CloseSocket(/*reset=*/true);
      return;
    case State::kStreaming:
      EndCall(/*cancel=*/true);
      return;
    case State::kFinished:
      return;
  }
}

// ---- Relay: socket events ----

void Relay::OnSocketEvents(uint32_t events) {
  if (state_ == State::kDialing) {
    // The dialer may close this socket and open the next one: leave the set first.
    SetInterest(dialer_.fd(), 0);
    HandleDialStep(dialer_.OnWritable());
    return;
  }
  if (state_ != State::kStreaming || call_over_) return;  // stale event
  constexpr uint32_t kTrouble = EPOLLERR | EPOLLHUP;
  if (draining_ && (watched_ & EPOLLOUT) && (events & (EPOLLOUT | kTrouble))) FlushToTarget();
  if (!call_over_ && (watched_ & EPOLLIN) && !write_in_flight_ && !target_eof_ &&
      (events & (EPOLLIN | kTrouble))) {
    ReadTarget();
  }
}

void Relay::ReadTarget() {
  FramePool& pool = FramePool::Frames();
  FramePool::Buffer buffer = pool.Take();
  ssize_t n;
  do {
    n = ::read(fd_.get(), FramePool::Data(buffer), pool.buffer_bytes());
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    tx_ = EncodeDataFrame(FramePool::ToSlice(std::move(buffer), static_cast<size_t>(n)));
    write_in_flight_ = true;
    StartWrite(&tx_);
    UpdateWatch();
    return;
  }
  if (n == 0) {  // target sent FIN: half-close the relay
    target_eof_ = true;
    write_in_flight_ = true;
    StartWritesDone();
    UpdateWatch();
    return;
  }
  const int err = errno;
  if (err == EAGAIN || err == EWOULDBLOCK) return;
  Log()->info("relay {}: target read failed: {}", channel_, OsErrorText(err));
  EndCall(/*cancel=*/true);
}

void Relay::FlushToTarget() {
  while (rx_sent_ < rx_data_.size) {
    // The unsent payload, straight from the frame's slices.
    std::array<iovec, kMaxIov> iov;
    size_t count = 0;
    size_t skip = rx_data_.header + rx_sent_;
    for (const grpc::Slice& slice : rx_data_.slices) {
      if (skip >= slice.size()) {
        skip -= slice.size();
        continue;
      }
      iov[count++] = {const_cast<uint8_t*>(slice.begin()) + skip, slice.size() - skip};
      skip = 0;
      if (count == iov.size()) break;
    }
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = count;
    const ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      rx_sent_ += static_cast<size_t>(n);
      continue;
    }
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      draining_ = true;
      UpdateWatch();
      return;
    }
    Log()->info("relay {}: target write failed: {}", channel_, OsErrorText(err));
    EndCall(/*cancel=*/true);
    return;
  }
  draining_ = false;
  rx_sent_ = 0;
  rx_data_.Clear();
  rx_.Clear();
  StartNextRead();
  UpdateWatch();
}

// ---- Relay: reactions (gRPC's threads, mu_ held) and their loop-side parts ----

void Relay::StartNextRead() {
  if (call_over_) return;
  read_in_flight_ = true;
  StartRead(&rx_);
}

// TakeReceivedData() - finds rx_'s payload (rx_data_): @data is set to
// whether rx_ is a data frame. Return: false if rx_ does not parse as a
// RelayFrame. Thread: any, mu_ held.
bool Relay::TakeReceivedData(bool* data) {
  *data = true;
  if (ParseDataFrame(rx_, &rx_data_)) return true;  // the usual encoding: no copy
  v1::RelayFrame frame;  // any other encoding protobuf accepts
  if (!ParseFromBuffer(rx_, &frame)) return false;
  *data = frame.has_data();
  rx_data_.Clear();
  if (*data) {
    rx_data_.slices.emplace_back(frame.data());
    rx_data_.size = frame.data().size();
  }
  return true;
}

void Relay::HandleReadDone(bool ok) {
  read_in_flight_ = false;
  if (!ok) {  // the RPC is over: status received, or cancelled
    EndCall(/*cancel=*/false);
    return;
  }
  if (call_over_) {
    rx_.Clear();
    ReleaseIdleHolds();
    return;
  }
  bool data = false;
  if (!TakeReceivedData(&data)) {
    Log()->info("relay {}: a RelayFrame did not parse", channel_);
    rx_.Clear();
    EndCall(/*cancel=*/true);
    return;
  }
  if (!data || rx_data_.size == 0) {
    if (data) ::shutdown(fd_.get(), SHUT_WR);  // an empty data frame: the client sent FIN
    rx_data_.Clear();  // else not a data frame: skipped
    rx_.Clear();
    StartNextRead();
    return;
  }
  rx_sent_ = 0;
  FlushToTarget();
}

void Relay::HandleWriteDone(bool ok) {
  write_in_flight_ = false;
  if (!ok) {  // the RPC is over
    EndCall(/*cancel=*/true);
    return;
  }
  if (call_over_) {
    ReleaseIdleHolds();
    return;
  }
  // Read at once: the target has usually sent more while the frame was being
  // written. Polling first would cost an epoll_ctl and an epoll_wait per frame.
  if (!target_eof_) ReadTarget();
  if (!call_over_) UpdateWatch();  // EPOLLIN again if there was nothing to read
}

void Relay::HandleWritesDoneDone() {
  write_in_flight_ = false;
  if (write_hold_) {  // this direction is finished, whatever ok says
    write_hold_ = false;
    RemoveHold();  // the read hold is still held (or released below)
  }
  if (call_over_) ReleaseIdleHolds();
}

void Relay::HandleDone(const grpc::Status& status) {
  state_ = State::kFinished;
  CloseSocket(/*reset=*/!status.ok());
  if (status.ok()) {
    Log()->debug("relay {} to {} closed", channel_, where_);
  } else {
    Log()->info("relay {} to {} ended: {}: {}", channel_, where_,
                StatusCodeName(status.error_code()), status.error_message());
  }
}

// ---- Relay: endings and the epoll interest ----

void Relay::EndCall(bool cancel) {
  if (!call_over_) {
    call_over_ = true;
    if (draining_) {  // no read is in flight while draining: rx_ is ours
      draining_ = false;
      rx_data_.Clear();
      rx_.Clear();
    }
    UpdateWatch();  // leaves the epoll set
    // The read hold is still held here (it is only removed once call_over_
    // is set), so the call is alive.
    if (cancel) ctx_.TryCancel();
  }
  ReleaseIdleHolds();
}

void Relay::ReleaseIdleHolds() {
  // After the last RemoveHold gRPC may schedule OnDone; nothing here touches
  // the reactor after it.
  const bool drop_read = read_hold_ && !read_in_flight_;
  const bool drop_write = write_hold_ && !write_in_flight_;
  if (drop_read) read_hold_ = false;
  if (drop_write) write_hold_ = false;
  if (drop_read) RemoveHold();
  if (drop_write) RemoveHold();
}

void Relay::CloseSocket(bool reset) {
  state_ = State::kFinished;
  UpdateWatch();  // leaves the epoll set
  if (reset && fd_.valid()) SetLingerZero(fd_.get());  // the target sees an RST
  fd_.reset();
}

uint32_t Relay::WantedEvents() const {
  switch (state_) {
    case State::kDialing:
      return dialer_.fd() >= 0 ? uint32_t{EPOLLOUT} : 0u;
    case State::kStreaming: {
      if (call_over_) return 0;
      uint32_t events = 0;
      if (!write_in_flight_ && !target_eof_) events |= EPOLLIN;
      if (draining_) events |= EPOLLOUT;
      return events;
    }
    case State::kResultPending:
    case State::kFinished:
      return 0;
  }
  return 0;
}

// UpdateWatch() - makes the socket's epoll interest what the state wants.
// Off the loop thread (a reaction) the change is posted (PostWatchUpdate).
// Return: 0 (also when posted) or the errno of the failed epoll_ctl(); the
// streaming call is then cancelled. Thread: any, mu_ held.
int Relay::UpdateWatch() {
  const uint32_t wanted = WantedEvents();
  if (wanted == watched_) return 0;
  if (!core_->loop.in_loop_thread()) {
    PostWatchUpdate();
    return 0;
  }
  const int fd = state_ == State::kDialing ? dialer_.fd() : fd_.get();
  const int err = SetInterest(fd, wanted);
  if (err == 0) return 0;
  Log()->warn("relay {}: epoll_ctl failed: {}", channel_, OsErrorText(err));
  if (wanted == 0) watched_ = 0;  // closing the socket removes it anyway
  if (state_ == State::kStreaming && !call_over_) EndCall(/*cancel=*/true);
  return err;
}

// PostWatchUpdate() - queues one UpdateWatch for the loop thread (none if
// one is queued already: it reads the state when it runs). Dropped if the
// relay is gone by then. Thread: any, mu_ held.
void Relay::PostWatchUpdate() {
  if (watch_update_posted_) return;
  watch_update_posted_ = true;
  RelayBridgeCore* core = core_;
  const uint64_t id = id_;
  core->loop.post([core, id] {
    core->WithRelay(id, [](Relay& relay) { relay.OnPostedWatchUpdate(); });
  });
}

// SetInterest() - makes @wanted (EPOLLIN/EPOLLOUT, 0: none) the loop
// interest of socket @fd: registered with the loop on the first interest,
// unregistered when there is none (a socket without interest leaves the
// epoll set, see "Threads"). Return: 0 or the errno of the failed epoll_ctl()
// (the interest is then unchanged). Thread: loop.
int Relay::SetInterest(int fd, uint32_t wanted) {
  if (wanted == watched_) return 0;
  if (wanted == 0) {
    core_->loop.unwatch(watched_fd_);
    watched_ = 0;
    watched_fd_ = -1;
    return 0;
  }
  int err = 0;
  if (watched_ == 0) {
    RelayBridgeCore* core = core_;
    const uint64_t id = id_;
    err = core->loop.watch(fd, wanted, [core, id](uint32_t events) { core->OnEvents(id, events); });
    if (err == 0) watched_fd_ = fd;
  } else {
    err = core_->loop.modify(fd, wanted);
  }
  if (err == 0) watched_ = wanted;
  return err;
}

// ---- RelayBridgeCore ----

void RelayBridgeCore::Add(RelayOpenRequest request) {
  if (stopping) {
    Log()->debug("relay {} dropped: the supervisor is stopping", request.channel_id);
    return;
  }
  const uint64_t id = next_id_++;
  relays_.emplace(id, std::make_unique<Relay>(this, id, std::move(request)));
  live_.fetch_add(1);
  WithRelay(id, [](Relay& relay) { relay.BeginDial(); });
}

template <class Fn>
void RelayBridgeCore::WithRelay(uint64_t id, Fn&& fn) {
  auto it = relays_.find(id);
  if (it == relays_.end()) return;
  {
    std::lock_guard lock(it->second->mu());
    fn(*it->second);
    if (!it->second->finished()) return;
  }
  relays_.erase(it);  // after OnDone (or never streamed): no reaction is left
  if (live_.fetch_sub(1) == 1) {
    std::lock_guard lock(idle_mu_);
    idle_cv_.notify_all();
  }
}

void RelayBridgeCore::OnEvents(uint64_t id, uint32_t events) {
  WithRelay(id, [events](Relay& relay) { relay.OnSocketEvents(events); });
}

void RelayBridgeCore::ShutdownAll() {
  stopping = true;
  std::vector<uint64_t> ids;
  ids.reserve(relays_.size());
  for (const auto& [id, relay] : relays_) ids.push_back(id);
  for (uint64_t id : ids) WithRelay(id, [](Relay& relay) { relay.OnShutdown(); });
  std::lock_guard lock(idle_mu_);
  shutdown_ran_ = true;
  idle_cv_.notify_all();
}

void RelayBridgeCore::WaitIdle() {
  std::unique_lock lock(idle_mu_);
  idle_cv_.wait(lock, [&] { return shutdown_ran_ && live_.load() == 0; });
}

// ---- RelayBridge ----

RelayBridge::RelayBridge(std::shared_ptr<grpc::ChannelInterface> channel)
    : core_(std::make_unique<RelayBridgeCore>(std::move(channel))) {}

RelayBridge::~RelayBridge() { Shutdown(); }

void RelayBridge::Start() {
  std::lock_guard lock(shutdown_mu_);
  if (started_ || shut_down_) throw std::runtime_error("relay bridge already started or shut down");
  core_->loop.start();
  started_ = true;
}

void RelayBridge::Open(RelayOpenRequest request) {
  RelayBridgeCore* core = core_.get();
  core->loop.post([core, request = std::move(request)]() mutable { core->Add(std::move(request)); });
}

void RelayBridge::Shutdown() {
  std::lock_guard lock(shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  if (started_) {
    RelayBridgeCore* core = core_.get();
    core->loop.post([core] { core->ShutdownAll(); });
    core->WaitIdle();
  }
  core_->loop.stop();
}

}  // namespace osh::peers

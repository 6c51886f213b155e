// Theory of operation: one ForwardTcp call and its RelayStream
// ===========================================================
//
// What it is. The mini-gateway's data path on the gRPC callback API
// (grpc++ 1.51): every ForwardTcp call gets a ForwardReactor, every
// RelayStream call a RelayReactor, and one ForwardCall holds the state both
// share. Nothing blocks and no thread exists per stream: waits are states,
// left on an event (hub notification, reaction, OnCancel) or on a
// grpc::Alarm deadline. Reactions run on gRPC's callback threads, possibly
// concurrently (a read, a write and OnCancel of one call, or reactions of
// the two reactors of one ForwardCall), so every reaction and every event
// from the hub first takes ForwardCall::mu_. Start*() and Finish() are
// called with mu_ held; that is safe because gRPC never runs a server
// reaction inline inside those calls (read/write tags are not inlineable,
// OnCancel and OnDone go through an executor), and necessary because server
// reactors have no holds in 1.51 (AddHold is client-only): the rule
// "no operation after Finish()" is kept by the client_finished_ and
// relay_finished_ flags under mu_, and OnDone, the only place a reactor is
// deleted, comes after Finish() and after every operation completed.
//
// Frames are raw ByteBuffers decoded and encoded with the gateway's
// generation (wire.h: 0.0 openshell::v1, 0.1 openshell::v1::g01). Extensions
// (tunnel_ext.h) are read once from the request metadata; a call without
// them behaves exactly like upstream.
//
// Phases of a ForwardCall (protocol §2.1 order, protocol-0.1 §3 "Checks, in
// order"; statuses as upstream, §2.3):
//   kReadInit    rate limit and authorization (before reading anything),
//                then the first frame: none -> INVALID_ARGUMENT "empty
//                ForwardTcp stream", not init -> "first TcpForwardFrame must
//                be init", validation (§2.2), then the hub's Admit():
//                sandbox (0.0 by id, 0.1 by name + workspace), readiness
//                gate, token, connection slots. The slots are held until the
//                call is finished (released just before Finish()).
//   kWaitSession no supervisor session yet: the call is a session waiter of
//                its sandbox; a registering session wakes it (it registers
//                again); supervisor_wait elapses -> UNAVAILABLE
//                "supervisor relay failed: supervisor session not connected".
//                With a session, the pending-relay caps (§2.8: 32 per
//                sandbox, 256 in all) -> UNAVAILABLE "supervisor relay
//                failed: relay capacity reached".
//   kWaitResult  registered under a fresh channel_id with the sandbox's
//                session, relay_open queued on it (a closed session ->
//                UNAVAILABLE "... supervisor session disconnected"), and -
//                upstream, §2.4 - the response headers sent at once, before
//                the supervisor dials. Ends on RelayOpenResult: failure ->
//                UNAVAILABLE with the supervisor's OS error text, in the
//                trailers; on the session ending -> UNAVAILABLE "...
//                supervisor session disconnected"; or on relay_claim_timeout
//                -> DEADLINE_EXCEEDED "relay open timed out".
//                connect-ack: the headers go out only on a successful
//                result, so they mean "target connected", and a failure is a
//                trailers-only response.
//   kWaitClaim   waiting (relay_claim_timeout again, same DEADLINE_EXCEEDED)
//                for the supervisor's RelayStream with init{channel_id}. The
//                claim may come before the result (different HTTP/2
//                streams): it is then kept and the bridge starts with the
//                result. A RelayStream for an unknown, finished or already
//                claimed channel ends NOT_FOUND "relay channel not found".
//                A claimed relay no longer counts as pending.
//   kBridging    see below.
//   kDone        Finish() was called on the ForwardTcp call: the call is
//                forgotten by the hub (later claims: NOT_FOUND), a claimed
//                RelayStream still open is finished CANCELLED "relay
//                abandoned", and the slots are released.
// In every waiting phase, the client's cancellation (OnCancel) or the
// gateway's shutdown (OnShutdown) ends the call CANCELLED.
//
// Bridge. One outstanding read and one outstanding write per direction; the
// next read starts only when the previous frame is written, so HTTP/2 flow
// control reaches from the slow reader back to the sender and the gateway
// buffers at most one received frame per direction. A frame is forwarded in
// chunks of at most 64 KiB (§2.5, both ways). A data frame of at most 64
// KiB, encoded as nothing but its `data` field (ParseDataFrame: what every
// client and supervisor sends), passes through as the same bytes - the same
// gRPC slices, swapped from the read buffer into the write buffer - since
// TcpForwardFrame (both generations) and RelayFrame both carry bytes as field
// 2: no parse, copy or allocation of ours per frame (issue 16.2). Every other
// frame is decoded with protobuf and re-encoded (copied).
//   upload   client Read -> relay Write -> client Read ... Empty data frames
//            are skipped; the client's WritesDone, or a non-data frame after
//            init, is its FIN -> ONE EMPTY RelayFrame.data to the supervisor
//            (the peers' signal: it shuts down the target's write side); no
//            more client reads.
//   download relay Read -> client Write -> relay Read ... The relay's read
//            side ending cleanly (the supervisor's WritesDone) is the
//            target's FIN:
//              0.1 (default): ForwardTcp and RelayStream end OK at once
//                (protocol-0.1 §3: the newer supervisor closes the relay at
//                target EOF);
//              0.0 (default): held; the call ends OK when the client
//                half-closes, or when a write to the dead target fails and
//                the relay is lost (protocol §2.6);
//              fin-frame: ONE EMPTY TcpForwardFrame.data to the client, and
//                both calls end OK once both directions ended.
//   The client cancelling (OnCancel, a failed write, a read failing as
//   cancelled) -> the RelayStream is cancelled (the supervisor resets the
//   target) and ForwardTcp ends CANCELLED.
//   A lost relay (RelayStream cancelled or failed, supervisor died) ends
//   ForwardTcp with OK, as upstream (§2.6). relay-error: UNAVAILABLE "relay
//   lost" instead; if a client read or write is still pending, the call is
//   first cancelled *with that status* (grpc_call_cancel_with_status), which
//   delivers it at once even to a client that does not read.
//
// Timeouts: supervisor_wait (15 s), relay_claim_timeout (10 s, twice), from
// the hub's config; one grpc::Alarm per wait, whose callback holds only a
// weak reference and a generation number, so a stale or cancelled alarm is
// ignored and never keeps a call alive.
#include "peers/gateway/forward_call.h"

#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include <algorithm>

#include <utility>

#include "peers/common/address.h"
#include "peers/common/log.h"
#include "relay/message_buffer.h"
#include "peers/common/uuid.h"
#include "peers/gateway/control_session.h"

namespace osh::peers {

namespace v1 = openshell::v1;
using relay::EncodeDataFrame;
using relay::ParseDataFrame;
using grpc::Status;
using grpc::StatusCode;

namespace {

const char kSupervisorNotConnected[] = "supervisor relay failed: supervisor session not connected";
const char kSupervisorDisconnected[] = "supervisor relay failed: supervisor session disconnected";
const char kRelayCapacity[] = "supervisor relay failed: relay capacity reached";
const std::string kRelayLost(tunnel_ext::kRelayLostMessage);

std::shared_ptr<spdlog::logger> Log() {
  static const auto logger = PeerLogger("mini-gateway");
  return logger;
}

/// A validated ForwardTcp target (protocol §2.2).
struct ForwardTarget {
  bool tcp = false;  // false: the SSH target
  std::string host;  // normalized loopback host (tcp only)
  uint32_t port = 0;
};

/// The init checks of protocol §2.1 step 3 / §2.2 (protocol-0.1 §3 step 2),
/// in upstream's order. The sandbox field is sandbox_id (0.0) or sandbox (0.1).
Status ValidateForwardInit(Protocol protocol, const ForwardInit& init, ForwardTarget* out) {
  if (init.sandbox.empty()) {
    return Status(StatusCode::INVALID_ARGUMENT, protocol == Protocol::kV0_0
                                                    ? "sandbox_id is required"
                                                    : "sandbox is required");
  }
  switch (init.target) {
    case ForwardInit::Target::kSsh:
      out->tcp = false;
      return Status::OK;
    case ForwardInit::Target::kTcp: {
      if (init.port < 1 || init.port > 65535) {
        return Status(StatusCode::INVALID_ARGUMENT, "tcp target port must be between 1 and 65535");
      }
      LoopbackHost host = NormalizeLoopbackHost(init.host);
      if (host.check != LoopbackCheck::kOk) {
        return Status(StatusCode::INVALID_ARGUMENT, LoopbackCheckMessage(host.check));
      }
      out->tcp = true;
      out->host = std::move(host.host);
      out->port = init.port;
      return Status::OK;
    }
    case ForwardInit::Target::kNone:
      break;
  }
  return Status(StatusCode::INVALID_ARGUMENT, "tcp forward target is required");
}

/// The extensions a call asks for (x-osh-tunnel-ext request metadata, every
/// value merged) that this gateway supports: all three (tunnel_ext.h), when
/// the gateway offers them at all (--tunnel-extensions).
tunnel_ext::Extensions RequestedExtensions(const grpc::ServerContextBase& ctx) {
  tunnel_ext::Extensions ext;
  const auto& md = ctx.client_metadata();
  const auto range = md.equal_range(grpc::string_ref(tunnel_ext::kHeader.data(), tunnel_ext::kHeader.size()));
  for (auto it = range.first; it != range.second; ++it) {
    tunnel_ext::ParseInto(std::string_view(it->second.data(), it->second.size()), ext);
  }
  return ext;
}

}  // namespace

struct ForwardCall::Private {};

/// The ForwardTcp reactor: forwards every reaction to its ForwardCall.
class ForwardReactor final : public ForwardTcpReactor {
 public:
  explicit ForwardReactor(std::shared_ptr<ForwardCall> call) : call_(std::move(call)) {}
  void OnReadDone(bool ok) override { call_->OnClientReadDone(ok); }
  void OnWriteDone(bool ok) override { call_->OnClientWriteDone(ok); }
  void OnCancel() override { call_->OnClientCancel(); }
  void OnDone() override {
    call_->OnClientDone();
    delete this;
  }

 private:
  const std::shared_ptr<ForwardCall> call_;
};

/// The RelayStream reactor: reads init{channel_id} itself, then, once it
/// claimed its ForwardCall, forwards every reaction to it.
class RelayReactor final : public RelayStreamReactor {
 public:
  RelayReactor(ForwardHub& hub, grpc::CallbackServerContext* ctx) : hub_(hub), ctx_(ctx) {
    StartRead(&init_);
  }
  void OnReadDone(bool ok) override {
    if (auto call = call_or_null()) {
      call->OnRelayReadDone(this, ok);
    } else {
      HandleInit(ok);
    }
  }
  void OnWriteDone(bool ok) override {
    if (auto call = call_or_null()) call->OnRelayWriteDone(this, ok);
  }
  void OnCancel() override {
    if (auto call = call_or_null()) call->OnRelayCancel(this);
  }
  void OnDone() override {
    if (auto call = call_or_null()) call->OnRelayDone(this);
    delete this;
  }

 private:
  std::shared_ptr<ForwardCall> call_or_null() {
    std::lock_guard lock(mu_);
    return call_;
  }

  void HandleInit(bool ok) {
    if (!ok) {
      Finish(Status(StatusCode::INVALID_ARGUMENT, "empty RelayStream"));
      return;
    }
    v1::RelayFrame init;
    if (!ParseFromBuffer(init_, &init)) {
      Finish(Status(StatusCode::INTERNAL, "failed to decode RelayFrame"));
      return;
    }
    init_.Clear();
    if (!init.has_init()) {
      Finish(Status(StatusCode::INVALID_ARGUMENT, "first RelayFrame must be init"));
      return;
    }
    if (std::shared_ptr<ForwardCall> call = hub_.FindRelay(init.init().channel_id())) {
      {
        // Set before Claim(): the bridge may start our reads at once, and
        // their reactions must find the call.
        std::lock_guard lock(mu_);
        call_ = call;
      }
      if (call->Claim(this, ctx_)) return;  // the call owns this stream now
      std::lock_guard lock(mu_);
      call_.reset();
    }
    Finish(Status(StatusCode::NOT_FOUND, "relay channel not found"));
  }

  ForwardHub& hub_;
  grpc::CallbackServerContext* const ctx_;
  grpc::ByteBuffer init_;
  std::mutex mu_;
  std::shared_ptr<ForwardCall> call_;  // guarded by mu_; set once claimed
};

ForwardTcpReactor* NewForwardTcpReactor(ForwardHub& hub, grpc::CallbackServerContext* ctx) {
  auto call = std::make_shared<ForwardCall>(ForwardCall::Private{}, hub, ctx);
  auto* reactor = new ForwardReactor(call);
  std::lock_guard lock(call->mu_);
  call->client_ = reactor;
  // Upstream's limiter and router run before the handler reads anything.
  if (Status st = hub.AdmitClientCall(*ctx); !st.ok()) {
    call->FinishLocked(st);
  } else {
    reactor->StartRead(&call->client_in_);
  }
  return reactor;
}

RelayStreamReactor* NewRelayStreamReactor(ForwardHub& hub, grpc::CallbackServerContext* ctx) {
  return new RelayReactor(hub, ctx);
}

ForwardCall::ForwardCall(const Private&, ForwardHub& hub, grpc::CallbackServerContext* ctx)
    : hub_(hub),
      client_ctx_(ctx),
      channel_id_(NewUuidV4()),
      ext_(hub.tunnel_extensions() ? RequestedExtensions(*ctx) : tunnel_ext::Extensions{}) {}

ForwardCall::~ForwardCall() = default;

// ---- events from the hub ----

void ForwardCall::OnSessionAvailable() {
  std::lock_guard lock(mu_);
  if (!client_finished_ && phase_ == Phase::kWaitSession) WaitForSessionLocked();
}

void ForwardCall::OnRelayOpenResult(const v1::RelayOpenResult& result) {
  std::lock_guard lock(mu_);
  if (client_finished_ || phase_ != Phase::kWaitResult) return;
  if (!result.success()) {
    const std::string error = result.error().empty() ? "relay open failed" : result.error();
    Log()->info("relay {} ({}) failed: {}", channel_id_, what_, error);
    FinishLocked(Status(StatusCode::UNAVAILABLE, error));
    return;
  }
  if (ext_.connect_ack) SendHeadersLocked();  // headers mean "target connected"
  phase_ = Phase::kWaitClaim;
  if (claimed_) {
    StartBridgeLocked();
  } else {
    ArmTimerLocked(hub_.relay_claim_timeout());
  }
}

void ForwardCall::OnSessionLost() {
  std::lock_guard lock(mu_);
  if (!client_finished_ && phase_ == Phase::kWaitResult) {
    FinishLocked(Status(StatusCode::UNAVAILABLE, kSupervisorDisconnected));
  }
}

void ForwardCall::OnShutdown() {
  std::lock_guard lock(mu_);
  if (client_finished_) return;
  if (phase_ == Phase::kWaitSession || phase_ == Phase::kWaitResult ||
      phase_ == Phase::kWaitClaim) {
    FinishLocked(Status::CANCELLED);
  }
}

// ---- reactions of the ForwardTcp reactor ----

void ForwardCall::OnClientReadDone(bool ok) {
  std::lock_guard lock(mu_);
  if (client_finished_) return;
  if (phase_ == Phase::kReadInit) {
    HandleInitLocked(ok);
  } else if (phase_ == Phase::kBridging) {
    UploadReadDoneLocked(ok);
  }
}

void ForwardCall::OnClientWriteDone(bool ok) {
  std::lock_guard lock(mu_);
  client_write_pending_ = false;
  if (client_finished_) return;
  if (!ok) {
    ClientCancelledLocked();  // the client is gone
  } else if (down_fin_sent_) {
    down_done_ = true;
    MaybeFinishOkLocked();
  } else if (down_off_ < down_buf_.size()) {
    WriteNextDownloadChunkLocked();
  } else {
    relay_->StartRead(&relay_in_);  // back-pressure: the next frame only now
  }
}

void ForwardCall::OnClientCancel() {
  std::lock_guard lock(mu_);
  client_cancelled_seen_ = true;
  if (client_finished_) return;
  switch (phase_) {
    case Phase::kReadInit:  // the pending read of the first frame fails
    case Phase::kDone:
      return;
    case Phase::kWaitSession:
    case Phase::kWaitResult:
    case Phase::kWaitClaim:
      FinishLocked(Status::CANCELLED);
      return;
    case Phase::kBridging:
      ClientCancelledLocked();
      return;
  }
}

void ForwardCall::OnClientDone() {
  std::lock_guard lock(mu_);
  client_ = nullptr;
}

// ---- reactions of the RelayStream reactor ----

bool ForwardCall::Claim(RelayReactor* relay, grpc::CallbackServerContext* ctx) {
  std::lock_guard lock(mu_);
  if (client_finished_ || claimed_) return false;
  claimed_ = true;
  hub_.MarkClaimed(channel_id_);
  relay_ = relay;
  relay_ctx_ = ctx;
  if (phase_ == Phase::kWaitClaim) StartBridgeLocked();
  return true;
}

void ForwardCall::OnRelayReadDone(RelayReactor* relay, bool ok) {
  std::lock_guard lock(mu_);
  if (relay != relay_ || relay_finished_) return;
  if (!ok) {
    if (relay_ctx_->IsCancelled()) {
      RelayLostLocked();
    } else {
      TargetFinLocked();  // the supervisor's WritesDone: target FIN
    }
    return;
  }
  DownloadReadDoneLocked();
}

void ForwardCall::OnRelayWriteDone(RelayReactor* relay, bool ok) {
  std::lock_guard lock(mu_);
  if (relay != relay_ || relay_finished_) return;
  if (!ok) {
    RelayLostLocked();
  } else if (up_fin_sent_) {
    up_done_ = true;
    MaybeFinishOkLocked();
  } else if (up_off_ < up_buf_.size()) {
    WriteNextUploadChunkLocked();
  } else {
    client_->StartRead(&client_in_);  // back-pressure: the next frame only now
  }
}

void ForwardCall::OnRelayCancel(RelayReactor* relay) {
  std::lock_guard lock(mu_);
  if (relay != relay_ || relay_finished_) return;
  // Before the bridge the cancellation shows when its first read fails.
  if (phase_ == Phase::kBridging) RelayLostLocked();
}

void ForwardCall::OnRelayDone(RelayReactor* relay) {
  std::lock_guard lock(mu_);
  if (relay != relay_) return;
  relay_ = nullptr;
  relay_ctx_ = nullptr;
}

void ForwardCall::OnTimer(uint64_t generation) {
  std::lock_guard lock(mu_);
  if (generation != alarm_generation_ || client_finished_) return;
  switch (phase_) {
    case Phase::kWaitSession:
      FinishLocked(Status(StatusCode::UNAVAILABLE, kSupervisorNotConnected));
      return;
    case Phase::kWaitResult:
    case Phase::kWaitClaim:
      FinishLocked(Status(StatusCode::DEADLINE_EXCEEDED, "relay open timed out"));
      return;
    case Phase::kReadInit:
    case Phase::kBridging:
    case Phase::kDone:
      return;
  }
}

// ---- state machine (mu_ held) ----

void ForwardCall::HandleInitLocked(bool ok) {
  if (!ok) {
    FinishLocked(Status(StatusCode::INVALID_ARGUMENT, "empty ForwardTcp stream"));
    return;
  }
  ClientFrame frame;
  if (!DecodeClientFrame(hub_.protocol(), &client_in_, &frame)) {
    FinishLocked(Status(StatusCode::INTERNAL, "failed to decode TcpForwardFrame"));
    return;
  }
  if (frame.kind != ClientFrame::Kind::kInit) {
    FinishLocked(Status(StatusCode::INVALID_ARGUMENT, "first TcpForwardFrame must be init"));
    return;
  }
  const ForwardInit& init = frame.init;
  ForwardTarget target;
  if (Status st = ValidateForwardInit(hub_.protocol(), init, &target); !st.ok()) {
    FinishLocked(st);
    return;
  }
  token_ = std::string(TrimAscii(init.authorization_token));
  if (Status st = hub_.Admit(init, token_, &sandbox_id_); !st.ok()) {
    FinishLocked(st);
    return;
  }
  slots_held_ = true;
  open_.set_channel_id(channel_id_);
  if (target.tcp) {
    open_.mutable_tcp()->set_host(target.host);
    open_.mutable_tcp()->set_port(target.port);
    what_ = "tcp " + host_port(target.host, static_cast<uint16_t>(target.port));
  } else {
    open_.mutable_ssh();
    what_ = "ssh";
  }
  open_.set_service_id(init.service_id);
  client_in_.Clear();
  if (client_cancelled_seen_) {  // cancelled while the first frame was checked: no relay_open
    FinishLocked(Status::CANCELLED);
    return;
  }
  WaitForSessionLocked();
}

void ForwardCall::WaitForSessionLocked() {
  phase_ = Phase::kWaitSession;
  std::shared_ptr<ControlSession> session;
  switch (hub_.RegisterRelay(shared_from_this(), sandbox_id_, &session)) {
    case ForwardHub::Registration::kRegistered:
      session_ = std::move(session);
      SendRelayOpenLocked();
      return;
    case ForwardHub::Registration::kShuttingDown:
      FinishLocked(Status::CANCELLED);
      return;
    case ForwardHub::Registration::kCapacity:
      Log()->info("relay {} ({}) refused: pending-relay capacity reached", channel_id_, what_);
      FinishLocked(Status(StatusCode::UNAVAILABLE, kRelayCapacity));
      return;
    case ForwardHub::Registration::kWaiting:
      break;
  }
  if (client_cancelled_seen_) {
    FinishLocked(Status::CANCELLED);
    return;
  }
  if (!alarm_) ArmTimerLocked(hub_.supervisor_wait());  // one deadline across wake-ups
}

void ForwardCall::SendRelayOpenLocked() {
  phase_ = Phase::kWaitResult;
  if (!session_->SendRelayOpen(open_)) {
    FinishLocked(Status(StatusCode::UNAVAILABLE, kSupervisorDisconnected));
    return;
  }
  Log()->debug("relay {} ({}) requested from sandbox {}", channel_id_, what_, sandbox_id_);
  if (client_cancelled_seen_) {
    FinishLocked(Status::CANCELLED);
    return;
  }
  // Upstream (§2.1 step 8, §2.4): headers as soon as relay_open is queued,
  // before the supervisor dials. connect-ack waits for the result instead.
  if (!ext_.connect_ack) SendHeadersLocked();
  ArmTimerLocked(hub_.relay_claim_timeout());
}

void ForwardCall::SendHeadersLocked() {
  if (headers_sent_) return;
  headers_sent_ = true;
  // Only with the headers: custom initial metadata on a call that ends
  // before its headers would turn its trailers-only response into
  // headers + trailers.
  if (ext_.any()) {
    client_ctx_->AddInitialMetadata(std::string(tunnel_ext::kHeader), tunnel_ext::Format(ext_));
  }
  client_->StartSendInitialMetadata();
}

void ForwardCall::StartBridgeLocked() {
  alarm_.reset();
  ++alarm_generation_;
  phase_ = Phase::kBridging;
  Log()->info("relay {} ({}) to sandbox {} established", channel_id_, what_, sandbox_id_);
  client_->StartRead(&client_in_);
  relay_->StartRead(&relay_in_);
}

// PassThroughLocked() - if @in is a data frame of 1 to kMaxDataFrameBytes
// bytes encoded as nothing but that field, moves it to @out unchanged (the
// same slices) and returns true; an empty one is consumed and skipped (true,
// @out untouched: check it with out->Length()). Return false for any other
// frame (@in left as it is, for protobuf).
bool ForwardCall::PassThroughLocked(grpc::ByteBuffer* in, grpc::ByteBuffer* out) {
  const bool data = ParseDataFrame(*in, &frame_view_);
  const size_t size = frame_view_.size;
  frame_view_.Clear();
  if (!data || size > kMaxDataFrameBytes) return false;
  out->Clear();
  if (size == 0) {
    in->Clear();  // skipped, as upstream does
    return true;
  }
  out->Swap(in);  // TcpForwardFrame.data and RelayFrame.data: both field 2
  return true;
}

void ForwardCall::DownloadReadDoneLocked() {
  if (PassThroughLocked(&relay_in_, &client_out_)) {
    if (client_out_.Length() == 0) {
      relay_->StartRead(&relay_in_);
    } else {
      StartClientWriteLocked();
    }
    return;
  }
  v1::RelayFrame frame;
  if (!ParseFromBuffer(relay_in_, &frame)) {
    Log()->info("relay {}: a RelayFrame did not decode", channel_id_);
    RelayLostLocked();
    return;
  }
  relay_in_.Clear();
  if (!frame.has_data() || frame.data().empty()) {
    relay_->StartRead(&relay_in_);
    return;
  }
  down_buf_ = std::move(*frame.mutable_data());
  down_off_ = 0;
  WriteNextDownloadChunkLocked();
}

void ForwardCall::UploadReadDoneLocked(bool ok) {
  if (!ok) {
    if (client_ctx_->IsCancelled()) {
      ClientCancelledLocked();
    } else {
      SendRelayFinLocked();  // the client's WritesDone
    }
    return;
  }
  if (PassThroughLocked(&client_in_, &relay_out_)) {
    if (relay_out_.Length() == 0) {
      client_->StartRead(&client_in_);
    } else {
      relay_->StartWrite(&relay_out_);
    }
    return;
  }
  ClientFrame frame;
  if (!DecodeClientFrame(hub_.protocol(), &client_in_, &frame)) {
    Log()->info("relay {}: a TcpForwardFrame did not decode", channel_id_);
    ClientCancelledLocked();  // as a failed decode ends upstream's inbound stream with an error
    return;
  }
  if (frame.kind != ClientFrame::Kind::kData) {
    SendRelayFinLocked();  // a non-data frame after init is a half-close (§2.5)
    return;
  }
  if (frame.data.empty()) {
    client_->StartRead(&client_in_);  // skipped, as upstream does
    return;
  }
  up_buf_ = std::move(frame.data);
  up_off_ = 0;
  WriteNextUploadChunkLocked();
}

void ForwardCall::WriteNextUploadChunkLocked() {
  const size_t n = std::min(kMaxDataFrameBytes, up_buf_.size() - up_off_);
  relay_out_ = EncodeDataFrame(grpc::Slice(up_buf_.data() + up_off_, n));  // a copy: decoded frames only
  up_off_ += n;
  if (up_off_ == up_buf_.size()) {
    up_buf_.clear();
    up_off_ = 0;
  }
  relay_->StartWrite(&relay_out_);
}

void ForwardCall::WriteNextDownloadChunkLocked() {
  const size_t n = std::min(kMaxDataFrameBytes, down_buf_.size() - down_off_);
  std::string chunk;
  if (down_off_ == 0 && n == down_buf_.size()) {
    chunk = std::move(down_buf_);  // the common case: one frame, no copy
    down_buf_.clear();
  } else {
    chunk.assign(down_buf_, down_off_, n);
    down_off_ += n;
    if (down_off_ == down_buf_.size()) {
      down_buf_.clear();
      down_off_ = 0;
    }
  }
  client_out_ = EncodeClientData(hub_.protocol(), std::move(chunk));
  StartClientWriteLocked();
}

void ForwardCall::SendRelayFinLocked() {
  up_fin_sent_ = true;
  relay_out_ = EncodeDataFrame(grpc::Slice());  // an empty data frame: client FIN
  relay_->StartWrite(&relay_out_);
}

void ForwardCall::TargetFinLocked() {
  if (ext_.fin_frame) {  // extension: tell the client, end once both directions ended
    down_fin_sent_ = true;
    client_out_ = EncodeClientData(hub_.protocol(), std::string());
    StartClientWriteLocked();
    return;
  }
  if (hub_.protocol() == Protocol::kV0_1) {
    // The 0.1 supervisor closes the relay at target EOF and the gateway ends
    // ForwardTcp with OK at once (protocol-0.1 §3 "Target FIN now ends the
    // call"); nothing more reaches the target.
    FinishRelayLocked(Status::OK);
    FinishLocked(Status::OK);
    return;
  }
  // 0.0 (protocol §2.6): the FIN is not passed on; the call ends OK once the
  // client half-closes (or a write to the dead target fails: the relay is
  // lost, which also ends it OK).
  down_done_ = true;
  MaybeFinishOkLocked();
}

void ForwardCall::StartClientWriteLocked() {
  client_write_pending_ = true;
  client_->StartWrite(&client_out_);
}

void ForwardCall::ClientCancelledLocked() {
  if (client_finished_) return;
  if (relay_ != nullptr && !relay_finished_) relay_ctx_->TryCancel();  // the supervisor resets the target
  FinishRelayLocked(Status(StatusCode::CANCELLED, "client cancelled"));
  FinishLocked(Status::CANCELLED);
}

void ForwardCall::RelayLostLocked() {
  if (client_finished_) return;
  const Status lost(StatusCode::UNAVAILABLE, kRelayLost);
  FinishRelayLocked(lost);
  if (!ext_.relay_error) {
    FinishLocked(Status::OK);  // upstream (§2.6): a lost relay looks like a clean end
    return;
  }
  if (!up_fin_sent_ || client_write_pending_) {
    // relay-error: deliver the status now, even to a client that neither
    // writes nor reads; the pending client operations complete as failed.
    grpc_call_cancel_with_status(client_ctx_->c_call(), GRPC_STATUS_UNAVAILABLE, kRelayLost.c_str(),
                                 nullptr);
  }
  FinishLocked(lost);
}

void ForwardCall::MaybeFinishOkLocked() {
  if (!up_done_ || !down_done_) return;
  FinishRelayLocked(Status::OK);
  FinishLocked(Status::OK);
}

void ForwardCall::ArmTimerLocked(std::chrono::milliseconds timeout) {
  const uint64_t generation = ++alarm_generation_;
  const gpr_timespec deadline = gpr_time_add(
      gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout.count(), GPR_TIMESPAN));
  alarm_ = std::make_unique<grpc::Alarm>();  // destroying the previous one cancels it
  alarm_->Set(deadline, [weak = weak_from_this(), generation](bool fired) {
    if (!fired) return;  // cancelled
    if (auto call = weak.lock()) call->OnTimer(generation);
  });
}

void ForwardCall::FinishRelayLocked(const Status& status) {
  if (relay_ == nullptr || relay_finished_) return;
  relay_finished_ = true;
  relay_->Finish(status);
}

void ForwardCall::FinishLocked(const Status& status) {
  if (client_finished_) return;
  client_finished_ = true;
  const bool bridged = phase_ == Phase::kBridging;
  phase_ = Phase::kDone;
  alarm_.reset();
  ++alarm_generation_;
  hub_.Forget(channel_id_, sandbox_id_);  // later claims: NOT_FOUND
  FinishRelayLocked(Status(StatusCode::CANCELLED, "relay abandoned"));
  if (slots_held_) {
    slots_held_ = false;  // held until the call ends (§2.8)
    hub_.ReleaseSlots(sandbox_id_, token_);
  }
  session_.reset();
  if (bridged) {
    Log()->info("relay {} ended: {}{}{}", channel_id_, StatusCodeName(status.error_code()),
                status.ok() ? "" : ": ", status.error_message());
  }
  client_->Finish(status);
}

}  // namespace osh::peers

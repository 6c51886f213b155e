// Data plane: one ForwardTcp bidi stream per tunnelled TCP connection
// (design.md §2-§3, protocol §2), with SSH-session tokens pooled per
// sandbox and a per-sandbox stream cap enforced client-side by queueing.
// No gRPC type in this header.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "relay/gateway_client.h"
#include "relay/status_map.h"

namespace osh::relay {

using StreamId = uint64_t;

/// Where a stream goes inside the sandbox.
struct ForwardTarget {
  /// The sandbox: 0.0 gateways take its id (UUID), 0.1 gateways its name
  /// plus GatewayOptions::workspace (TcpForwardInit.sandbox/workspace).
  SandboxRef sandbox;
  bool ssh = false;        ///< the gateway's built-in SSH target (SshRelayTarget)
  std::string host;        ///< TcpRelayTarget.host: "127.0.0.1" or "::1"
  uint16_t port = 0;       ///< TcpRelayTarget.port
  std::string service_id;  ///< audit/correlation id sent in TcpForwardInit
};

/// Stream events. Called from gRPC reaction threads or the manager's worker;
/// implementations must be thread-safe, must not block, and must not call
/// back into ForwardManager synchronously.
class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  /// The stream is established: complete the client's handshake. When the
  /// gateway confirmed connect-ack (common/tunnel_ext.h): its response
  /// headers, which it sends once the target connected. Otherwise (upstream,
  /// where headers only mean "relay requested", protocol §2.4): the first
  /// byte from the target, the call's end, or the settle window after the
  /// headers, whichever comes first (forward_policy.h SettleWindow).
  virtual void on_open_ok(StreamId id) = 0;
  /// A non-empty data frame (≤ 64 KiB normally), in stream order. The next
  /// one is read only after ForwardManager::read_more(id), except that up to
  /// ForwardOptions::read_ahead_frames frames are delivered before it.
  virtual void on_data(StreamId id, std::string bytes) = 0;
  /// The target half-closed: an empty data frame on a call whose gateway
  /// confirmed fin-frame (docs/ARCHITECTURE.md "Half-close on the wire").
  /// Without it the call's OK end (on_closed kOk) is the target's FIN.
  virtual void on_remote_fin(StreamId id) = 0;
  /// `bytes` of data handed to send() were written to the stream. Exactly
  /// once per byte that is ever written, also across a late loopback
  /// fallback, which writes the bytes again on a new call (not reported
  /// twice); bytes of a failed stream may never be reported.
  virtual void on_write_done(StreamId id, size_t bytes) = 0;
  /// The stream is over; exactly once per open(), last event for `id`.
  virtual void on_closed(StreamId id, EndKind kind, std::string reason) = 0;
};

struct ForwardOptions {
  /// Concurrent streams per token (upstream: 3, protocol §2.8).
  size_t max_streams_per_token = 3;
  /// Concurrent streams per sandbox (upstream: 20); more are queued.
  size_t max_streams_per_sandbox = 20;
  /// How long an open may wait in that queue before it is refused.
  std::chrono::milliseconds queue_timeout{10000};
  /// Global caps (issue 14.5; docs/ARCHITECTURE.md "Bounds"): every local
  /// process reaches the tunnel, so no input may grow them without bound.
  /// Opens waiting in the queue at once, all sandboxes together: an open()
  /// that finds this many is refused at once (EndKind::kRefused: RST to the
  /// client), counted in ForwardStats::pending_cap_refusals.
  size_t max_pending_opens = 256;
  /// Streams open or starting at once, all sandboxes together: an open()
  /// that finds this many is refused at once (RST), counted in
  /// ForwardStats::stream_cap_refusals; a queued open is not admitted past it.
  size_t max_streams = 1024;
  /// Deadline of one open, from open() until on_open_ok: queue, token and
  /// the ForwardTcp call together (the queue part is still bounded by
  /// queue_timeout). A gateway that never answers a call, or never sends
  /// its headers, gets the call cancelled and the open refused (RST) at this
  /// deadline, counted in ForwardStats::open_timeouts. A token or health
  /// call in flight at the deadline may add up to GatewayOptions::rpc_timeout.
  std::chrono::milliseconds open_timeout{30000};
  /// A pooled token that carried no stream for this long is revoked and
  /// dropped (tokens are valid for 24 h upstream; do not keep them around).
  std::chrono::milliseconds token_idle_timeout{60000};
  /// Largest data frame sent, bytes (upstream CLI: 64 KiB, protocol §2.5).
  size_t max_frame = 64 * 1024;
  /// Received data frames delivered (on_data) before the observer's
  /// read_more(), which says it took every frame delivered so far. 1: one
  /// frame at a time, each next read started by read_more(). 2 (the TUN
  /// stack, which queues frames: cli/relay_upstream.h): the next read
  /// starts on gRPC's thread as the frame is delivered, so a download does
  /// not wait for read_more()'s hop through the confined stack's dispatch
  /// thread per frame (issue 16). A read_more() that crosses a frame in
  /// flight to the observer resets the count without it, so up to
  /// 2 x read_ahead_frames - 1 frames may wait in the observer at once.
  size_t read_ahead_frames = 1;
  /// Ask for the project's extensions (tunnel_ext::kRequestAll in the x-osh-tunnel-ext metadata) on every
  /// ForwardTcp. Upstream ignores it; false makes the mini-gateway behave
  /// exactly like upstream (tests of the default semantics).
  bool request_extensions = true;
  /// Settle window override (--connect-settle-ms): nullopt = adaptive
  /// (SettleWindow's formula, capped at connect_settle_cap), 0 = report a
  /// stream open as soon as its headers arrive. Ignored on calls whose
  /// gateway confirmed connect-ack (no window there).
  std::optional<std::chrono::milliseconds> connect_settle;
  /// Cap of the adaptive settle window.
  std::chrono::milliseconds connect_settle_cap{25};
  /// Client bytes a stream keeps (a copy) until the target's first byte, so
  /// that a dial refusal arriving after the stream was reported open can be
  /// retried on the other loopback family with those bytes replayed
  /// (docs/ARCHITECTURE.md "Connection semantics"). A client that sends more
  /// before any reply loses that retry: a late refusal is then a reset.
  /// 0 turns the late fallback off.
  size_t late_fallback_replay_bytes = 256 * 1024;
  /// Loopback family memory (forward_policy.h LoopbackMemory): how long the
  /// family that answered after a fallback is tried first for its
  /// (sandbox, port), and how many such entries are kept (LRU; 0 = none).
  std::chrono::milliseconds loopback_memory_ttl{60000};
  size_t loopback_memory_entries = 4096;
  /// Ceiling of the stream buffers of the whole process, bytes (--max-buffer-mib;
  /// docs/ARCHITECTURE.md "Memory bounds"); 0 (the default) = none. When set,
  /// the gateway channel gets a gRPC memory quota of this size (the caller
  /// puts it in GatewayOptions::grpc_memory_quota before the channel exists),
  /// which shrinks every stream's HTTP/2 receive window as unread data fills
  /// it, and each open stream takes stream_buffer_share of it: a new stream
  /// waits in the queue while the open ones' shares would pass it
  /// (forward_policy.h StreamBudget). Off by default because gRPC cancels
  /// streams when its quota is exhausted: with 256 MiB, 60 slow downloads
  /// were reset (17 of 60) in vm_memory.
  size_t max_buffer_bytes = 0;
  /// See max_buffer_bytes: 4 MiB, so that 256 MiB admits 64 streams. gRPC
  /// cancels streams when its quota is exhausted, and under full pressure
  /// each stream's window still lets in ~1.7 MiB: 150 slow streams in a
  /// 256 MiB quota (1.5 MiB each) had 58 resets (vm_memory).
  size_t stream_buffer_share = size_t{4} << 20;
  /// The quota never goes below this, bytes. The default (above any
  /// ceiling) keeps the quota fixed at max_buffer_bytes. A lower floor makes the quota follow the number
  /// of open streams (open x stream_buffer_share), which held 20 stalled
  /// downloads to ~1.7 MiB each with a 32 MiB floor, but gRPC then cancelled
  /// streams ("Buffers full") in vm_limits' 20 parallel downloads and in
  /// 100-300 slow ones (docs/ARCHITECTURE.md "Memory bounds").
  size_t grpc_quota_floor = SIZE_MAX;
  /// What carries the streams (--forward-transport; the caller copies it into
  /// GatewayOptions::forward_transport before the client exists).
  ForwardTransport transport = ForwardTransport::kH2;
  /// Give freed heap memory back to the kernel once the process has been
  /// idle for a few seconds after a busy period (common/idle_trim.h; one
  /// thread per manager, sampling once a second).
  bool trim_when_idle = true;
};

/// Counters, for status output.
struct ForwardStats {
  uint64_t opened = 0, open_failed = 0, queued_now = 0, active_now = 0, tokens = 0;
  uint64_t queue_timeouts = 0;  ///< refused at the queue deadline: no slot in the tunnel or at the gateway
  uint64_t retries = 0;  ///< opens retried after UNAUTHENTICATED / RESOURCE_EXHAUSTED
  uint64_t tokens_pooled = 0;   ///< tokens held now
  uint64_t tokens_revoked = 0;  ///< idle tokens revoked
  /// Dial failures (closed port) that arrived after the settle window, when
  /// the client's connection was already accepted: a reset, not a refusal.
  uint64_t late_refusals = 0;
  /// Opens retried on the other loopback family (127.0.0.1 <-> ::1) after
  /// the first one was refused (late_fallbacks included).
  uint64_t loopback_fallbacks = 0;
  /// Of those, the ones whose refusal came after the stream was reported
  /// open: a new call on the other family, the client's bytes replayed.
  uint64_t late_fallbacks = 0;
  /// Opens sent straight to the loopback family that answered last time for
  /// their (sandbox, port), instead of the client's own family.
  uint64_t loopback_memory_hits = 0;
  /// Opens refused before their headers, by kind (protocol-0.1 §3), each
  /// then retried until the queue deadline:
  uint64_t token_cap_hits = 0;      ///< "SSH session connection limit reached" (per token)
  uint64_t sandbox_cap_hits = 0;    ///< "sandbox SSH connection limit reached" (per sandbox)
  uint64_t rate_limit_hits = 0;     ///< "gRPC rate limit exceeded" (global; backed off)
  uint64_t relay_capacity_hits = 0; ///< UNAVAILABLE "relay capacity reached" (pending relays)
  /// Streams ended because the gateway sent a frame over the receive limit
  /// (kMaxForwardFrameBytes, gateway_client.h; issue 14.8).
  uint64_t oversize_frames = 0;
  /// Opens that waited in the queue because the open streams' buffer
  /// reservations had reached ForwardOptions::max_buffer_bytes (each counted once).
  uint64_t buffer_waits = 0;
  /// The settle window now in use, microseconds (0 = none).
  uint64_t settle_window_us = 0;
  /// Opens refused at once by the global caps (ForwardOptions::max_pending_opens,
  /// max_streams), and opens refused at their open_timeout.
  uint64_t pending_cap_refusals = 0, stream_cap_refusals = 0, open_timeouts = 0;
  /// Non-empty data frames written to the gateway and their payload bytes
  /// (client -> target), and received from it (target -> client): bytes /
  /// frames is the mean frame size per direction (issue 16.3: full 64 KiB
  /// frames in bulk; every frame costs the gateway and supervisor).
  uint64_t frames_sent = 0, frame_bytes_sent = 0, frames_received = 0, frame_bytes_received = 0;
  /// The streams' transport (ForwardOptions::transport) and, for h2, its
  /// channel's counters (relay/h2_channel.h ChannelStats): connections made
  /// and failed, stream windows grown and set back, received bytes not yet
  /// read by the stack (all streams).
  ForwardTransport transport = ForwardTransport::kGrpc;
  uint64_t h2_connects = 0, h2_connect_failures = 0, h2_window_growths = 0, h2_window_shrinks = 0,
           h2_bytes_buffered = 0;
};

/// The data-plane calls on ForwardTcp streams, as ForwardManager offers them;
/// an interface so that a stream user (relay/socket_bridge.h) can be tested
/// against a fake. Every method is thread-safe and non-blocking; answers come
/// to the ForwardObserver the implementation was given, never synchronously
/// from these calls. Calls for an unknown or ended @id are ignored.
class ForwardStreams {
 public:
  virtual ~ForwardStreams() = default;
  /// Starts opening a stream; the answer is on_open_ok or on_closed.
  virtual void open(StreamId id, ForwardTarget target) = 0;
  /// Queues client bytes (the string is taken over). Bytes of at most
  /// max_frame go out as one data frame, swapped into the message without a
  /// copy (a piece that fits is joined to the last queued frame instead;
  /// longer ones are split); one write in flight.
  virtual void send(StreamId id, std::string bytes) = 0;
  /// send()'s fast path for a caller on a thread that must not run gRPC
  /// code (stack::Upstream::try_send_queued): if the stream has a write in
  /// flight (and is not ending, aborted or moved to a fallback call), queues
  /// @bytes (taken over) behind it under the stream's mutex and returns
  /// true; the write's completion, on gRPC's thread, sends them. Otherwise
  /// returns false and leaves @bytes alone: call send(). No gRPC call is
  /// made and no stream object released on the caller's thread.
  /// Default: false (always use send()).
  virtual bool try_send_queued(StreamId id, std::string& bytes) {
    (void)id;
    (void)bytes;
    return false;
  }
  /// Starts the next read (after on_data).
  virtual void read_more(StreamId id) = 0;
  /// read_more()'s fast path for the same callers as try_send_queued
  /// (stack::Upstream::try_read_more_in_place): if read_more() would start
  /// no read - one is in flight, a frame is being delivered (its reaction
  /// starts the next read itself), or the stream reads no more - records it
  /// under the stream's mutex and returns true. Otherwise (a read must be
  /// started, the stream is unknown or moved to a fallback call) returns
  /// false: call read_more(). No gRPC call is made and no stream object
  /// released on the caller's thread. Default: false.
  virtual bool try_read_more_in_place(StreamId id) {
    (void)id;
    return false;
  }
  /// Half-closes the client->target direction after queued bytes (WritesDone).
  virtual void close_write(StreamId id) = 0;
  /// Cancels the stream; on_closed still follows.
  virtual void abort(StreamId id) = 0;
};

/// Owns every live ForwardTcp stream. All methods are thread-safe and
/// non-blocking. Threads (all joined by the destructor, none detached):
/// the admission worker (queue, caps, deadlines, and the deferred on_closed
/// of opens refused or aborted before they started), the token worker
/// (CreateSshSession / RevokeSshSession / a first Health: blocking unary
/// calls, so a slow gateway delays only the opens that need a new token),
/// and gRPC's own threads for the stream reactions.
class ForwardManager final : public ForwardStreams {
 public:
  ForwardManager(GatewayClient& gateway, ForwardObserver& observer, ForwardOptions opts = {});
  ~ForwardManager() override;  ///< calls shutdown(), then joins the admission worker

  void open(StreamId id, ForwardTarget target) override;
  void send(StreamId id, std::string bytes) override;
  bool try_send_queued(StreamId id, std::string& bytes) override;
  void read_more(StreamId id) override;
  bool try_read_more_in_place(StreamId id) override;
  void close_write(StreamId id) override;
  void abort(StreamId id) override;

  /// Cancels every stream, waits up to `grace` for them to end, joins the
  /// token worker, revokes the pooled tokens. Idempotent. Later open()s are
  /// answered on_closed(kUnreachable) from the admission worker, which runs
  /// until the destructor.
  void shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));

  ForwardStats stats() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace osh::relay

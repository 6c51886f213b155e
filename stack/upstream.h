// The narrow interface between the userspace TCP stack and whatever carries
// a connection's bytes onward (in the product: one ForwardTcp gRPC stream per
// connection, relay/; in tests: an in-memory fake). stack/ defines it and
// never includes relay/; cli/ plugs the two together (design.md §2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "stack/packet.h"

namespace osh::stack {

/// Identifies one TCP connection for its whole life; never reused.
using ConnId = uint64_t;

/// The largest data frame either way, bytes: upstream's chunk size
/// (protocol §2.5: the CLI reads 64 KiB per frame). The stack hands upload
/// frames of at most this size; the relay never sends larger ones.
inline constexpr size_t kMaxFrameBytes = 64 * 1024;

/// Where a new connection wants to go.
struct OpenRequest {
  ConnId id = 0;
  std::string sandbox;   ///< opaque sandbox key the address table maps to
  IpAddress sandbox_addr;   ///< the address the client dialled (v4 or v6)
  uint16_t port = 0;     ///< destination TCP port
  FlowKey flow;          ///< for logs
};

/// How an upstream stream ended (or failed to open). The stack maps it to
/// what the client sees (design.md §3).
enum class CloseKind {
  kOk,           ///< clean end: FIN to the client after every queued byte
  kRefused,      ///< target refused: RST (client connect() -> ECONNREFUSED)
  kUnreachable,  ///< sandbox not ready / gateway down: ICMP unreachable (EHOSTUNREACH)
  kReset,        ///< any other failure: RST
};

const char* to_string(CloseKind k);

/// Calls the stack makes into the upstream. All are made on the stack thread
/// with the lwIP core lock held (with StackConfig::confine: on the stack's
/// upstream dispatch thread, without the lock, in the same order, except
/// try_send_queued, which the dispatch makes on the confined caller's thread;
/// upstream_dispatch.h): implementations must not block, and must not call
/// back into UpstreamEvents synchronously (post instead).
class Upstream {
 public:
  virtual ~Upstream() = default;
  /// Open a stream. Answer with UpstreamEvents::on_open_ok or on_closed.
  virtual void open(const OpenRequest& req) = 0;
  /// One frame of client bytes, in order, 1..kMaxFrameBytes bytes; the
  /// upstream owns @bytes from here on (the relay swaps the string into its
  /// gRPC message: no copy) and should send it as one data frame. The stack
  /// coalesces: a frame is kMaxFrameBytes long unless the stream had no
  /// write in flight (conn.cc "Upload frames"). Each byte is acknowledged by
  /// on_write_done once written upstream; the stack opens the client's TCP
  /// window only then or within its early-ack allowance (design.md §3).
  virtual void send(ConnId id, std::string bytes) = 0;
  /// Optional fast path of send() for a caller that must not run the
  /// transport's code on its own thread (UpstreamDispatch on the confined
  /// stack thread, issue 16): when the stream has a write in flight, queue
  /// @bytes behind it using memory work only (locks, allocation; no system
  /// call but futex/mmap, no call into the transport, no object of the
  /// transport destroyed) and return true: the bytes are then sent exactly as
  /// send() would have (the write's completion starts the next write on the
  /// transport's own thread). Otherwise (no write in flight, stream unknown,
  /// ending or moved) return false with @bytes untouched: the caller then
  /// makes send(). Same rules as send() otherwise: the caller has made all
  /// its earlier calls for @id (ordering is the caller's job). Default: false.
  virtual bool try_send_queued(ConnId id, std::string& bytes) {
    (void)id;
    (void)bytes;
    return false;
  }
  /// The stack took every on_data frame delivered so far (its queue is
  /// empty): deliver more. An upstream may deliver a few frames ahead of it
  /// (the relay: one, relay::ForwardOptions::read_ahead_frames); the stack
  /// queues them.
  virtual void read_more(ConnId id) = 0;
  /// Optional fast path of read_more() for the same callers as
  /// try_send_queued: when read_more() would make no call into the
  /// transport (a read is already in flight, a frame is being delivered, or
  /// the stream reads no more), record it using memory work only (as above)
  /// and return true. Otherwise (a read must be started, stream unknown or
  /// moved) return false: the caller then makes read_more(). Same ordering
  /// rule as try_send_queued. Default: false.
  virtual bool try_read_more_in_place(ConnId id) {
    (void)id;
    return false;
  }
  /// The client sent FIN: half-close upstream after the queued bytes.
  virtual void close_write(ConnId id) = 0;
  /// The client reset or the stack gave up: cancel the stream. The upstream
  /// still reports on_closed (which the stack ignores by then).
  virtual void abort(ConnId id) = 0;
};

/// Events an upstream reports back. Thread-safe: callable from any thread;
/// they are queued and processed on the stack thread.
class UpstreamEvents {
 public:
  virtual ~UpstreamEvents() = default;
  /// The stream is established (the target accepted): complete the handshake.
  virtual void on_open_ok(ConnId id) = 0;
  /// One frame of bytes for the client, in order; queued by the stack. More
  /// come after read_more (and a few ahead of it, see Upstream::read_more).
  virtual void on_data(ConnId id, std::string bytes) = 0;
  /// The target half-closed (sent FIN): FIN to the client after queued bytes.
  virtual void on_remote_fin(ConnId id) = 0;
  /// `bytes` of client data were written upstream.
  virtual void on_write_done(ConnId id, size_t bytes) = 0;
  /// The stream is over (or never opened); `reason` is for logs.
  virtual void on_closed(ConnId id, CloseKind kind, std::string reason) = 0;
};

}  // namespace osh::stack

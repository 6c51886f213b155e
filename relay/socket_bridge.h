// The bridge between local byte streams (a connected socket, or a pair of
// fds such as ssh's stdin/stdout) and ForwardTcp streams, on one
// osh::EventLoop. Used by `openshell-tunnel forward` (accepted sockets) and
// `openshell-tunnel ssh-proxy` (stdin/stdout); see socket_bridge.cc for the
// theory of operation. No gRPC type in this header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/event_loop.h"
#include "common/scoped_fd.h"
#include "relay/forward.h"

namespace osh::relay {

/// Largest chunk read from a local fd into one data frame, bytes (upstream's
/// CLI uses 64 KiB frames, protocol §2.5).
inline constexpr size_t kBridgeChunk = 64 * 1024;
/// Local bytes handed to the stream whose write has not completed yet, per
/// connection, bytes: one frame in flight in gRPC and at most one more queued.
inline constexpr size_t kBridgeUpWindow = 2 * kBridgeChunk;

/// Totals over a bridge's life (bytes are payload bytes).
struct BridgeCounters {
  uint64_t accepted = 0;    ///< connections accepted from serve()'s listener
  uint64_t ok = 0;          ///< streams that ended OK
  uint64_t refused = 0;     ///< streams that failed before on_open_ok
  uint64_t reset = 0;       ///< streams that failed after on_open_ok
  uint64_t bytes_up = 0;    ///< read from local fds, handed to streams
  uint64_t bytes_down = 0;  ///< stream frames wholly written to local fds
};

/// How one bridged connection ended, as told to its EndHandler.
struct BridgeEnd {
  enum class Cause {
    kStream,      ///< the stream ended (`end`, `reason`); an OK end after every byte was written
    kReadError,   ///< reading the local fd failed (`error`); the stream was aborted
    kWriteError,  ///< writing the local fd failed (`error`, EPIPE: the reader left); aborted
  };
  StreamId id = 0;
  Cause cause = Cause::kStream;
  EndKind end = EndKind::kOk;  ///< kStream: how the stream ended
  bool was_open = false;       ///< on_open_ok had been seen
  std::string reason;          ///< kStream: the stream's reason text (for logs)
  int error = 0;               ///< kReadError / kWriteError: the errno
};

/// Bridges local fds to ForwardTcp streams, each connection on its own
/// stream, everything on one EventLoop thread (no locks on connection
/// state). Per connection and direction, as docs/ARCHITECTURE.md describes:
/// - local -> stream: read only once the stream is open, at most
///   kBridgeUpWindow bytes not yet reported written (on_write_done); EOF ->
///   close_write() (WritesDone).
/// - stream -> local: one frame at a time; read_more() only once the frame
///   is wholly written. The target's FIN (on_remote_fin) -> shutdown(SHUT_WR)
///   of a socket, or close() of an out fd, after the queued bytes.
/// Endings: stream OK -> the local side is closed after the queued bytes; a
/// stream error -> a socket is closed with RST (SO_LINGER 0), fds are
/// closed; a local error (reset, EPIPE, EIO) -> the stream is aborted.
///
/// Thread: every method on the loop thread, or on any thread while the loop
/// is not running; observer() callbacks on any thread.
class SocketBridge {
 public:
  /// Called once per connection when the bridge is done with its local side
  /// (never from close_all()/shutdown()). Loop thread. It may stop the loop;
  /// it must not add connections or destroy the bridge.
  using EndHandler = std::function<void(const BridgeEnd&)>;
  /// Makes the stream side, given the observer it must report to (normally a
  /// ForwardManager; a fake in tests). Called once, by the constructor.
  using StreamsFactory = std::function<std::unique_ptr<ForwardStreams>(ForwardObserver&)>;

  /// SocketBridge() - a bridge on @loop (not owned; must outlive the bridge)
  /// whose streams come from @make_streams. @name prefixes log lines
  /// ("forward", "ssh-proxy").
  SocketBridge(osh::EventLoop& loop, std::string name, const StreamsFactory& make_streams);
  /// Calls shutdown().
  ~SocketBridge();
  SocketBridge(const SocketBridge&) = delete;
  SocketBridge& operator=(const SocketBridge&) = delete;

  /// add_socket() - bridges the connected stream socket @sock (made
  /// non-blocking; owned, closed when the connection ends) to a new stream
  /// opened to @target. @on_end: optional.
  /// Return: the connection's stream id.
  StreamId add_socket(ScopedFd sock, ForwardTarget target, EndHandler on_end = {});

  /// add_pipes() - bridges @in (read: bytes to the target) and @out (written:
  /// bytes from the target) to a new stream opened to @target. Both are
  /// owned and must be distinct fds; @out is closed at the target's FIN.
  /// @out is made non-blocking while the bridge holds it when it is a pipe
  /// or socket (its flags are restored before it is closed); a tty is written
  /// blocking. A blocking @in is read once per wake-up. An fd epoll refuses
  /// (a regular file, /dev/null) is treated as always ready.
  /// Return: the connection's stream id.
  StreamId add_pipes(ScopedFd in, ScopedFd out, ForwardTarget target, EndHandler on_end = {});

  /// serve() - accepts connections on the listening socket @listener
  /// (non-blocking; owned) and bridges each to a stream opened to @target.
  /// Out of fds (EMFILE...), accepting pauses until a connection ends.
  /// Return: 0, or the errno of registering the listener with the loop.
  int serve(ScopedFd listener, ForwardTarget target);

  /// close_all() - closes the listener and every local side (sockets with
  /// RST), aborts every live stream; no EndHandler runs. Idempotent.
  void close_all();

  /// shutdown() - stops the loop (joining its thread if it has one; from the
  /// loop thread it only asks it to stop), close_all(), then destroys the
  /// stream side (a ForwardManager cancels its streams and revokes tokens,
  /// up to 2 s). Idempotent. Thread: any but the loop's while it runs.
  void shutdown();

  /// The totals so far.
  BridgeCounters counters() const { return counters_; }
  /// Connections not yet erased (a failed local side waits for its stream's
  /// on_closed).
  size_t connections() const { return conns_.size(); }
  /// Stream bytes held by the bridge, not yet written to local fds (at most
  /// one frame per connection).
  size_t buffered_down_bytes() const;

 private:
  struct Conn;
  struct Event;
  class Observer;

  Conn* find(StreamId id);
  void watch_conn(Conn& c);
  void on_socket(StreamId id, uint32_t events);
  void on_in(StreamId id, uint32_t events);
  void on_out(StreamId id, uint32_t events);
  void pump(StreamId id);
  void update_interest(Conn& c);
  void set_interest(int fd, uint32_t* current, uint32_t want);
  void read_up(Conn& c);
  void flush_down(Conn& c);
  void fail_local(Conn& c, BridgeEnd::Cause cause, int err);
  void close_local(Conn& c, bool reset);
  void end_conn(Conn& c, BridgeEnd end);
  void erase(StreamId id);
  void apply(Event& ev);
  void accept_all();
  void pause_listener(bool pause);

  osh::EventLoop& loop_;
  const std::string name_;
  std::unique_ptr<Observer> observer_;        // outlives streams_, which calls it
  std::unique_ptr<ForwardStreams> streams_;
  std::unordered_map<StreamId, std::unique_ptr<Conn>> conns_;
  StreamId next_id_ = 1;
  ScopedFd listener_;
  ForwardTarget listen_target_;
  bool listener_paused_ = false;
  std::vector<char> read_buf_;
  BridgeCounters counters_;
};

}  // namespace osh::relay

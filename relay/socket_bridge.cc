// Theory of operation: the socket <-> ForwardTcp bridge
// =====================================================
// One osh::EventLoop thread owns every connection: its local fds (a socket,
// or an in/out pair), its buffers and its flags. The stream side
// (ForwardStreams: a relay::ForwardManager, or a fake in tests) reports on
// gRPC and relay threads to the bridge's Observer, which only posts each
// event to the loop (FIFO, so a stream's events keep their order); nothing
// else crosses threads.
//
// One connection (Conn), per direction:
//   local -> stream: read only after on_open_ok, at most kBridgeUpWindow
//     (128 KiB) bytes whose write has not completed (on_write_done): one
//     frame in flight and one queued in the relay. read() == 0 (EOF) ->
//     close_write(): WritesDone, the target sees FIN once every byte is
//     written.
//   stream -> local: one frame (<= 64 KiB normally) at a time; read_more()
//     only once the frame is wholly in the kernel's buffer. The target's FIN
//     (on_remote_fin) -> shutdown(SHUT_WR) of a socket, close() of an out fd,
//     after the queued bytes.
// So no buffer grows without bound: a slow local reader stops the stream, a
// slow target stops reading from the local fd.
//
// Endings: the stream ends OK -> the local side is closed after the queued
// bytes (FIN); it ends with an error (refused port, sandbox gone, relay
// lost) -> a socket is closed with SO_LINGER 0 (RST), so its peer sees
// ECONNRESET instead of a fake clean end. A local error (reset, EPIPE, EIO)
// -> abort() the stream. A Conn is erased after its stream's on_closed
// (always the last event of a stream) and once nothing is left to write.
// The owner hears of each connection's end once (EndHandler).
//
// epoll interest is recomputed after every change (update_interest); an fd
// with nothing to wait for is parked (mask 0), so level-triggered HUP never
// spins. An fd epoll refuses (EPERM: a regular file, /dev/null; ssh-proxy's
// stdin/stdout in scripts) counts as always ready: instead of an interest,
// a posted task (pump) does its step, one per loop turn.
//
// Origin: `forward`'s Forwarder and `ssh-proxy`'s poll loop (cli/), merged.
#include "relay/socket_bridge.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "common/log_escape.h"
#include "common/log_limiter.h"

namespace osh::relay {

struct SocketBridge::Conn {
  StreamId id = 0;
  bool socket = false;  // `in` is a socket, read and written; `out` unused
  ScopedFd in, out;
  int out_flags = -1;       // fcntl flags to restore on `out` before closing it; -1: none
  bool in_blocking = false;  // read once per wake-up
  bool in_polled = true, out_polled = true;  // false: epoll refuses it, always ready
  uint32_t in_interest = 0, out_interest = 0;  // registered masks (socket: in_interest)
  bool pump_posted = false;
  bool open_ok = false;        // stream open: reading the local side may start
  bool client_eof = false;     // read() returned 0; close_write() requested
  size_t up_outstanding = 0;   // bytes sent to the stream, write not yet done
  std::string down;            // the stream frame being written locally
  size_t down_off = 0;
  bool remote_fin = false;     // target FIN: passed on once `down` is written
  bool shut_wr = false;
  bool stream_closed = false;  // on_closed seen
  bool dead = false;           // local side gone (error); waiting for on_closed
  bool abort_sent = false;
  EndHandler on_end;           // emptied once called

  int out_fd() const { return socket ? in.get() : out.get(); }
  bool want_in() const {
    return !dead && in && open_ok && !client_eof && !stream_closed && up_outstanding < kBridgeUpWindow;
  }
  bool want_out() const { return !dead && out_fd() >= 0 && down_off < down.size(); }
};

/// One ForwardObserver callback, as a value.
struct SocketBridge::Event {
  enum class Kind { kOpenOk, kData, kRemoteFin, kWriteDone, kClosed };
  Kind kind = Kind::kOpenOk;
  StreamId id = 0;
  std::string bytes;             // kData
  size_t written = 0;            // kWriteDone
  EndKind end = EndKind::kOk;    // kClosed
  std::string reason;            // kClosed
};

/// Posts every callback to the loop. Thread: any; never blocks but on the
/// loop's queue mutex.
class SocketBridge::Observer final : public ForwardObserver {
 public:
  explicit Observer(SocketBridge& b) : b_(b) {}
  void on_open_ok(StreamId id) override { post({Event::Kind::kOpenOk, id, {}, 0, EndKind::kOk, {}}); }
  void on_data(StreamId id, std::string bytes) override {
    post({Event::Kind::kData, id, std::move(bytes), 0, EndKind::kOk, {}});
  }
  void on_remote_fin(StreamId id) override { post({Event::Kind::kRemoteFin, id, {}, 0, EndKind::kOk, {}}); }
  void on_write_done(StreamId id, size_t bytes) override {
    post({Event::Kind::kWriteDone, id, {}, bytes, EndKind::kOk, {}});
  }
  void on_closed(StreamId id, EndKind kind, std::string reason) override {
    post({Event::Kind::kClosed, id, {}, 0, kind, std::move(reason)});
  }

 private:
  void post(Event ev) {
    b_.loop_.post([b = &b_, ev = std::move(ev)]() mutable { b->apply(ev); });
  }
  SocketBridge& b_;
};

namespace {

// Closes a socket with a TCP RST (SO_LINGER {1, 0}): the peer's next call
// fails with ECONNRESET.
void set_reset_on_close(int fd) {
  linger lg{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

}  // namespace

SocketBridge::SocketBridge(osh::EventLoop& loop, std::string name, const StreamsFactory& make_streams)
    : loop_(loop), name_(std::move(name)), observer_(std::make_unique<Observer>(*this)),
      read_buf_(kBridgeChunk) {
  streams_ = make_streams(*observer_);
}

SocketBridge::~SocketBridge() { shutdown(); }

SocketBridge::Conn* SocketBridge::find(StreamId id) {
  const auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second.get();
}

size_t SocketBridge::buffered_down_bytes() const {
  size_t n = 0;
  for (const auto& [id, c] : conns_) n += c->down.size() - c->down_off;
  return n;
}

// ---- adding connections ----

void SocketBridge::watch_conn(Conn& c) {
  const StreamId id = c.id;
  if (c.socket) {
    (void)loop_.watch(c.in.get(), 0, [this, id](uint32_t ev) { on_socket(id, ev); });
    return;
  }
  // Probe with a real interest: epoll refuses regular files and /dev/null.
  if (loop_.watch(c.in.get(), EPOLLIN, [this, id](uint32_t ev) { on_in(id, ev); }) == EPERM)
    c.in_polled = false;
  else
    c.in_interest = EPOLLIN;
  if (loop_.watch(c.out.get(), EPOLLOUT, [this, id](uint32_t ev) { on_out(id, ev); }) == EPERM)
    c.out_polled = false;
  else
    c.out_interest = EPOLLOUT;
}

StreamId SocketBridge::add_socket(ScopedFd sock, ForwardTarget target, EndHandler on_end) {
  if (const int fl = fcntl(sock.get(), F_GETFL); fl >= 0 && !(fl & O_NONBLOCK))
    fcntl(sock.get(), F_SETFL, fl | O_NONBLOCK);
  auto c = std::make_unique<Conn>();
  c->id = next_id_++;
  c->socket = true;
  c->in = std::move(sock);
  c->on_end = std::move(on_end);
  const StreamId id = c->id;
  watch_conn(*c);
  conns_.emplace(id, std::move(c));
  streams_->open(id, std::move(target));
  return id;
}

StreamId SocketBridge::add_pipes(ScopedFd in, ScopedFd out, ForwardTarget target, EndHandler on_end) {
  auto c = std::make_unique<Conn>();
  c->id = next_id_++;
  const int in_flags = fcntl(in.get(), F_GETFL);
  c->in_blocking = in_flags < 0 || !(in_flags & O_NONBLOCK);
  struct stat st {};
  if (fstat(out.get(), &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
    const int fl = fcntl(out.get(), F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK) && fcntl(out.get(), F_SETFL, fl | O_NONBLOCK) == 0)
      c->out_flags = fl;
  }
  c->in = std::move(in);
  c->out = std::move(out);
  c->on_end = std::move(on_end);
  const StreamId id = c->id;
  watch_conn(*c);
  update_interest(*c);  // parks both until the stream opens
  conns_.emplace(id, std::move(c));
  streams_->open(id, std::move(target));
  return id;
}

int SocketBridge::serve(ScopedFd listener, ForwardTarget target) {
  listen_target_ = std::move(target);
  listener_ = std::move(listener);
  return loop_.watch(listener_.get(), EPOLLIN, [this](uint32_t) { accept_all(); });
}

void SocketBridge::accept_all() {
  for (;;) {
    ScopedFd fd(accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: stop accepting until a connection ends, or
        // the level-triggered listener would spin.
        OSH_LOG_LIMITED(spdlog::level::warn, "{}: accept: {}; pausing until a connection closes", name_,
                        std::strerror(errno));
        pause_listener(true);
      } else if (errno != EAGAIN) {
        spdlog::error("{}: accept: {}", name_, std::strerror(errno));
      }
      return;
    }
    int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ++counters_.accepted;
    const StreamId id = add_socket(std::move(fd), listen_target_);
    spdlog::debug("{}: connection {} accepted", name_, id);
  }
}

void SocketBridge::pause_listener(bool pause) {
  if (listener_paused_ == pause || !listener_) return;
  listener_paused_ = pause;
  (void)loop_.modify(listener_.get(), pause ? 0u : static_cast<uint32_t>(EPOLLIN));
}

// ---- readiness ----

void SocketBridge::set_interest(int fd, uint32_t* current, uint32_t want) {
  if (want == *current) return;
  if (const int err = loop_.modify(fd, want); err != 0) {
    spdlog::error("{}: fd {}: epoll_ctl: {}", name_, fd, std::strerror(err));
    return;
  }
  *current = want;
}

void SocketBridge::update_interest(Conn& c) {
  const bool in = c.want_in(), out = c.want_out();
  if (c.socket) {
    if (c.in) set_interest(c.in.get(), &c.in_interest, (in ? EPOLLIN : 0u) | (out ? EPOLLOUT : 0u));
    return;
  }
  if (c.in && c.in_polled) set_interest(c.in.get(), &c.in_interest, in ? EPOLLIN : 0u);
  if (c.out && c.out_polled) set_interest(c.out.get(), &c.out_interest, out ? EPOLLOUT : 0u);
  if (((in && !c.in_polled) || (out && !c.out_polled)) && !c.pump_posted) {
    c.pump_posted = true;
    loop_.post([this, id = c.id] { pump(id); });
  }
}

void SocketBridge::pump(StreamId id) {
  Conn* c = find(id);
  if (!c) return;
  c->pump_posted = false;
  if (c->want_out() && !c->out_polled) {
    flush_down(*c);
    if (!(c = find(id))) return;
  }
  if (c->want_in() && !c->in_polled) {
    read_up(*c);
    if (!(c = find(id))) return;
  }
  update_interest(*c);
}

void SocketBridge::on_socket(StreamId id, uint32_t events) {
  Conn* c = find(id);
  if (!c) return;
  if (events & EPOLLERR) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->in.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    fail_local(*c, BridgeEnd::Cause::kReadError, err ? err : ECONNRESET);
    return;
  }
  if (events & (EPOLLOUT | EPOLLHUP)) {
    if (c->down_off < c->down.size()) flush_down(*c);
    if (!(c = find(id))) return;  // erased by flush_down
  }
  if ((events & (EPOLLIN | EPOLLHUP)) && (c->in_interest & EPOLLIN)) read_up(*c);
  if ((c = find(id))) update_interest(*c);
}

void SocketBridge::on_in(StreamId id, uint32_t /*events: EPOLLIN, HUP or ERR: read() tells*/) {
  Conn* c = find(id);
  if (!c) return;
  if (c->want_in()) read_up(*c);
  if ((c = find(id))) update_interest(*c);
}

void SocketBridge::on_out(StreamId id, uint32_t /*events: EPOLLOUT or ERR: write() tells*/) {
  Conn* c = find(id);
  if (!c) return;
  if (c->want_out()) flush_down(*c);
  if ((c = find(id))) update_interest(*c);
}

// ---- the two directions ----

// local -> stream, while the window allows.
void SocketBridge::read_up(Conn& c) {
  while (!c.client_eof && !c.dead && c.up_outstanding < kBridgeUpWindow) {
    const size_t want = std::min(kBridgeChunk, kBridgeUpWindow - c.up_outstanding);
    const ssize_t n = ::read(c.in.get(), read_buf_.data(), want);
    if (n > 0) {
      c.up_outstanding += static_cast<size_t>(n);
      counters_.bytes_up += static_cast<uint64_t>(n);
      streams_->send(c.id, std::string(read_buf_.data(), static_cast<size_t>(n)));
      if (static_cast<size_t>(n) < want || c.in_blocking) return;  // drained for now
    } else if (n == 0) {
      c.client_eof = true;
      spdlog::debug("{}: connection {}: client FIN", name_, c.id);
      streams_->close_write(c.id);
    } else if (errno == EINTR) {
      continue;
    } else {
      if (errno != EAGAIN) fail_local(c, BridgeEnd::Cause::kReadError, errno);
      return;
    }
  }
}

// stream -> local: writes the current frame, passes the target's FIN on, and
// ends the connection when that was the last thing left to do.
void SocketBridge::flush_down(Conn& c) {
  const int fd = c.out_fd();
  while (c.down_off < c.down.size()) {
    const char* p = c.down.data() + c.down_off;
    const size_t left = c.down.size() - c.down_off;
    const ssize_t n = c.socket ? ::send(fd, p, left, MSG_NOSIGNAL) : ::write(fd, p, left);
    if (n > 0) {
      c.down_off += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      return;  // update_interest() waits for EPOLLOUT (or posts a pump)
    } else {
      fail_local(c, BridgeEnd::Cause::kWriteError, n < 0 ? errno : EIO);
      return;
    }
  }
  if (!c.down.empty()) {
    counters_.bytes_down += c.down.size();
    c.down.clear();
    c.down_off = 0;
    if (!c.stream_closed) streams_->read_more(c.id);
  }
  if (c.remote_fin && !c.shut_wr) {
    c.shut_wr = true;
    if (c.socket) {
      ::shutdown(fd, SHUT_WR);
    } else {
      if (c.out_polled) loop_.unwatch(fd);
      if (c.out_flags >= 0) fcntl(fd, F_SETFL, c.out_flags);
      c.out.reset();  // the reader sees EOF: the target half-closed
    }
    spdlog::debug("{}: connection {}: target FIN passed on", name_, c.id);
  }
  if (c.stream_closed) end_conn(c, BridgeEnd{c.id, BridgeEnd::Cause::kStream, EndKind::kOk, c.open_ok, {}, 0});
}

// ---- endings ----

// Unwatches and closes the local fds (a socket with RST if @reset).
void SocketBridge::close_local(Conn& c, bool reset) {
  if (c.in) {
    if (c.socket || c.in_polled) loop_.unwatch(c.in.get());
    if (reset && c.socket) set_reset_on_close(c.in.get());
    c.in.reset();
  }
  if (c.out) {
    if (c.out_polled) loop_.unwatch(c.out.get());
    if (c.out_flags >= 0) fcntl(c.out.get(), F_SETFL, c.out_flags);
    c.out.reset();
  }
  c.in_interest = c.out_interest = 0;
}

// The local side failed (peer reset, EPIPE, ...): drop it; the stream is
// cancelled and the Conn erased at its on_closed.
void SocketBridge::fail_local(Conn& c, BridgeEnd::Cause cause, int err) {
  spdlog::debug("{}: connection {}: {}: {}", name_, c.id,
                cause == BridgeEnd::Cause::kReadError ? "read" : "write", std::strerror(err));
  c.dead = true;
  close_local(c, /*reset=*/true);
  c.down.clear();
  c.down_off = 0;
  EndHandler h = std::exchange(c.on_end, {});
  const BridgeEnd end{c.id, cause, EndKind::kOk, c.open_ok, {}, err};
  if (c.stream_closed) {
    erase(c.id);
  } else if (!c.abort_sent) {
    c.abort_sent = true;
    streams_->abort(c.id);
  }
  if (h) h(end);
}

// Closes the local side gracefully (FIN), erases, tells the owner.
void SocketBridge::end_conn(Conn& c, BridgeEnd end) {
  EndHandler h = std::exchange(c.on_end, {});
  erase(c.id);
  if (h) h(end);
}

void SocketBridge::erase(StreamId id) {
  const auto it = conns_.find(id);
  if (it == conns_.end()) return;
  close_local(*it->second, /*reset=*/false);
  conns_.erase(it);
  pause_listener(false);
}

void SocketBridge::apply(Event& ev) {
  Conn* c = find(ev.id);
  if (!c) return;
  switch (ev.kind) {
    case Event::Kind::kOpenOk:
      c->open_ok = true;
      break;
    case Event::Kind::kData:
      if (c->dead) return;
      c->down = std::move(ev.bytes);
      c->down_off = 0;
      flush_down(*c);
      if (!(c = find(ev.id))) return;
      break;
    case Event::Kind::kRemoteFin:
      c->remote_fin = true;
      if (!c->dead && c->down.empty()) {
        flush_down(*c);
        if (!(c = find(ev.id))) return;
      }
      break;
    case Event::Kind::kWriteDone:
      c->up_outstanding -= std::min(c->up_outstanding, ev.written);
      break;
    case Event::Kind::kClosed:
      c->stream_closed = true;
      if (c->dead) {
        erase(ev.id);
        return;
      }
      if (ev.end == EndKind::kOk) {
        ++counters_.ok;
        spdlog::debug("{}: connection {}: stream ended", name_, c->id);
        if (c->down_off >= c->down.size()) {
          // Graceful close: FIN after everything written.
          end_conn(*c, BridgeEnd{c->id, BridgeEnd::Cause::kStream, EndKind::kOk, c->open_ok, {}, 0});
          return;
        }
      } else {
        // Refused or failed: reset, so the peer never mistakes it for a
        // clean end of data.
        (c->open_ok ? counters_.reset : counters_.refused)++;
        OSH_LOG_LIMITED(spdlog::level::info, "{}: connection {}: {} ({})", name_, c->id, to_string(ev.end),
                        log_escape(ev.reason));  // per connection: rate-limited; the gateway's text (issue 14.7)
        close_local(*c, /*reset=*/true);
        end_conn(*c, BridgeEnd{c->id, BridgeEnd::Cause::kStream, ev.end, c->open_ok, std::move(ev.reason), 0});
        return;
      }
      break;
  }
  update_interest(*c);
}

void SocketBridge::close_all() {
  if (listener_) {
    loop_.unwatch(listener_.get());
    listener_.reset();
  }
  for (auto& [id, c] : conns_) {
    if (!c->stream_closed && !c->abort_sent) {
      c->abort_sent = true;
      if (streams_) streams_->abort(id);
    }
    close_local(*c, /*reset=*/true);
  }
  conns_.clear();
}

void SocketBridge::shutdown() {
  loop_.stop();
  close_all();
  streams_.reset();
}

}  // namespace osh::relay

// Theory of operation: `openshell-tunnel forward [BIND:]LOCAL SANDBOX[:PORT]`
// =========================================================================
// Upstream's `openshell forward service` (protocol §5.2) without a TUN: a
// listening socket on BIND:LOCAL, and for every accepted connection one
// ForwardTcp stream (relay::ForwardManager) to 127.0.0.1:PORT on the
// sandbox's loopback, or to the gateway's SSH target for port 22.
//
// Threads:
//   main       looks the sandbox up, opens the listener, prints the banner,
//              then waits for a signal, re-checking the sandbox every 2 s
//              (GetSandbox by listing, as upstream, protocol §5.2); on a
//              signal, or when the sandbox is gone, not READY or replaced,
//              it stops the loop and the relay.
//   loop       one epoll thread owns every connection: the listener, each
//              accepted socket (non-blocking) and the StreamEventQueue's
//              eventfd. No connection state is shared with other threads.
//   relay/gRPC ForwardManager's worker and reactions: they only post
//              StreamEvents to the queue (never block, never touch sockets).
//
// One connection (Conn), per direction:
//   socket -> stream: read only after the stream is open (on_open_ok), at
//     most kForwardUpWindow bytes whose gRPC write has not completed
//     (on_write_done): one frame in flight and one queued in the relay.
//     read() == 0 (client FIN) -> close_write(): WritesDone, the target sees
//     FIN once every byte is written.
//   stream -> socket: one frame at a time; read_more() only once the frame
//     is wholly in the kernel's socket buffer. An empty data frame
//     (on_remote_fin, docs/ARCHITECTURE.md "Half-close on the wire") ->
//     shutdown(SHUT_WR) after the queued bytes.
// So no buffer grows without bound: a slow client stops the stream, a slow
// target stops reading from the socket.
//
// Endings: the stream ends OK -> the socket is closed after the queued bytes
// (FIN); it ends with an error (refused port, sandbox gone, relay lost) ->
// the socket is closed with SO_LINGER 0 (RST), so the client sees ECONNRESET
// instead of a fake clean end. A client reset or socket error -> abort() the
// stream. A Conn is erased after its stream's on_closed (always the last
// event of a stream) and once nothing is left to write.
//
// epoll interest is recomputed after every change (update_interest); a socket
// with nothing to wait for is removed from the set, so level-triggered HUP
// never spins. Limits: kForwardChunk (64 KiB) per frame, the relay's caps on
// streams per sandbox and per token (more connections wait in the relay's
// queue, up to --queue-timeout-ms, then are reset).
#include "cli/forward.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <grpcpp/support/status_code_enum.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "cli/up.h"

namespace osh::cli {
namespace {

std::optional<uint16_t> parse_port(std::string_view s, bool allow_zero) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v > 65535) return std::nullopt;
  if (v == 0 && !allow_zero) return std::nullopt;
  return static_cast<uint16_t>(v);
}

bool is_ip_literal(const std::string& s, bool* v6) {
  in6_addr a6;
  in_addr a4;
  if (inet_pton(AF_INET, s.c_str(), &a4) == 1) {
    *v6 = false;
    return true;
  }
  if (inet_pton(AF_INET6, s.c_str(), &a6) == 1) {
    *v6 = true;
    return true;
  }
  return false;
}

std::string host_port(const std::string& host, uint16_t port) {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                             : fmt::format("{}:{}", host, port);
}

// Closes `fd` with a TCP RST (SO_LINGER {1, 0}): the peer's next call fails
// with ECONNRESET.
void close_with_reset(tun::ScopedFd& fd) {
  if (!fd) return;
  linger lg{1, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  fd.reset();
}

// How often a running `forward` re-checks its sandbox (upstream's
// `forward service`, protocol §5.2: every 2 s).
constexpr auto kSandboxRecheck = std::chrono::seconds(2);

// Waits for SIGINT/SIGTERM/SIGHUP (blocked in every thread by main) and
// returns it; every `period` calls `still_ok`, and returns 0 as soon as it
// says false. Thread: main.
int wait_for_signal(std::chrono::milliseconds period, const std::function<bool()>& still_ok) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  for (;;) {
    const auto s = std::chrono::duration_cast<std::chrono::seconds>(period);
    const timespec ts{static_cast<time_t>(s.count()),
                      static_cast<long>(std::chrono::nanoseconds(period - s).count())};
    const int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig > 0) return sig;
    if (errno == EINTR) continue;
    if (!still_ok()) return 0;
  }
}

// Counters printed at exit.
struct ForwardCounters {
  uint64_t accepted = 0, refused = 0, reset = 0, ok = 0, bytes_up = 0, bytes_down = 0;
};

// The epoll loop of `forward` (see the theory of operation above).
class Forwarder {
 public:
  Forwarder(relay::GatewayClient& gw, const relay::ForwardOptions& fo, relay::ForwardTarget base,
            tun::ScopedFd listener)
      : mgr_(gw, events_, fo), base_(std::move(base)), listener_(std::move(listener)),
        read_buf_(kForwardChunk) {
    ep_.reset(epoll_create1(EPOLL_CLOEXEC));
    if (!ep_) throw std::system_error(errno, std::generic_category(), "epoll_create1");
    add_fd(listener_.get(), EPOLLIN, kListenerTag);
    add_fd(events_.fd(), EPOLLIN, kEventsTag);
  }
  ~Forwarder() { stop(); }

  void start() { thread_ = std::thread([this] { loop(); }); }

  // Stops the loop (resets live connections, aborts their streams), then
  // shuts the relay down (revokes tokens). Thread: main. Idempotent.
  ForwardCounters stop() {
    stop_.store(true);
    events_.wake();
    if (thread_.joinable()) thread_.join();
    mgr_.shutdown();
    return counters_;
  }

 private:
  static constexpr uint64_t kListenerTag = 0;  // StreamIds start at 1
  static constexpr uint64_t kEventsTag = ~uint64_t{0};

  struct Conn {
    tun::ScopedFd fd;
    relay::StreamId id = 0;
    uint32_t interest = 0;       // events registered with epoll; 0 = not registered
    bool open_ok = false;        // stream open: reading the socket may start
    bool client_eof = false;     // read() returned 0; close_write() requested
    size_t up_outstanding = 0;   // bytes sent to the relay, write not yet done
    std::string down;            // the stream frame being written to the socket
    size_t down_off = 0;
    bool remote_fin = false;     // target FIN: shutdown(SHUT_WR) once `down` is written
    bool shut_wr = false;
    bool stream_closed = false;  // on_closed seen
    bool dead = false;           // socket gone (reset/error); waiting for on_closed
  };

  void add_fd(int fd, uint32_t events, uint64_t tag) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = tag;
    if (epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
      throw std::system_error(errno, std::generic_category(), "epoll_ctl");
  }

  void loop() {
    epoll_event evs[64];
    while (!stop_.load()) {
      const int n = epoll_wait(ep_.get(), evs, 64, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        spdlog::error("forward: epoll_wait: {}", std::strerror(errno));
        break;
      }
      for (int i = 0; i < n; ++i) {
        const uint64_t tag = evs[i].data.u64;
        if (tag == kListenerTag) {
          accept_all();
        } else if (tag == kEventsTag) {
          for (auto& ev : events_.drain()) apply(ev);
        } else if (auto it = conns_.find(tag); it != conns_.end()) {
          on_socket(*it->second, evs[i].events);
        }
      }
    }
    for (auto& [id, c] : conns_) {
      if (!c->stream_closed) mgr_.abort(id);
      close_with_reset(c->fd);
    }
    conns_.clear();
  }

  void accept_all() {
    for (;;) {
      tun::ScopedFd fd(accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors: stop accepting until a connection ends, or
          // the level-triggered listener would spin.
          spdlog::warn("forward: accept: {}; pausing until a connection closes", std::strerror(errno));
          pause_listener(true);
        } else if (errno != EAGAIN) {
          spdlog::error("forward: accept: {}", std::strerror(errno));
        }
        return;
      }
      int one = 1;
      setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto c = std::make_unique<Conn>();
      c->fd = std::move(fd);
      c->id = next_id_++;
      ++counters_.accepted;
      relay::ForwardTarget t = base_;
      const relay::StreamId id = c->id;
      conns_.emplace(id, std::move(c));
      spdlog::debug("forward: connection {} accepted", id);
      mgr_.open(id, std::move(t));
    }
  }

  void pause_listener(bool pause) {
    if (listener_paused_ == pause) return;
    listener_paused_ = pause;
    epoll_event ev{};
    ev.events = pause ? 0u : static_cast<uint32_t>(EPOLLIN);
    ev.data.u64 = kListenerTag;
    epoll_ctl(ep_.get(), EPOLL_CTL_MOD, listener_.get(), &ev);
  }

  void update_interest(Conn& c) {
    uint32_t want = 0;
    if (!c.dead && c.fd) {
      if (c.open_ok && !c.client_eof && !c.stream_closed && c.up_outstanding < kForwardUpWindow)
        want |= EPOLLIN;
      if (c.down_off < c.down.size()) want |= EPOLLOUT;
    }
    if (want == c.interest) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = c.id;
    int op = want == 0 ? EPOLL_CTL_DEL : (c.interest == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD);
    if (epoll_ctl(ep_.get(), op, c.fd.get(), &ev) != 0 && op != EPOLL_CTL_DEL)
      spdlog::error("forward: connection {}: epoll_ctl: {}", c.id, std::strerror(errno));
    c.interest = want;
  }

  void on_socket(Conn& c, uint32_t events) {
    if (events & EPOLLERR) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      fail_socket(c, err ? err : ECONNRESET);
      return;
    }
    const relay::StreamId id = c.id;
    if (events & (EPOLLOUT | EPOLLHUP)) {
      if (c.down_off < c.down.size()) flush_down(c);
      if (!conns_.contains(id)) return;  // erased by flush_down
    }
    if ((events & (EPOLLIN | EPOLLHUP)) && (c.interest & EPOLLIN)) read_up(c);
    if (conns_.contains(id)) update_interest(c);
  }

  // socket -> stream, while the window allows.
  void read_up(Conn& c) {
    while (!c.client_eof && !c.dead && c.up_outstanding < kForwardUpWindow) {
      const size_t want = std::min(kForwardChunk, kForwardUpWindow - c.up_outstanding);
      const ssize_t n = ::read(c.fd.get(), read_buf_.data(), want);
      if (n > 0) {
        c.up_outstanding += static_cast<size_t>(n);
        counters_.bytes_up += static_cast<uint64_t>(n);
        mgr_.send(c.id, std::string(read_buf_.data(), static_cast<size_t>(n)));
        if (static_cast<size_t>(n) < want) return;  // drained for now
      } else if (n == 0) {
        c.client_eof = true;
        spdlog::debug("forward: connection {}: client FIN", c.id);
        mgr_.close_write(c.id);
      } else if (errno == EINTR) {
        continue;
      } else {
        if (errno != EAGAIN) fail_socket(c, errno);
        return;
      }
    }
  }

  // stream -> socket: writes the current frame; erases the Conn when it is
  // the last thing left to do.
  void flush_down(Conn& c) {
    while (c.down_off < c.down.size()) {
      const ssize_t n = ::send(c.fd.get(), c.down.data() + c.down_off, c.down.size() - c.down_off,
                               MSG_NOSIGNAL);
      if (n > 0) {
        c.down_off += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        if (n < 0 && errno != EAGAIN) fail_socket(c, errno);
        return;
      }
    }
    if (!c.down.empty()) {
      counters_.bytes_down += c.down.size();
      c.down.clear();
      c.down_off = 0;
      if (!c.stream_closed) mgr_.read_more(c.id);
    }
    if (c.remote_fin && !c.shut_wr) {
      ::shutdown(c.fd.get(), SHUT_WR);
      c.shut_wr = true;
      spdlog::debug("forward: connection {}: target FIN passed on", c.id);
    }
    if (c.stream_closed) erase(c.id);  // ended OK, everything written
  }

  // The local socket failed (client reset, EPIPE, ...): drop it; the stream
  // is cancelled and the Conn erased at its on_closed.
  void fail_socket(Conn& c, int err) {
    spdlog::debug("forward: connection {}: socket: {}", c.id, std::strerror(err));
    c.dead = true;
    update_interest(c);
    close_with_reset(c.fd);
    c.down.clear();
    c.down_off = 0;
    if (c.stream_closed) erase(c.id);
    else mgr_.abort(c.id);
  }

  void erase(relay::StreamId id) {
    conns_.erase(id);
    pause_listener(false);
  }

  void apply(StreamEvent& ev) {
    auto it = conns_.find(ev.id);
    if (it == conns_.end()) return;
    Conn& c = *it->second;
    switch (ev.kind) {
      case StreamEvent::Kind::kOpenOk:
        c.open_ok = true;
        break;
      case StreamEvent::Kind::kData:
        if (c.dead) return;
        c.down = std::move(ev.bytes);
        c.down_off = 0;
        flush_down(c);
        if (!conns_.contains(ev.id)) return;
        break;
      case StreamEvent::Kind::kRemoteFin:
        c.remote_fin = true;
        if (!c.dead && c.down.empty()) {
          flush_down(c);
          if (!conns_.contains(ev.id)) return;
        }
        break;
      case StreamEvent::Kind::kWriteDone:
        c.up_outstanding -= std::min(c.up_outstanding, ev.written);
        break;
      case StreamEvent::Kind::kClosed:
        c.stream_closed = true;
        if (c.dead) {
          erase(ev.id);
          return;
        }
        if (ev.end == relay::EndKind::kOk) {
          ++counters_.ok;
          spdlog::debug("forward: connection {}: stream ended", c.id);
          if (c.down_off >= c.down.size()) {
            erase(ev.id);  // graceful close: FIN after everything written
            return;
          }
        } else {
          // Refused or failed: reset, so the client never mistakes it for a
          // clean end of data.
          (c.open_ok ? counters_.reset : counters_.refused)++;
          spdlog::info("forward: connection {}: {} ({})", c.id, relay::to_string(ev.end), ev.reason);
          close_with_reset(c.fd);
          erase(ev.id);
          return;
        }
        break;
    }
    update_interest(c);
  }

  StreamEventQueue events_;  // outlives mgr_, which calls it
  relay::ForwardManager mgr_;
  relay::ForwardTarget base_;
  tun::ScopedFd listener_;
  tun::ScopedFd ep_;
  std::vector<char> read_buf_;
  std::unordered_map<relay::StreamId, std::unique_ptr<Conn>> conns_;  // loop thread only
  relay::StreamId next_id_ = 1;
  bool listener_paused_ = false;
  ForwardCounters counters_;  // loop thread; read by stop() after join
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

tun::ScopedFd open_listener(const std::string& bind, uint16_t port, uint16_t* bound_port,
                            std::string* error) {
  bool v6 = false;
  if (!is_ip_literal(bind, &v6)) {
    *error = fmt::format("bind address '{}' is not an IP address", bind);
    return {};
  }
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, bind.c_str(), &a->sin6_addr);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, bind.c_str(), &a->sin_addr);
    len = sizeof *a;
  }
  tun::ScopedFd fd(socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    *error = fmt::format("socket: {}", std::strerror(errno));
    return {};
  }
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (v6) setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
      ::listen(fd.get(), SOMAXCONN) != 0) {
    *error = fmt::format("cannot listen on {}: {}", host_port(bind, port), std::strerror(errno));
    return {};
  }
  len = sizeof ss;
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  *bound_port = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                         : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

}  // namespace

// ---- parsing and lookup ----

std::optional<ForwardSpec> parse_forward_spec(std::string_view local, std::string_view target,
                                              std::string* error) {
  ForwardSpec s;
  std::string_view port_text = local;
  if (!local.empty() && local.front() == '[') {
    const size_t close = local.find(']');
    if (close == std::string_view::npos || close + 1 >= local.size() || local[close + 1] != ':') {
      *error = fmt::format("'{}': expected [IPv6]:PORT", local);
      return std::nullopt;
    }
    s.bind = std::string(local.substr(1, close - 1));
    port_text = local.substr(close + 2);
  } else if (const size_t colon = local.rfind(':'); colon != std::string_view::npos) {
    if (local.find(':') != colon) {
      *error = fmt::format("'{}': write an IPv6 bind address in brackets, [ADDR]:PORT", local);
      return std::nullopt;
    }
    s.bind = std::string(local.substr(0, colon));
    port_text = local.substr(colon + 1);
  }
  bool v6 = false;
  if (!is_ip_literal(s.bind, &v6)) {
    *error = fmt::format("'{}': the bind address must be an IP address", local);
    return std::nullopt;
  }
  auto lp = parse_port(port_text, true);
  if (!lp) {
    *error = fmt::format("'{}': the local port must be a number from 0 to 65535", local);
    return std::nullopt;
  }
  s.local_port = *lp;

  const size_t colon = target.rfind(':');
  s.sandbox = std::string(target.substr(0, colon));
  if (s.sandbox.empty()) {
    *error = fmt::format("'{}': the sandbox name is missing", target);
    return std::nullopt;
  }
  if (colon != std::string_view::npos) {
    auto tp = parse_port(target.substr(colon + 1), false);
    if (!tp) {
      *error = fmt::format("'{}': the sandbox port must be a number from 1 to 65535", target);
      return std::nullopt;
    }
    s.target_port = *tp;
  } else if (s.local_port == 0) {
    *error = "with local port 0, name the sandbox port: SANDBOX:PORT";
    return std::nullopt;
  } else {
    s.target_port = s.local_port;
  }
  return s;
}

std::optional<relay::SandboxInfo> find_ready_sandbox(relay::GatewayClient& gw,
                                                     const std::string& name, std::string* error) {
  relay::SandboxInfo sb;
  if (auto st = gw.get_sandbox(name, &sb); !st.ok()) {
    *error = st.code == grpc::StatusCode::NOT_FOUND
                 ? fmt::format("sandbox '{}' not found on gateway {}", name,
                               gw.options().endpoint.to_string())
                 : "looking up the sandbox: " + relay::describe_failure(st, gw.options());
    return std::nullopt;
  }
  if (!sb.may_be_reachable()) {
    *error = fmt::format("sandbox '{}' is not ready (phase {})", name, relay::phase_name(sb.phase));
    return std::nullopt;
  }
  return sb;
}

// ---- StreamEventQueue ----

StreamEventQueue::StreamEventQueue() : efd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (!efd_) throw std::system_error(errno, std::generic_category(), "eventfd");
}

std::vector<StreamEvent> StreamEventQueue::drain() {
  uint64_t v = 0;
  [[maybe_unused]] ssize_t r = ::read(efd_.get(), &v, sizeof v);  // EAGAIN: nothing to reset
  std::vector<StreamEvent> out;
  std::lock_guard lk(mu_);
  out.swap(q_);
  return out;
}

void StreamEventQueue::wake() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(efd_.get(), &one, sizeof one);  // saturates, never blocks
}

void StreamEventQueue::push(StreamEvent ev) {
  bool was_empty;
  {
    std::lock_guard lk(mu_);
    was_empty = q_.empty();
    q_.push_back(std::move(ev));
  }
  if (was_empty) wake();
}

void StreamEventQueue::on_open_ok(relay::StreamId id) {
  push({StreamEvent::Kind::kOpenOk, id, {}, 0, relay::EndKind::kOk, {}});
}
void StreamEventQueue::on_data(relay::StreamId id, std::string bytes) {
  push({StreamEvent::Kind::kData, id, std::move(bytes), 0, relay::EndKind::kOk, {}});
}
void StreamEventQueue::on_remote_fin(relay::StreamId id) {
  push({StreamEvent::Kind::kRemoteFin, id, {}, 0, relay::EndKind::kOk, {}});
}
void StreamEventQueue::on_write_done(relay::StreamId id, size_t bytes) {
  push({StreamEvent::Kind::kWriteDone, id, {}, bytes, relay::EndKind::kOk, {}});
}
void StreamEventQueue::on_closed(relay::StreamId id, relay::EndKind kind, std::string reason) {
  push({StreamEvent::Kind::kClosed, id, {}, 0, kind, std::move(reason)});
}

// ---- the command ----

int run_forward(const ForwardCommandOptions& o) {
  relay::GatewayClient gw(o.gateway);
  std::string err;
  const auto sandbox = find_ready_sandbox(gw, o.spec.sandbox, &err);
  if (!sandbox) {
    fmt::print(stderr, "error: {}\n", err);
    return kExitGateway;
  }
  uint16_t port = 0;
  tun::ScopedFd listener = open_listener(o.spec.bind, o.spec.local_port, &port, &err);
  if (!listener) {
    fmt::print(stderr, "error: {}\n", err);
    return kExitSystem;
  }

  relay::ForwardTarget base;
  base.sandbox = {sandbox->id, sandbox->name};
  base.ssh = o.spec.target_port == 22;
  base.host = "127.0.0.1";
  base.port = o.spec.target_port;
  base.service_id = fmt::format("openshell-tunnel-forward:{}:127.0.0.1:{}", o.spec.sandbox,
                                o.spec.target_port);
  relay::ForwardOptions fo;
  fo.max_streams_per_sandbox = o.max_streams_per_sandbox;
  fo.max_streams_per_token = o.max_streams_per_token;
  fo.queue_timeout = std::chrono::milliseconds(o.queue_timeout_ms);
  if (o.connect_settle_ms >= 0) fo.connect_settle = std::chrono::milliseconds(o.connect_settle_ms);
  fo.request_extensions = !o.no_tunnel_ext;

  ForwardCounters c;
  int rc = kExitOk;
  try {
    Forwarder fwd(gw, fo, base, std::move(listener));
    fwd.start();
    const std::string target = base.ssh ? std::string("the SSH target")
                                        : host_port(base.host, base.port);
    fmt::print("✓ Forwarding {} -> {} in sandbox {} via gRPC\nPress Ctrl-C to stop.\n",
               host_port(o.spec.bind, port), target, o.spec.sandbox);
    std::fflush(stdout);
    // Like upstream: the forward ends when its sandbox is gone, no longer
    // READY, replaced by another one of the same name, or cannot be looked up.
    std::string gone;
    const int sig = wait_for_signal(kSandboxRecheck, [&] {
      std::string why;
      const auto now = find_ready_sandbox(gw, o.spec.sandbox, &why);
      if (now && now->id == sandbox->id) return true;
      gone = now ? fmt::format("sandbox '{}' was replaced (id {} -> {})", o.spec.sandbox,
                               sandbox->id, now->id)
                 : why;
      return false;
    });
    if (sig == 0) {
      fmt::print(stderr, "service forward stopped: {}\n", gone);
      rc = kExitGateway;
    } else {
      fmt::print("\nStopping ({})...\n", strsignal(sig));
      std::fflush(stdout);
    }
    c = fwd.stop();
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return kExitSystem;
  }
  spdlog::info("counters: accepted={} ended_ok={} refused={} reset={} bytes_up={} bytes_down={}",
               c.accepted, c.ok, c.refused, c.reset, c.bytes_up, c.bytes_down);
  return rc;
}

}  // namespace osh::cli

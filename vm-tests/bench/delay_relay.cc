// osh-delay-relay: a TCP relay that adds a fixed round-trip delay, for the
// delay benchmark of issue 15 (vm-tests/bench/delay_bench.sh). This kernel has
// no netem, so the bench puts this relay in the gateway namespace between the
// client and the mini-gateway.
//
//   osh-delay-relay --listen ADDR:PORT --connect ADDR:PORT --rtt-ms D
//                   [--max-buffer-mib M] [--max-conns N]
//   osh-delay-relay --self-test [--rtt-ms D]
//
// Semantics: every byte read from one side is written to the other side no
// earlier than D/2 ms after it was read, in each direction, so a request and
// its answer take at least D ms longer: the added round-trip time is D (one-way
// delay D/2 each way). Order, content and half-closes (FIN, also delayed D/2)
// are kept; a reset or error on either side closes both at once. The TCP
// handshake itself is not delayed: the relay accepts, then connects upstream.
//
// This is a split-TCP relay, not a link emulator: each side's kernel TCP sees
// a LAN round trip (its congestion window and socket buffers are not limited
// by D), while everything end to end (HTTP/2 and gRPC flow-control windows,
// request/response turns) sees D. That is what the benchmark is after: how
// the application-level windows cope with a long round trip.
//
// Buffering: up to --max-buffer-mib (default 64) of delayed bytes per
// direction per connection, which holds bandwidth x delay (150 ms / 2 at
// 6 Gbit/s is 56 MiB) so the relay does not cap throughput; when a direction's
// buffer is full the relay stops reading that side (TCP back-pressure). With
// at most --max-conns connections (default 32; more are refused) memory is
// bounded by 2 x M x N plus 1 MiB of scratch.
//
// One thread, epoll, non-blocking sockets; each read goes into a right-sized
// chunk (FIONREAD) stamped with its due time, written out with writev: no
// user-space copy. Freed chunks stay in the heap (mallopt) for reuse.
// It prints one line per accepted and closed connection to stderr; the
// closing line has the most bytes each direction ever held ("peak held"):
// bytes the receiver had not yet acknowledged at the application level, so a
// lower bound on the flow-control window (HTTP/2: connection and stream) the
// sender was granted, and about that window when it, not CPU, was the limit.
//
// --self-test starts an echo server and the relay in this process, checks
// that a 1-byte round trip takes >= D ms (and not much more), that 64 MiB
// echoed through it arrive intact, that a half-close is forwarded, and prints
// the relay's throughput with D = 0 and with D. Exit status 0 when all hold.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <malloc.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using Nanos = std::chrono::nanoseconds;

struct Options {
  std::string listen = "127.0.0.1:0";
  std::string connect;
  int64_t rtt_ms = 0;
  size_t max_buffer = size_t{64} << 20;
  size_t max_conns = 32;
  bool self_test = false;
  bool quiet = false;
};

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "osh-delay-relay: %s: %s\n", what, std::strerror(errno));
  std::exit(2);
}

bool parse_addr(const std::string& s, sockaddr_storage* out, socklen_t* len) {
  std::string host, port;
  if (!s.empty() && s[0] == '[') {
    auto close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') return false;
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string::npos) return false;
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res) return false;
  std::memcpy(out, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return true;
}

void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int listen_on(const std::string& spec, uint16_t* bound_port) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (!parse_addr(spec, &ss, &len)) {
    std::fprintf(stderr, "osh-delay-relay: bad address %s\n", spec.c_str());
    std::exit(2);
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) < 0) die("bind");
  if (listen(fd, 128) < 0) die("listen");
  set_nonblock(fd);
  sockaddr_storage got{};
  socklen_t glen = sizeof got;
  getsockname(fd, reinterpret_cast<sockaddr*>(&got), &glen);
  *bound_port = ntohs(got.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port
                                                : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
  return fd;
}

// One direction of a connection: bytes read from `src`, written to `dst`
// once due.
struct Chunk {
  Clock::time_point due;
  std::unique_ptr<char[]> data;  // null: the FIN marker
  size_t len = 0;
  size_t off = 0;
};

struct Pipe {
  int src = -1;
  int dst = -1;
  std::deque<Chunk> q;
  size_t buffered = 0;   // bytes in q not yet written
  size_t peak = 0;       // the most bytes q ever held
  bool src_eof = false;  // read returned 0: FIN queued
  bool fin_sent = false; // shutdown(dst, SHUT_WR) done
  bool blocked = false;  // dst returned EAGAIN: waiting for EPOLLOUT
};

struct Conn {
  uint64_t id = 0;
  int a = -1;  // accepted (client side)
  int b = -1;  // upstream
  Pipe up;     // a -> b
  Pipe down;   // b -> a
  uint64_t bytes_up = 0, bytes_down = 0;
  bool dead = false;
};

class Relay {
 public:
  Relay(int listen_fd, sockaddr_storage upstream, socklen_t upstream_len, const Options& o)
      : lfd_(listen_fd), up_addr_(upstream), up_len_(upstream_len), opt_(o),
        one_way_(std::chrono::microseconds(o.rtt_ms * 1000 / 2)), scratch_(new char[kScratch]) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) die("epoll_create1");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = lfd_;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, lfd_, &ev) < 0) die("epoll_ctl");
  }
  ~Relay() {
    for (auto& [fd, c] : by_a_) {
      close(c->a);
      close(c->b);
    }
    close(ep_);
  }

  void run(const std::atomic<bool>* stop = nullptr) {
    std::vector<epoll_event> evs(64);
    while (!stop || !stop->load()) {
      auto now = Clock::now();
      int timeout = stop ? 100 : -1;
      for (auto& [fd, c] : by_a_) {
        flush(*c, c->up, now, &timeout);
        flush(*c, c->down, now, &timeout);
      }
      reap();
      int n = epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), timeout);
      if (n < 0) {
        if (errno == EINTR) continue;
        die("epoll_wait");
      }
      for (int i = 0; i < n; ++i) {
        int fd = evs[i].data.fd;
        if (fd == lfd_) {
          accept_all();
          continue;
        }
        auto it = by_fd_.find(fd);
        if (it == by_fd_.end()) continue;
        Conn& c = *it->second;
        if (c.dead) continue;
        uint32_t e = evs[i].events;
        Pipe& in = fd == c.a ? c.up : c.down;   // fd is its source
        Pipe& out = fd == c.a ? c.down : c.up;  // fd is its destination
        if (e & EPOLLERR) {
          int err = 0;
          socklen_t len = sizeof err;
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
          errno = err;
          abort_conn(c, "socket");
          continue;
        }
        if (e & EPOLLOUT) out.blocked = false;
        if (e & (EPOLLIN | EPOLLHUP)) read_side(c, in);
        if (!c.dead && (e & EPOLLHUP) && in.src_eof) {
          // Both directions of fd are shut: by its peer's FIN and our own.
          // Anything else is a reset.
          if (out.fin_sent) {
            epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
            interest_[fd] = kDetached;
          } else {
            errno = ECONNRESET;
            abort_conn(c, "hangup");
          }
        }
        if (!c.dead) update(c);
      }
    }
  }

 private:
  static constexpr size_t kScratch = 64 << 10;
  static constexpr size_t kMaxChunk = 4 << 20;
  static constexpr uint32_t kDetached = ~uint32_t{0};  // removed from epoll

#define RLOG(...)                                 \
  do {                                            \
    if (!opt_.quiet) std::fprintf(stderr, __VA_ARGS__); \
  } while (0)

  void accept_all() {
    for (;;) {
      int fd = accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) RLOG("accept: %s\n", std::strerror(errno));
        return;
      }
      if (by_a_.size() >= opt_.max_conns) {
        RLOG("refused a connection: --max-conns %zu reached\n", opt_.max_conns);
        close(fd);
        continue;
      }
      int b = socket(up_addr_.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (b < 0 || connect(b, reinterpret_cast<sockaddr*>(&up_addr_), up_len_) < 0) {
        RLOG("connect upstream: %s\n", std::strerror(errno));
        if (b >= 0) close(b);
        close(fd);
        continue;
      }
      set_nonblock(b);
      set_nodelay(fd);
      set_nodelay(b);
      auto c = std::make_unique<Conn>();
      c->id = ++next_id_;
      c->a = fd;
      c->b = b;
      c->up.src = fd;
      c->up.dst = b;
      c->down.src = b;
      c->down.dst = fd;
      for (int x : {fd, b}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = x;
        if (epoll_ctl(ep_, EPOLL_CTL_ADD, x, &ev) < 0) die("epoll_ctl");
        by_fd_[x] = c.get();
        interest_[x] = EPOLLIN;
      }
      RLOG("conn %llu: open (rtt +%lld ms)\n", static_cast<unsigned long long>(c->id),
          static_cast<long long>(opt_.rtt_ms));
      by_a_[fd] = std::move(c);
    }
  }

  // Reads what src has into right-sized chunks: FIONREAD says how much is
  // queued, the read goes straight into the chunk (no copy); the scratch
  // buffer only takes reads when FIONREAD says 0 (EOF, an error, or a race).
  void read_side(Conn& c, Pipe& p) {
    while (!p.src_eof && p.buffered < opt_.max_buffer) {
      int avail = 0;
      if (ioctl(p.src, FIONREAD, &avail) < 0) avail = 0;
      size_t room = opt_.max_buffer - p.buffered;
      Chunk ch;
      char* into = scratch_.get();
      size_t want = std::min(kScratch, room);
      if (avail > 0) {
        want = std::min({static_cast<size_t>(avail), kMaxChunk, room});
        ch.data.reset(new char[want]);
        into = ch.data.get();
      }
      ssize_t n = read(p.src, into, want);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;
        abort_conn(c, "read");
        return;
      }
      ch.due = Clock::now() + one_way_;
      if (n == 0) {
        p.src_eof = true;
        ch.data.reset();
        p.q.push_back(std::move(ch));  // FIN marker
        return;
      }
      if (into == scratch_.get()) {
        ch.data.reset(new char[n]);
        std::memcpy(ch.data.get(), scratch_.get(), n);
      }
      ch.len = static_cast<size_t>(n);
      p.q.push_back(std::move(ch));
      p.buffered += n;
      p.peak = std::max(p.peak, p.buffered);
      (&p == &c.up ? c.bytes_up : c.bytes_down) += n;
      if (static_cast<size_t>(n) < want) return;  // drained (level-triggered: we'd hear again)
    }
  }

  // Writes every due chunk of p; lowers *timeout to the next due time.
  void flush(Conn& c, Pipe& p, Clock::time_point now, int* timeout) {
    if (c.dead) return;
    while (!p.blocked && !p.q.empty() && p.q.front().due <= now) {
      Chunk& head = p.q.front();
      if (!head.data) {  // FIN
        shutdown(p.dst, SHUT_WR);
        p.fin_sent = true;
        p.q.pop_front();
        continue;
      }
      iovec iov[64];
      int cnt = 0;
      for (auto it = p.q.begin(); it != p.q.end() && cnt < 64 && it->data && it->due <= now; ++it, ++cnt) {
        iov[cnt].iov_base = it->data.get() + it->off;
        iov[cnt].iov_len = it->len - it->off;
      }
      ssize_t n = writev(p.dst, iov, cnt);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          p.blocked = true;
          break;
        }
        abort_conn(c, "write");
        return;
      }
      p.buffered -= n;
      size_t left = static_cast<size_t>(n);
      while (left > 0) {
        Chunk& h = p.q.front();
        size_t take = std::min(left, h.len - h.off);
        h.off += take;
        left -= take;
        if (h.off == h.len) p.q.pop_front();
      }
    }
    if (!p.blocked && !p.q.empty()) {
      auto wait = std::chrono::ceil<std::chrono::milliseconds>(p.q.front().due - now).count();
      if (wait < 0) wait = 0;
      if (*timeout < 0 || wait < *timeout) *timeout = static_cast<int>(wait);
    }
    update(c);
    if (c.up.fin_sent && c.down.fin_sent) finish(c);
  }

  void update(Conn& c) {
    if (c.dead) return;
    for (int fd : {c.a, c.b}) {
      Pipe& in = fd == c.a ? c.up : c.down;   // fd is in's source
      Pipe& out = fd == c.a ? c.down : c.up;  // fd is out's destination
      uint32_t ev = 0;
      if (!in.src_eof && in.buffered < opt_.max_buffer) ev |= EPOLLIN;
      if (out.blocked) ev |= EPOLLOUT;
      uint32_t& cur = interest_[fd];
      if (cur == ev || cur == kDetached) continue;
      epoll_event e{};
      e.events = ev;
      e.data.fd = fd;
      epoll_ctl(ep_, EPOLL_CTL_MOD, fd, &e);
      cur = ev;
    }
  }

  void abort_conn(Conn& c, const char* why) {
    if (c.dead) return;
    RLOG("conn %llu: %s error (%s), closing both sides\n", static_cast<unsigned long long>(c.id), why,
        std::strerror(errno));
    // An RST for an RST: close with SO_LINGER 0.
    linger lg{1, 0};
    setsockopt(c.a, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    setsockopt(c.b, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    finish(c);
  }

  void finish(Conn& c) {
    if (c.dead) return;
    c.dead = true;
    RLOG("conn %llu: closed, %llu bytes up, %llu bytes down, peak held up %zu KiB, peak held down %zu KiB\n",
         static_cast<unsigned long long>(c.id), static_cast<unsigned long long>(c.bytes_up),
         static_cast<unsigned long long>(c.bytes_down), c.up.peak >> 10, c.down.peak >> 10);
    for (int fd : {c.a, c.b}) {
      epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
      by_fd_.erase(fd);
      interest_.erase(fd);
    }
    c.up.q.clear();
    c.down.q.clear();
  }

  void reap() {
    for (auto it = by_a_.begin(); it != by_a_.end();) {
      if (it->second->dead) {
        close(it->second->a);
        close(it->second->b);
        it = by_a_.erase(it);
      } else {
        ++it;
      }
    }
  }

  int lfd_;
  int ep_ = -1;
  sockaddr_storage up_addr_;
  socklen_t up_len_;
  Options opt_;
  Nanos one_way_;
  std::unique_ptr<char[]> scratch_;
  uint64_t next_id_ = 0;
  std::unordered_map<int, std::unique_ptr<Conn>> by_a_;
  std::unordered_map<int, Conn*> by_fd_;
  std::unordered_map<int, uint32_t> interest_;
};

// ---------------------------------------------------------------- self-test

// Blocking echo server on 127.0.0.1: one thread per connection, echoes until
// EOF, then half-closes.
struct EchoServer {
  int fd = -1;
  uint16_t port = 0;
  std::thread th;
  void start() {
    fd = listen_on("127.0.0.1:0", &port);
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    th = std::thread([this] {
      for (;;) {
        int c = accept(fd, nullptr, nullptr);
        if (c < 0) return;
        set_nodelay(c);
        std::thread([c] {
          std::vector<char> buf(1 << 20);
          for (;;) {
            ssize_t n = read(c, buf.data(), buf.size());
            if (n <= 0) break;
            for (ssize_t off = 0; off < n;) {
              ssize_t w = write(c, buf.data() + off, n - off);
              if (w <= 0) {
                close(c);
                return;
              }
              off += w;
            }
          }
          shutdown(c, SHUT_WR);
          close(c);
        }).detach();
      }
    });
    th.detach();
  }
};

int connect_local(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) die("connect");
  set_nodelay(fd);
  return fd;
}

double secs_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Round trip of one byte, ms.
double ping(int fd) {
  char b = 'x';
  auto t0 = Clock::now();
  if (write(fd, &b, 1) != 1 || read(fd, &b, 1) != 1) die("ping");
  return secs_since(t0) * 1e3;
}

// The test pattern: a random table of a prime length, so that a shifted,
// lost or duplicated block does not compare equal.
constexpr size_t kPat = 1048573;
const std::vector<char>& pattern() {
  static const std::vector<char> t = [] {
    std::vector<char> v(kPat);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (auto& c : v) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      c = static_cast<char>(x >> 24);
    }
    return v;
  }();
  return t;
}
// Copies (fill) or compares (!fill) buf[0, n) with the pattern at stream offset off.
bool pattern_at(char* buf, size_t n, size_t off, bool fill) {
  const auto& t = pattern();
  for (size_t done = 0; done < n;) {
    size_t p = (off + done) % kPat;
    size_t k = std::min(n - done, kPat - p);
    if (fill) std::memcpy(buf + done, t.data() + p, k);
    else if (std::memcmp(buf + done, t.data() + p, k) != 0) return false;
    done += k;
  }
  return true;
}

// Sends `total` bytes of the pattern and reads the echo back concurrently;
// returns Gbit/s (each way) and sets *intact (all bytes equal, then EOF: the
// half-close came back).
double echo_bulk(uint16_t port, size_t total, bool* intact) {
  int fd = connect_local(port);
  auto t0 = Clock::now();
  std::thread writer([&] {
    std::vector<char> buf(1 << 20);
    for (size_t off = 0; off < total;) {
      size_t k = std::min(buf.size(), total - off);
      pattern_at(buf.data(), k, off, true);
      ssize_t w = write(fd, buf.data(), k);
      if (w <= 0) die("write");
      off += w;
    }
    shutdown(fd, SHUT_WR);  // the half-close must come back as EOF after the echo
  });
  std::vector<char> buf(1 << 20);
  size_t got = 0;
  bool ok = true;
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0) die("read");
    if (n == 0) break;
    ok = ok && pattern_at(buf.data(), n, got, false);
    got += n;
  }
  double s = secs_since(t0);
  writer.join();
  close(fd);
  *intact = ok && got == total;
  if (got != total) std::fprintf(stderr, "  echo: got %zu of %zu bytes\n", got, total);
  return static_cast<double>(total) * 8 / s / 1e9;
}

// One-way capacity: a server thread sends `total` bytes of zeros and closes;
// the client discards them. Gbit/s.
double one_way(uint16_t relay_port, int src_listen, size_t total) {
  std::thread src([&] {
    int c = accept(src_listen, nullptr, nullptr);
    if (c < 0) die("accept");
    std::vector<char> buf(4 << 20);
    for (size_t off = 0; off < total;) {
      ssize_t w = write(c, buf.data(), std::min(buf.size(), total - off));
      if (w <= 0) die("write");
      off += w;
    }
    close(c);
  });
  auto t0 = Clock::now();
  int fd = connect_local(relay_port);
  std::vector<char> buf(4 << 20);
  size_t got = 0;
  for (ssize_t n; (n = read(fd, buf.data(), buf.size())) > 0;) got += n;
  double s = secs_since(t0);
  close(fd);
  src.join();
  return static_cast<double>(got) * 8 / s / 1e9;
}

int self_test(Options o) {
  signal(SIGPIPE, SIG_IGN);
  EchoServer echo;
  echo.start();
  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    std::printf("  %s: %s\n", ok ? "ok" : "FAIL", what.c_str());
    if (!ok) ++failures;
  };
  for (int64_t rtt : {int64_t{0}, o.rtt_ms}) {
    Options ro = o;
    ro.rtt_ms = rtt;
    ro.quiet = true;
    uint16_t port = 0;
    int lfd = listen_on("127.0.0.1:0", &port);
    sockaddr_storage up{};
    socklen_t ulen = 0;
    parse_addr("127.0.0.1:" + std::to_string(echo.port), &up, &ulen);
    std::atomic<bool> stop{false};
    std::thread th([&] { Relay(lfd, up, ulen, ro).run(&stop); });

    int fd = connect_local(port);
    double best = 1e9;
    for (int i = 0; i < 5; ++i) best = std::min(best, ping(fd));
    close(fd);
    check(best >= static_cast<double>(rtt) && best < static_cast<double>(rtt) + 50,
          "rtt +" + std::to_string(rtt) + " ms: 1-byte round trip " + std::to_string(best) + " ms (>= " +
              std::to_string(rtt) + ", < " + std::to_string(rtt + 50) + ")");
    bool intact = false;
    size_t total = size_t{64} << 20;
    double gbps = echo_bulk(port, total, &intact);
    check(intact, "rtt +" + std::to_string(rtt) + " ms: 64 MiB echoed intact and the half-close came back, " +
                      std::to_string(gbps) + " Gbit/s each way");
    stop = true;
    th.join();
    close(lfd);

    // The relay's one-way capacity (a download through it): 512 MiB.
    uint16_t src_port = 0, port2 = 0;
    int src_l = listen_on("127.0.0.1:0", &src_port);
    fcntl(src_l, F_SETFL, fcntl(src_l, F_GETFL) & ~O_NONBLOCK);
    int lfd2 = listen_on("127.0.0.1:0", &port2);
    parse_addr("127.0.0.1:" + std::to_string(src_port), &up, &ulen);
    stop = false;
    std::thread th2([&] { Relay(lfd2, up, ulen, ro).run(&stop); });
    double direct = rtt == 0 ? one_way(src_port, src_l, size_t{512} << 20) : 0;
    if (rtt == 0) std::printf("  info: without the relay, one way, 512 MiB: %.2f Gbit/s\n", direct);
    double one = one_way(port2, src_l, size_t{512} << 20);
    std::printf("  info: rtt +%lld ms: one way, 512 MiB: %.2f Gbit/s (the relay's capacity on this machine now)\n",
                static_cast<long long>(rtt), one);
    stop = true;
    th2.join();
    close(lfd2);
    close(src_l);
  }
  std::printf(failures ? "FAIL: osh-delay-relay self-test\n" : "PASS: osh-delay-relay self-test\n");
  return failures ? 1 : 0;
}

void usage() {
  std::fprintf(stderr,
               "usage: osh-delay-relay --listen ADDR:PORT --connect ADDR:PORT --rtt-ms D\n"
               "                       [--max-buffer-mib M (64)] [--max-conns N (32)] [--quiet]\n"
               "       osh-delay-relay --self-test [--rtt-ms D]\n"
               "Each direction's bytes are delayed D/2 ms: the added round-trip time is D.\n");
}

}  // namespace

int main(int argc, char** argv) {
  // Chunks up to 4 MiB come and go at gigabits per second: keep freed memory
  // in the heap for the next ones instead of mapping fresh (faulting) pages
  // each time. The heap's high-water mark is bounded by the buffers' bound.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--listen") o.listen = next();
    else if (a == "--connect") o.connect = next();
    else if (a == "--rtt-ms") o.rtt_ms = std::stoll(next());
    else if (a == "--max-buffer-mib") o.max_buffer = std::stoull(next()) << 20;
    else if (a == "--max-conns") o.max_conns = std::stoull(next());
    else if (a == "--self-test") o.self_test = true;
    else if (a == "--quiet") o.quiet = true;
    else {
      usage();
      return a == "-h" || a == "--help" ? 0 : 2;
    }
  }
  if (o.rtt_ms < 0 || o.max_buffer == 0 || o.max_conns == 0) {
    usage();
    return 2;
  }
  if (o.self_test) return self_test(o);
  if (o.connect.empty()) {
    usage();
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  sockaddr_storage up{};
  socklen_t ulen = 0;
  if (!parse_addr(o.connect, &up, &ulen)) {
    std::fprintf(stderr, "osh-delay-relay: bad address %s\n", o.connect.c_str());
    return 2;
  }
  uint16_t port = 0;
  int lfd = listen_on(o.listen, &port);
  std::fprintf(stderr, "osh-delay-relay: listening on %s (port %u) -> %s, rtt +%lld ms (%lld.%lld ms each way)\n",
               o.listen.c_str(), port, o.connect.c_str(), static_cast<long long>(o.rtt_ms),
               static_cast<long long>(o.rtt_ms / 2), static_cast<long long>((o.rtt_ms % 2) * 5));
  Relay(lfd, up, ulen, o).run();
}

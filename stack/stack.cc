// Theory of operation: the stack under one loop
// =============================================
// Three parts, one thread (the "stack reader", an osh::EventLoop):
//
//   packet fd ──► judge() (gate.cc: classify, checksums, tables; never lwIP)
//                  ├─► drop: counted
//                  ├─► DNS query: header check, copied; answered after the
//                  │         batch, off the lock (below)
//                  ├─► ICMP echo: answered here
//                  ├─► SYN: Connections::on_syn (conn.cc: held, Upstream::open;
//                  │         absorbed; or fed to lwIP during the handshake)
//                  └─► other TCP: LwipAdapter::feed (lwip_adapter.cc, I2 path)
//                      (a client RST answering our SYN-ACK also ends the
//                       connection: Connections::handshake_reset)
//   UpstreamEvents (any thread: gRPC reactions) ──► EventLoop::post ──► Connections::on_*
//   1 s timer ──► Connections::sweep (the 20 s handshake deadline, the held-SYN deadline)
//
// The packet fd is read in batches of up to 64 packets per wake-up, each
// batch and each posted event under one hold of the lwIP core lock; after
// each, Connections::end_batch hands the partial upload frames of streams
// with no write in flight (conn.cc "Upload frames"). lwIP's
// own tcpip thread runs its timers under the same lock and may call the pcb
// callbacks (lwip_adapter.cc), which feed the state machine too. A packet fd
// that fails for good (the TUN deleted: EPOLLERR, read() gives EBADFD or EIO)
// is dropped from the loop with one log line; the owner tears down.
//
// Routes (served address -> sandbox) are the gate's table and the output
// filter's; replacing them resets connections to addresses no longer served.
//
// DNS off the lock (issue 14.3): a query is never parsed under the core lock.
// Under the lock, handle_packet() only runs StackConfig::dns_accept (the
// responder's 12-byte header check: at most 512 bytes, one question, no
// answer/authority records, at most one additional) and copies an accepted
// datagram (<= 512 bytes with the responder's check) with its addresses into
// the batch's pending list (at most kReadBatch entries). When the batch is
// done read_packets() releases the lock, calls dns_handler for each pending
// query on this same thread, builds the UDP replies, and takes the lock once
// more only to write them (LwipAdapter::emit). So a slow query delays this
// thread's next batch but never holds lwIP (the tcpip thread's timers and
// the pcb callbacks run meanwhile), and the header check bounds what a query
// can cost at all. No new thread, no queue between threads: the pending list
// lives on read_packets()' stack.
//
// Confined threads (issue 14.6, StackConfig::confine): the reader confines
// itself before its loop looks at the packet fd (EventLoop::start's
// at_start), lwIP's tcpip thread in its tcpip_init callback
// (lwip_adapter.cc): no capabilities, the seccomp allow-list of
// common/thread_sandbox.cc. DNS answering stays on the reader, inside the
// filter. The Upstream (gRPC in the product) is then called through an
// UpstreamDispatch, whose thread is started here by the caller of start(),
// unconfined: gRPC's socket I/O, connects and the threads it starts never
// happen on a confined thread.
#include "stack/stack.h"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <stdexcept>
#include <vector>

#include "common/event_loop.h"
#include "stack/conn.h"
#include "stack/gate.h"
#include "stack/lwip_adapter.h"
#include "stack/upstream_dispatch.h"
#include "stack/vnet.h"

namespace osh::stack {

const char* to_string(CloseKind k) {
  switch (k) {
    case CloseKind::kOk: return "ok";
    case CloseKind::kRefused: return "refused";
    case CloseKind::kUnreachable: return "unreachable";
    case CloseKind::kReset: return "reset";
  }
  return "?";
}

namespace {
constexpr size_t kReadBatch = 64;                    // packets per core-lock hold
constexpr auto kSweepInterval = std::chrono::seconds(1);
}  // namespace

struct Stack::Impl final : UpstreamEvents {
  StackConfig cfg;
  Upstream& upstream;
  StackCounters counters;
  RouteTable routes;  // core lock (or before start())
  LwipAdapter lwip;
  UpstreamDispatch dispatch;  // used (and started) only when confined
  Connections conns;
  EventLoop loop;
  bool started = false, ever_started = false;

  Impl(const StackConfig& c, Upstream& u)
      : cfg(c),
        upstream(u),
        lwip(cfg, routes, counters),
        dispatch(u),
        conns(cfg.early_ack_bytes, confined() ? static_cast<Upstream&>(dispatch) : u, lwip, counters,
              std::chrono::milliseconds(cfg.open_timeout_ms)) {
    lwip.bind(conns);
  }

  bool confined() const { return cfg.confine != Confinement::kNone; }

  /// Runs @fn on the stack thread under the core lock (dropped after stop()).
  template <class Fn>
  void post(Fn&& fn) {
    loop.post([this, fn = std::forward<Fn>(fn)]() mutable {
      CoreLock lk;
      fn();
      conns.end_batch();
    });
  }

  // ---- UpstreamEvents (any thread) ----
  void on_open_ok(ConnId id) override { post([this, id] { conns.on_open_ok(id); }); }
  void on_data(ConnId id, std::string bytes) override {
    post([this, id, b = std::move(bytes)]() mutable { conns.on_data(id, std::move(b)); });
  }
  void on_remote_fin(ConnId id) override { post([this, id] { conns.on_remote_fin(id); }); }
  void on_write_done(ConnId id, size_t n) override { post([this, id, n] { conns.on_write_done(id, n); }); }
  void on_closed(ConnId id, CloseKind kind, std::string reason) override {
    post([this, id, kind, r = std::move(reason)] { conns.on_closed(id, kind, r); });
  }

  // ---- setup and teardown ----
  void start() {
    lwip.start();
    if (const int err = loop.watch(cfg.packet_fd, EPOLLIN, [this](uint32_t ev) { read_packets(ev); }); err != 0)
      throw std::runtime_error(std::string("stack: epoll_ctl packet fd: ") + std::strerror(err));
    loop.add_timer(kSweepInterval, [this] {
      CoreLock lk;
      conns.sweep(Connections::Clock::now());
    }, kSweepInterval);
    started = ever_started = true;
    if (!confined()) {
      loop.start();
      return;
    }
    dispatch.start();  // from this (unconfined) thread
    std::promise<std::string> confined_p;
    std::future<std::string> result = confined_p.get_future();
    loop.start([this, &confined_p] {
      std::string why = confine_this_thread("osh-stack", cfg.confine);
      if (!why.empty()) loop.stop();  // from the loop's own thread: run() returns at once
      confined_p.set_value(std::move(why));
    });
    if (std::string why = result.get(); !why.empty()) {
      stop();
      throw std::runtime_error("stack: confining the reader thread: " + why);
    }
  }

  void stop() {
    if (!started) return;
    started = false;
    loop.stop();  // joins the stack thread; later events are dropped
    {
      CoreLock lk;
      conns.abort_all();
      lwip.stop();
    }
    dispatch.finish();  // the aborts above reach the upstream; no-op unless confined
  }

  // ---- the stack thread ----

  /// A DNS query accepted under the lock, answered after it.
  struct PendingDns {
    Parsed p;                      // addresses and ports for the reply
    std::vector<uint8_t> payload;  // the UDP payload, copied
  };

  /// @events: what epoll reported for the packet fd. A TUN whose interface
  /// was deleted reports EPOLLERR for good and its read() fails with EBADFD
  /// (EIO on some kernels): level-triggered, that would wake this thread
  /// forever, so the fd is dropped from the loop (one log line) and the
  /// stack waits for its owner's teardown (cli/up.cc sees the deletion).
  void read_packets(uint32_t events) {
    uint8_t buf[VnetHeader::kSize + 65536];
    std::vector<PendingDns> dns;
    int dead_errno = 0;
    bool drained = false;  // the last read() found nothing (or failed)
    {
      CoreLock lk;
      for (size_t i = 0; i < kReadBatch; ++i) {
        const ssize_t r = ::read(cfg.packet_fd, buf, sizeof buf);
        if (r < 0 && (errno == EBADFD || errno == EIO || errno == EBADF)) dead_errno = errno;
        if (r <= 0) {
          drained = true;
          break;
        }
        counters.rx_packets++;
        if (!cfg.vnet_hdr) {
          handle_packet({buf, static_cast<size_t>(r)}, dns, false);
          continue;
        }
        const VnetInput in = vnet_input({buf, static_cast<size_t>(r)});
        switch (in.kind) {
          case VnetInput::Kind::kPacket: handle_packet(in.packet, dns, in.l4_vouched); break;
          case VnetInput::Kind::kMalformed: counters.drop_malformed++; break;
          case VnetInput::Kind::kGso: counters.drop_unsupported++; break;
        }
      }
      conns.end_batch();  // partial upload frames of idle streams leave now (conn.cc "Upload frames")
    }
    if (!dns.empty()) answer_dns(dns);
    if (dead_errno != 0 || (drained && (events & (EPOLLERR | EPOLLHUP)) != 0)) {
      loop.unwatch(cfg.packet_fd);
      spdlog::warn("stack: the packet fd {} failed ({}); no more packets are read from it",
                   cfg.packet_fd,
                   dead_errno != 0 ? std::strerror(dead_errno)
                                   : ((events & EPOLLERR) != 0 ? "EPOLLERR" : "EPOLLHUP"));
    }
  }

  /// Answers the batch's DNS queries without the core lock, then writes the
  /// replies under one short hold of it. Thread: the stack's.
  void answer_dns(const std::vector<PendingDns>& dns) {
    std::vector<std::vector<uint8_t>> replies;
    replies.reserve(dns.size());
    for (const PendingDns& q : dns) {
      const std::vector<uint8_t> reply = cfg.dns_handler(q.payload);
      if (!reply.empty()) replies.push_back(make_udp_reply(q.p, reply));
    }
    if (replies.empty()) return;
    CoreLock lk;
    for (const auto& r : replies) lwip.emit(r);
  }

  /// @l4_vouched: the kernel vouches for this TCP segment's checksum (vnet.h
  /// VnetInput); lwIP does not check it.
  void handle_packet(std::span<const uint8_t> pkt, std::vector<PendingDns>& dns, bool l4_vouched) {
    const Verdict v = judge(pkt, routes, cfg.dns_addrs, static_cast<bool>(cfg.dns_handler));
    const Parsed& p = v.p;
    switch (v.kind) {
      case Verdict::Kind::kDropMalformed: counters.drop_malformed++; return;
      case Verdict::Kind::kDropFragment: counters.drop_fragment++; return;
      case Verdict::Kind::kDropNotSandbox: counters.drop_not_sandbox++; return;
      case Verdict::Kind::kDropUnsupported: counters.drop_unsupported++; return;
      case Verdict::Kind::kDns: {
        const std::span<const uint8_t> payload = pkt.subspan(p.udp_payload_off, p.udp_payload_len);
        if (cfg.dns_accept && !cfg.dns_accept(payload)) {
          counters.dns_dropped++;
          return;
        }
        counters.dns_queries++;
        dns.push_back(PendingDns{p, {payload.begin(), payload.end()}});  // answered off the lock
        return;
      }
      case Verdict::Kind::kEcho:
        lwip.emit(make_echo_reply(pkt, p));
        counters.echo_replies++;
        return;
      case Verdict::Kind::kSyn:
        if (conns.on_syn(pkt, p, routes.at(p.dst), Connections::Clock::now()) == Connections::SynAction::kFeed)
          lwip.feed(pkt, p);
        return;
      case Verdict::Kind::kSegment:
        if (const ConnId id = conns.handshake_reset(p)) {
          lwip.feed(pkt, p, l4_vouched);  // lwIP frees the SYN_RCVD pcb
          conns.on_handshake_reset(id);
          return;
        }
        lwip.feed(pkt, p, l4_vouched);
        return;
    }
  }

  void apply_routes(std::vector<Route> rs) {
    RouteTable next;
    for (auto& r : rs) next.emplace(r.addr, std::move(r.sandbox));
    conns.drop_unrouted([&](const IpAddress& a) { return next.contains(a); });
    routes = std::move(next);
  }
};

Stack::Stack(const StackConfig& cfg, Upstream& upstream) : impl_(std::make_unique<Impl>(cfg, upstream)) {}

Stack::~Stack() { stop(); }

void Stack::start() { impl_->start(); }
void Stack::stop() { impl_->stop(); }

void Stack::set_routes(std::vector<Route> routes) {
  if (!impl_->ever_started) {
    // Not started yet: nothing else touches the table.
    impl_->apply_routes(std::move(routes));
    return;
  }
  Impl* impl = impl_.get();
  impl->post([impl, rs = std::move(routes)]() mutable { impl->apply_routes(std::move(rs)); });
}

UpstreamEvents& Stack::events() { return *impl_; }
const StackCounters& Stack::counters() const { return impl_->counters; }

std::vector<SandboxStats> Stack::sandbox_stats() const {
  CoreLock lk;
  return impl_->conns.sandbox_stats();
}

PcbCounts Stack::pcb_counts() const {
  CoreLock lk;
  return impl_->lwip.pcb_counts();
}

std::optional<UpstreamDispatch::Stats> Stack::dispatch_stats() const {
  if (!impl_->confined()) return std::nullopt;
  return impl_->dispatch.stats();
}

}  // namespace osh::stack

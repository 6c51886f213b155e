// Theory of operation: one Stack lives for the whole process, behind one end
// of a SOCK_SEQPACKET socketpair (one datagram = one IP packet, like a TUN
// with IFF_NO_PI); the harness holds the other end and plays the kernel.
//
// Synchronisation without sleeps: the stack's reader counts every packet it
// reads (rx_packets) before handling it, under the lwIP core lock, and
// handles a whole batch under one hold of that lock. So "rx_packets reached
// N, then sandbox_stats() returned" (sandbox_stats takes the core lock)
// means packet N has been handled. Upstream events are queued and applied
// at the start of the reader's next wake-up, before it reads packets; two
// one-byte marker packets (malformed, counted) sent one after the other
// therefore prove that every event posted before the first one has been
// applied (barrier()).
//
// The fake upstream only records the stack's calls (they arrive on the
// stack thread with the core lock held and must not call back); the harness
// thread answers them in order with UpstreamEvents calls, then waits for a
// barrier, until neither side has anything left (settle()).
#include "fuzz/stack_harness.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "fuzz/packet_check.h"
#include "stack/stack.h"
#include "stack/vnet.h"

// lwipopts.h declares the core-lock functions without extern "C".
extern "C" {
#include "lwip/priv/tcp_priv.h"
#include "lwip/tcp.h"
#include "lwip/tcpip.h"
}
#ifdef OSH_LWIP_SOURCE
#include "pcb_index.h"  // stack/lwip: tcp_input's index of pcbs
#endif

namespace osh::fuzz {

using stack::CloseKind;
using stack::ConnId;
using stack::FlowKey;
using stack::IpAddress;

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kDeadline = std::chrono::seconds(10);  // per wait; a miss is a hang
constexpr int kSettleRounds = 64;
constexpr size_t kSourceFrame1 = 3000, kSourceFrame2 = 100;  // bytes, port % 8 == 3

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

/// What the fake upstream does for a destination port (port % 8).
enum class UpstreamBehaviour {
  kRefuse = 0,       // on_closed(kRefused): RST to the client
  kUnreachable = 1,  // on_closed(kUnreachable): ICMP unreachable
  kEcho = 2,         // open; echo every byte; FIN after the client's FIN
  kSource = 3,       // open; send two frames, then FIN and end OK
  kResetOnData = 4,  // open; the first client bytes end the stream (kReset)
  kSilent = 5,       // never answers the open (held SYN until reset)
  kSink = 6,         // open; swallow bytes; FIN after the client's FIN
  kCloseAtOnce = 7,  // open, then end OK immediately (during the handshake)
};

/// Records the stack's calls; the harness thread answers them.
class RecordingUpstream final : public stack::Upstream {
 public:
  struct Call {
    enum class Type { kOpen, kSend, kReadMore, kCloseWrite, kAbort } type;
    ConnId id = 0;
    uint16_t port = 0;
    std::string bytes;
  };
  void open(const stack::OpenRequest& r) override { push({Call::Type::kOpen, r.id, r.port, {}}); }
  void send(ConnId id, std::string b) override { push({Call::Type::kSend, id, 0, std::move(b)}); }
  void read_more(ConnId id) override { push({Call::Type::kReadMore, id, 0, {}}); }
  void close_write(ConnId id) override { push({Call::Type::kCloseWrite, id, 0, {}}); }
  void abort(ConnId id) override { push({Call::Type::kAbort, id, 0, {}}); }

  std::vector<Call> take() {
    std::lock_guard lk(mu_);
    std::vector<Call> out;
    out.swap(calls_);
    return out;
  }

 private:
  void push(Call c) {
    std::lock_guard lk(mu_);
    calls_.push_back(std::move(c));
  }
  std::mutex mu_;
  std::vector<Call> calls_;
};

}  // namespace

struct StackHarness::Impl {
  struct Stream {
    UpstreamBehaviour b = UpstreamBehaviour::kSilent;
    uint16_t port = 0;
    std::deque<std::string> out;  // frames not yet delivered
    bool reading = false;         // a frame is with the stack, read_more pending
    bool fin_after_out = false;
    bool closed = false;          // on_closed reported
  };

  int fd_stack = -1, fd_client = -1;
  RecordingUpstream upstream;
  stack::Stack* stk = nullptr;
  std::vector<stack::Route> routes_a, routes_b;
  std::unordered_set<IpAddress, stack::IpAddressHash> served, dns;
  bool b_present = true;
  bool strict = true;  // the known findings are fixed in stack/; OSH_FUZZ_STRICT=0 tolerates them
  bool trace = std::getenv("OSH_FUZZ_TRACE") != nullptr;  // every packet in and out, to stderr
  // OSH_STACK_HARNESS_VNET=1: the socketpair carries virtio-net headers as a
  // TUN with checksum offload does (StackConfig::vnet_hdr, stack/vnet.h):
  // kVnetPartial records go in NEEDS_CSUM, the stack's output is unwrapped
  // and its partial checksums completed before the checks.
  bool vnet = std::getenv("OSH_STACK_HARNESS_VNET") != nullptr &&
              std::string_view(std::getenv("OSH_STACK_HARNESS_VNET")) == "1";
  uint64_t sent = 0;  // packets of non-zero length written (= rx_packets when all read)
  std::map<ConnId, Stream> streams;
  ConnId max_id = 0;
  std::unordered_map<FlowKey, uint32_t, stack::FlowKeyHash> iss;  // client-view flow -> ISS
  std::string failure;  // first broken rule of the current input
  Totals totals;

  Impl() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
      throw std::runtime_error("stack harness: socketpair failed");
    fd_stack = sv[0];
    fd_client = sv[1];
    for (int fd : sv) {  // room for bursts of output (RST storms, big frames)
      int sz = 4 << 20;
      ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    }
    routes_a = {{ip("198.18.0.10"), "a"}, {ip("198.18.0.11"), "a"}, {ip("fd00:6f73:6800::10"), "a"}};
    routes_b = {{ip("198.18.255.255"), "b"}, {ip("fd00:6f73:6800::ffff"), "b"}};
    for (const auto& r : routes_a) served.insert(r.addr);
    for (const auto& r : routes_b) served.insert(r.addr);
    dns = {ip("198.18.0.2"), ip("fd00:6f73:6800::2")};

    stack::StackConfig cfg;
    cfg.packet_fd = fd_stack;
    cfg.vnet_hdr = vnet;
    cfg.mtu = 1500;
    cfg.peer4 = ip("198.18.0.1");
    cfg.netif4 = ip("198.18.0.3");
    cfg.peer6 = ip("fd00:6f73:6800::1");
    cfg.netif6 = ip("fd00:6f73:6800::3");
    cfg.dns_addrs = {ip("198.18.0.2"), ip("fd00:6f73:6800::2")};
    cfg.dns_handler = [](std::span<const uint8_t> q) {  // echoes the query
      return std::vector<uint8_t>(q.begin(), q.end());
    };
    stk = new stack::Stack(cfg, upstream);
    stk->set_routes(all_routes());
    stk->start();
  }

  std::vector<stack::Route> all_routes() const {
    std::vector<stack::Route> r = routes_a;
    if (b_present) r.insert(r.end(), routes_b.begin(), routes_b.end());
    return r;
  }

  void fail(std::string what) {
    if (failure.empty()) failure = std::move(what);
  }

  // ---- packets to the stack ----
  /// @partial: with vnet, send a TCP segment NEEDS_CSUM (pseudo-header sum
  /// in its checksum field, as the kernel would).
  bool write_packet(std::span<const uint8_t> in, bool partial = false) {
    std::vector<uint8_t> framed;
    std::span<const uint8_t> pkt = in;
    if (vnet) {
      framed.assign(stack::VnetHeader::kSize, 0);
      framed.insert(framed.end(), in.begin(), in.end());
      if (partial) {
        const stack::VnetHeader h =
            stack::partial_tcp_checksum(std::span<uint8_t>(framed).subspan(stack::VnetHeader::kSize));
        h.write(std::span<uint8_t, stack::VnetHeader::kSize>(framed.data(), stack::VnetHeader::kSize));
      }
      pkt = framed;
    }
    const auto deadline = Clock::now() + kDeadline;
    while (::send(fd_client, pkt.data(), pkt.size(), MSG_NOSIGNAL) < 0) {
      if (errno != EAGAIN || Clock::now() > deadline) {
        fail(std::string("cannot write to the stack: ") + std::strerror(errno));
        return false;
      }
      drain_output();  // the stack may be blocked on a full output side
      std::this_thread::yield();
    }
    if (!pkt.empty()) ++sent;
    return true;
  }

  /// Waits until the stack has handled every packet sent so far.
  bool wait_handled() {
    const auto deadline = Clock::now() + kDeadline;
    while (stk->counters().rx_packets.load() < sent) {
      if (Clock::now() > deadline) {
        fail("hang: the stack did not read a packet within 10 s");
        return false;
      }
      drain_output();
      std::this_thread::yield();
    }
    (void)stk->sandbox_stats();  // takes the core lock: the batch is over
    return true;
  }

  /// Every event posted before this call has been applied (file comment).
  bool barrier() {
    static const uint8_t kMarker[1] = {0};
    for (int i = 0; i < 2; ++i) {
      ++totals.markers;
      if (!write_packet(kMarker) || !wait_handled()) return false;
    }
    return true;
  }

  // ---- packets from the stack ----
  void drain_output() {
    static thread_local std::vector<uint8_t> buf(65536 + 1);
    for (;;) {
      const ssize_t n = ::recv(fd_client, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n < 0) return;
      ++totals.packets_out;
      if (!vnet) {
        check_output({buf.data(), static_cast<size_t>(n)});
        continue;
      }
      if (static_cast<size_t>(n) < stack::VnetHeader::kSize) return fail("the stack wrote no virtio-net header");
      const stack::VnetHeader h = stack::VnetHeader::parse(buf);
      std::span<uint8_t> out(buf.data() + stack::VnetHeader::kSize, static_cast<size_t>(n) - stack::VnetHeader::kSize);
      if (h.gso_type != stack::VnetHeader::kGsoNone || (h.flags & ~stack::VnetHeader::kNeedsCsum) != 0)
        return fail("the stack wrote a virtio-net header with GSO or flags other than NEEDS_CSUM");
      if (h.flags != 0) {
        const Parsed r = stack::classify(out);
        if (r.kind != Parsed::Kind::kTcp || h.csum_start != r.ip_header_len || h.csum_offset != 16)
          return fail("the stack wrote NEEDS_CSUM for something else than a TCP segment's checksum");
        if (!stack::complete_partial_checksum(out, h.csum_start, h.csum_offset))
          return fail("the stack wrote NEEDS_CSUM offsets past the packet");
      }
      check_output(out);
    }
  }

  static std::string hex(std::span<const uint8_t> b) {
    static const char* d = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < std::min<size_t>(b.size(), 128); ++i) {
      s += d[b[i] >> 4];
      s += d[b[i] & 15];
    }
    return b.size() > 128 ? s + "..." : s;
  }

  void check_output(std::span<const uint8_t> out) {
    if (trace) std::fprintf(stderr, "stack_harness: out %s\n", hex(out).c_str());
    const Parsed r = stack::classify(out);
    const std::string pkt = " (" + std::to_string(out.size()) + " bytes: " + hex(out) + ")";
    if (r.kind == Parsed::Kind::kMalformed) return fail("the stack wrote a packet classify() rejects" + pkt);
    if (r.kind == Parsed::Kind::kFragment) {
      // Known finding (fuzz/README.md): lwIP fragments segments built with an
      // MSS a retransmitted SYN set past the MTU. Strict mode fails on it.
      ++totals.fragments_out;
      if (strict) fail("the stack wrote an IP fragment" + pkt);
      return;
    }
    if (r.total_len != out.size()) return fail("the stack wrote a packet whose IP length differs from its size" + pkt);
    if (!ipv4_header_checksum_ok(out, r)) return fail("the stack wrote a bad IPv4 header checksum" + pkt);
    if (!transport_checksum_ok(out, r)) return fail("the stack wrote a bad transport checksum" + pkt);
    if (!served.contains(r.src) && !dns.contains(r.src))
      return fail("the stack wrote a packet from " + r.src.to_string() + ", not a served address" + pkt);
    if (strict && (served.contains(r.dst) || dns.contains(r.dst)))
      return fail("the stack wrote a packet to served address " + r.dst.to_string() + " (loop)" + pkt);
    if (r.kind == Parsed::Kind::kTcp) {
      if (out.size() > 1500) return fail("the stack wrote a TCP segment larger than the MTU" + pkt);
      if ((r.tcp_flags & (stack::kSyn | stack::kAck)) == (stack::kSyn | stack::kAck))
        iss[FlowKey{r.dst, r.src, r.dport, r.sport}] = r.seq;
    }
  }

  // ---- the fake upstream ----
  stack::UpstreamEvents& ev() { return stk->events(); }

  void deliver(ConnId id, Stream& s) {
    if (s.closed || s.reading) return;
    if (!s.out.empty()) {
      s.reading = true;
      std::string f = std::move(s.out.front());
      s.out.pop_front();
      ev().on_data(id, std::move(f));
      return;
    }
    if (s.fin_after_out) close(id, s, CloseKind::kOk, true);
  }

  void close(ConnId id, Stream& s, CloseKind k, bool fin_first) {
    if (s.closed) return;
    s.closed = true;
    if (fin_first) ev().on_remote_fin(id);
    ev().on_closed(id, k, "harness");
  }

  void answer(RecordingUpstream::Call& c) {
    using T = RecordingUpstream::Call::Type;
    if (c.type == T::kOpen) {
      if (c.id <= max_id) return fail("open() for an id that was used before");
      max_id = c.id;
      ++totals.streams;
      Stream& s = streams[c.id];
      s.port = c.port;
      s.b = static_cast<UpstreamBehaviour>(c.port % 8);
      switch (s.b) {
        case UpstreamBehaviour::kRefuse: return close(c.id, s, CloseKind::kRefused, false);
        case UpstreamBehaviour::kUnreachable: return close(c.id, s, CloseKind::kUnreachable, false);
        case UpstreamBehaviour::kSilent: return;
        case UpstreamBehaviour::kSource:
          ev().on_open_ok(c.id);
          s.out.push_back(std::string(kSourceFrame1, 'x'));
          s.out.push_back(std::string(kSourceFrame2, 'y'));
          s.fin_after_out = true;
          return deliver(c.id, s);
        case UpstreamBehaviour::kCloseAtOnce:
          ev().on_open_ok(c.id);
          return close(c.id, s, CloseKind::kOk, false);
        default:
          return ev().on_open_ok(c.id);
      }
    }
    auto it = streams.find(c.id);
    if (it == streams.end()) {
      if (c.id > max_id) fail("a call for a stream that was never opened");
      return;  // forgotten at the last reset
    }
    Stream& s = it->second;
    switch (c.type) {
      case T::kSend:
        if (c.bytes.empty()) return fail("send() of zero bytes");
        if (s.closed) return;
        ev().on_write_done(c.id, c.bytes.size());
        if (s.b == UpstreamBehaviour::kEcho) {
          s.out.push_back(std::move(c.bytes));
          deliver(c.id, s);
        } else if (s.b == UpstreamBehaviour::kResetOnData) {
          close(c.id, s, CloseKind::kReset, false);
        }
        return;
      case T::kReadMore:
        s.reading = false;
        return deliver(c.id, s);
      case T::kCloseWrite:
        if (s.b == UpstreamBehaviour::kEcho) {
          s.fin_after_out = true;
          return deliver(c.id, s);
        }
        if (s.b == UpstreamBehaviour::kSource) return;
        return close(c.id, s, CloseKind::kOk, true);
      case T::kAbort:
        return close(c.id, s, CloseKind::kReset, false);
      case T::kOpen:
        return;
    }
  }

  /// Answers upstream calls and waits for the stack until neither has
  /// anything left (bounded: a ping-pong that never ends is a failure).
  bool settle() {
    for (int round = 0; round < kSettleRounds; ++round) {
      drain_output();
      std::vector<RecordingUpstream::Call> calls = upstream.take();
      if (calls.empty()) return true;
      for (auto& c : calls) answer(c);
      if (!barrier()) return false;
    }
    fail("the stack and the upstream did not settle within 64 rounds");
    return false;
  }

  // ---- one record ----
  void send_record(StackRecord& r) {
    if (r.ctl & kToggleRoute) {
      b_present = !b_present;
      stk->set_routes(all_routes());
    }
    std::vector<uint8_t>& pkt = r.packet;
    const Parsed p = stack::classify(pkt);
    if ((r.ctl & kRelativeAck) && p.kind == Parsed::Kind::kTcp) {
      if (auto it = iss.find(p.flow()); it != iss.end()) {
        uint8_t* ackp = pkt.data() + p.ip_header_len + 8;
        wr32(ackp, rd32(ackp) + it->second);
      }
    }
    if (r.ctl & kFixChecksums) fix_checksums(pkt);
    if (!strict && aborts_lwip(pkt)) {
      ++totals.known_skipped;
      return;
    }
    ++totals.packets_in;
    if (trace) std::fprintf(stderr, "stack_harness: in  ctl=%#x %s\n", r.ctl, hex(pkt).c_str());
    if (!write_packet(pkt, (r.ctl & kVnetPartial) != 0)) return;
    if (pkt.empty() ? !barrier() : !wait_handled()) return;
    drain_output();
    if (!(r.ctl & kDeferUpstream)) settle();
  }

  /// Known finding 3 (fuzz/README.md): lwIP 2.1.3's tcp_receive() aborts
  /// the process (LWIP_ASSERT "insane offset!") on a segment of TCP length 1
  /// whose sequence number is exactly rcv_nxt + 2^31 for a pcb in a state
  /// that receives data (TCP_SEQ_BETWEEN's signed comparison accepts it).
  /// Outside strict mode such segments are not sent, so that fuzzing goes on.
  bool aborts_lwip(std::span<const uint8_t> pkt) {
    const Parsed p = stack::classify(pkt);
    if (p.kind != Parsed::Kind::kTcp) return false;
    const size_t len = p.tcp_payload_len + ((p.tcp_flags & stack::kFin) ? 1 : 0) +
                       ((p.tcp_flags & stack::kSyn) ? 1 : 0);
    if (len != 1) return false;
    bool hit = false;
    LOCK_TCPIP_CORE();
    for (tcp_pcb* q = tcp_active_pcbs; q; q = q->next) {
      if (q->remote_port != p.sport || q->local_port != p.dport) continue;
      const bool v6 = IP_IS_V6_VAL(q->remote_ip);
      if (v6 != (p.src.is_v6())) continue;
      const uint8_t* rip = v6 ? reinterpret_cast<const uint8_t*>(ip_2_ip6(&q->remote_ip)->addr)
                              : reinterpret_cast<const uint8_t*>(&ip_2_ip4(&q->remote_ip)->addr);
      const uint8_t* lip = v6 ? reinterpret_cast<const uint8_t*>(ip_2_ip6(&q->local_ip)->addr)
                              : reinterpret_cast<const uint8_t*>(&ip_2_ip4(&q->local_ip)->addr);
      if (std::memcmp(rip, p.src.bytes.data(), p.src.size()) != 0 ||
          std::memcmp(lip, p.dst.bytes.data(), p.dst.size()) != 0)
        continue;
      hit = q->state >= SYN_RCVD && q->rcv_nxt - p.seq == 0x80000000u;
      break;
    }
    UNLOCK_TCPIP_CORE();
    return hit;
  }

  /// Removes every route, checks that nothing is left, clears lwIP's
  /// orphans, restores the routes.
  void reset() {
    stk->set_routes({});
    if (!barrier() || !settle()) return;
    const int64_t active = stk->counters().active.load();
    if (active != 0) fail(std::to_string(active) + " connections left after every route was removed");
    for (const auto& [id, s] : streams) {
      if (!s.closed) {
        fail("upstream stream " + std::to_string(id) + " (port " + std::to_string(s.port) +
             ") still open after every route was removed");
        break;
      }
    }
    for (const auto& st : stk->sandbox_stats()) {
      if (st.active != 0) fail("sandbox " + st.sandbox + " still counts active connections");
    }
    {
      LOCK_TCPIP_CORE();
      for (tcp_pcb* pcb = tcp_active_pcbs; pcb; pcb = pcb->next) {
        if (pcb->state == ESTABLISHED || pcb->state == CLOSE_WAIT) {
          fail(std::string("an lwIP pcb in ") + (pcb->state == ESTABLISHED ? "ESTABLISHED" : "CLOSE_WAIT") +
               " outlived its connection");
          break;
        }
      }
#ifdef OSH_LWIP_SOURCE
      {  // the pcb index holds exactly the live pcbs (stack/lwip/pcb_index.h)
        size_t live = 0;
        for (const tcp_pcb* q = tcp_active_pcbs; q; q = q->next) ++live;
        for (const tcp_pcb* q = tcp_tw_pcbs; q; q = q->next) ++live;
        if (osh_pcb_index_size() != live)
          fail("the pcb index holds " + std::to_string(osh_pcb_index_size()) + " pcbs, lwIP " + std::to_string(live));
      }
#endif
      while (tcp_active_pcbs) {
        tcp_abort(tcp_active_pcbs);
        ++totals.orphans_aborted;
      }
      while (tcp_tw_pcbs) {
        tcp_abort(tcp_tw_pcbs);
        ++totals.orphans_aborted;
      }
#ifdef OSH_LWIP_SOURCE
      if (osh_pcb_index_size() != 0)
        fail(std::to_string(osh_pcb_index_size()) + " pcbs left in the pcb index after every pcb was aborted");
#endif
      UNLOCK_TCPIP_CORE();
    }
    streams.clear();
    iss.clear();
    b_present = true;
    stk->set_routes(all_routes());
    barrier();
    drain_output();
  }

  std::string run(std::span<const uint8_t> input) {
    failure.clear();
    ++totals.inputs;
    std::vector<StackRecord> records = split_stack_input(input);
    for (auto& r : records) {
      send_record(r);
      if (!failure.empty()) break;
    }
    if (failure.empty()) settle();
    reset();
    return failure;
  }
};

StackHarness::StackHarness() : impl_(new Impl) {}

StackHarness& StackHarness::instance() {
  static StackHarness* h = [] {
    spdlog::set_level(spdlog::level::err);  // per-connection info lines would drown the fuzzer
    auto* x = new StackHarness;
    // Stop the reader and lwIP's callbacks before static destructors run
    // (spdlog's registry among them); the objects themselves are kept.
    std::atexit([] { instance().impl_->stk->stop(); });
    return x;
  }();
  return *h;
}

std::string StackHarness::run(std::span<const uint8_t> input) { return impl_->run(input); }
void StackHarness::set_strict(bool on) { impl_->strict = on; }
const StackHarness::Totals& StackHarness::totals() const { return impl_->totals; }
const stack::StackCounters& StackHarness::stack_counters() const { return impl_->stk->counters(); }

}  // namespace osh::fuzz

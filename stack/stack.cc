// Theory of operation
// ===================
// lwIP (Debian liblwip 2.1.3, NO_SYS=0, core locking) terminates the user's
// TCP connections. It sees only packets the SYN gate lets through:
//
//   packet fd ──► reader thread: classify() ──► not a served address: drop, count
//                     │                     ├─► ICMP echo: answered here
//                     │                     ├─► SYN of a new 4-tuple: HOLD, Upstream::open()
//                     │                     └─► other TCP: tcp_input() (I2 path, lwip-notes.md)
//                     ▼
//                 command queue ◄── UpstreamEvents (any thread: gRPC reactions)
//
// One lwIP netif answers for every address: the reader fills lwIP's ip_data
// and calls tcp_input() itself, so lwIP never routes or forwards a packet
// (no loops), and listeners are created on demand, one per port, when a
// held SYN is released. Output passes a source filter: only packets from a
// served address may leave (lwIP's own ND/MLD chatter is dropped, counted).
//
// Connection lifecycle (Conn::State):
//   kOpening   SYN held, stream opening. Retransmitted SYNs are absorbed.
//              open ok -> SYN fed to lwIP -> kHandshake;
//              open failed -> RST (refused) or ICMP unreachable -> erased.
//   kHandshake lwIP sent SYN-ACK; accept() -> kEstablished. If the stream
//              fails meanwhile -> kDead (accept aborts; a sweep reaps it).
//   kEstablished bytes flow. Half-close per direction:
//              client FIN (tcp_recv p==NULL) -> Upstream::close_write;
//              upstream FIN (on_remote_fin, or on_closed(kOk)) -> tcp_shutdown(tx)
//              after every queued byte. Both FINs and nothing unacked -> tcp_close.
//              Upstream error -> tcp_abort (RST). Client RST -> Upstream::abort.
// A Conn is erased when its pcb is gone and the upstream reported on_closed.
//
// Back-pressure (design.md §3): client bytes are tcp_recved() when the
// upstream reports them written, or earlier while at most
// cfg.early_ack_bytes acknowledged bytes are unwritten (settle_recved), so
// lwIP's 64 KiB window plus that allowance bounds what is in flight
// upstream; upstream frames are requested one at a time (read_more) and only
// once lwIP took the previous one, so at most one frame (≤ 64 KiB) waits per
// connection.
//
// Locking: every Conn and every lwIP call is under the lwIP core lock
// (LOCK_TCPIP_CORE): the reader thread takes it per batch; lwIP's tcpip
// thread holds it while it runs timers, which may call our callbacks.
#include "stack/stack.h"

#include <spdlog/spdlog.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>

// lwipopts.h declares the core-lock functions without extern "C": wrap all.
extern "C" {
#include "lwip/init.h"
#include "lwip/ip.h"
#include "lwip/ip4.h"
#include "lwip/ip6.h"
#include "lwip/netif.h"
#include "lwip/pbuf.h"
#include "lwip/priv/tcp_priv.h"
#include "lwip/tcp.h"
#include "lwip/tcpip.h"
}

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

using Clock = std::chrono::steady_clock;
constexpr size_t kReadBatch = 64;                       // packets per core-lock hold
constexpr auto kHandshakeTimeout = std::chrono::seconds(20);
constexpr int kSweepIntervalMs = 1000;

// RAII for the lwIP core lock.
struct CoreLock {
  CoreLock() { LOCK_TCPIP_CORE(); }
  ~CoreLock() { UNLOCK_TCPIP_CORE(); }
  CoreLock(const CoreLock&) = delete;
  CoreLock& operator=(const CoreLock&) = delete;
};

IpAddr from_lwip(const ip_addr_t& a) {
  if (IP_IS_V6_VAL(a)) return IpAddr::v6(reinterpret_cast<const uint8_t*>(ip_2_ip6(&a)->addr));
  return IpAddr::v4(reinterpret_cast<const uint8_t*>(&ip_2_ip4(&a)->addr));
}

void to_lwip(const IpAddr& a, ip_addr_t* out) {
  if (a.family == 6) {
    ip6_addr_t v6{};
    std::memcpy(v6.addr, a.bytes.data(), 16);
    ip_addr_copy_from_ip6(*out, v6);
  } else {
    ip4_addr_t v4{};
    std::memcpy(&v4.addr, a.bytes.data(), 4);
    ip_addr_copy_from_ip4(*out, v4);
  }
}

struct Cmd {
  enum class Type { kOpenOk, kData, kRemoteFin, kWriteDone, kClosed, kRoutes } type;
  ConnId id = 0;
  std::string bytes;
  size_t n = 0;
  CloseKind kind = CloseKind::kOk;
  std::vector<Route> routes;
};

}  // namespace

struct Stack::Impl final : UpstreamEvents {
  struct Conn {
    enum class State { kOpening, kHandshake, kEstablished, kDead } state = State::kOpening;
    ConnId id = 0;
    FlowKey flow;
    std::string sandbox;           // route key (sandbox id)
    std::vector<uint8_t> syn;      // held SYN (kOpening only)
    uint16_t peer_mss = 0;         // the client's MSS option, before lwIP clamps it
    uint32_t syn_seq = 0;          // the client's ISN (from its SYN)
    Clock::time_point born = Clock::now();
    tcp_pcb* pcb = nullptr;
    std::deque<std::string> tx;    // upstream -> client, not yet in lwIP
    size_t tx_off = 0;             // bytes of tx.front() already written
    bool read_wanted = false;      // we owe the upstream a read_more()
    size_t recv_pending = 0;       // client bytes sent upstream, not yet written there
    size_t recv_owed = 0;          // client bytes received, not yet tcp_recved()
    bool client_fin = false, remote_fin = false, fin_sent = false;
    bool upstream_done = false;
  };

  StackConfig cfg;
  Upstream& upstream;
  StackCounters counters;

  // Guarded by the lwIP core lock.
  netif nif{};
  bool nif_added = false;
  std::unordered_map<IpAddr, std::string, IpAddrHash> routes;
  std::unordered_map<ConnId, std::unique_ptr<Conn>> conns;
  std::unordered_map<FlowKey, ConnId, FlowKeyHash> by_flow;
  std::unordered_map<uint16_t, tcp_pcb*> listeners;
  std::unordered_map<std::string, SandboxStats> sb_stats;
  SandboxStats& stats_of(const Conn& c) {
    SandboxStats& st = sb_stats[c.sandbox];
    st.sandbox = c.sandbox;
    return st;
  }
  ConnId next_id = 1;

  // Command queue, guarded by qmu.
  std::mutex qmu;
  std::deque<Cmd> queue;
  int event_fd = -1;
  int epoll_fd = -1;
  std::atomic<bool> stopping{false};
  std::thread reader;
  bool started = false;

  Impl(const StackConfig& c, Upstream& u) : cfg(c), upstream(u) {}

  // ---- UpstreamEvents (any thread) ----
  void post(Cmd&& c) {
    {
      std::lock_guard lk(qmu);
      queue.push_back(std::move(c));
    }
    uint64_t one = 1;
    if (::write(event_fd, &one, sizeof one) < 0 && errno != EAGAIN) {
      spdlog::error("stack: eventfd write: {}", std::strerror(errno));
    }
  }
  void on_open_ok(ConnId id) override { post({Cmd::Type::kOpenOk, id}); }
  void on_data(ConnId id, std::string bytes) override {
    Cmd c{Cmd::Type::kData, id};
    c.bytes = std::move(bytes);
    post(std::move(c));
  }
  void on_remote_fin(ConnId id) override { post({Cmd::Type::kRemoteFin, id}); }
  void on_write_done(ConnId id, size_t n) override {
    Cmd c{Cmd::Type::kWriteDone, id};
    c.n = n;
    post(std::move(c));
  }
  void on_closed(ConnId id, CloseKind kind, std::string reason) override {
    Cmd c{Cmd::Type::kClosed, id};
    c.kind = kind;
    c.bytes = std::move(reason);
    post(std::move(c));
  }

  // ---- output (core lock held) ----
  void write_packet(std::span<const uint8_t> pkt) {
    if (::write(cfg.packet_fd, pkt.data(), pkt.size()) < 0) {
      counters.drop_tx_error++;
      spdlog::debug("stack: packet write: {}", std::strerror(errno));
      return;
    }
    counters.tx_packets++;
  }

  err_t output(pbuf* p) {
    uint8_t buf[65536];  // tot_len is a u16_t: any packet fits
    const u16_t n = pbuf_copy_partial(p, buf, p->tot_len, 0);
    std::span<const uint8_t> pkt(buf, n);
    // Loop prevention and noise filter: only packets from a served address
    // leave (lwIP's own router solicitations, MLD reports etc. do not).
    Parsed ps = classify(pkt);
    if (ps.kind == Parsed::Kind::kMalformed || !routes.contains(ps.src)) {
      counters.drop_unsupported++;
      return ERR_OK;
    }
    // Large segments (lwip-notes.md): lwIP advertises at most TCP_MSS
    // (1460); with a large TUN MTU, advertise what the link carries so the
    // kernel sends up to MTU-sized segments (far fewer packets).
    if (ps.kind == Parsed::Kind::kTcp && (ps.tcp_flags & (kSyn | kAck)) == (kSyn | kAck) &&
        cfg.mtu > 1500) {
      const uint16_t link_mss = static_cast<uint16_t>(cfg.mtu - (ps.src.family == 6 ? 60 : 40));
      rewrite_tcp_mss({buf, n}, ps, link_mss);
    }
    write_packet(pkt);
    return ERR_OK;
  }

  static err_t output4(netif* n, pbuf* p, const ip4_addr_t*) {
    return static_cast<Impl*>(n->state)->output(p);
  }
  static err_t output6(netif* n, pbuf* p, const ip6_addr_t*) {
    return static_cast<Impl*>(n->state)->output(p);
  }
  static err_t netif_init_cb(netif* n) {
    auto* self = static_cast<Impl*>(n->state);
    n->name[0] = 'o';
    n->name[1] = 's';
    n->mtu = static_cast<u16_t>(std::min<uint32_t>(self->cfg.mtu, 65535));
    n->output = output4;
    n->output_ip6 = output6;
    n->flags = 0;  // no NETIF_FLAG_BROADCAST: x.x.x.255 must stay a unicast address
    return ERR_OK;
  }

  // ---- setup ----
  void start() {
    static std::once_flag lwip_once;
    std::call_once(lwip_once, [] {
      std::promise<void> ready;
      tcpip_init([](void* arg) { static_cast<std::promise<void>*>(arg)->set_value(); }, &ready);
      ready.get_future().wait();
    });
    event_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (event_fd < 0 || epoll_fd < 0) throw std::runtime_error("stack: eventfd/epoll failed");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = cfg.packet_fd;
    if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, cfg.packet_fd, &ev) < 0)
      throw std::runtime_error(std::string("stack: epoll_ctl packet fd: ") + std::strerror(errno));
    ev.data.fd = event_fd;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, event_fd, &ev);
    {
      CoreLock lk;
      ip4_addr_t addr{}, mask{}, gw{};
      if (cfg.netif4.family == 4) std::memcpy(&addr.addr, cfg.netif4.bytes.data(), 4);
      mask.addr = cfg.prefix4 == 0 ? 0 : htonl(~uint32_t{0} << (32 - cfg.prefix4));
      if (!netif_add(&nif, &addr, &mask, &gw, this, netif_init_cb, tcpip_input))
        throw std::runtime_error("stack: netif_add failed");
      nif_added = true;
      if (cfg.netif6.family == 6) {
        ip6_addr_t a6{};
        std::memcpy(a6.addr, cfg.netif6.bytes.data(), 16);
        netif_ip6_addr_set(&nif, 1, &a6);
        netif_ip6_addr_set_state(&nif, 1, IP6_ADDR_PREFERRED);
      }
      netif_set_default(&nif);
      netif_set_up(&nif);
      netif_set_link_up(&nif);
    }
    started = true;
    reader = std::thread([this] { run(); });
  }

  void stop() {
    if (!started) return;
    started = false;
    stopping = true;
    uint64_t one = 1;
    (void)!::write(event_fd, &one, sizeof one);
    if (reader.joinable()) reader.join();
    {
      CoreLock lk;
      for (auto& [id, c] : conns) {
        if (c->pcb) detach_and_abort(*c);
        if (!c->upstream_done) upstream.abort(id);
      }
      conns.clear();
      by_flow.clear();
      for (auto& [port, l] : listeners) tcp_close(l);
      listeners.clear();
      if (nif_added) {
        netif_set_down(&nif);
        netif_remove(&nif);
        nif_added = false;
      }
    }
  }

  ~Impl() {
    // Closed here, not in stop(): late UpstreamEvents may still post.
    if (event_fd >= 0) ::close(event_fd);
    if (epoll_fd >= 0) ::close(epoll_fd);
  }

  // ---- reader thread ----
  void run() {
    std::vector<uint8_t> buf(65536);
    auto last_sweep = Clock::now();
    while (!stopping) {
      epoll_event evs[4];
      int n = ::epoll_wait(epoll_fd, evs, 4, kSweepIntervalMs);
      if (n < 0 && errno != EINTR) {
        spdlog::error("stack: epoll_wait: {}", std::strerror(errno));
        break;
      }
      uint64_t drain;
      (void)!::read(event_fd, &drain, sizeof drain);
      std::deque<Cmd> cmds;
      {
        std::lock_guard lk(qmu);
        cmds.swap(queue);
      }
      CoreLock lk;
      for (auto& c : cmds) handle_cmd(c);
      for (size_t i = 0; i < kReadBatch; ++i) {
        ssize_t r = ::read(cfg.packet_fd, buf.data(), buf.size());
        if (r <= 0) break;
        counters.rx_packets++;
        handle_packet({buf.data(), static_cast<size_t>(r)});
      }
      if (Clock::now() - last_sweep > std::chrono::milliseconds(kSweepIntervalMs)) {
        sweep();
        last_sweep = Clock::now();
      }
    }
  }

  void handle_packet(std::span<const uint8_t> pkt) {
    Parsed p = classify(pkt);
    switch (p.kind) {
      case Parsed::Kind::kMalformed: counters.drop_malformed++; return;
      case Parsed::Kind::kFragment: counters.drop_fragment++; return;
      default: break;
    }
    // Checksums are verified here only where the tunnel acts on a packet
    // before lwIP would check it: a SYN (the gate opens a stream), ICMP
    // (answered here), UDP (DNS). Every other TCP segment goes to lwIP, which
    // verifies it (CHECKSUM_CHECK_TCP) and drops a bad one: checking it here
    // too would be a second pass over every byte on the data path.
    const bool gate_syn = p.kind == Parsed::Kind::kTcp && (p.tcp_flags & (kSyn | kAck)) == kSyn;
    // (The IPv4 header checksum is always checked: the I2 input path skips
    // lwIP's ip4_input, which would have.)
    if ((p.kind != Parsed::Kind::kTcp || gate_syn) ? !checksums_ok(pkt, p) : !ip_header_checksum_ok(pkt, p)) {
      counters.drop_malformed++;
      return;
    }
    // Nothing legitimate comes *from* a sandbox or DNS address into the TUN
    // (a "LAND" packet would make lwIP answer itself through the kernel).
    if (routes.contains(p.src) ||
        std::find(cfg.dns_addrs.begin(), cfg.dns_addrs.end(), p.src) != cfg.dns_addrs.end()) {
      counters.drop_malformed++;
      return;
    }
    if (p.kind == Parsed::Kind::kUdp && p.dport == 53 && cfg.dns_handler &&
        std::find(cfg.dns_addrs.begin(), cfg.dns_addrs.end(), p.dst) != cfg.dns_addrs.end()) {
      counters.dns_queries++;
      std::vector<uint8_t> reply = cfg.dns_handler(pkt.subspan(p.udp_payload_off, p.udp_payload_len));
      if (!reply.empty()) write_packet(make_udp_reply(p, reply));
      return;
    }
    if (!routes.contains(p.dst)) {
      counters.drop_not_sandbox++;
      return;
    }
    if (p.kind == Parsed::Kind::kIcmpEcho) {
      auto reply = make_echo_reply(pkt, p);
      write_packet(reply);
      counters.echo_replies++;
      return;
    }
    if (p.kind != Parsed::Kind::kTcp) {
      counters.drop_unsupported++;
      return;
    }
    const bool syn_only = (p.tcp_flags & (kSyn | kAck)) == kSyn;
    if (syn_only) {
      if (p.tcp_flags & (kRst | kFin)) { counters.drop_malformed++; return; }
      FlowKey key = p.flow();
      if (auto it = by_flow.find(key); it != by_flow.end()) {
        Conn& c = *conns.at(it->second);
        if (c.state == Conn::State::kOpening || c.state == Conn::State::kDead) {
          counters.syn_absorbed++;
          return;
        }
        feed_tcp(pkt, p);  // retransmitted SYN during the handshake: lwIP re-answers
        return;
      }
      auto c = std::make_unique<Conn>();
      c->id = next_id++;
      c->flow = key;
      c->sandbox = routes.at(p.dst);
      stats_of(*c).active++;
      c->syn.assign(pkt.begin(), pkt.begin() + static_cast<long>(p.total_len));
      c->peer_mss = tcp_mss_option(pkt, p);
      c->syn_seq = p.seq;
      OpenRequest req{c->id, routes.at(p.dst), p.dst, p.dport, key};
      by_flow.emplace(key, c->id);
      const ConnId id = c->id;
      conns.emplace(id, std::move(c));
      counters.syn_held++;
      counters.active++;
      spdlog::debug("conn {}: SYN {} held, opening stream", id, key.to_string());
      upstream.open(req);
      return;
    }
    if ((p.tcp_flags & kRst) && reset_in_handshake(pkt, p)) return;
    feed_tcp(pkt, p);
  }

  // The client's answer to our SYN-ACK is a RST (its connect() gave up while
  // the SYN was held, RFC 793 "reset generation" with SEG.SEQ = our ACK =
  // its ISN + 1): lwIP drops its SYN_RCVD pcb without telling us, so end the
  // stream now instead of holding a gateway slot until the handshake sweep.
  // Returns true when the packet was consumed.
  bool reset_in_handshake(std::span<const uint8_t> pkt, const Parsed& p) {
    const auto it = by_flow.find(p.flow());
    if (it == by_flow.end()) return false;
    Conn& c = *conns.at(it->second);
    if (c.state != Conn::State::kHandshake || c.syn_seq + 1 != p.seq) return false;
    const ConnId id = c.id;
    feed_tcp(pkt, p);  // lwIP frees the SYN_RCVD pcb
    Conn* still = find(id);
    if (!still) return true;
    spdlog::debug("conn {}: client reset during the handshake", id);
    if (!still->upstream_done) upstream.abort(id);
    erase(*still);
    return true;
  }

  // lwIP 2.1.3 asserts ("insane offset!", tcp_in.c) and aborts the process on
  // a 1-byte segment (data or FIN) whose sequence number is exactly 2^31 away
  // from rcv_nxt; found by fuzz/stack_fuzz. Such a segment is never valid.
  bool aborts_lwip(const Parsed& p) {
    const size_t len = p.tcp_payload_len + ((p.tcp_flags & kFin) ? 1 : 0) + ((p.tcp_flags & kSyn) ? 1 : 0);
    if (len != 1) return false;
    ip_addr_t src, dst;
    to_lwip(p.src, &src);
    to_lwip(p.dst, &dst);
    for (tcp_pcb* q = tcp_active_pcbs; q; q = q->next)
      if (q->remote_port == p.sport && q->local_port == p.dport && ip_addr_cmp(&q->remote_ip, &src) &&
          ip_addr_cmp(&q->local_ip, &dst))
        return q->state >= ESTABLISHED && q->rcv_nxt - p.seq == 0x80000000u;
    return false;
  }

  // A new connection reusing the 4-tuple of one lwIP still holds in
  // TIME_WAIT (lwIP closed first; the client's kernel already freed the
  // port) would be answered from TIME_WAIT instead of with a SYN-ACK and
  // hang. The client has moved on: drop the old pcb before the SYN goes in.
  void drop_time_wait(const FlowKey& f) {
    ip_addr_t src, dst;
    to_lwip(f.src, &src);
    to_lwip(f.dst, &dst);
    for (tcp_pcb* q = tcp_tw_pcbs; q; q = q->next) {
      if (q->remote_port == f.sport && q->local_port == f.dport && ip_addr_cmp(&q->remote_ip, &src) &&
          ip_addr_cmp(&q->local_ip, &dst)) {
        tcp_abort(q);  // a TIME_WAIT pcb has no callbacks and sends no RST
        return;
      }
    }
  }

  // I2 input path (lwip-notes.md): fill ip_data and call tcp_input directly.
  void feed_tcp(std::span<const uint8_t> pkt, const Parsed& p) {
    if (aborts_lwip(p)) {
      counters.drop_malformed++;
      return;
    }
    pbuf* pb = pbuf_alloc(PBUF_RAW, static_cast<u16_t>(p.total_len), PBUF_RAM);
    if (!pb) { counters.drop_tx_error++; return; }
    pbuf_take(pb, pkt.data(), static_cast<u16_t>(p.total_len));
    ip_data.current_netif = &nif;
    ip_data.current_input_netif = &nif;
    if (p.src.family == 4) {
      ip_data.current_ip4_header = static_cast<const ip_hdr*>(pb->payload);
      ip_data.current_ip6_header = nullptr;
    } else {
      ip_data.current_ip4_header = nullptr;
      ip_data.current_ip6_header = static_cast<ip6_hdr*>(pb->payload);
    }
    to_lwip(p.src, &ip_data.current_iphdr_src);
    to_lwip(p.dst, &ip_data.current_iphdr_dest);
    ip_data.current_ip_header_tot_len = static_cast<u16_t>(p.ip_header_len);
    pbuf_remove_header(pb, p.ip_header_len);
    tcp_input(pb, &nif);  // takes ownership of pb
    ip_data.current_netif = nullptr;
    ip_data.current_input_netif = nullptr;
    ip_data.current_ip4_header = nullptr;
    ip_data.current_ip6_header = nullptr;
    ip_data.current_ip_header_tot_len = 0;
    ip_addr_set_zero(&ip_data.current_iphdr_src);
    ip_addr_set_zero(&ip_data.current_iphdr_dest);
  }

  bool ensure_listener(uint16_t port) {
    if (listeners.contains(port)) return true;
    tcp_pcb* pcb = tcp_new_ip_type(IPADDR_TYPE_ANY);
    if (!pcb) return false;
    if (tcp_bind(pcb, IP_ANY_TYPE, port) != ERR_OK) {
      tcp_abort(pcb);
      return false;
    }
    tcp_pcb* l = tcp_listen_with_backlog(pcb, 255);
    if (!l) {
      tcp_abort(pcb);
      return false;
    }
    tcp_arg(l, this);
    tcp_accept(l, accept_cb);
    listeners.emplace(port, l);
    return true;
  }

  Conn* find(ConnId id) {
    auto it = conns.find(id);
    return it == conns.end() ? nullptr : it->second.get();
  }

  void erase(Conn& c) {
    stats_of(c).active--;
    by_flow.erase(c.flow);
    counters.active--;
    counters.conns_closed++;
    conns.erase(c.id);  // c is dangling after this
  }

  void maybe_erase(Conn& c) {
    if (!c.pcb && c.upstream_done) erase(c);
  }

  void detach(Conn& c) {
    tcp_pcb* pcb = c.pcb;
    c.pcb = nullptr;
    tcp_arg(pcb, nullptr);
    tcp_recv(pcb, nullptr);
    tcp_sent(pcb, nullptr);
    tcp_err(pcb, nullptr);
  }

  void detach_and_abort(Conn& c) {
    tcp_pcb* pcb = c.pcb;
    detach(c);
    tcp_abort(pcb);  // sends RST
    counters.resets++;
    stats_of(c).resets++;
  }

  void refuse(Conn& c, CloseKind kind) {
    std::span<const uint8_t> syn(c.syn);
    Parsed p = classify(syn);
    if (kind == CloseKind::kUnreachable) {
      write_packet(make_unreachable(syn, p));
      counters.refused_unreachable++;
      stats_of(c).unreachable++;
    } else {
      write_packet(make_rst_for_syn(p));
      counters.refused_rst++;
      stats_of(c).refused++;
    }
  }

  // ---- commands from the upstream (core lock held) ----
  void handle_cmd(Cmd& cmd) {
    if (cmd.type == Cmd::Type::kRoutes) {
      apply_routes(std::move(cmd.routes));
      return;
    }
    Conn* c = find(cmd.id);
    if (!c) return;  // connection already gone: late event
    switch (cmd.type) {
      case Cmd::Type::kOpenOk:
        if (c->state != Conn::State::kOpening) return;
        if (!ensure_listener(c->flow.dport)) {
          spdlog::warn("conn {}: cannot create listener for port {}", c->id, c->flow.dport);
          upstream.abort(c->id);
          c->state = Conn::State::kDead;
          return;
        }
        c->state = Conn::State::kHandshake;
        drop_time_wait(c->flow);
        {
          std::vector<uint8_t> syn = std::move(c->syn);
          feed_tcp(syn, classify(syn));
        }
        counters.conns_opened++;
        stats_of(*c).opened++;
        return;
      case Cmd::Type::kData:
        counters.bytes_down += cmd.bytes.size();
        stats_of(*c).bytes_down += cmd.bytes.size();
        if (cmd.bytes.empty()) { request_read(*c); return; }
        c->tx.push_back(std::move(cmd.bytes));
        c->read_wanted = true;
        flush(*c);
        return;
      case Cmd::Type::kRemoteFin:
        c->remote_fin = true;
        flush(*c);
        return;
      case Cmd::Type::kWriteDone:
        c->recv_pending -= std::min(c->recv_pending, cmd.n);
        settle_recved(*c);
        maybe_close(*c);
        return;
      case Cmd::Type::kClosed:
        on_stream_closed(*c, cmd.kind, cmd.bytes);
        return;
      case Cmd::Type::kRoutes:
        return;
    }
  }

  void on_stream_closed(Conn& c, CloseKind kind, const std::string& reason) {
    c.upstream_done = true;
    spdlog::debug("conn {}: stream closed ({}: {})", c.id, to_string(kind), reason);
    switch (c.state) {
      case Conn::State::kOpening:
        spdlog::info("conn {}: {} {} ({})", c.id, c.flow.to_string(),
                     kind == CloseKind::kUnreachable ? "unreachable" : "refused", reason);
        if (kind == CloseKind::kOk) kind = CloseKind::kRefused;
        refuse(c, kind);
        erase(c);
        return;
      case Conn::State::kHandshake:
        if (kind != CloseKind::kOk) c.state = Conn::State::kDead;
        else c.remote_fin = true;
        return;
      case Conn::State::kDead:
        return;
      case Conn::State::kEstablished:
        if (kind == CloseKind::kOk) {
          c.remote_fin = true;  // fallback: stream end = FIN (upstream gateways)
          flush(c);
          if (c.pcb) return;
          maybe_erase(c);
          return;
        }
        if (c.pcb) detach_and_abort(c);
        erase(c);
        return;
    }
  }

  // Acknowledges owed bytes to lwIP while no more than cfg.early_ack_bytes
  // acknowledged bytes are unwritten upstream (see "Back-pressure" above).
  // Bytes are received, acknowledged and written in stream order, so the
  // acknowledged-but-unwritten count is recv_pending - recv_owed (negative:
  // written bytes still owed, acknowledged at once).
  void settle_recved(Conn& c) {
    if (!c.pcb || c.recv_owed == 0) return;
    const auto unwritten_acked =
        static_cast<int64_t>(c.recv_pending) - static_cast<int64_t>(c.recv_owed);
    const int64_t room = static_cast<int64_t>(cfg.early_ack_bytes) - unwritten_acked;
    if (room <= 0) return;
    const size_t k = std::min(c.recv_owed, static_cast<size_t>(room));
    c.recv_owed -= k;
    recved(c.pcb, k);
  }

  static void recved(tcp_pcb* pcb, size_t n) {
    while (n > 0) {
      const u16_t k = static_cast<u16_t>(std::min<size_t>(n, 0xffff));
      tcp_recved(pcb, k);
      n -= k;
    }
  }

  void request_read(Conn& c) {
    if (c.upstream_done) return;
    c.read_wanted = false;
    upstream.read_more(c.id);
  }

  // Moves queued upstream bytes into lwIP as far as its send buffer allows,
  // then a pending FIN; asks for the next frame once the queue is empty.
  void flush(Conn& c) {
    if (!c.pcb) return;
    bool wrote = false;
    while (!c.tx.empty()) {
      const std::string& f = c.tx.front();
      const size_t left = f.size() - c.tx_off;
      const size_t room = std::min<size_t>(tcp_sndbuf(c.pcb), 0xffff);
      if (room == 0 || tcp_sndqueuelen(c.pcb) >= TCP_SND_QUEUELEN - 4) break;
      const size_t k = std::min(left, room);
      err_t e = tcp_write(c.pcb, f.data() + c.tx_off, static_cast<u16_t>(k), TCP_WRITE_FLAG_COPY);
      if (e == ERR_MEM) break;
      if (e != ERR_OK) {
        spdlog::debug("conn {}: tcp_write: {}", c.id, static_cast<int>(e));
        break;
      }
      wrote = true;
      c.tx_off += k;
      if (c.tx_off == f.size()) {
        c.tx.pop_front();
        c.tx_off = 0;
      }
    }
    if (c.tx.empty() && c.remote_fin && !c.fin_sent) {
      tcp_shutdown(c.pcb, 0, 1);
      c.fin_sent = true;
      wrote = false;  // tcp_shutdown already output
    }
    if (wrote) tcp_output(c.pcb);
    if (c.tx.empty() && c.read_wanted) request_read(c);
    maybe_close(c);
  }

  void maybe_close(Conn& c) {
    if (!c.pcb || !c.fin_sent || !c.client_fin || c.recv_pending > 0) return;
    tcp_pcb* pcb = c.pcb;
    detach(c);
    if (tcp_close(pcb) != ERR_OK) tcp_abort(pcb);
    maybe_erase(c);
  }

  void sweep() {
    const auto now = Clock::now();
    std::vector<Conn*> dead;
    for (auto& [id, c] : conns) {
      if ((c->state == Conn::State::kHandshake || c->state == Conn::State::kDead) &&
          now - c->born > kHandshakeTimeout)
        dead.push_back(c.get());
    }
    for (Conn* c : dead) {
      spdlog::debug("conn {}: handshake never completed, reaped", c->id);
      if (!c->upstream_done) upstream.abort(c->id);
      erase(*c);
    }
  }

  void apply_routes(std::vector<Route> rs) {
    std::unordered_map<IpAddr, std::string, IpAddrHash> next;
    for (auto& r : rs) next.emplace(r.addr, std::move(r.sandbox));
    std::vector<Conn*> gone;
    for (auto& [id, c] : conns)
      if (!next.contains(c->flow.dst)) gone.push_back(c.get());
    for (Conn* c : gone) {
      if (c->pcb) detach_and_abort(*c);
      if (!c->upstream_done) upstream.abort(c->id);
      erase(*c);
    }
    routes = std::move(next);
  }

  // ---- lwIP callbacks (core lock held) ----
  static err_t accept_cb(void* arg, tcp_pcb* pcb, err_t err) {
    auto* self = static_cast<Impl*>(arg);
    if (err != ERR_OK || !pcb) return ERR_VAL;
    FlowKey key{from_lwip(pcb->remote_ip), from_lwip(pcb->local_ip), pcb->remote_port,
                pcb->local_port};
    auto it = self->by_flow.find(key);
    Conn* c = it == self->by_flow.end() ? nullptr : self->find(it->second);
    if (!c || c->state != Conn::State::kHandshake) {
      tcp_abort(pcb);
      if (c && c->state == Conn::State::kDead) self->erase(*c);
      else self->counters.resets++;
      return ERR_ABRT;
    }
    // A retransmitted SYN makes lwIP re-read the client's MSS option and
    // forget the link MTU: keep segments within it (fuzz/stack_fuzz).
    const u16_t max_mss = static_cast<u16_t>(self->cfg.mtu - (IP_IS_V6_VAL(pcb->remote_ip) ? 60 : 40));
    if (pcb->mss > max_mss) pcb->mss = max_mss;
    // With a large MTU, send large segments too (lwIP clamps the peer's MSS
    // to TCP_MSS): up to the client's MSS, the link, and half of lwIP's
    // 64 KiB send buffer so that two segments can be in flight.
    if (self->cfg.mtu > 1500 && c->peer_mss > pcb->mss)
      pcb->mss = std::min<u16_t>({c->peer_mss, max_mss, u16_t{32768}});
    c->state = Conn::State::kEstablished;
    c->pcb = pcb;
    tcp_arg(pcb, reinterpret_cast<void*>(static_cast<uintptr_t>(c->id)));
    tcp_recv(pcb, recv_cb);
    tcp_sent(pcb, sent_cb);
    tcp_err(pcb, err_cb);
    tcp_nagle_disable(pcb);
    if (self->cfg.keepalive_idle_ms > 0) {
      ip_set_option(pcb, SOF_KEEPALIVE);
      pcb->keep_idle = self->cfg.keepalive_idle_ms;
      pcb->keep_intvl = self->cfg.keepalive_intvl_ms;
      pcb->keep_cnt = self->cfg.keepalive_count;
    }
    spdlog::debug("conn {}: established {}", c->id, key.to_string());
    self->flush(*c);
    return ERR_OK;
  }

  static Impl* self_;  // the one Stack (lwIP is process-global)

  static Conn* conn_of(void* arg) {
    if (!arg || !self_) return nullptr;
    return self_->find(static_cast<ConnId>(reinterpret_cast<uintptr_t>(arg)));
  }

  static err_t recv_cb(void* arg, tcp_pcb* pcb, pbuf* p, err_t) {
    Conn* c = conn_of(arg);
    if (!c) {
      if (p) {
        tcp_recved(pcb, p->tot_len);
        pbuf_free(p);
      }
      return ERR_OK;
    }
    if (!p) {  // client FIN
      c->client_fin = true;
      if (!c->upstream_done) self_->upstream.close_write(c->id);
      self_->maybe_close(*c);
      return ERR_OK;
    }
    const u16_t n = p->tot_len;
    if (c->upstream_done) {
      self_->counters.drop_after_close += n;
      tcp_recved(pcb, n);
      pbuf_free(p);
      return ERR_OK;
    }
    std::string bytes(n, '\0');
    pbuf_copy_partial(p, bytes.data(), n, 0);
    pbuf_free(p);
    c->recv_pending += n;
    c->recv_owed += n;
    self_->counters.bytes_up += n;
    self_->stats_of(*c).bytes_up += n;
    self_->upstream.send(c->id, std::move(bytes));
    self_->settle_recved(*c);
    return ERR_OK;
  }

  static err_t sent_cb(void* arg, tcp_pcb*, u16_t) {
    if (Conn* c = conn_of(arg)) self_->flush(*c);
    return ERR_OK;
  }

  static void err_cb(void* arg, err_t err) {
    Conn* c = conn_of(arg);
    if (!c) return;
    c->pcb = nullptr;  // lwIP freed it
    if (err == ERR_CLSD) {
      // Both sides closed (we shut down tx, the client closed): normal end.
      self_->maybe_erase(*c);
      return;
    }
    spdlog::debug("conn {}: client side error {} (reset/abort)", c->id, static_cast<int>(err));
    if (!c->upstream_done) self_->upstream.abort(c->id);
    self_->maybe_erase(*c);
  }
};

Stack::Impl* Stack::Impl::self_ = nullptr;

Stack::Stack(const StackConfig& cfg, Upstream& upstream)
    : impl_(std::make_unique<Impl>(cfg, upstream)) {
  if (Impl::self_) throw std::logic_error("only one osh::stack::Stack may exist at a time");
  Impl::self_ = impl_.get();
}

Stack::~Stack() {
  stop();
  Impl::self_ = nullptr;
}

void Stack::start() { impl_->start(); }
void Stack::stop() { impl_->stop(); }

void Stack::set_routes(std::vector<Route> routes) {
  Cmd c{Cmd::Type::kRoutes};
  c.routes = std::move(routes);
  if (!impl_->started && impl_->event_fd < 0) {
    // Not started yet: nothing else touches the table.
    impl_->apply_routes(std::move(c.routes));
    return;
  }
  impl_->post(std::move(c));
}

UpstreamEvents& Stack::events() { return *impl_; }
const StackCounters& Stack::counters() const { return impl_->counters; }

std::vector<SandboxStats> Stack::sandbox_stats() const {
  std::vector<SandboxStats> out;
  CoreLock lk;
  for (const auto& [key, st] : impl_->sb_stats) out.push_back(st);
  return out;
}

PcbCounts Stack::pcb_counts() const {
  PcbCounts n;
  CoreLock lk;
  for (const tcp_pcb* q = tcp_active_pcbs; q; q = q->next) n.active++;
  for (const tcp_pcb* q = tcp_tw_pcbs; q; q = q->next) n.time_wait++;
  for (const tcp_pcb_listen* q = tcp_listen_pcbs.listen_pcbs; q; q = q->next) n.listen++;
  return n;
}

}  // namespace osh::stack

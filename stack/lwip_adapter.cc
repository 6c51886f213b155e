// Theory of operation: the lwIP adapter
// =====================================
//
// lwIP 2.1.3 (NO_SYS=0, core locking) terminates the user's TCP
// connections: Debian's source package built with the project's options
// (OSH_LWIP=source, stack/lwip/lwipopts.h: window scaling, a 512 KiB window
// and send buffer, no forced single-pbuf copy) or Debian's binary package
// liblwip-dev (OSH_LWIP=system: 64 KiB window and send buffer). What depends
// on the options is written with lwIP's option macros. It sees only the TCP segments the packet gate lets
// through (gate.h), and held SYNs once the state machine releases them
// (conn.h, inject_syn):
//
//   feed() ──► ip_data filled by hand ──► tcp_input()      (I2 path, lwip-notes.md)
//   lwIP output ──► judge_output() (source filter, MSS rewrite) ──► packet fd
//                   (in place on the pbuf, written with no copy)
//   pcb callbacks (accept/recv/sent/err) ──► Connections::on_*  (by ConnId)
//
// One lwIP netif answers for every address: lwIP never routes or forwards a
// packet (no loops, lwip-notes.md "Packets to an IP no netif owns").
// Listeners are created on demand, one per port, when a held SYN is
// released. A pcb's callback argument is its ConnId, not a pointer: a late
// callback for a connection already erased finds nothing.
//
// Large segments (lwip-notes.md "Run-time workarounds"): with an MTU above
// 1500 the SYN-ACK's MSS option is rewritten on output and pcb->mss raised
// at accept, up to the client's MSS, the link and half of lwIP's send
// buffer (two segments in flight; 32 KiB with Debian's 64 KiB buffer).
//
// Frames by reference (issue 16.4): a download frame goes into lwIP without
// a copy. write() passes a piece of 1 KiB or more to tcp_write() without
// TCP_WRITE_FLAG_COPY, so the segment's data pbuf (PBUF_ROM) points into the
// frame (smaller pieces are copied). Once all of a frame is written, the
// state machine retire()s it to the pcb: it waits in the pcb's extension slot
// (LWIP_TCP_PCB_NUM_EXT_ARGS, HeldFrames) with the sequence number just past
// its last byte, and is freed when no segment still queued (unsent, or
// unacked: sent, kept for a retransmission) starts before that number. That
// is checked on every tcp_sent (kept after close() so that a closing pcb
// frees its frames as its bytes are acknowledged); tcp_free() calls the
// slot's destroy, which frees the rest, for every way a pcb ends (reset,
// abort, retransmissions given up, LAST_ACK done, TIME_WAIT over). The bytes
// held are what lwIP's send buffer held as copies before, plus the parts of
// frames that share a segment with unacknowledged bytes.
// With Debian's binary lwIP (OSH_LWIP=system: LWIP_NETIF_TX_SINGLE_PBUF,
// no extension slot) tcp_write() always copies and retire() frees at once.
//
// Locking: everything here runs under the lwIP core lock: the stack thread
// takes it per packet batch and per posted event; lwIP's tcpip thread holds
// it while it runs timers, which may call the pcb callbacks. With
// StackConfig::confine the tcpip thread runs confined (thread_sandbox.h).
#include "stack/lwip_adapter.h"

#include <spdlog/spdlog.h>
#include <arpa/inet.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <stdexcept>
#include <vector>

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
#ifdef OSH_LWIP_SOURCE
#include "pcb_index.h"  // stack/lwip: tcp_input's index of active pcbs
#endif
}
#include "stack/vnet.h"
#if defined(OSH_LWIP_SOURCE) && !defined(OSH_LWIPOPTS_H)
#error "the source build of lwIP must see stack/lwip/lwipopts.h (cmake/lwip.cmake include order)"
#endif

namespace osh::stack {
namespace {

IpAddress from_lwip(const ip_addr_t& a) {
  if (IP_IS_V6_VAL(a)) return IpAddress::v6(reinterpret_cast<const uint8_t*>(ip_2_ip6(&a)->addr));
  return IpAddress::v4(reinterpret_cast<const uint8_t*>(&ip_2_ip4(&a)->addr));
}

void to_lwip(const IpAddress& a, ip_addr_t* out) {
  if (a.is_v6()) {
    ip6_addr_t v6{};
    std::memcpy(v6.addr, a.bytes.data(), 16);
    ip_addr_copy_from_ip6(*out, v6);
  } else {
    ip4_addr_t v4{};
    std::memcpy(&v4.addr, a.bytes.data(), 4);
    ip_addr_copy_from_ip4(*out, v4);
  }
}

#if LWIP_CHECKSUM_CTRL_PER_NETIF
// The netif's checksum switches with checksum offload (StackConfig::vnet_hdr):
// all of lwIP's defaults but TCP generation (the kernel completes or skips
// it) and TCP checking (switched on per segment the kernel does not vouch for).
constexpr u16_t kOffloadChecksums = NETIF_CHECKSUM_ENABLE_ALL & ~(NETIF_CHECKSUM_GEN_TCP | NETIF_CHECKSUM_CHECK_TCP);
#endif

#if LWIP_TCP_PCB_NUM_EXT_ARGS > 0 && !LWIP_NETIF_TX_SINGLE_PBUF
constexpr bool kByReference = true;
#else
constexpr bool kByReference = false;
#endif

tcp_pcb* pcb_of(PcbHandle h) { return reinterpret_cast<tcp_pcb*>(static_cast<uintptr_t>(h)); }
PcbHandle handle_of(tcp_pcb* p) { return static_cast<PcbHandle>(reinterpret_cast<uintptr_t>(p)); }
ConnId id_of(void* arg) { return static_cast<ConnId>(reinterpret_cast<uintptr_t>(arg)); }

/// Whether the pcb of 4-tuple @f (client view) matches @q.
bool same_flow(const tcp_pcb* q, const FlowKey& f, const ip_addr_t& src, const ip_addr_t& dst) {
  return q->remote_port == f.sport && q->local_port == f.dport && ip_addr_cmp(&q->remote_ip, &src) &&
         ip_addr_cmp(&q->local_ip, &dst);
}

}  // namespace

CoreLock::CoreLock() { LOCK_TCPIP_CORE(); }
CoreLock::~CoreLock() { UNLOCK_TCPIP_CORE(); }

struct LwipAdapter::Lwip {
  static LwipAdapter* self;  // the one adapter (lwIP is process-global)
  netif nif{};
  bool nif_added = false;
  std::unordered_map<uint16_t, tcp_pcb*> listeners;

  // Every packet lwIP writes passes the output filter (gate.h judge_output).
  // No copy (issue 16.4): judged in place on the first pbuf, which holds
  // the IP and TCP headers (ip_output added the IP header in front of
  // lwIP's TCP header; a SYN-ACK carries no data), then written straight
  // from the pbuf, a chain with one writev. An MSS rewrite changes lwIP's
  // own copy of a SYN-ACK: harmless, tcp_output_segment rewrites the option
  // and the checksum on a retransmission.
  //
  // Checksum offload (StackConfig::vnet_hdr, vnet.h): lwIP generates no TCP
  // checksum on this netif; a TCP segment gets the pseudo-header sum in its
  // checksum field (after judge_output, whose SYN-ACK MSS rewrite computes a
  // full one) and goes out NEEDS_CSUM.
  static err_t output(pbuf* p) {
    const std::span<uint8_t> headers{static_cast<uint8_t*>(p->payload), p->len};
    if (!judge_output(headers, self->routes_, self->cfg_.mtu)) {
      self->counters_.drop_unsupported++;
      return ERR_OK;
    }
    uint8_t vnet[VnetHeader::kSize] = {};
    if (self->cfg_.vnet_hdr) {
      const VnetHeader vh = partial_tcp_checksum(headers);
      // lwIP computed no checksum: a segment whose TCP header cannot be
      // found in the first pbuf (never built today: lwIP puts the headers in
      // one pbuf and the MSS keeps segments unfragmented) would go out with
      // a wrong one and be dropped silently by the kernel; counted instead.
      if (vh.flags == 0) {
        self->counters_.drop_tx_error++;
        spdlog::debug("stack: an output segment without a findable TCP header ({} bytes first pbuf) dropped", p->len);
        return ERR_OK;
      }
      vh.write(vnet);
    }
    iovec iov[kMaxIov];
    size_t n = 0;
    for (const pbuf* q = p; q; q = q->next) {
      if (n == kMaxIov) {  // a longer chain than lwIP builds for one segment: copied
        std::vector<uint8_t> buf(p->tot_len);
        pbuf_copy_partial(p, buf.data(), p->tot_len, 0);
        const iovec one{buf.data(), buf.size()};
        self->emit_iov(&one, 1, vnet);
        return ERR_OK;
      }
      if (q->len > 0) iov[n++] = iovec{q->payload, q->len};
    }
    self->emit_iov(iov, n, vnet);
    return ERR_OK;
  }
  static err_t output4(netif*, pbuf* p, const ip4_addr_t*) { return output(p); }
  static err_t output6(netif*, pbuf* p, const ip6_addr_t*) { return output(p); }
  static err_t netif_init_cb(netif* n) {
    n->name[0] = 'o';
    n->name[1] = 's';
    n->mtu = static_cast<u16_t>(std::min<uint32_t>(self->cfg_.mtu, 65535));
    n->output = output4;
    n->output_ip6 = output6;
    n->flags = 0;  // no NETIF_FLAG_BROADCAST: x.x.x.255 must stay a unicast address
    return ERR_OK;
  }

  static err_t accept_cb(void*, tcp_pcb* pcb, err_t err) {
    if (err != ERR_OK || !pcb || !self || !self->conns_) return ERR_VAL;
    const FlowKey key{from_lwip(pcb->remote_ip), from_lwip(pcb->local_ip), pcb->remote_port,
                      pcb->local_port};
    if (!self->conns_->on_accept(key, handle_of(pcb))) {
      tcp_abort(pcb);
      return ERR_ABRT;
    }
    return ERR_OK;
  }

  static err_t recv_cb(void* arg, tcp_pcb* pcb, pbuf* p, err_t) {
    Connections* conns = self ? self->conns_ : nullptr;
    if (!p) {  // client FIN
      if (arg && conns) conns->on_client_fin(id_of(arg));
      return ERR_OK;
    }
    // The one copy of an upload's bytes in our code: from the pbuf chain
    // straight into the connection's upload frame (conn.cc "Upload frames").
    // lwIP calls this only from tcp_input (feed(), on the stack reader);
    // ERR_OK always, so it never keeps refused data for its timers.
    const u16_t n = p->tot_len;
    const bool taken = arg && conns &&
                       conns->on_client_data(id_of(arg), n, [p](char* dst, size_t off, size_t len) {
                         pbuf_copy_partial(p, dst, static_cast<u16_t>(len), static_cast<u16_t>(off));
                       });
    pbuf_free(p);
    if (!taken) tcp_recved(pcb, n);
    return ERR_OK;
  }

  // ---- frames by reference (see the top of this file) ----
#if LWIP_TCP_PCB_NUM_EXT_ARGS > 0
  struct HeldFrames {
    struct Frame {
      u32_t end;  // sequence number just past the frame's last byte
      std::string bytes;
    };
    std::deque<Frame> frames;  // oldest first
  };
  static inline u8_t held_slot = 0;  // tcp_ext_arg_alloc_id(), once per process (start())

  static void count_held(int64_t frames, int64_t bytes) {
    if (!self) return;
    self->counters_.frames_held += frames;
    self->counters_.frame_bytes_held += bytes;
  }
  static void held_destroy(u8_t, void* data) {  // tcp_free(): no segment is left
    auto* held = static_cast<HeldFrames*>(data);
    for (const auto& f : held->frames) count_held(-1, -static_cast<int64_t>(f.bytes.size()));
    delete held;
  }
  static constexpr tcp_ext_arg_callbacks kHeldCallbacks{held_destroy, nullptr};

  static HeldFrames* held_of(const tcp_pcb* pcb) {
    return static_cast<HeldFrames*>(tcp_ext_arg_get(pcb, held_slot));
  }
  /// Frees the frames every byte of which lies before the oldest byte a
  /// queued segment still holds (each queue is in sequence order; a fast
  /// retransmission moves unacked's head into unsent, so both heads count).
  static void release_acked(tcp_pcb* pcb) {
    HeldFrames* held = held_of(pcb);
    if (!held) return;
    u32_t oldest = pcb->snd_lbb;
    for (const tcp_seg* s : {pcb->unacked, pcb->unsent})
      if (s && TCP_SEQ_LT(lwip_ntohl(s->tcphdr->seqno), oldest)) oldest = lwip_ntohl(s->tcphdr->seqno);
    while (!held->frames.empty() && TCP_SEQ_LEQ(held->frames.front().end, oldest)) {
      count_held(-1, -static_cast<int64_t>(held->frames.front().bytes.size()));
      held->frames.pop_front();
    }
  }
#else
  static void release_acked(tcp_pcb*) {}
#endif

  // Also after close() (detach): a closing pcb frees its frames as the
  // client acknowledges them.
  static err_t sent_cb(void* arg, tcp_pcb* pcb, u16_t) {
    release_acked(pcb);
    if (arg && self && self->conns_) self->conns_->on_sent(id_of(arg));
    return ERR_OK;
  }

  static void err_cb(void* arg, err_t err) {
    // ERR_CLSD: both sides closed (we shut down tx, the client closed).
    if (arg && self && self->conns_) self->conns_->on_pcb_gone(id_of(arg), err == ERR_CLSD);
  }

  static void detach(tcp_pcb* pcb) {
    tcp_arg(pcb, nullptr);
    tcp_recv(pcb, nullptr);
    tcp_sent(pcb, kByReference ? sent_cb : nullptr);  // frees held frames only (arg null)
    tcp_err(pcb, nullptr);
  }
};

LwipAdapter* LwipAdapter::Lwip::self = nullptr;

LwipAdapter::LwipAdapter(const StackConfig& cfg, const RouteTable& routes, StackCounters& counters)
    : cfg_(cfg), routes_(routes), counters_(counters), lwip_(std::make_unique<Lwip>()) {
  if (Lwip::self) throw std::logic_error("only one osh::stack::Stack may exist at a time");
  Lwip::self = this;
}

LwipAdapter::~LwipAdapter() { Lwip::self = nullptr; }

void LwipAdapter::start() {
  // Once per process: the first adapter's cfg_.confine holds for the
  // tcpip thread, which confines itself before it handles any message.
  static std::once_flag lwip_once;
  static std::string confine_error;
  std::call_once(lwip_once, [this] {
    struct Init {
      Confinement how;
      std::promise<std::string> ready;
    } init{cfg_.confine, {}};
    tcpip_init(
        [](void* arg) {
          auto* in = static_cast<Init*>(arg);
          in->ready.set_value(confine_this_thread("osh-tcpip", in->how));
        },
        &init);
    confine_error = init.ready.get_future().get();
  });
  if (!confine_error.empty())
    throw std::runtime_error("stack: confining lwIP's tcpip thread: " + confine_error);
  CoreLock lk;
#if LWIP_TCP_PCB_NUM_EXT_ARGS > 0
  static const u8_t held_slot = tcp_ext_arg_alloc_id();  // once per process, core lock held
  Lwip::held_slot = held_slot;
#endif
  ip4_addr_t addr{}, mask{}, gw{};
  if (cfg_.netif4.is_v4()) std::memcpy(&addr.addr, cfg_.netif4.bytes.data(), 4);
  mask.addr = cfg_.prefix4 == 0 ? 0 : htonl(~uint32_t{0} << (32 - cfg_.prefix4));
  if (!netif_add(&lwip_->nif, &addr, &mask, &gw, this, Lwip::netif_init_cb, tcpip_input))
    throw std::runtime_error("stack: netif_add failed");
  lwip_->nif_added = true;
  if (cfg_.netif6.is_v6()) {
    ip6_addr_t a6{};
    std::memcpy(a6.addr, cfg_.netif6.bytes.data(), 16);
    netif_ip6_addr_set(&lwip_->nif, 1, &a6);
    netif_ip6_addr_set_state(&lwip_->nif, 1, IP6_ADDR_PREFERRED);
  }
#if LWIP_CHECKSUM_CTRL_PER_NETIF
  if (cfg_.vnet_hdr) NETIF_SET_CHECKSUM_CTRL(&lwip_->nif, kOffloadChecksums | NETIF_CHECKSUM_CHECK_TCP);
#endif
  netif_set_default(&lwip_->nif);
  netif_set_up(&lwip_->nif);
  netif_set_link_up(&lwip_->nif);
}

void LwipAdapter::stop() {
  for (auto& [port, l] : lwip_->listeners) tcp_close(l);
  lwip_->listeners.clear();
  // What the connections left behind (closing, TIME_WAIT) ends too: lwIP
  // outlives the adapter, the frames its segments point into must not.
  // tcp_abort() unlinks the pcb it is given; the breaks only guard the loops.
  while (tcp_pcb* q = tcp_active_pcbs) {
    tcp_abort(q);
    if (tcp_active_pcbs == q) break;
  }
  while (tcp_pcb* q = tcp_tw_pcbs) {
    tcp_abort(q);
    if (tcp_tw_pcbs == q) break;
  }
  if (lwip_->nif_added) {
    netif_set_down(&lwip_->nif);
    netif_remove(&lwip_->nif);
    lwip_->nif_added = false;
  }
}

// ---- output ----

void LwipAdapter::emit(std::span<const uint8_t> pkt) {
  const iovec iov{const_cast<uint8_t*>(pkt.data()), pkt.size()};
  emit_iov(&iov, 1);
}

void LwipAdapter::emit_iov(const iovec* iov, size_t n, const uint8_t* vnet) {
  if (cfg_.vnet_hdr) {  // the header as one more piece in front: no copy
    static constexpr uint8_t kZeros[VnetHeader::kSize] = {};
    iovec all[kMaxIov + 1];
    all[0] = iovec{const_cast<uint8_t*>(vnet ? vnet : kZeros), VnetHeader::kSize};
    std::copy_n(iov, std::min(n, kMaxIov), all + 1);
    write_iov(all, std::min(n, kMaxIov) + 1);
    return;
  }
  write_iov(iov, n);
}

void LwipAdapter::write_iov(const iovec* iov, size_t n) {
  if (::writev(cfg_.packet_fd, iov, static_cast<int>(n)) < 0) {
    counters_.drop_tx_error++;
    spdlog::debug("stack: packet write: {}", std::strerror(errno));
    return;
  }
  counters_.tx_packets++;
}

// ---- input ----

// lwIP 2.1.3 asserts ("insane offset!", tcp_in.c) and aborts the process on
// a 1-byte segment (data or FIN) whose sequence number is exactly 2^31 away
// from rcv_nxt; found by fuzz/stack_fuzz. Such a segment is never valid.
// From SYN_RCVD on: there the segment's ACK completes the handshake and lwIP
// passes it on to tcp_receive (fuzz/README.md finding 3).
// The pcb is found as tcp_input() will find it: in the source build from
// the pcb index (O(1); stack/lwip/pcb_index.h), else by walking the list.
static bool aborts_lwip(const Parsed& p) {
  const size_t len = p.tcp_payload_len + ((p.tcp_flags & kFin) ? 1 : 0) + ((p.tcp_flags & kSyn) ? 1 : 0);
  if (len != 1) return false;
  ip_addr_t src, dst;
  to_lwip(p.src, &src);
  to_lwip(p.dst, &dst);
  const FlowKey f = p.flow();
  tcp_pcb* q = nullptr;
#ifdef OSH_LWIP_SOURCE
  if (!osh_pcb_index_lookup(&q, f.sport, f.dport, &src, &dst))
#endif
    for (q = tcp_active_pcbs; q && !same_flow(q, f, src, dst);) q = q->next;
  return q && q->state >= SYN_RCVD && q->rcv_nxt - p.seq == 0x80000000u;
}

void LwipAdapter::feed(std::span<const uint8_t> pkt, const Parsed& p, bool l4_vouched) {
  if (aborts_lwip(p)) {
    counters_.drop_malformed++;
    return;
  }
#if LWIP_CHECKSUM_CTRL_PER_NETIF
  // Per segment: lwIP reads the flag in tcp_input, under the core lock held here.
  if (cfg_.vnet_hdr)
    NETIF_SET_CHECKSUM_CTRL(&lwip_->nif, kOffloadChecksums | (l4_vouched ? 0 : NETIF_CHECKSUM_CHECK_TCP));
#else
  (void)l4_vouched;
#endif
  pbuf* pb = pbuf_alloc(PBUF_RAW, static_cast<u16_t>(p.total_len), PBUF_RAM);
  if (!pb) {
    counters_.drop_tx_error++;
    return;
  }
  pbuf_take(pb, pkt.data(), static_cast<u16_t>(p.total_len));
  netif* nif = &lwip_->nif;
  ip_data.current_netif = nif;
  ip_data.current_input_netif = nif;
  if (p.src.is_v4()) {
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
  tcp_input(pb, nif);  // takes ownership of pb
  ip_data.current_netif = nullptr;
  ip_data.current_input_netif = nullptr;
  ip_data.current_ip4_header = nullptr;
  ip_data.current_ip6_header = nullptr;
  ip_data.current_ip_header_tot_len = 0;
  ip_addr_set_zero(&ip_data.current_iphdr_src);
  ip_addr_set_zero(&ip_data.current_iphdr_dest);
}

PcbCounts LwipAdapter::pcb_counts() const {
  PcbCounts n;
  for (const tcp_pcb* q = tcp_active_pcbs; q; q = q->next) n.active++;
  for (const tcp_pcb* q = tcp_tw_pcbs; q; q = q->next) n.time_wait++;
  for (const tcp_pcb_listen* q = tcp_listen_pcbs.listen_pcbs; q; q = q->next) n.listen++;
#ifdef OSH_LWIP_SOURCE
  n.indexed = osh_pcb_index_size();
#endif
  return n;
}

// ---- PcbOps ----

bool LwipAdapter::ensure_listener(uint16_t port) {
  if (lwip_->listeners.contains(port)) return true;
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
  tcp_arg(l, nullptr);
  tcp_accept(l, Lwip::accept_cb);
#ifdef OSH_LWIP_SOURCE
  osh_pcb_index_watch(l);  // every pcb it makes is found in O(1)
#endif
  lwip_->listeners.emplace(port, l);
  return true;
}

// A new connection reusing the 4-tuple of one lwIP still holds in TIME_WAIT
// (lwIP closed first; the client's kernel already freed the port) would be
// answered from TIME_WAIT instead of with a SYN-ACK and hang. The client
// has moved on: drop the old pcb before the SYN goes in.
void LwipAdapter::inject_syn(const FlowKey& f, std::span<const uint8_t> syn) {
  ip_addr_t src, dst;
  to_lwip(f.src, &src);
  to_lwip(f.dst, &dst);
  for (tcp_pcb* q = tcp_tw_pcbs; q; q = q->next) {
    if (same_flow(q, f, src, dst)) {
      tcp_abort(q);  // a TIME_WAIT pcb has no callbacks and sends no RST
      break;
    }
  }
  feed(syn, classify(syn));
}

void LwipAdapter::attach(PcbHandle h, ConnId id, uint16_t peer_mss) {
  tcp_pcb* pcb = pcb_of(h);
  // A retransmitted SYN makes lwIP re-read the client's MSS option and
  // forget the link MTU: keep segments within it (fuzz/stack_fuzz).
  const u16_t max_mss = static_cast<u16_t>(cfg_.mtu - (IP_IS_V6_VAL(pcb->remote_ip) ? 60 : 40));
  if (pcb->mss > max_mss) pcb->mss = max_mss;
  // With a large MTU, send large segments too (lwIP clamps the peer's MSS
  // to TCP_MSS): up to the client's MSS, the link, and half of lwIP's send
  // buffer so that two segments can be in flight (32 KiB with Debian's
  // 64 KiB buffer).
  constexpr u16_t kHalfSendBuffer = std::min<uint32_t>((TCP_SND_BUF + 1) / 2, 0xffff);
  if (cfg_.mtu > 1500 && peer_mss > pcb->mss) pcb->mss = std::min<u16_t>({peer_mss, max_mss, kHalfSendBuffer});
  tcp_arg(pcb, reinterpret_cast<void*>(static_cast<uintptr_t>(id)));
  tcp_recv(pcb, Lwip::recv_cb);
  tcp_sent(pcb, Lwip::sent_cb);
  tcp_err(pcb, Lwip::err_cb);
  tcp_nagle_disable(pcb);
  if (cfg_.keepalive_idle_ms > 0) {
    ip_set_option(pcb, SOF_KEEPALIVE);
    pcb->keep_idle = cfg_.keepalive_idle_ms;
    pcb->keep_intvl = cfg_.keepalive_intvl_ms;
    pcb->keep_cnt = cfg_.keepalive_count;
  }
}

uint32_t lwip_receive_window() noexcept { return TCP_WND; }

bool lwip_checksum_ctrl() noexcept { return LWIP_CHECKSUM_CTRL_PER_NETIF != 0; }

size_t LwipAdapter::send_room(PcbHandle h) {
  tcp_pcb* pcb = pcb_of(h);
  if (tcp_sndqueuelen(pcb) >= TCP_SND_QUEUELEN - 4) return 0;
  return std::min<size_t>(tcp_sndbuf(pcb), 0xffff);
}

WriteResult LwipAdapter::write(PcbHandle h, std::span<const char> bytes) {
  const bool by_reference = kByReference && bytes.size() >= kByReferenceMin;
  const err_t e = tcp_write(pcb_of(h), bytes.data(), static_cast<u16_t>(bytes.size()),
                            by_reference ? 0 : TCP_WRITE_FLAG_COPY);
  if (e == ERR_OK) {
    if (by_reference) counters_.bytes_down_by_reference += bytes.size();
    return WriteResult::kOk;
  }
  if (e == ERR_MEM) return WriteResult::kFull;
  spdlog::debug("stack: tcp_write: {}", static_cast<int>(e));
  return WriteResult::kError;
}

void LwipAdapter::retire(PcbHandle h, std::string frame) {
#if LWIP_TCP_PCB_NUM_EXT_ARGS > 0
  if (!kByReference || frame.size() < kByReferenceMin) return;  // every piece was copied
  tcp_pcb* pcb = pcb_of(h);
  Lwip::HeldFrames* held = Lwip::held_of(pcb);
  if (!held) {  // the first frame of this pcb (an idle connection has none)
    held = new Lwip::HeldFrames;
    tcp_ext_arg_set(pcb, Lwip::held_slot, held);
    tcp_ext_arg_set_callbacks(pcb, Lwip::held_slot, &Lwip::kHeldCallbacks);
  }
  Lwip::count_held(1, static_cast<int64_t>(frame.size()));
  held->frames.push_back({pcb->snd_lbb, std::move(frame)});  // its last byte was the last written
#else
  (void)h;
  (void)frame;
#endif
}

void LwipAdapter::output(PcbHandle h) { tcp_output(pcb_of(h)); }

void LwipAdapter::recved(PcbHandle h, size_t n) {
  while (n > 0) {
    const u16_t k = static_cast<u16_t>(std::min<size_t>(n, 0xffff));
    tcp_recved(pcb_of(h), k);
    n -= k;
  }
}

void LwipAdapter::shutdown_tx(PcbHandle h) { tcp_shutdown(pcb_of(h), 0, 1); }

void LwipAdapter::close(PcbHandle h) {
  tcp_pcb* pcb = pcb_of(h);
  Lwip::detach(pcb);
  if (tcp_close(pcb) != ERR_OK) tcp_abort(pcb);
}

void LwipAdapter::abort(PcbHandle h) {
  tcp_pcb* pcb = pcb_of(h);
  Lwip::detach(pcb);
  tcp_abort(pcb);  // sends RST
}

}  // namespace osh::stack

// Theory of operation: the connection state machine
// =================================================
//
// Lifecycle (Conn::State; the transitions tests/stack/conn_test.cc covers):
//
//   kOpening     SYN held (on_syn: Upstream::open). Retransmitted SYNs are
//                absorbed (lwip-notes.md: late ones drew challenge ACKs).
//                open ok -> listener, SYN fed to lwIP -> kHandshake;
//                  no listener -> Upstream::abort -> kDead;
//                stream failed (or ended OK before opening) -> RST (refused,
//                  RFC 9293 §3.10.7.1) or ICMP unreachable -> erased;
//                no answer within the open timeout -> Upstream::abort, RST,
//                  erased (swept).
//   kHandshake   lwIP sent SYN-ACK. A retransmitted SYN goes to lwIP (it
//                re-answers). accept -> kEstablished (queued bytes flush);
//                stream failed -> kDead; stream ended OK -> remote_fin (FIN
//                right after accept); client RST with SEG.SEQ = ISN + 1 ->
//                Upstream::abort, erased; 20 s without accept -> swept.
//   kDead        the stream failed before accept: accept aborts the pcb and
//                erases; otherwise the 20 s sweep reaps it.
//   kEstablished bytes flow. Half-close per direction (passt tcp_splice.c
//                FIN_RCVD/FIN_SENT; design.md §3):
//                client FIN -> client_fin, Upstream::close_write;
//                upstream FIN (on_remote_fin, or on_closed(kOk): the stream's
//                  end is a FIN for upstream gateways) -> remote_fin, then
//                  shutdown_tx after every queued byte -> fin_sent;
//                fin_sent && client_fin && nothing unwritten upstream ->
//                  close (pcb released);
//                upstream error -> abort (RST), erased;
//                client RST / pcb error -> Upstream::abort;
//                lwIP closed the pcb (ERR_CLSD) -> pcb gone.
//   erased       when the pcb is gone and the upstream reported on_closed
//                (or at once where no pcb can come: refusal, reset in the
//                handshake, sweep, route removal, stop).
//
// Back-pressure (design.md §3; ARCHITECTURE.md "Back-pressure"):
//   client -> upstream: received bytes go into upload frames (below) and are
//     counted in recv_pending (unwritten upstream, whether still in up_frame
//     or handed) and recv_owed (not recved() to lwIP).
//     They are recved() when the upstream reports them written, or earlier
//     while at most early_ack_bytes acknowledged bytes are unwritten
//     (settle_recved), so lwIP's receive window (lwip_receive_window():
//     512 KiB in the source build, 64 KiB in Debian's binary) plus that
//     allowance bounds the bytes in flight upstream per connection.
//   Upload frames (issue 16.3: every frame costs the gateway and the
//     supervisor a fixed amount, so bulk uploads must travel in full
//     frames): received bytes are copied once, from lwIP's pbufs, into the
//     connection's up_frame. A frame is handed to Upstream::send when it
//     holds frame_bytes (64 KiB); a partial one at the end of the reader's
//     batch (end_batch) if the stream has no write in flight (up_inflight
//     == 0) or the frame is small (< 4 KiB: a request leaves at once), else
//     by on_write_done once at most one frame is still unwritten ahead of
//     it (so the relay never runs dry waiting for it), and before the
//     client's FIN. So while the gateway is busy, bytes gather into full frames
//     (Nagle's rule, per frame, for all but small frames).
//   upstream -> client: frames queue in tx (the relay reads one ahead:
//     relay::ForwardOptions::read_ahead_frames); read_more() only once the
//     tx queue is empty, i.e. lwIP took every frame delivered (≤ 64 KiB each).
//
// Deadlines: kHandshakeTimeout (20 s) for kHandshake and kDead, and the
// open timeout (StackConfig::open_timeout_ms, default 60 s) for kOpening:
// a held SYN whose stream never answers is refused (RST, Upstream::abort,
// syn_timeouts). Both are checked by sweep() (the Stack runs it every
// second: a connection lives up to the deadline + 1 s).
#include "stack/conn.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/log_escape.h"
#include "common/log_limiter.h"

namespace osh::stack {
namespace {
// A first piece of an upload frame below this many bytes gets a buffer of
// its own size (requests, keystrokes); a larger one the whole frame.
constexpr size_t kSmallPiece = 1024;
// A partial frame this small leaves at the end of its batch even while a
// write is in flight: a request or a keystroke does not wait for the
// previous write's completion (two thread hops away, milliseconds on a
// loaded machine). In a bulk upload the remainder at a batch's end is this
// small in ~6 % of batches: a few extra frames per GiB, not per frame.
constexpr size_t kSmallFrame = 4096;
}  // namespace

Connections::Connections(size_t early_ack_bytes, Upstream& upstream, PcbOps& ops,
                         StackCounters& counters, Clock::duration open_timeout, size_t frame_bytes)
    : frame_bytes_(std::clamp<size_t>(frame_bytes, 1, kMaxFrameBytes)),
      early_ack_bytes_(early_ack_bytes),
      open_timeout_(open_timeout),
      upstream_(upstream),
      ops_(ops),
      counters_(counters) {}

Conn* Connections::get(ConnId id) {
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second.get();
}

const Conn* Connections::find(ConnId id) const {
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second.get();
}

SandboxStats& Connections::stats_of(const Conn& c) {
  SandboxStats& st = sb_stats_[c.sandbox];
  st.sandbox = c.sandbox;
  return st;
}

std::vector<SandboxStats> Connections::sandbox_stats() const {
  std::vector<SandboxStats> out;
  for (const auto& [key, st] : sb_stats_) out.push_back(st);
  return out;
}

// ---- the SYN gate ----

Connections::SynAction Connections::on_syn(std::span<const uint8_t> pkt, const Parsed& p,
                                           const std::string& sandbox, Clock::time_point now) {
  const FlowKey key = p.flow();
  if (auto it = by_flow_.find(key); it != by_flow_.end()) {
    Conn& c = *conns_.at(it->second);
    if (c.state == Conn::State::kOpening || c.state == Conn::State::kDead) {
      counters_.syn_absorbed++;
      return SynAction::kAbsorbed;
    }
    // A retransmitted SYN during the handshake: lwIP re-answers. One on a
    // live pcb: lwIP answers it with an ACK (RFC 9293 §3.10.7.4), and the
    // client resets that pcb if its side is gone.
    if (c.state == Conn::State::kHandshake || c.pcb != PcbHandle::kNone) return SynAction::kFeed;
    // Established, lwIP's side over (the client reset it, or both FINs
    // closed it) and the stream still ending: a new connection on the same
    // 4-tuple (a client reusing its port). The old one winds down by id,
    // out of the flow table; the new SYN is held and opens its own stream.
    spdlog::debug("conn {}: {} reused while its stream ends", c.id, key.to_string());
    by_flow_.erase(it);
  }
  auto c = std::make_unique<Conn>();
  c->id = next_id_++;
  c->flow = key;
  c->sandbox = sandbox;
  c->born = now;
  stats_of(*c).active++;
  c->syn.assign(pkt.begin(), pkt.begin() + static_cast<long>(p.total_len));
  c->peer_mss = tcp_mss_option(pkt, p);
  c->syn_seq = p.seq;
  const OpenRequest req{c->id, sandbox, p.dst, p.dport, key};
  by_flow_.emplace(key, c->id);
  const ConnId id = c->id;
  conns_.emplace(id, std::move(c));
  counters_.syn_held++;
  counters_.active++;
  spdlog::debug("conn {}: SYN {} held, opening stream", id, key.to_string());
  upstream_.open(req);
  return SynAction::kOpened;
}

ConnId Connections::handshake_reset(const Parsed& p) const {
  if (!(p.tcp_flags & kRst)) return 0;
  const auto it = by_flow_.find(p.flow());
  if (it == by_flow_.end()) return 0;
  const Conn& c = *conns_.at(it->second);
  if (c.state != Conn::State::kHandshake || c.syn_seq + 1 != p.seq) return 0;
  return c.id;
}

void Connections::on_handshake_reset(ConnId id) {
  Conn* c = get(id);
  if (!c) return;
  spdlog::debug("conn {}: client reset during the handshake", id);
  if (!c->upstream_done) upstream_.abort(id);
  erase(*c);
}

// ---- erasure, resets, refusals ----

void Connections::erase(Conn& c) {
  stats_of(c).active--;
  // The flow may belong to a newer connection already (on_syn: port reuse).
  if (const auto it = by_flow_.find(c.flow); it != by_flow_.end() && it->second == c.id) by_flow_.erase(it);
  counters_.active--;
  counters_.conns_closed++;
  conns_.erase(c.id);  // c is dangling after this
}

void Connections::maybe_erase(Conn& c) {
  if (c.pcb == PcbHandle::kNone && c.upstream_done) erase(c);
}

void Connections::abort_pcb(Conn& c) {
  const PcbHandle pcb = c.pcb;
  c.pcb = PcbHandle::kNone;
  ops_.abort(pcb);  // sends RST
  counters_.resets++;
  stats_of(c).resets++;
}

void Connections::refuse(Conn& c, CloseKind kind) {
  const std::span<const uint8_t> syn(c.syn);
  const Parsed p = classify(syn);
  if (kind == CloseKind::kUnreachable) {
    ops_.emit(make_unreachable(syn, p));
    counters_.refused_unreachable++;
    stats_of(c).unreachable++;
  } else {
    ops_.emit(make_rst_for_syn(p));
    counters_.refused_rst++;
    stats_of(c).refused++;
  }
}

// ---- lwIP side ----

bool Connections::on_accept(const FlowKey& flow, PcbHandle pcb) {
  const auto it = by_flow_.find(flow);
  Conn* c = it == by_flow_.end() ? nullptr : get(it->second);
  if (!c || c->state != Conn::State::kHandshake) {
    if (c && c->state == Conn::State::kDead) erase(*c);
    else counters_.resets++;
    return false;
  }
  c->state = Conn::State::kEstablished;
  c->pcb = pcb;
  ops_.attach(pcb, c->id, c->peer_mss);
  spdlog::debug("conn {}: established {}", c->id, flow.to_string());
  flush(*c);
  return true;
}

bool Connections::on_client_data(ConnId id, std::string_view bytes) {
  return on_client_data(id, bytes.size(),
                        [bytes](char* dst, size_t off, size_t len) { bytes.copy(dst, len, off); });
}

bool Connections::on_client_data(ConnId id, size_t n, const CopyOut& copy) {
  Conn* c = get(id);
  if (!c) return false;
  if (c->upstream_done) {
    counters_.drop_after_close += n;
    ops_.recved(c->pcb, n);
    return true;
  }
  c->recv_pending += n;
  c->recv_owed += n;
  counters_.bytes_up += n;
  stats_of(*c).bytes_up += n;
  for (size_t off = 0; off < n;) {
    std::string& f = c->up_frame;
    const size_t k = std::min(n - off, frame_bytes_ - f.size());
    // A small first piece (a request) gets an exact buffer; anything larger
    // the whole frame at once, so that appending never reallocates.
    if (f.size() + k > f.capacity()) f.reserve(f.empty() && k < kSmallPiece ? k : frame_bytes_);
    const size_t at = f.size();
    f.resize(at + k);
    copy(f.data() + at, off, k);
    off += k;
    if (f.size() == frame_bytes_) hand_frame(*c);
  }
  if (!c->up_frame.empty() && !c->up_dirty) {
    c->up_dirty = true;
    dirty_.push_back(c->id);
  }
  settle_recved(*c);
  return true;
}

// Hands the upload frame to the upstream as it is (1..frame_bytes_ bytes).
void Connections::hand_frame(Conn& c) {
  if (c.up_frame.empty()) return;
  c.up_inflight += c.up_frame.size();
  upstream_.send(c.id, std::exchange(c.up_frame, {}));
}

void Connections::end_batch() {
  // Upstream calls never re-enter Connections: dirty_ stays as it is here.
  for (const ConnId id : dirty_) {
    Conn* c = get(id);
    if (!c) continue;
    c->up_dirty = false;
    if (c->up_inflight == 0 || c->up_frame.size() < kSmallFrame) hand_frame(*c);  // else on_write_done does
  }
  dirty_.clear();
}

void Connections::on_client_fin(ConnId id) {
  Conn* c = get(id);
  if (!c) return;
  c->client_fin = true;
  if (!c->upstream_done) {
    hand_frame(*c);  // the last bytes go before the half-close
    upstream_.close_write(c->id);
  }
  maybe_close(*c);
}

void Connections::on_sent(ConnId id) {
  if (Conn* c = get(id)) flush(*c);
}

void Connections::on_pcb_gone(ConnId id, bool closed) {
  Conn* c = get(id);
  if (!c) return;
  c->pcb = PcbHandle::kNone;  // lwIP freed it
  if (!closed) {
    spdlog::debug("conn {}: client side error (reset/abort)", c->id);
    if (!c->upstream_done) upstream_.abort(c->id);
  }
  maybe_erase(*c);
}

// ---- upstream side ----

void Connections::on_open_ok(ConnId id) {
  Conn* c = get(id);
  if (!c || c->state != Conn::State::kOpening) return;
  if (!ops_.ensure_listener(c->flow.dport)) {
    OSH_LOG_LIMITED(spdlog::level::warn, "conn {}: cannot create listener for port {}", c->id, c->flow.dport);
    upstream_.abort(c->id);
    c->state = Conn::State::kDead;
    return;
  }
  c->state = Conn::State::kHandshake;
  {
    const std::vector<uint8_t> syn = std::move(c->syn);
    c->syn.clear();
    ops_.inject_syn(c->flow, syn);
  }
  counters_.conns_opened++;
  stats_of(*c).opened++;
}

void Connections::on_data(ConnId id, std::string bytes) {
  Conn* c = get(id);
  if (!c) return;
  counters_.bytes_down += bytes.size();
  stats_of(*c).bytes_down += bytes.size();
  if (bytes.empty()) {
    request_read(*c);
    return;
  }
  c->tx.push_back(std::move(bytes));
  c->read_wanted = true;
  flush(*c);
}

void Connections::on_remote_fin(ConnId id) {
  Conn* c = get(id);
  if (!c) return;
  c->remote_fin = true;
  flush(*c);
}

void Connections::on_write_done(ConnId id, size_t n) {
  Conn* c = get(id);
  if (!c) return;
  c->recv_pending -= std::min(c->recv_pending, n);
  c->up_inflight -= std::min(c->up_inflight, n);
  // What came meanwhile, once at most one frame is left ahead of it: it is
  // queued before the relay runs dry (no idle gap of two thread hops), and
  // bytes that arrive while two or more frames wait still gather.
  if (c->up_inflight <= frame_bytes_ && !c->upstream_done) hand_frame(*c);
  settle_recved(*c);
  maybe_close(*c);
}

void Connections::on_closed(ConnId id, CloseKind kind, const std::string& reason) {
  Conn* c = get(id);
  if (!c) return;  // connection already gone: late event
  c->upstream_done = true;
  if (!c->up_frame.empty()) {  // never to be written: dropped like later client bytes
    counters_.drop_after_close += c->up_frame.size();
    c->recv_pending -= std::min(c->recv_pending, c->up_frame.size());
    std::string().swap(c->up_frame);
  }
  spdlog::debug("conn {}: stream closed ({}: {})", c->id, to_string(kind), reason);
  switch (c->state) {
    case Conn::State::kOpening:
      // One line per refused connection, rate-limited (issue 14.7); the
      // reason is the gateway's text.
      OSH_LOG_LIMITED(spdlog::level::info, "conn {}: {} {} ({})", c->id, c->flow.to_string(),
                      kind == CloseKind::kUnreachable ? "unreachable" : "refused", log_escape(reason));
      if (kind == CloseKind::kOk) kind = CloseKind::kRefused;
      refuse(*c, kind);
      erase(*c);
      return;
    case Conn::State::kHandshake:
      if (kind != CloseKind::kOk) c->state = Conn::State::kDead;
      else c->remote_fin = true;
      return;
    case Conn::State::kDead:
      return;
    case Conn::State::kEstablished:
      if (kind == CloseKind::kOk) {
        c->remote_fin = true;  // fallback: stream end = FIN (upstream gateways)
        flush(*c);
        if (Conn* still = get(id); still && still->pcb == PcbHandle::kNone) maybe_erase(*still);
        return;
      }
      if (c->pcb != PcbHandle::kNone) abort_pcb(*c);
      erase(*c);
      return;
  }
}

// ---- back-pressure and the send path ----

// Acknowledges owed bytes to lwIP while no more than early_ack_bytes_
// acknowledged bytes are unwritten upstream. Bytes are received,
// acknowledged and written in stream order, so the acknowledged-but-unwritten
// count is recv_pending - recv_owed (negative: written bytes still owed,
// acknowledged at once).
void Connections::settle_recved(Conn& c) {
  if (c.pcb == PcbHandle::kNone || c.recv_owed == 0) return;
  const auto unwritten_acked = static_cast<int64_t>(c.recv_pending) - static_cast<int64_t>(c.recv_owed);
  const int64_t room = static_cast<int64_t>(early_ack_bytes_) - unwritten_acked;
  if (room <= 0) return;
  const size_t k = std::min(c.recv_owed, static_cast<size_t>(room));
  c.recv_owed -= k;
  ops_.recved(c.pcb, k);
}

void Connections::request_read(Conn& c) {
  if (c.upstream_done) return;
  c.read_wanted = false;
  upstream_.read_more(c.id);
}

// Moves queued upstream bytes into lwIP as far as its send buffer allows,
// then a pending FIN; asks for the next frame once the queue is empty.
void Connections::flush(Conn& c) {
  if (c.pcb == PcbHandle::kNone) return;
  bool wrote = false;
  while (!c.tx.empty()) {
    const std::string& f = c.tx.front();
    const size_t left = f.size() - c.tx_off;
    const size_t room = ops_.send_room(c.pcb);
    if (room == 0) break;
    const size_t k = std::min(left, room);
    const WriteResult r = ops_.write(c.pcb, {f.data() + c.tx_off, k});
    if (r == WriteResult::kFull) break;
    if (r == WriteResult::kError) {
      spdlog::debug("conn {}: tcp_write failed", c.id);
      break;
    }
    wrote = true;
    c.tx_off += k;
    if (c.tx_off == f.size()) {  // lwIP may point into it: the pcb keeps it (PcbOps::write)
      ops_.retire(c.pcb, std::move(c.tx.front()));
      c.tx.pop_front();
      c.tx_off = 0;
    }
  }
  if (c.tx.empty() && c.remote_fin && !c.fin_sent) {
    ops_.shutdown_tx(c.pcb);
    c.fin_sent = true;
    wrote = false;  // tcp_shutdown already output
  }
  if (wrote) ops_.output(c.pcb);
  if (c.tx.empty() && c.read_wanted) request_read(c);
  maybe_close(c);
}

void Connections::maybe_close(Conn& c) {
  if (c.pcb == PcbHandle::kNone || !c.fin_sent || !c.client_fin || c.recv_pending > 0) return;
  const PcbHandle pcb = c.pcb;
  c.pcb = PcbHandle::kNone;
  ops_.close(pcb);
  maybe_erase(c);
}

// ---- deadlines, routes, stop ----

void Connections::sweep(Clock::time_point now) {
  std::vector<Conn*> dead, expired;
  for (auto& [id, c] : conns_) {
    if ((c->state == Conn::State::kHandshake || c->state == Conn::State::kDead) &&
        now - c->born > kHandshakeTimeout)
      dead.push_back(c.get());
    else if (c->state == Conn::State::kOpening && now - c->born > open_timeout_)
      expired.push_back(c.get());
  }
  for (Conn* c : dead) {
    spdlog::debug("conn {}: handshake never completed, reaped", c->id);
    if (!c->upstream_done) upstream_.abort(c->id);
    erase(*c);
  }
  for (Conn* c : expired) {
    OSH_LOG_LIMITED(spdlog::level::info, "conn {}: {} refused: its stream did not open within {} s", c->id,
                    c->flow.to_string(),
                 std::chrono::duration_cast<std::chrono::seconds>(open_timeout_).count());
    upstream_.abort(c->id);  // kOpening: the upstream has not reported on_closed
    refuse(*c, CloseKind::kRefused);
    counters_.syn_timeouts++;
    erase(*c);
  }
}

void Connections::drop_unrouted(const std::function<bool(const IpAddress&)>& served) {
  std::vector<Conn*> gone;
  for (auto& [id, c] : conns_)
    if (!served(c->flow.dst)) gone.push_back(c.get());
  for (Conn* c : gone) {
    if (c->pcb != PcbHandle::kNone) abort_pcb(*c);
    if (!c->upstream_done) upstream_.abort(c->id);
    erase(*c);
  }
}

void Connections::abort_all() {
  for (auto& [id, c] : conns_) {
    if (c->pcb != PcbHandle::kNone) abort_pcb(*c);
    if (!c->upstream_done) upstream_.abort(id);
  }
  conns_.clear();
  by_flow_.clear();
}

}  // namespace osh::stack

// The connection state machine: one Conn per client TCP connection, from its
// held SYN to its erasure, both FIN directions, back-pressure accounting
// (incl. the early-acknowledgement allowance) and the handshake deadline.
// It reaches lwIP only through PcbOps (the lwIP adapter implements it,
// lwip_adapter.h; tests use a fake) and the upstream through Upstream
// (upstream.h), so every transition is unit-tested without lwIP, threads or
// namespaces (tests/stack/conn_test.cc). Model: passt's tcp.c / flow.h.
// Lifecycle table: conn.cc and docs/ARCHITECTURE.md "Connection lifecycle".
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "stack/counters.h"
#include "stack/packet.h"
#include "stack/upstream.h"

namespace osh::stack {

/// Names one lwIP pcb without an lwIP type (the adapter's tcp_pcb*, as an
/// integer; a fake's own numbers). kNone: no pcb.
enum class PcbHandle : uintptr_t { kNone = 0 };

/// What tcp_write() made of a write (lwIP err_t, reduced).
enum class WriteResult {
  kOk,     ///< queued in the pcb's send buffer
  kFull,   ///< ERR_MEM: no room now; retried on the next sent callback
  kError,  ///< anything else: logged, the bytes stay queued
};

/// The operations the state machine needs from lwIP and the link. All are
/// called on the stack thread with the lwIP core lock held, possibly from
/// inside an lwIP callback of the same pcb (as lwIP allows: tcp_close/abort
/// in recv; the adapter returns ERR_ABRT where lwIP requires it).
class PcbOps {
 public:
  virtual ~PcbOps() = default;
  /// ensure_listener() - a listening pcb for @port exists (created on
  /// demand, IP_ANY_TYPE, lwip-notes.md "Any port"). Return: false if lwIP
  /// could not create one.
  virtual bool ensure_listener(uint16_t port) = 0;
  /// inject_syn() - releases a held SYN: drops a TIME_WAIT pcb of the same
  /// 4-tuple (the client moved on), then feeds the SYN to lwIP (I2 path),
  /// which answers SYN-ACK. @syn: the whole IP packet.
  virtual void inject_syn(const FlowKey& flow, std::span<const uint8_t> syn) = 0;
  /// attach() - an accepted pcb now belongs to connection @id: callbacks
  /// (recv/sent/err, argument @id), MSS within the link and up to @peer_mss
  /// (the client's MSS option, 0 if none), Nagle off, keepalive.
  virtual void attach(PcbHandle pcb, ConnId id, uint16_t peer_mss) = 0;
  /// send_room() - bytes tcp_write() may take now (≤ 65535; 0 when the
  /// send buffer or the segment queue is full).
  virtual size_t send_room(PcbHandle pcb) = 0;
  /// write() - tcp_write() @bytes (size ≤ send_room()), a piece of the
  /// connection's oldest download frame (Conn::tx.front()). lwIP may keep
  /// pointing into the frame instead of copying it (the adapter does for
  /// pieces of kByReferenceMin bytes or more): the caller keeps the frame
  /// alive, unchanged and in place until it passes it to retire(), or
  /// until abort() or the pcb's end (on_pcb_gone) freed every segment.
  virtual WriteResult write(PcbHandle pcb, std::span<const char> bytes) = 0;
  /// retire() - @frame, every byte of which went through write(), now
  /// belongs to the pcb: kept until no segment of lwIP's points into it
  /// (the client acknowledged its bytes, or the pcb ended), then freed.
  /// Moving a std::string whose bytes are on the heap (any frame with a
  /// piece of kByReferenceMin bytes) keeps them where they are.
  virtual void retire(PcbHandle pcb, std::string frame) = 0;
  /// The smallest piece write() may pass by reference: a string that long
  /// keeps its bytes on the heap (never in the string object itself).
  static constexpr size_t kByReferenceMin = 1024;
  /// output() - tcp_output(): send what write() queued.
  virtual void output(PcbHandle pcb) = 0;
  /// recved() - tcp_recved(@n bytes): reopens the client's receive window.
  virtual void recved(PcbHandle pcb, size_t n) = 0;
  /// shutdown_tx() - tcp_shutdown(tx): FIN after the queued bytes (sends).
  virtual void shutdown_tx(PcbHandle pcb) = 0;
  /// close() - detaches the callbacks, tcp_close() (tcp_abort() if that
  /// fails). The pcb is no longer ours afterwards.
  virtual void close(PcbHandle pcb) = 0;
  /// abort() - detaches the callbacks, tcp_abort(): RST to the client.
  virtual void abort(PcbHandle pcb) = 0;
  /// emit() - writes a packet the tunnel made (RST, ICMP) to the TUN.
  virtual void emit(std::span<const uint8_t> packet) = 0;
};

/// One client connection. Plain data: Connections owns and changes it.
struct Conn {
  using Clock = std::chrono::steady_clock;
  enum class State {
    kOpening,      ///< SYN held, stream opening; no pcb
    kHandshake,    ///< SYN fed to lwIP (SYN_RCVD), not accepted yet; no pcb
    kEstablished,  ///< accepted: bytes flow; closing is per-direction flags
    kDead,         ///< the stream failed before accept: accept aborts, sweep reaps
  };
  State state = State::kOpening;
  ConnId id = 0;
  FlowKey flow;
  std::string sandbox;            ///< route key (sandbox id)
  std::vector<uint8_t> syn;       ///< held SYN (kOpening only)
  uint16_t peer_mss = 0;          ///< the client's MSS option, before lwIP clamps it
  uint32_t syn_seq = 0;           ///< the client's ISN (from its SYN)
  Clock::time_point born;         ///< when the SYN was held (handshake deadline)
  PcbHandle pcb = PcbHandle::kNone;
  std::string up_frame;           ///< client bytes of the next upload frame (not handed yet)
  size_t up_inflight = 0;         ///< client bytes handed to Upstream::send, not yet written
  bool up_dirty = false;          ///< listed for end_batch() (Connections::dirty_)
  std::deque<std::string> tx;     ///< upstream -> client, not yet in lwIP
  size_t tx_off = 0;              ///< bytes of tx.front() already written
  bool read_wanted = false;       ///< we owe the upstream a read_more()
  size_t recv_pending = 0;        ///< client bytes received, not yet written upstream (up_frame + up_inflight)
  size_t recv_owed = 0;           ///< client bytes received, not yet recved()
  bool client_fin = false;        ///< FIN from the client (tcp_recv p == NULL)
  bool remote_fin = false;        ///< FIN from the target (frame, or the stream's OK end)
  bool fin_sent = false;          ///< our FIN to the client is queued (shutdown_tx)
  bool upstream_done = false;     ///< the upstream reported on_closed
};

/// The connection table and its state machine (see conn.cc for the
/// lifecycle). Every method runs on the stack thread under the lwIP core
/// lock; none blocks or throws on the data path.
class Connections {
 public:
  using Clock = Conn::Clock;
  /// A connection still in kHandshake or kDead this long after its SYN was
  /// held is reaped (the client gave up, or its accept never came).
  static constexpr Clock::duration kHandshakeTimeout = std::chrono::seconds(20);
  /// Default deadline of a held SYN (kOpening): StackConfig::open_timeout_ms.
  static constexpr Clock::duration kDefaultOpenTimeout = std::chrono::seconds(60);

  /// @early_ack_bytes: StackConfig::early_ack_bytes (back-pressure allowance)
  /// @upstream, @ops, @counters: must outlive the table
  /// @open_timeout: how long a SYN may stay held while its stream opens
  ///   (issue 14.5: an Upstream that never answers must not hold it forever);
  ///   past it the client gets RST, the stream is aborted (counted in
  ///   StackCounters::syn_timeouts)
  /// @frame_bytes: the largest upload frame handed to Upstream::send
  ///   (kMaxFrameBytes, upstream.h; tests use smaller ones)
  Connections(size_t early_ack_bytes, Upstream& upstream, PcbOps& ops, StackCounters& counters,
              Clock::duration open_timeout = kDefaultOpenTimeout, size_t frame_bytes = kMaxFrameBytes);

  // ---- from the packet gate ----
  enum class SynAction {
    kOpened,    ///< a new connection: SYN held, Upstream::open() called
    kAbsorbed,  ///< a retransmitted SYN while opening (or dead): dropped, counted
    kFeed,      ///< a retransmitted SYN during the handshake: the caller feeds it to lwIP
  };
  /// on_syn() - the SYN gate. @pkt/@p: the SYN (Verdict::kSyn); @sandbox:
  /// the route key of p.dst; @now: for the handshake deadline.
  SynAction on_syn(std::span<const uint8_t> pkt, const Parsed& p, const std::string& sandbox,
                   Clock::time_point now);
  /// handshake_reset() - whether segment @p is the client's RST answering our
  /// SYN-ACK (RFC 9293 §3.10.7.4 / RFC 793 "reset generation": SEG.SEQ = its
  /// ISN + 1) for a connection in kHandshake. Return: its id, or 0. The
  /// caller feeds the RST to lwIP (which frees the SYN_RCVD pcb without
  /// telling anyone), then calls on_handshake_reset().
  ConnId handshake_reset(const Parsed& p) const;
  /// on_handshake_reset() - ends connection @id at once (Upstream::abort)
  /// instead of holding a gateway slot until the handshake sweep.
  void on_handshake_reset(ConnId id);

  // ---- from lwIP (the adapter's pcb callbacks) ----
  /// on_accept() - lwIP accepted @pcb for @flow. Return: false if no
  /// connection waits for it (the adapter aborts the pcb: RST).
  bool on_accept(const FlowKey& flow, PcbHandle pcb);
  /// Copies @len bytes from offset @off of received client data to @dst
  /// (the adapter: pbuf_copy_partial from lwIP's pbuf chain, so the bytes
  /// are copied once, straight into the upload frame).
  using CopyOut = std::function<void(char* dst, size_t off, size_t len)>;
  /// on_client_data() - @n client bytes (tcp_recv with data), read through
  /// @copy during the call only. They are appended to the connection's
  /// upload frame (Conn::up_frame), which is handed to Upstream::send when
  /// it holds frame_bytes, or by end_batch() when the stream has no write
  /// in flight (Conn::up_inflight == 0) or the frame is small (< 4 KiB), or
  /// by on_write_done() once at most one frame is unwritten; see conn.cc "Upload
  /// frames". Return: false if @id is
  /// unknown (the adapter then recved()s and frees them itself).
  bool on_client_data(ConnId id, size_t n, const CopyOut& copy);
  /// The same for bytes in memory (tests, callers without a pbuf).
  bool on_client_data(ConnId id, std::string_view bytes);
  /// end_batch() - hands the partial upload frames of the connections that
  /// received bytes since the last call and whose stream has no write in
  /// flight, or that are small (< 4 KiB). The Stack calls it after every batch of packets it read and
  /// after every posted event (lwIP calls tcp_recv only from tcp_input,
  /// i.e. inside those), so a small request leaves within the batch it came
  /// in, and a bulk upload leaves in frame_bytes frames.
  void end_batch();
  /// on_client_fin() - the client half-closed (tcp_recv with p == NULL).
  void on_client_fin(ConnId id);
  /// on_sent() - lwIP freed send-buffer space (tcp_sent).
  void on_sent(ConnId id);
  /// on_pcb_gone() - lwIP freed the pcb (tcp_err): @closed true for ERR_CLSD
  /// (both sides closed normally), false for a reset or abort.
  void on_pcb_gone(ConnId id, bool closed);

  // ---- from the upstream (UpstreamEvents, on the stack thread) ----
  void on_open_ok(ConnId id);
  void on_data(ConnId id, std::string bytes);
  void on_remote_fin(ConnId id);
  void on_write_done(ConnId id, size_t n);
  void on_closed(ConnId id, CloseKind kind, const std::string& reason);

  // ---- deadlines, routes, stop ----
  /// sweep() - reaps connections past kHandshakeTimeout in kHandshake or
  /// kDead (Upstream::abort unless done), and refuses (RST, Upstream::abort)
  /// held SYNs past the open timeout. Run every second.
  void sweep(Clock::time_point now);
  /// drop_unrouted() - resets every connection whose destination @served
  /// says is no longer served (RST to the client, Upstream::abort).
  void drop_unrouted(const std::function<bool(const IpAddress&)>& served);
  /// abort_all() - resets every connection (Stack::stop).
  void abort_all();

  // ---- inspection ----
  const Conn* find(ConnId id) const;
  size_t size() const { return conns_.size(); }
  std::vector<SandboxStats> sandbox_stats() const;

 private:
  Conn* get(ConnId id);
  SandboxStats& stats_of(const Conn& c);
  void erase(Conn& c);
  void maybe_erase(Conn& c);
  void abort_pcb(Conn& c);
  void refuse(Conn& c, CloseKind kind);
  void settle_recved(Conn& c);
  void request_read(Conn& c);
  void flush(Conn& c);
  void maybe_close(Conn& c);
  void hand_frame(Conn& c);

  const size_t frame_bytes_;
  const size_t early_ack_bytes_;
  const Clock::duration open_timeout_;
  Upstream& upstream_;
  PcbOps& ops_;
  StackCounters& counters_;
  std::unordered_map<ConnId, std::unique_ptr<Conn>> conns_;
  std::unordered_map<FlowKey, ConnId, FlowKeyHash> by_flow_;
  std::unordered_map<std::string, SandboxStats> sb_stats_;
  std::vector<ConnId> dirty_;  // connections with a partial upload frame to look at in end_batch()
  ConnId next_id_ = 1;
};

}  // namespace osh::stack

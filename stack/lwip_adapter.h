// The one lwIP adapter: lwIP (2.1.3 from Debian, NO_SYS=0, core locking)
// set up as one netif that answers for every served address, fed through the
// I2 input path, with on-demand listeners; it implements PcbOps for the
// connection state machine and turns pcb callbacks into its events.
// No lwIP type appears in this header (lwIP headers only in the .cc,
// lwip-notes.md "Header clashes").
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>

#include "stack/conn.h"
#include "stack/counters.h"
#include "stack/gate.h"
#include "stack/packet.h"
#include "stack/stack.h"

namespace osh::stack {

/// RAII for the lwIP core lock (LOCK_TCPIP_CORE / UNLOCK_TCPIP_CORE).
/// Every Conn and every lwIP call is under it (lwip-notes.md "Locking").
/// Only after LwipAdapter::start() (tcpip_init) ran.
class CoreLock {
 public:
  CoreLock();
  ~CoreLock();
  CoreLock(const CoreLock&) = delete;
  CoreLock& operator=(const CoreLock&) = delete;
};

/// lwip_receive_window() - the receive window lwIP offers each connection,
/// bytes: TCP_WND of the lwIP build (65535 with Debian's binary package,
/// OSH_LWIP=system; stack/lwip/lwipopts.h with OSH_LWIP=source). A client
/// without window scaling gets at most 65535. Any thread.
uint32_t lwip_receive_window() noexcept;

/// lwIP behind the packet fd. lwIP is process-global: at most one adapter
/// exists at a time (its pcb callbacks find it through a static pointer).
/// Every method but the constructor, destructor and start() is called with
/// the core lock held.
class LwipAdapter final : public PcbOps {
 public:
  /// @cfg:      link parameters (packet_fd, mtu, addresses, keepalive); kept by reference
  /// @routes:   the served addresses (output filter); kept by reference
  /// @counters: tx_packets, drop_tx_error, drop_unsupported, drop_malformed, resets
  /// @throws std::logic_error if another adapter exists.
  LwipAdapter(const StackConfig& cfg, const RouteTable& routes, StackCounters& counters);
  ~LwipAdapter() override;
  LwipAdapter(const LwipAdapter&) = delete;
  LwipAdapter& operator=(const LwipAdapter&) = delete;

  /// bind() - where pcb callbacks go (before start()).
  void bind(Connections& conns) { conns_ = &conns; }

  /// start() - starts lwIP's tcpip thread (once per process) and adds the
  /// netif. Takes the core lock itself.
  /// @throws std::runtime_error if netif_add fails.
  void start();
  /// stop() - closes the listeners, aborts every pcb lwIP still has
  /// (closing or TIME_WAIT: lwIP outlives the adapter, the frames its
  /// segments point into must not) and removes the netif (core lock held).
  void stop();

  /// feed() - a TCP segment (Verdict::kSegment, or a SYN the state machine
  /// passes on) into lwIP's tcp_input (I2 path, lwip-notes.md). A segment
  /// that would abort lwIP 2.1.3 ("insane offset", fuzz/README.md) is
  /// dropped as malformed instead. @l4_vouched: the kernel vouches for the
  /// TCP checksum (StackConfig::vnet_hdr, vnet.h): lwIP does not verify it
  /// (the netif's CHECK_TCP is off for this one segment).
  void feed(std::span<const uint8_t> pkt, const Parsed& p, bool l4_vouched = false);

  /// lwIP's pcb lists, counted (core lock held).
  PcbCounts pcb_counts() const;

  // ---- PcbOps (conn.h) ----
  bool ensure_listener(uint16_t port) override;
  void inject_syn(const FlowKey& flow, std::span<const uint8_t> syn) override;
  void attach(PcbHandle pcb, ConnId id, uint16_t peer_mss) override;
  size_t send_room(PcbHandle pcb) override;
  WriteResult write(PcbHandle pcb, std::span<const char> bytes) override;
  void retire(PcbHandle pcb, std::string frame) override;
  void output(PcbHandle pcb) override;
  void recved(PcbHandle pcb, size_t n) override;
  void shutdown_tx(PcbHandle pcb) override;
  void close(PcbHandle pcb) override;
  void abort(PcbHandle pcb) override;
  void emit(std::span<const uint8_t> packet) override;
  /// emit_iov() - writes one packet gathered from @n pieces (a pbuf chain)
  /// with one writev(); counted like emit(). With StackConfig::vnet_hdr,
  /// @vnet (VnetHeader::kSize bytes) goes in front of it (nullptr: a header
  /// of zeros, the packet's checksums are complete); @iov has room for at
  /// most kMaxIov pieces.
  void emit_iov(const iovec* iov, size_t n, const uint8_t* vnet = nullptr);
  static constexpr size_t kMaxIov = 64;

  struct Lwip;  // lwIP-typed state and callbacks (lwip_adapter.cc)

 private:
  /// The one writev() of a packet; counts tx_packets or drop_tx_error.
  void write_iov(const iovec* iov, size_t n);

  const StackConfig& cfg_;
  const RouteTable& routes_;
  StackCounters& counters_;
  Connections* conns_ = nullptr;
  std::unique_ptr<Lwip> lwip_;
};

}  // namespace osh::stack

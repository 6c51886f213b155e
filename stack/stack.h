// The userspace TCP stack: lwIP behind a TUN-like packet fd, with a SYN gate
// in front of it. No lwIP type appears in this header (design.md §2).
// Three parts under one event loop (stack.cc): the packet gate (gate.h), the
// connection state machine (conn.h) and the lwIP adapter (lwip_adapter.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/thread_sandbox.h"
#include "stack/counters.h"
#include "stack/packet.h"
#include "stack/upstream.h"
#include "stack/upstream_dispatch.h"

namespace osh::stack {

/// One address the stack serves, and the sandbox it belongs to.
struct Route {
  IpAddress addr;
  std::string sandbox;  ///< opaque key handed back in OpenRequest::sandbox
};

struct StackConfig {
  /// Packet fd: one IP packet per read()/write() (a TUN with IFF_NO_PI, or a
  /// SOCK_SEQPACKET socketpair in tests). Not owned; must be O_NONBLOCK.
  /// If it fails for good (EPOLLERR or EPOLLHUP once drained, or read()
  /// gives EBADFD, EIO or EBADF: the TUN was deleted), the stack thread stops
  /// reading it and logs one warning; the owner tears down.
  int packet_fd = -1;
  /// Whether every packet on packet_fd starts with a virtio_net_hdr (a TUN
  /// opened with IFF_VNET_HDR and TUNSETOFFLOAD TUN_F_CSUM, issue 16.5;
  /// stack/vnet.h). Then neither side computes a TCP checksum on this
  /// host-local hop: lwIP's segments go out NEEDS_CSUM with the
  /// pseudo-header sum only, and segments the kernel vouches for
  /// (NEEDS_CSUM or DATA_VALID) are not verified by lwIP. A read with
  /// gso_type other than NONE is dropped (drop_unsupported). false: plain
  /// IP packets, every checksum computed and checked.
  bool vnet_hdr = false;
  /// MTU of the link, bytes.
  uint32_t mtu = 1500;
  /// Address of the kernel side of the link (the TUN's own address), v4 and
  /// v6 (either may be unset). lwIP's netif gets an address next to it so
  /// that its routing finds the one netif.
  IpAddress peer4, peer6;
  IpAddress netif4, netif6;
  uint8_t prefix4 = 16, prefix6 = 64;
  /// Addresses answering UDP port 53 (the DNS responder); dns_accept and
  /// dns_handler below answer them.
  std::vector<IpAddress> dns_addrs;
  /// TCP keepalive towards the client (RFC 1122 §4.2.3.6), so that the
  /// connections of a client that vanished without FIN or RST are found and
  /// released: first probe after `keepalive_idle_ms` of silence, then every
  /// `keepalive_intvl_ms`, given up (RST, stream cancelled) after
  /// `keepalive_count` unanswered probes. 0 idle disables it.
  uint32_t keepalive_idle_ms = 120000, keepalive_intvl_ms = 15000, keepalive_count = 4;
  /// Early acknowledgement, bytes per connection: client bytes handed to the
  /// upstream are tcp_recved() (reopening lwIP's receive window, 512 KiB in
  /// the source build, 64 KiB in Debian's binary: lwip_receive_window())
  /// before the upstream reports them written, while at most this many
  /// acknowledged bytes are unwritten. So at most one window + early_ack_bytes
  /// per connection wait upstream (back-pressure stays bounded), and an upload
  /// is not limited to one window per gRPC write round trip. 0: acknowledge
  /// only what the upstream wrote.
  size_t early_ack_bytes = 256 * 1024;
  /// Deadline of a held SYN, ms: a connection whose stream has not opened
  /// this long after its SYN is refused with RST and its stream aborted
  /// (counted in syn_timeouts). A backstop for an Upstream that never
  /// answers: `up` sets it above the relay's own open deadline
  /// (relay::ForwardOptions::open_timeout), which normally answers first.
  uint32_t open_timeout_ms = 60000;
  /// DNS, in two steps so that no query is parsed under the lwIP core lock
  /// (issue 14.3; stack.cc "DNS off the lock"):
  ///  - dns_accept(payload): the cheap check, called on the stack thread
  ///    WITH the core lock held, for every datagram to a DNS address; it must
  ///    look at a bounded prefix only (names::DnsResponder::header_acceptable
  ///    reads the 12-byte header). false: dropped, counted in dns_dropped,
  ///    nothing copied. Unset: every datagram is accepted.
  ///  - dns_handler(payload): query payload in, reply payload out (empty: no
  ///    reply). Called on the stack thread WITHOUT the core lock, after the
  ///    batch of packets the query came in (at most 64); the replies are then
  ///    written under one short hold of the lock. Must not block and must not
  ///    call into the Stack.
  std::function<bool(std::span<const uint8_t>)> dns_accept;
  std::function<std::vector<uint8_t>(std::span<const uint8_t>)> dns_handler;
  /// Confinement of the threads that parse packets (issue 14.6,
  /// common/thread_sandbox.h): the stack reader ("osh-stack") at its start,
  /// lwIP's tcpip thread ("osh-tcpip") at tcpip_init, which happens once per
  /// process, so the first started Stack's value holds for it. Anything but
  /// kNone also moves the Upstream calls to a thread of their own
  /// (upstream_dispatch.h): they are then made without the core lock, in
  /// order. dns_handler runs on the confined reader: it must stay inside the
  /// allow-list (no files, no sockets). kNone (the default): threads as
  /// they are, Upstream called on the stack's threads under the lock.
  Confinement confine = Confinement::kNone;
};

/// lwip_checksum_ctrl() - whether this lwIP build can turn its TCP checksum
/// generation and checking off per netif (LWIP_CHECKSUM_CTRL_PER_NETIF: the
/// source build; Debian's binary package cannot), which the TUN's checksum
/// offload needs to pay (StackConfig::vnet_hdr works either way). Any thread.
bool lwip_checksum_ctrl() noexcept;

/// lwIP's TCP control blocks right now (lwIP core lock held while counted).
/// `active`: every pcb between SYN_RCVD and LAST_ACK (tcp_active_pcbs);
/// `time_wait`: tcp_tw_pcbs (lwIP keeps them 2*MSL = 120 s, lwip-notes.md);
/// `listen`: the on-demand per-port listeners (tcp_listen_pcbs);
/// `indexed`: pcbs in tcp_input's index (source build: every live pcb a
/// listener made, so active + time_wait; 0 with Debian's binary lwIP;
/// stack/lwip/pcb_index.h).
struct PcbCounts {
  uint64_t active = 0, time_wait = 0, listen = 0, indexed = 0;
};

/// Owns lwIP (one netif that answers for every sandbox address), the TUN
/// reader thread and the connection table.
///
/// Threads: start() spawns the reader thread; lwIP's own tcpip thread runs
/// its timers. All connection state is guarded by the lwIP core lock.
/// lwIP is process-global, so at most one Stack exists at a time.
class Stack {
 public:
  /// @param cfg       link parameters; cfg.packet_fd must stay open until stop()
  /// @param upstream  where connections go; must outlive the Stack
  Stack(const StackConfig& cfg, Upstream& upstream);
  ~Stack();
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;

  /// Starts lwIP (once per process) and the reader thread (and the upstream
  /// dispatch thread when confined).
  /// Throws std::runtime_error if the netif cannot be set up, or a thread
  /// cannot be confined as cfg.confine asks.
  void start();
  /// Stops the reader thread and resets every live connection (RST to the
  /// client, abort upstream). Idempotent. Thread: any but the reader.
  void stop();

  /// Replaces the set of served addresses. Connections to removed addresses
  /// are reset. Thread: any.
  void set_routes(std::vector<Route> routes);

  /// Sink for the upstream's events. Thread-safe.
  UpstreamEvents& events();

  const StackCounters& counters() const;

  /// A snapshot of the per-sandbox accounting (takes the lwIP core lock
  /// briefly). Thread: any but the stack's.
  std::vector<SandboxStats> sandbox_stats() const;

  /// Walks lwIP's pcb lists (linear; takes the core lock briefly).
  /// Thread: any but the stack's.
  PcbCounts pcb_counts() const;

  /// What the upstream dispatch thread did so far (upstream_dispatch.h
  /// UpstreamDispatch::Stats: calls queued for it, wake-ups, sends that went
  /// straight into the relay's queue without the hop); nullopt when the
  /// stack is not confined (no dispatch thread). Thread: any.
  std::optional<UpstreamDispatch::Stats> dispatch_stats() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace osh::stack

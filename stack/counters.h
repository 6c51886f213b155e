// The stack's accounting: process-wide counters and per-sandbox statistics.
// Written by the gate, the connection state machine and the lwIP adapter on
// the stack thread; read by `status` from any thread. No lwIP types.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace osh::stack {

/// Per-sandbox connection accounting (for `status`).
struct SandboxStats {
  std::string sandbox;
  uint64_t active = 0, opened = 0, bytes_up = 0, bytes_down = 0;
  uint64_t refused = 0, unreachable = 0, resets = 0;
};

/// Drop and event counters, readable from any thread.
struct StackCounters {
  std::atomic<uint64_t> rx_packets{0}, tx_packets{0};
  std::atomic<uint64_t> drop_not_sandbox{0}, drop_malformed{0}, drop_fragment{0},
      drop_unsupported{0}, drop_tx_error{0}, drop_after_close{0}, dns_queries{0},
      dns_dropped{0};  ///< DNS datagrams StackConfig::dns_accept refused (not in dns_queries)
  std::atomic<uint64_t> syn_held{0}, syn_absorbed{0}, conns_opened{0}, conns_closed{0},
      refused_rst{0}, refused_unreachable{0}, resets{0}, echo_replies{0};
  /// Held SYNs refused (RST) because their stream did not open within
  /// StackConfig::open_timeout_ms (also counted in refused_rst).
  std::atomic<uint64_t> syn_timeouts{0};
  std::atomic<uint64_t> bytes_up{0}, bytes_down{0};
  /// Download bytes lwIP took by reference, without a copy (PcbOps::write).
  std::atomic<uint64_t> bytes_down_by_reference{0};
  /// Download frames, and their bytes, that lwIP's segments may still point
  /// into (PcbOps::retire): a gauge, 0 once every pcb is gone.
  std::atomic<int64_t> frames_held{0}, frame_bytes_held{0};
  std::atomic<int64_t> active{0};
};

}  // namespace osh::stack

// The whole osh::stack::Stack (SYN gate + lwIP) driven by bytes: the engine
// of fuzz/stack_fuzz.cc and of the corpus replay in the normal build
// (tests/stack/corpus_replay_test.cc).
//
// An input is a sequence of records, each one packet the "client" (the
// kernel side of the TUN) sends:
//
//   record := ctl:u8  len:u16 (big endian)  packet[len]
//
// A record whose length runs past the end of the input takes what is left;
// a zero length sends a zero-length packet. The ctl bits (StackCtl) let a
// fuzzer get past lwIP's checksum test and its random initial sequence
// number: kFixChecksums rewrites the IPv4 and transport checksums,
// kRelativeAck adds the ISS of the stack's last SYN-ACK on that flow to the
// ACK field, kDeferUpstream leaves the upstream's answers for the next
// record (so packets race the stream opening), kToggleRoute removes (or
// restores) the second sandbox's addresses before the packet.
//
// The upstream is a fake whose behaviour depends on the destination port
// (port % 8, see UpstreamBehaviour in stack_harness.cc): refuse,
// unreachable, echo, source, reset on data, never answer, sink, close at
// once. The harness answers its calls on the harness thread, in order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "stack/stack.h"

namespace osh::fuzz {

/// Per-record control bits; see the file comment.
enum StackCtl : uint8_t {
  kFixChecksums = 0x01,
  kRelativeAck = 0x02,
  kDeferUpstream = 0x04,
  kToggleRoute = 0x08,
  kVnetPartial = 0x10,  ///< OSH_STACK_HARNESS_VNET=1 only: sent NEEDS_CSUM (stack_harness.cc)
};

/// One client packet of a stack input.
struct StackRecord {
  uint8_t ctl = 0;
  std::vector<uint8_t> packet;
};

/// split_stack_input() - the records of an input (format: file comment).
inline std::vector<StackRecord> split_stack_input(std::span<const uint8_t> in) {
  std::vector<StackRecord> out;
  size_t i = 0;
  while (i < in.size()) {
    StackRecord r;
    r.ctl = in[i++];
    size_t len = 0;
    if (i + 2 <= in.size()) {
      len = static_cast<size_t>((in[i] << 8) | in[i + 1]);
      i += 2;
    } else {
      i = in.size();
    }
    len = std::min(len, in.size() - i);
    r.packet.assign(in.begin() + static_cast<long>(i), in.begin() + static_cast<long>(i + len));
    i += len;
    out.push_back(std::move(r));
  }
  return out;
}

/// join_stack_input() - the inverse of split_stack_input() (corpus
/// generator); packets longer than 65535 bytes are cut.
inline std::vector<uint8_t> join_stack_input(const std::vector<StackRecord>& records) {
  std::vector<uint8_t> out;
  for (const auto& r : records) {
    const size_t len = std::min<size_t>(r.packet.size(), 0xffff);
    out.push_back(r.ctl);
    out.push_back(static_cast<uint8_t>(len >> 8));
    out.push_back(static_cast<uint8_t>(len));
    out.insert(out.end(), r.packet.begin(), r.packet.begin() + static_cast<long>(len));
  }
  return out;
}

/// The served addresses: sandbox "a" has 198.18.0.10, 198.18.0.11 and
/// fd00:6f73:6800::10; sandbox "b" (the one kToggleRoute removes) has
/// 198.18.255.255 and fd00:6f73:6800::ffff. DNS answers on 198.18.0.2 and
/// fd00:6f73:6800::2 (the handler echoes the query). The kernel side is
/// 198.18.0.1 / fd00:6f73:6800::1, lwIP's netif .3, MTU 1500.
class StackHarness {
 public:
  /// The one harness of this process (lwIP is process-global). Created and
  /// started on first use; stopped at exit. Throws std::runtime_error if the
  /// socketpair or the Stack cannot be set up.
  static StackHarness& instance();

  /// run() - feeds one input through the Stack and checks it. For every
  /// record: send it, wait (poll, 10 s deadline) until the stack has read
  /// it, answer the upstream calls until both sides are quiet, and check
  /// every packet the stack wrote. After the last record all routes are
  /// removed, which must leave no connection, no open upstream stream and
  /// no lwIP pcb in ESTABLISHED or CLOSE_WAIT; the remaining lwIP pcbs
  /// (SYN_RCVD, closing, TIME_WAIT) are then aborted so that inputs do not
  /// affect each other, and the routes restored.
  /// Return: "" or the first broken rule (one line). Thread: one at a time.
  std::string run(std::span<const uint8_t> input);

  /// Strict mode: run() also fails on the known findings (fuzz/README.md
  /// "Findings") that need a fix in stack/stack.cc: a packet the stack
  /// writes *to* a served address (the kernel routes it straight back into
  /// the TUN; it answers a client packet claiming a served source), and an
  /// IP fragment written by the stack (lwIP after a retransmitted SYN
  /// raised its MSS past the MTU). Without strict mode the harness also
  /// holds back the one segment known to abort lwIP (see aborts_lwip() in
  /// stack_harness.cc; counted in Totals::known_skipped); in strict mode it
  /// sends it, and the process aborts. Off by default so that fuzzing finds
  /// new problems; the named regression tests turn it on. Thread: as run().
  void set_strict(bool on);

  /// Aggregate numbers for the logs (not synchronised; read after run()).
  struct Totals {
    uint64_t inputs = 0, packets_in = 0, packets_out = 0, streams = 0, orphans_aborted = 0;
    uint64_t markers = 0;        ///< one-byte sync packets sent (each counts as drop_malformed)
    uint64_t fragments_out = 0;  ///< IP fragments the stack wrote (a known finding)
    uint64_t known_skipped = 0;  ///< packets not sent because they abort lwIP (a known finding)
  };
  const Totals& totals() const;

  /// The Stack's own counters (markers the harness sends count as
  /// rx_packets and drop_malformed). Thread: any.
  const stack::StackCounters& stack_counters() const;

  struct Impl;

 private:
  StackHarness();
  Impl* impl_;  // never freed: lives as long as lwIP
};

}  // namespace osh::fuzz

// The connection state machine (stack/conn.h) against a fake PcbOps and a
// recording Upstream: every transition of the lifecycle table (conn.cc,
// docs/ARCHITECTURE.md "Connection lifecycle"), back-pressure and the
// handshake deadline, without lwIP, threads or namespaces.
#include "stack/conn.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_packets.h"

namespace osh::stack {
namespace {

using namespace std::chrono_literals;
using testing::addr;
using testing::TcpSpec;

/// Records every PcbOps call as one line ("write 3", "shutdown_tx", ...).
class FakeOps final : public PcbOps {
 public:
  bool listener_ok = true;
  size_t room = 65535;
  WriteResult write_result = WriteResult::kOk;
  std::vector<std::string> calls;
  std::vector<std::vector<uint8_t>> emitted, injected;
  std::string written;
  std::vector<const char*> write_ptrs;  // where each write()'s bytes were
  std::vector<std::string> retired;     // frames passed to retire(), in order

  bool ensure_listener(uint16_t port) override {
    calls.push_back("listen " + std::to_string(port));
    return listener_ok;
  }
  void inject_syn(const FlowKey&, std::span<const uint8_t> syn) override {
    calls.push_back("inject_syn");
    injected.emplace_back(syn.begin(), syn.end());
  }
  void attach(PcbHandle pcb, ConnId id, uint16_t mss) override {
    calls.push_back("attach " + std::to_string(static_cast<uintptr_t>(pcb)) + " conn " + std::to_string(id) +
                    " mss " + std::to_string(mss));
  }
  size_t send_room(PcbHandle) override { return room; }
  WriteResult write(PcbHandle, std::span<const char> b) override {
    if (write_result != WriteResult::kOk) return write_result;
    calls.push_back("write " + std::to_string(b.size()));
    written.append(b.data(), b.size());
    write_ptrs.push_back(b.data());
    room -= std::min(room, b.size());
    return WriteResult::kOk;
  }
  void retire(PcbHandle, std::string frame) override { retired.push_back(std::move(frame)); }
  void output(PcbHandle) override { calls.push_back("output"); }
  void recved(PcbHandle, size_t n) override { calls.push_back("recved " + std::to_string(n)); }
  void shutdown_tx(PcbHandle) override { calls.push_back("shutdown_tx"); }
  void close(PcbHandle) override { calls.push_back("close"); }
  void abort(PcbHandle) override { calls.push_back("abort"); }
  void emit(std::span<const uint8_t> p) override {
    calls.push_back("emit");
    emitted.emplace_back(p.begin(), p.end());
  }
  std::vector<std::string> take() { return std::exchange(calls, {}); }
};

/// Records every Upstream call as one line ("open 1 sb 80", "send 1 3", ...).
class RecordingUpstream final : public Upstream {
 public:
  std::vector<std::string> calls;
  std::string sent;
  void open(const OpenRequest& r) override {
    calls.push_back("open " + std::to_string(r.id) + " " + r.sandbox + " " + std::to_string(r.port));
  }
  void send(ConnId id, std::string b) override {
    calls.push_back("send " + std::to_string(id) + " " + std::to_string(b.size()));
    sent += b;
  }
  void read_more(ConnId id) override { calls.push_back("read_more " + std::to_string(id)); }
  void close_write(ConnId id) override { calls.push_back("close_write " + std::to_string(id)); }
  void abort(ConnId id) override { calls.push_back("abort " + std::to_string(id)); }
  std::vector<std::string> take() { return std::exchange(calls, {}); }
};

using Lines = std::vector<std::string>;
constexpr PcbHandle kPcb = static_cast<PcbHandle>(7);

class ConnLifecycle : public ::testing::Test {
 protected:
  explicit ConnLifecycle(size_t early_ack = 1000) : conns(early_ack, up, ops, counters) {}

  /// A SYN from the client (MSS 1460) through the gate; returns the id.
  ConnId syn(TcpSpec spec = {}) {
    spec.mss = 1460;
    last_syn = testing::tcp(spec);
    const Parsed p = classify(last_syn);
    EXPECT_EQ(conns.on_syn(last_syn, p, "sb", t0), Connections::SynAction::kOpened);
    return static_cast<ConnId>(counters.syn_held.load());
  }
  /// SYN, open ok, accept: an established connection; call logs cleared.
  ConnId established(TcpSpec spec = {}) {
    const ConnId id = syn(spec);
    conns.on_open_ok(id);
    EXPECT_TRUE(conns.on_accept(spec_flow(spec), kPcb));
    up.take();
    ops.take();
    return id;
  }
  static FlowKey spec_flow(const TcpSpec& s) { return FlowKey{s.src, s.dst, s.sport, s.dport}; }
  Conn::State state(ConnId id) const { return conns.find(id)->state; }

  const Connections::Clock::time_point t0 = Connections::Clock::now();
  StackCounters counters;
  FakeOps ops;
  RecordingUpstream up;
  Connections conns;
  std::vector<uint8_t> last_syn;
};

class ConnNoEarlyAck : public ConnLifecycle {
 protected:
  ConnNoEarlyAck() : ConnLifecycle(0) {}
};

// ---- kOpening ----

TEST_F(ConnLifecycle, NewSynIsHeldAndOpensAStream) {
  const ConnId id = syn();
  EXPECT_EQ(up.take(), (Lines{"open 1 sb 80"}));
  EXPECT_TRUE(ops.take().empty());  // lwIP has not seen it
  EXPECT_EQ(state(id), Conn::State::kOpening);
  EXPECT_EQ(counters.syn_held, 1u);
  EXPECT_EQ(counters.active, 1);
  EXPECT_EQ(conns.find(id)->peer_mss, 1460);
}

TEST_F(ConnLifecycle, RetransmittedSynWhileOpeningIsAbsorbed) {
  syn();
  const Parsed p = classify(last_syn);
  EXPECT_EQ(conns.on_syn(last_syn, p, "sb", t0), Connections::SynAction::kAbsorbed);
  EXPECT_EQ(counters.syn_absorbed, 1u);
  EXPECT_EQ(conns.size(), 1u);
}

TEST_F(ConnLifecycle, OpenOkReleasesTheHeldSynIntoLwip) {
  const ConnId id = syn();
  conns.on_open_ok(id);
  EXPECT_EQ(ops.take(), (Lines{"listen 80", "inject_syn"}));
  EXPECT_EQ(ops.injected.at(0), last_syn);
  EXPECT_EQ(state(id), Conn::State::kHandshake);
  EXPECT_EQ(counters.conns_opened, 1u);
  conns.on_open_ok(id);  // a second one changes nothing
  EXPECT_TRUE(ops.take().empty());
}

TEST_F(ConnLifecycle, OpenOkWithoutAListenerAbortsAndIsDeadUntilSwept) {
  ops.listener_ok = false;
  const ConnId id = syn();
  up.take();
  conns.on_open_ok(id);
  EXPECT_EQ(up.take(), (Lines{"abort 1"}));
  EXPECT_EQ(state(id), Conn::State::kDead);
  const Parsed p = classify(last_syn);
  EXPECT_EQ(conns.on_syn(last_syn, p, "sb", t0), Connections::SynAction::kAbsorbed);
  conns.on_closed(id, CloseKind::kReset, "aborted");
  EXPECT_EQ(state(id), Conn::State::kDead);
  conns.sweep(t0 + 21s);
  EXPECT_EQ(conns.size(), 0u);
  EXPECT_TRUE(up.take().empty());  // done already: not aborted twice
}

TEST_F(ConnLifecycle, RefusedBeforeOpenIsARstAndErased) {
  const ConnId id = syn();
  conns.on_closed(id, CloseKind::kRefused, "refused");
  ASSERT_EQ(ops.emitted.size(), 1u);
  const Parsed r = classify(ops.emitted[0]);
  EXPECT_EQ(r.tcp_flags, kRst | kAck);
  EXPECT_EQ(r.ack, 1001u);  // RFC 9293 §3.10.7.1: ack = SYN's seq + 1
  EXPECT_EQ(r.src, addr("198.18.0.10"));
  EXPECT_EQ(conns.size(), 0u);
  EXPECT_EQ(counters.refused_rst, 1u);
  EXPECT_EQ(counters.active, 0);
  EXPECT_EQ(counters.conns_closed, 1u);
  EXPECT_EQ(conns.sandbox_stats().at(0).refused, 1u);
}

TEST_F(ConnLifecycle, UnreachableBeforeOpenIsIcmpAndErased) {
  const ConnId id = syn();
  conns.on_closed(id, CloseKind::kUnreachable, "no sandbox");
  ASSERT_EQ(ops.emitted.size(), 1u);
  const Parsed r = classify(ops.emitted[0]);
  EXPECT_EQ(r.protocol, 1);  // ICMP host unreachable
  EXPECT_EQ(ops.emitted[0][20], 3);
  EXPECT_EQ(ops.emitted[0][21], 1);
  EXPECT_EQ(counters.refused_unreachable, 1u);
  EXPECT_EQ(conns.size(), 0u);
}

TEST_F(ConnLifecycle, UnreachableOverIpv6IsIcmpv6AddressUnreachable) {
  TcpSpec s;
  s.src = addr("fd00::1");
  s.dst = addr("fd00::10");
  const ConnId id = syn(s);
  conns.on_closed(id, CloseKind::kUnreachable, "no sandbox");
  ASSERT_EQ(ops.emitted.size(), 1u);
  EXPECT_EQ(ops.emitted[0][6], 58);
  EXPECT_EQ(ops.emitted[0][40], 1);
  EXPECT_EQ(ops.emitted[0][41], 3);
}

TEST_F(ConnLifecycle, OkOrResetEndBeforeOpenIsARefusal) {
  conns.on_closed(syn(), CloseKind::kOk, "ended");
  TcpSpec other;
  other.sport = 40001;
  conns.on_closed(syn(other), CloseKind::kReset, "failed");
  EXPECT_EQ(counters.refused_rst, 2u);
  EXPECT_EQ(conns.size(), 0u);
}

// ---- kHandshake ----

TEST_F(ConnLifecycle, RetransmittedSynDuringTheHandshakeGoesToLwip) {
  const ConnId id = syn();
  conns.on_open_ok(id);
  const Parsed p = classify(last_syn);
  EXPECT_EQ(conns.on_syn(last_syn, p, "sb", t0), Connections::SynAction::kFeed);
  EXPECT_EQ(counters.syn_absorbed, 0u);
}

TEST_F(ConnLifecycle, AcceptEstablishesAndAttachesThePcb) {
  const ConnId id = syn();
  conns.on_open_ok(id);
  ops.take();
  EXPECT_TRUE(conns.on_accept(spec_flow({}), kPcb));
  EXPECT_EQ(ops.take(), (Lines{"attach 7 conn 1 mss 1460"}));
  EXPECT_EQ(state(id), Conn::State::kEstablished);
}

TEST_F(ConnLifecycle, AcceptForAnUnknownOrOpeningFlowIsRefused) {
  EXPECT_FALSE(conns.on_accept(spec_flow({}), kPcb));
  syn();  // kOpening: lwIP cannot have it yet
  EXPECT_FALSE(conns.on_accept(spec_flow({}), kPcb));
  EXPECT_EQ(counters.resets, 2u);
  EXPECT_EQ(conns.size(), 1u);
}

TEST_F(ConnLifecycle, StreamFailureDuringTheHandshakeIsDeadAndAcceptErases) {
  const ConnId id = syn();
  conns.on_open_ok(id);
  conns.on_closed(id, CloseKind::kReset, "gone");
  EXPECT_EQ(state(id), Conn::State::kDead);
  EXPECT_FALSE(conns.on_accept(spec_flow({}), kPcb));  // the adapter aborts the pcb
  EXPECT_EQ(conns.size(), 0u);
  EXPECT_EQ(counters.resets, 0u);
}

TEST_F(ConnLifecycle, StreamOkEndDuringTheHandshakeIsAFinRightAfterAccept) {
  const ConnId id = syn();
  conns.on_open_ok(id);
  conns.on_closed(id, CloseKind::kOk, "done");
  ops.take();
  EXPECT_TRUE(conns.on_accept(spec_flow({}), kPcb));
  EXPECT_EQ(ops.take(), (Lines{"attach 7 conn 1 mss 1460", "shutdown_tx"}));
  conns.on_client_fin(id);
  EXPECT_EQ(ops.take(), (Lines{"close"}));
  EXPECT_EQ(conns.size(), 0u);  // pcb released, stream over
}

TEST_F(ConnLifecycle, ClientRstAnsweringTheSynAckEndsTheStream) {
  const ConnId id = syn();
  conns.on_open_ok(id);
  up.take();
  TcpSpec rst;
  rst.flags = kRst;
  rst.seq = 1002;  // not ISN + 1: some other RST
  EXPECT_EQ(conns.handshake_reset(classify(testing::tcp(rst))), 0u);
  rst.seq = 1001;
  rst.flags = kAck;  // not a RST
  EXPECT_EQ(conns.handshake_reset(classify(testing::tcp(rst))), 0u);
  rst.flags = kRst;
  EXPECT_EQ(conns.handshake_reset(classify(testing::tcp(rst))), id);
  conns.on_handshake_reset(id);
  EXPECT_EQ(up.take(), (Lines{"abort 1"}));
  EXPECT_EQ(conns.size(), 0u);
}

TEST_F(ConnLifecycle, HandshakeIsSweptAfter20Seconds) {
  const ConnId id = syn();
  conns.on_open_ok(id);
  up.take();
  conns.sweep(t0 + 19s);
  conns.sweep(t0 + Connections::kHandshakeTimeout);
  EXPECT_EQ(conns.size(), 1u);
  conns.sweep(t0 + Connections::kHandshakeTimeout + 1ms);
  EXPECT_EQ(up.take(), (Lines{"abort 1"}));
  EXPECT_EQ(conns.size(), 0u);
  EXPECT_EQ(counters.active, 0);
}

TEST_F(ConnLifecycle, EstablishedIsNeverSwept) {
  TcpSpec other;
  other.sport = 40001;
  established(other);
  conns.sweep(t0 + 1h);
  EXPECT_EQ(conns.size(), 1u);
}

// Issue 14.5: a held SYN has a deadline. An upstream that never answers the
// open gets the client a RST at the open timeout, not a SYN held forever.
TEST_F(ConnLifecycle, AHeldSynWithoutAnAnswerIsRefusedAtTheOpenTimeout) {
  const ConnId id = syn();
  up.take();
  conns.sweep(t0 + Connections::kDefaultOpenTimeout);
  EXPECT_EQ(conns.size(), 1u);
  EXPECT_TRUE(ops.emitted.empty());
  conns.sweep(t0 + Connections::kDefaultOpenTimeout + 1ms);
  EXPECT_EQ(up.take(), (Lines{"abort " + std::to_string(id)}));
  ASSERT_EQ(ops.emitted.size(), 1u);
  const Parsed r = classify(ops.emitted[0]);
  EXPECT_TRUE(r.tcp_flags & kRst);
  EXPECT_EQ(conns.size(), 0u);
  EXPECT_EQ(counters.active, 0);
  EXPECT_EQ(counters.syn_timeouts, 1u);
  EXPECT_EQ(counters.refused_rst, 1u);
  conns.on_closed(id, CloseKind::kReset, "aborted");  // the upstream's late answer: ignored
  EXPECT_TRUE(up.take().empty());
}

TEST(ConnOpenTimeout, TheDeadlineIsConfigurable) {
  StackCounters counters;
  FakeOps ops;
  RecordingUpstream up;
  Connections conns(0, up, ops, counters, std::chrono::seconds(5));
  const auto t0 = Connections::Clock::now();
  const auto syn = testing::tcp(TcpSpec{});
  ASSERT_EQ(conns.on_syn(syn, classify(syn), "sb", t0), Connections::SynAction::kOpened);
  conns.sweep(t0 + std::chrono::seconds(5));
  EXPECT_EQ(conns.size(), 1u);
  conns.sweep(t0 + std::chrono::seconds(6));
  EXPECT_EQ(conns.size(), 0u);
  EXPECT_EQ(counters.syn_timeouts, 1u);
}

// ---- kEstablished: client -> upstream, back-pressure ----

TEST_F(ConnLifecycle, ClientBytesAreAcknowledgedWithinTheEarlyAckAllowance) {
  const ConnId id = established();
  EXPECT_TRUE(conns.on_client_data(id, std::string(600, 'a')));
  EXPECT_EQ(ops.take(), (Lines{"recved 600"}));  // 600 of 1000 allowed
  conns.end_batch();
  EXPECT_EQ(up.take(), (Lines{"send 1 600"}));
  EXPECT_TRUE(conns.on_client_data(id, std::string(600, 'b')));
  EXPECT_EQ(ops.take(), (Lines{"recved 400"}));  // the allowance is full
  EXPECT_TRUE(conns.on_client_data(id, std::string(100, 'c')));
  EXPECT_TRUE(ops.take().empty());
  conns.end_batch();
  EXPECT_EQ(up.take(), (Lines{"send 1 700"}));  // small: not held behind the write in flight
  conns.on_write_done(id, 600);  // 700 unwritten, 400 acknowledged of them
  EXPECT_EQ(ops.take(), (Lines{"recved 300"}));
  conns.on_write_done(id, 700);
  EXPECT_TRUE(ops.take().empty());  // nothing owed any more
  EXPECT_EQ(conns.find(id)->recv_owed, 0u);
  EXPECT_EQ(up.sent.size(), 1300u);
  EXPECT_EQ(counters.bytes_up, 1300u);
}

TEST_F(ConnNoEarlyAck, ClientBytesAreAcknowledgedOnlyOnceWritten) {
  const ConnId id = established();
  conns.on_client_data(id, std::string(500, 'a'));
  EXPECT_TRUE(ops.take().empty());
  conns.on_write_done(id, 200);
  EXPECT_EQ(ops.take(), (Lines{"recved 200"}));
  conns.on_write_done(id, 300);
  EXPECT_EQ(ops.take(), (Lines{"recved 300"}));
}

// ---- upload frames (conn.cc "Upload frames", issue 16.3) ----

TEST_F(ConnLifecycle, ASmallWriteAloneLeavesAtTheEndOfItsBatch) {
  const ConnId id = established();
  conns.on_client_data(id, "GET / HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(up.take().empty());  // gathered until the batch ends
  conns.end_batch();
  EXPECT_EQ(up.take(), (Lines{"send 1 18"}));
  EXPECT_EQ(up.sent, "GET / HTTP/1.1\r\n\r\n");
  conns.end_batch();
  EXPECT_TRUE(up.take().empty());  // nothing twice
}

TEST_F(ConnLifecycle, ABurstOfSegmentsBecomesFullFrames) {
  const ConnId id = established();
  std::string all;
  for (int i = 0; i < 200; ++i) {  // 200 segments of 1448 bytes in one batch
    const std::string seg(1448, static_cast<char>('a' + i % 26));
    all += seg;
    conns.on_client_data(id, seg);
  }
  EXPECT_EQ(up.take(), (Lines{"send 1 65536", "send 1 65536", "send 1 65536", "send 1 65536"}));  // as soon as full
  conns.end_batch();
  EXPECT_TRUE(up.take().empty());  // the rest (27456) waits: writes are in flight
  conns.on_write_done(id, 65536);
  conns.on_write_done(id, 65536);
  EXPECT_TRUE(up.take().empty());  // two frames still ahead: it gathers on
  conns.on_write_done(id, 65536);
  EXPECT_EQ(up.take(), (Lines{"send 1 27456"}));  // one left: queued before the relay runs dry
  EXPECT_EQ(up.sent, all);
  conns.on_write_done(id, 65536);
  conns.on_write_done(id, 27456);
  EXPECT_EQ(conns.find(id)->recv_pending, 0u);
}

TEST_F(ConnLifecycle, APartialFrameWaitsForTheWriteInFlightUnlessSmall) {
  const ConnId id = established();
  conns.on_client_data(id, std::string(5000, 'a'));
  conns.end_batch();
  EXPECT_EQ(up.take(), (Lines{"send 1 5000"}));  // nothing in flight: at once
  conns.on_client_data(id, std::string(5000, 'b'));
  conns.end_batch();
  EXPECT_TRUE(up.take().empty());  // a write in flight: it gathers
  conns.on_client_data(id, std::string(100, 'c'));
  conns.end_batch();
  EXPECT_TRUE(up.take().empty());  // the frame is not small any more
  conns.on_write_done(id, 5000);
  EXPECT_EQ(up.take(), (Lines{"send 1 5100"}));
  conns.on_client_data(id, "ping");
  conns.end_batch();
  EXPECT_EQ(up.take(), (Lines{"send 1 4"}));  // small: not held behind the write in flight
}

TEST_F(ConnLifecycle, ASegmentCrossingTheFrameEdgeIsSplitAcrossFrames) {
  const ConnId id = established();
  conns.on_client_data(id, std::string(60000, 'a'));
  conns.on_client_data(id, std::string(10000, 'b'));
  EXPECT_EQ(up.take(), (Lines{"send 1 65536"}));
  conns.on_client_fin(id);  // the partial frame goes before the half-close
  EXPECT_EQ(up.take(), (Lines{"send 1 4464", "close_write 1"}));
  EXPECT_EQ(up.sent, std::string(60000, 'a') + std::string(10000, 'b'));
}

TEST(ConnFrames, FramesNeverExceedTheConfiguredSize) {
  StackCounters counters;
  FakeOps ops;
  RecordingUpstream up;
  Connections conns(0, up, ops, counters, Connections::kDefaultOpenTimeout, 100);
  TcpSpec spec;
  spec.mss = 1460;
  const auto syn = testing::tcp(spec);
  conns.on_syn(syn, classify(syn), "sb", Connections::Clock::now());
  conns.on_open_ok(1);
  ASSERT_TRUE(conns.on_accept(FlowKey{spec.src, spec.dst, spec.sport, spec.dport}, kPcb));
  up.take();
  conns.on_client_data(1, std::string(250, 'x'));
  EXPECT_EQ(up.take(), (Lines{"send 1 100", "send 1 100"}));
  conns.end_batch();
  EXPECT_EQ(up.take(), (Lines{"send 1 50"}));
}

TEST_F(ConnLifecycle, AFrameGatheredWhenTheStreamEndsIsDropped) {
  const ConnId id = established();
  conns.on_client_data(id, std::string(5000, 'a'));
  conns.end_batch();
  conns.on_client_data(id, std::string(5000, 'b'));
  conns.end_batch();  // waits for the first write
  up.take();
  conns.on_closed(id, CloseKind::kOk, "");
  EXPECT_TRUE(up.take().empty());
  EXPECT_EQ(counters.drop_after_close, 5000u);
  EXPECT_EQ(conns.find(id)->recv_pending, 5000u);
}

TEST_F(ConnLifecycle, UnknownConnectionDataIsLeftToTheAdapter) {
  EXPECT_FALSE(conns.on_client_data(42, "x"));
}

// ---- kEstablished: upstream -> client ----

TEST_F(ConnLifecycle, AFrameGoesIntoLwipAndTheNextIsAskedForOnceTaken) {
  const ConnId id = established();
  conns.on_data(id, "hello");
  EXPECT_EQ(ops.take(), (Lines{"write 5", "output"}));
  EXPECT_EQ(up.take(), (Lines{"read_more 1"}));
  EXPECT_EQ(ops.written, "hello");
  EXPECT_EQ(counters.bytes_down, 5u);
}

TEST_F(ConnLifecycle, AFrameLargerThanTheSendRoomWaitsForSent) {
  const ConnId id = established();
  ops.room = 3;
  conns.on_data(id, "hello");
  EXPECT_EQ(ops.take(), (Lines{"write 3", "output"}));
  EXPECT_TRUE(up.take().empty());  // frame not all taken: no read_more
  conns.on_sent(id);               // room still 0
  EXPECT_TRUE(ops.take().empty());
  ops.room = 100;
  conns.on_sent(id);
  EXPECT_EQ(ops.take(), (Lines{"write 2", "output"}));
  EXPECT_EQ(up.take(), (Lines{"read_more 1"}));
  EXPECT_EQ(ops.written, "hello");
}

// lwIP may point into a frame instead of copying it (PcbOps::write): the
// frame stays where its pieces were written until it is retired, whole and
// once, after its last piece; a frame not all written is not retired.
TEST_F(ConnLifecycle, AFrameIsRetiredInPlaceOnceItsLastPieceIsWritten) {
  const ConnId id = established();
  std::string frame(4000, '\0');
  for (size_t i = 0; i < frame.size(); ++i) frame[i] = static_cast<char>(i * 7);
  const std::string copy = frame;
  ops.room = 1500;
  conns.on_data(id, std::move(frame));
  conns.on_data(id, std::string(3000, 'n'));
  EXPECT_TRUE(ops.retired.empty());
  ops.room = 1500;
  conns.on_sent(id);
  EXPECT_TRUE(ops.retired.empty());
  ops.room = 1500;
  conns.on_sent(id);  // the last 1000 bytes, then 500 of the next frame
  ASSERT_EQ(ops.retired.size(), 1u);
  EXPECT_EQ(ops.retired[0], copy);
  ASSERT_EQ(ops.write_ptrs.size(), 4u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(ops.write_ptrs[i], ops.retired[0].data() + 1500 * i);
  ops.room = 100000;
  conns.on_sent(id);
  ASSERT_EQ(ops.retired.size(), 2u);
  EXPECT_EQ(ops.retired[1], std::string(3000, 'n'));
  EXPECT_EQ(ops.written, copy + std::string(3000, 'n'));
}

TEST_F(ConnLifecycle, AFullSendQueueKeepsTheFrame) {
  const ConnId id = established();
  ops.write_result = WriteResult::kFull;
  conns.on_data(id, "abc");
  EXPECT_TRUE(ops.take().empty());
  EXPECT_TRUE(up.take().empty());
  ops.write_result = WriteResult::kOk;
  conns.on_sent(id);
  EXPECT_EQ(ops.take(), (Lines{"write 3", "output"}));
  EXPECT_EQ(up.take(), (Lines{"read_more 1"}));
}

TEST_F(ConnLifecycle, AnEmptyFrameAsksForTheNextAtOnce) {
  const ConnId id = established();
  conns.on_data(id, "");
  EXPECT_EQ(up.take(), (Lines{"read_more 1"}));
  EXPECT_TRUE(ops.take().empty());
}

TEST_F(ConnLifecycle, FramesBeforeAcceptWaitAndFlushAtAccept) {
  const ConnId id = syn();
  conns.on_open_ok(id);
  conns.on_data(id, "early");
  ops.take();
  EXPECT_TRUE(conns.on_accept(spec_flow({}), kPcb));
  EXPECT_EQ(ops.take(), (Lines{"attach 7 conn 1 mss 1460", "write 5", "output"}));
}

// ---- kEstablished: half-close and the end ----

TEST_F(ConnLifecycle, RemoteFinIsSentAfterEveryQueuedByte) {
  const ConnId id = established();
  ops.room = 2;
  conns.on_data(id, "abcd");
  conns.on_remote_fin(id);
  EXPECT_EQ(ops.take(), (Lines{"write 2", "output"}));  // no FIN yet
  ops.room = 10;
  conns.on_sent(id);
  EXPECT_EQ(ops.take(), (Lines{"write 2", "shutdown_tx"}));  // shutdown outputs itself
  EXPECT_TRUE(conns.find(id)->fin_sent);
}

TEST_F(ConnLifecycle, ClientFinHalfClosesUpstreamAndBytesStillFlowDown) {
  const ConnId id = established();
  conns.on_client_fin(id);
  EXPECT_EQ(up.take(), (Lines{"close_write 1"}));
  EXPECT_TRUE(ops.take().empty());  // our direction is still open
  conns.on_data(id, "reply");
  EXPECT_EQ(ops.take(), (Lines{"write 5", "output"}));
}

TEST_F(ConnLifecycle, BothFinsCloseThePcbAndTheStreamEndErases) {
  const ConnId id = established();
  conns.on_remote_fin(id);
  conns.on_client_fin(id);
  EXPECT_EQ(ops.take(), (Lines{"shutdown_tx", "close"}));
  EXPECT_EQ(conns.size(), 1u);  // the stream has not reported its end
  conns.on_closed(id, CloseKind::kOk, "");
  EXPECT_EQ(conns.size(), 0u);
  EXPECT_EQ(counters.conns_closed, 1u);
  EXPECT_EQ(counters.active, 0);
}

TEST_F(ConnLifecycle, BothFinsWaitForUnwrittenClientBytes) {
  const ConnId id = established();
  conns.on_client_data(id, "tail");
  conns.on_client_fin(id);
  conns.on_remote_fin(id);
  ops.take();
  EXPECT_EQ(conns.size(), 1u);
  conns.on_write_done(id, 4);
  EXPECT_EQ(ops.take(), (Lines{"close"}));
}

TEST_F(ConnLifecycle, StreamOkEndIsAFinAndLwipsCloseErases) {
  const ConnId id = established();
  conns.on_closed(id, CloseKind::kOk, "");
  EXPECT_EQ(ops.take(), (Lines{"shutdown_tx"}));
  EXPECT_EQ(conns.size(), 1u);
  conns.on_pcb_gone(id, /*closed=*/true);
  EXPECT_EQ(conns.size(), 0u);
  EXPECT_TRUE(up.take().empty());
}

TEST_F(ConnLifecycle, StreamOkEndAfterTheClientFinClosesAndErasesOnce) {
  const ConnId id = established();
  conns.on_client_fin(id);
  up.take();
  conns.on_closed(id, CloseKind::kOk, "");
  EXPECT_EQ(ops.take(), (Lines{"shutdown_tx", "close"}));
  EXPECT_EQ(conns.size(), 0u);
  EXPECT_EQ(counters.active, 0);
  EXPECT_EQ(counters.conns_closed, 1u);
}

TEST_F(ConnLifecycle, StreamErrorResetsTheClient) {
  const ConnId id = established();
  conns.on_closed(id, CloseKind::kReset, "boom");
  EXPECT_EQ(ops.take(), (Lines{"abort"}));
  EXPECT_EQ(counters.resets, 1u);
  EXPECT_EQ(conns.sandbox_stats().at(0).resets, 1u);
  EXPECT_EQ(conns.size(), 0u);
}

TEST_F(ConnLifecycle, ClientResetAbortsTheStreamAndItsEndErases) {
  const ConnId id = established();
  conns.on_pcb_gone(id, /*closed=*/false);
  EXPECT_EQ(up.take(), (Lines{"abort 1"}));
  EXPECT_EQ(conns.size(), 1u);
  conns.on_closed(id, CloseKind::kReset, "aborted");
  EXPECT_EQ(conns.size(), 0u);
  EXPECT_TRUE(ops.take().empty());  // the pcb was lwIP's to free
}

// A client that reset its connection and at once connects again from the
// same port (same 4-tuple) while the old stream still ends: the new SYN is a
// new connection with a stream of its own, not a reset; the old stream's end
// erases only the old one.
TEST_F(ConnLifecycle, ANewSynOnTheTupleOfAResetConnectionOpensANewOne) {
  const ConnId old_id = established();
  conns.on_pcb_gone(old_id, /*closed=*/false);
  EXPECT_EQ(up.take(), (Lines{"abort 1"}));
  const ConnId new_id = syn();
  EXPECT_NE(new_id, old_id);
  EXPECT_EQ(up.take(), (Lines{"open 2 sb 80"}));
  conns.on_open_ok(new_id);
  EXPECT_TRUE(conns.on_accept(spec_flow({}), kPcb));
  EXPECT_EQ(state(new_id), Conn::State::kEstablished);
  EXPECT_EQ(counters.resets, 0u);
  conns.on_closed(old_id, CloseKind::kReset, "aborted");  // the old stream's end
  EXPECT_EQ(conns.find(old_id), nullptr);
  ASSERT_NE(conns.find(new_id), nullptr);
  EXPECT_EQ(counters.active, 1);
  EXPECT_EQ(conns.size(), 1u);
  // The flow is still the new connection's: a SYN on it goes to its pcb.
  const Parsed p = classify(last_syn);
  EXPECT_EQ(conns.on_syn(last_syn, p, "sb", t0), Connections::SynAction::kFeed);
}

// A SYN on the tuple of a connection whose pcb lwIP still has goes to lwIP
// (it answers with an ACK; RFC 9293 §3.10.7.4), never a second stream.
TEST_F(ConnLifecycle, ASynOnTheTupleOfALiveConnectionGoesToLwip) {
  established();
  const Parsed p = classify(last_syn);
  EXPECT_EQ(conns.on_syn(last_syn, p, "sb", t0), Connections::SynAction::kFeed);
  EXPECT_TRUE(up.take().empty());
}

TEST_F(ConnLifecycle, ClientBytesAfterTheStreamEndedAreDroppedButAcknowledged) {
  const ConnId id = established();
  conns.on_closed(id, CloseKind::kOk, "");
  up.take();
  ops.take();
  EXPECT_TRUE(conns.on_client_data(id, "late"));
  EXPECT_EQ(ops.take(), (Lines{"recved 4"}));
  EXPECT_TRUE(up.take().empty());
  EXPECT_EQ(counters.drop_after_close, 4u);
}

TEST_F(ConnLifecycle, LateEventsForAnErasedConnectionAreIgnored) {
  const ConnId id = established();
  conns.on_closed(id, CloseKind::kReset, "");
  ops.take();
  conns.on_open_ok(id);
  conns.on_data(id, "x");
  conns.on_remote_fin(id);
  conns.on_write_done(id, 1);
  conns.on_closed(id, CloseKind::kOk, "");
  conns.on_client_fin(id);
  conns.on_sent(id);
  conns.on_pcb_gone(id, false);
  EXPECT_TRUE(ops.take().empty());
  EXPECT_TRUE(up.take().empty());
  EXPECT_EQ(counters.conns_closed, 1u);
}

// ---- routes and stop ----

TEST_F(ConnLifecycle, RemovedRoutesResetTheirConnections) {
  const ConnId kept = established();
  TcpSpec other;
  other.dst = addr("198.18.0.11");
  const ConnId gone = established(other);
  conns.drop_unrouted([](const IpAddress& a) { return a == addr("198.18.0.10"); });
  EXPECT_EQ(ops.take(), (Lines{"abort"}));
  EXPECT_EQ(up.take(), (Lines{"abort " + std::to_string(gone)}));
  EXPECT_NE(conns.find(kept), nullptr);
  EXPECT_EQ(conns.find(gone), nullptr);
}

TEST_F(ConnLifecycle, AbortAllResetsEveryConnection) {
  established();
  TcpSpec other;
  other.sport = 40001;
  syn(other);
  up.take();
  conns.abort_all();
  EXPECT_EQ(ops.take(), (Lines{"abort"}));  // only the established one has a pcb
  EXPECT_EQ(up.take().size(), 2u);
  EXPECT_EQ(conns.size(), 0u);
}

TEST_F(ConnLifecycle, PerSandboxStatsFollowTheConnection) {
  const ConnId id = established();
  conns.on_client_data(id, "up");
  conns.on_data(id, "down!");
  const auto st = conns.sandbox_stats();
  ASSERT_EQ(st.size(), 1u);
  EXPECT_EQ(st[0].sandbox, "sb");
  EXPECT_EQ(st[0].active, 1u);
  EXPECT_EQ(st[0].opened, 1u);
  EXPECT_EQ(st[0].bytes_up, 2u);
  EXPECT_EQ(st[0].bytes_down, 5u);
  conns.on_closed(id, CloseKind::kReset, "");
  EXPECT_EQ(conns.sandbox_stats()[0].active, 0u);
}

}  // namespace
}  // namespace osh::stack

// libFuzzer harness for the whole stack: osh::stack::Stack (classifier, SYN
// gate, connection table) with Debian's lwIP behind it, fed through a
// socketpair by fuzz/stack_harness.cc, with a fake upstream that accepts,
// refuses or fails by destination port.
//
// Each input is a sequence of client packets (format: fuzz/stack_harness.h).
// Besides crashes and sanitizer reports, it fails on: a hang (a packet not
// read within 10 s), a ping-pong between stack and upstream that does not
// settle, any packet the stack writes that is malformed, has a bad checksum
// or does not come from a served address, and anything left after every
// route is removed at the end of the input (connections, open upstream
// streams, lwIP pcbs in ESTABLISHED or CLOSE_WAIT). Strict by default: the
// findings it made are fixed; OSH_FUZZ_STRICT=0 tolerates them again.
//
// Build and run: see fuzz/README.md.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fuzz/stack_harness.h"

namespace {
// OSH_FUZZ_VERBOSE=1: one line of counters per input (for looking at seeds).
void print_counters(const osh::fuzz::StackHarness& h) {
  const auto& c = h.stack_counters();
  const auto& t = h.totals();
  std::string line = "stack_fuzz:";
  auto add = [&line](const char* name, uint64_t v) { line += std::string(" ") + name + "=" + std::to_string(v); };
  add("in", t.packets_in);
  add("out", t.packets_out);
  add("streams", t.streams);
  add("orphans", t.orphans_aborted);
  add("fragments_out", t.fragments_out);
  add("known_skipped", t.known_skipped);
  add("syn_held", c.syn_held);
  add("syn_absorbed", c.syn_absorbed);
  add("opened", c.conns_opened);
  add("closed", c.conns_closed);
  add("refused_rst", c.refused_rst);
  add("refused_unreachable", c.refused_unreachable);
  add("resets", c.resets);
  add("echo_replies", c.echo_replies);
  add("dns_queries", c.dns_queries);
  add("bytes_up", c.bytes_up);
  add("bytes_down", c.bytes_down);
  add("drop_not_sandbox", c.drop_not_sandbox);
  add("drop_malformed", c.drop_malformed);
  add("drop_fragment", c.drop_fragment);
  add("drop_unsupported", c.drop_unsupported);
  add("drop_tx_error", c.drop_tx_error);
  std::fprintf(stderr, "%s\n", line.c_str());
}
bool g_verbose = false;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* strict = std::getenv("OSH_FUZZ_STRICT");
  if (strict && std::strcmp(strict, "0") == 0) osh::fuzz::StackHarness::instance().set_strict(false);
  const char* verbose = std::getenv("OSH_FUZZ_VERBOSE");
  g_verbose = verbose && std::strcmp(verbose, "1") == 0;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string err = osh::fuzz::StackHarness::instance().run({data, size});
  if (g_verbose) print_counters(osh::fuzz::StackHarness::instance());
  if (!err.empty()) {
    std::fprintf(stderr, "stack_fuzz: property violated: %s\n", err.c_str());
    std::abort();
  }
  return 0;
}

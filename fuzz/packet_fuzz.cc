// libFuzzer harness for stack/packet: classify() and the packets the tunnel
// builds from what it accepts (make_rst_for_syn, make_unreachable,
// make_echo_reply, make_udp_reply).
//
// Each input is one IP packet as read from the TUN. Besides "no crash, no
// sanitizer report" (every out-of-bounds read is an ASan report), it checks
// the rules of fuzz/packet_check.h: lengths inside the buffer and
// consistent, trailing bytes ignored, every crafted reply re-classifies as
// what it is with swapped addresses and valid checksums. A violation aborts,
// so libFuzzer keeps the input.
//
// Build and run: see fuzz/README.md.
#include <cstdio>
#include <cstdlib>

#include "fuzz/packet_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string err = osh::fuzz::check_packet({data, size});
  if (!err.empty()) {
    std::fprintf(stderr, "packet_fuzz: property violated: %s\n", err.c_str());
    std::abort();
  }
  return 0;
}

// libFuzzer harness for what the relay decodes from a hostile gateway: the
// response x-osh-tunnel-ext value (common/tunnel_ext.h) and a ForwardTcp
// frame in both generations' message types. Input format and rules:
// fuzz/frame_check.h. A broken rule aborts.
//
// Build and run: see fuzz/README.md.
#include "fuzz/abort_on.h"
#include "fuzz/frame_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  osh::fuzz::abort_on("frame_fuzz", osh::fuzz::check_frame({data, size}));
  return 0;
}

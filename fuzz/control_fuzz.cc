// libFuzzer harness for the control socket's request handling:
// cli::answer_control_request() (cli/control_request.cc), the parse and
// dispatch behind up's handle_control(). Each input is one request line;
// rules: fuzz/control_check.h. A broken rule aborts.
//
// Build and run: see fuzz/README.md.
#include "fuzz/abort_on.h"
#include "fuzz/control_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  osh::fuzz::abort_on("control_fuzz", osh::fuzz::check_control({data, size}));
  return 0;
}

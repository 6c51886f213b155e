// libFuzzer harness for the control socket's request handling:
// cli::answer_control_request() (cli/control_request.cc), the parse and
// dispatch behind up's handle_control(). Each input is one request line;
// rules: fuzz/control_check.h. A broken rule aborts.
//
// Build and run: see fuzz/README.md.
#include <cstdio>
#include <cstdlib>

#include "fuzz/control_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string err = osh::fuzz::check_control({data, size});
  if (!err.empty()) {
    std::fprintf(stderr, "control_fuzz: property violated: %s\n", err.c_str());
    std::abort();
  }
  return 0;
}

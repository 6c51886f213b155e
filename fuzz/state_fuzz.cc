// libFuzzer harness for state.json: cli::RunState::load() and save()
// (cli/state.cc). Each input is the file's bytes; format and rules:
// fuzz/state_check.h. A broken rule aborts, so libFuzzer keeps the input.
//
// Build and run: see fuzz/README.md.
#include <spdlog/spdlog.h>

#include "fuzz/abort_on.h"
#include "fuzz/state_check.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // load() warns about every corrupt file
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static osh::fuzz::StateHarness harness;
  osh::fuzz::abort_on("state_fuzz", harness.run({data, size}));
  return 0;
}

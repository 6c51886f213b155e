// libFuzzer harness for state.json: cli::RunState::load() and save()
// (cli/state.cc). Each input is the file's bytes; format and rules:
// fuzz/state_check.h. A broken rule aborts, so libFuzzer keeps the input.
//
// Build and run: see fuzz/README.md.
#include <cstdio>
#include <cstdlib>

#include <spdlog/spdlog.h>

#include "fuzz/state_check.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // load() warns about every corrupt file
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static osh::fuzz::StateHarness harness;
  const std::string err = harness.run({data, size});
  if (!err.empty()) {
    std::fprintf(stderr, "state_fuzz: property violated: %s\n", err.c_str());
    std::abort();
  }
  return 0;
}

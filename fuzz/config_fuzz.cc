// libFuzzer harness for the gateway configuration files the tunnel reads
// (protocol §4.1-§4.3): metadata.json, oidc_token.json, active_gateway and
// the mTLS bundle, resolved by cli/gateway_config.cc (built into the harness
// with coverage), together with relay/endpoint.cc (the endpoint URL parser).
//
// Each input is a config tree (format and rules: fuzz/config_harness.h),
// written to a private temp directory and resolved. A broken rule aborts.
// OSH_FUZZ_STRICT=1 also requires one-line ConfigError messages.
//
// Build and run: see fuzz/README.md.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "fuzz/config_harness.h"

namespace {
bool g_strict = false;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* s = std::getenv("OSH_FUZZ_STRICT");
  g_strict = s && std::strcmp(s, "1") == 0;
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static osh::fuzz::ConfigHarness harness;
  const std::string err = harness.run({data, size}, g_strict);
  if (!err.empty()) {
    std::fprintf(stderr, "config_fuzz: property violated: %s\n", err.c_str());
    std::abort();
  }
  return 0;
}

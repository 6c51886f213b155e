// libFuzzer harness for names::SshConfigInclude::with_block() (names/ssh_config.cc) and HostsFile::strip().
//
// Each input is a selector byte, then an existing ssh config (format and rules: fuzz/text_edit_check.h).
// Besides "no crash, no sanitizer report", a broken rule aborts, so
// libFuzzer keeps the input.
//
// Build and run: see fuzz/README.md.
#include <cstdio>
#include <cstdlib>

#include "fuzz/text_edit_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string err = osh::fuzz::check_ssh_config({data, size});
  if (!err.empty()) {
    std::fprintf(stderr, "ssh_config_fuzz: property violated: %s\n", err.c_str());
    std::abort();
  }
  return 0;
}

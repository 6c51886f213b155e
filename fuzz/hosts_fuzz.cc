// libFuzzer harness for names::HostsFile::render()/strip() (names/hosts_file.cc).
//
// Each input is a selector byte, then an existing hosts file (format and rules: fuzz/text_edit_check.h).
// Besides "no crash, no sanitizer report", a broken rule aborts, so
// libFuzzer keeps the input.
//
// Build and run: see fuzz/README.md.
#include <cstdio>
#include <cstdlib>

#include "fuzz/text_edit_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string err = osh::fuzz::check_hosts({data, size});
  if (!err.empty()) {
    std::fprintf(stderr, "hosts_fuzz: property violated: %s\n", err.c_str());
    std::abort();
  }
  return 0;
}

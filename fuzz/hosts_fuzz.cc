// libFuzzer harness for names::HostsFile::render()/strip() (names/hosts_file.cc).
//
// Each input is a selector byte, then an existing hosts file (format and rules: fuzz/text_edit_check.h).
// Besides "no crash, no sanitizer report", a broken rule aborts, so
// libFuzzer keeps the input.
//
// Build and run: see fuzz/README.md.
#include "fuzz/abort_on.h"
#include "fuzz/text_edit_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  osh::fuzz::abort_on("hosts_fuzz", osh::fuzz::check_hosts({data, size}));
  return 0;
}

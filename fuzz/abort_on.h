// The end of a harness whose rules return "" or the broken rule.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

namespace osh::fuzz {

/// abort_on() - prints "<harness>: property violated: <err>" and aborts
/// (so libFuzzer keeps the input) unless @err is empty.
inline void abort_on(const char* harness, const std::string& err) {
  if (err.empty()) return;
  std::fprintf(stderr, "%s: property violated: %s\n", harness, err.c_str());
  std::abort();
}

}  // namespace osh::fuzz

// Includes ldns for C++ code. ldns/common.h defines the macros `bool`,
// `true` and `false` unless __bool_true_false_are_defined is set, which
// breaks the C++ standard library headers that follow it (e.g. <optional>'s
// `bool(x) <=> false`). <stdbool.h> sets that macro (GCC and Clang, C++
// mode) and defines nothing else that matters to C++.
#pragma once

#include <stdbool.h>  // NOLINT(modernize-deprecated-headers): see above

#include <ldns/ldns.h>

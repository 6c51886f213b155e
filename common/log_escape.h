// Values that come from files or the network (sandbox names, gateway error
// messages, config values, hosts-file lines) are escaped before they reach a
// log line (issue 14.7): a value with a newline, an ANSI escape or a bidi
// override must not forge a log line, recolour the terminal or reorder what
// the reader sees, and a huge value must not flood the log.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace osh {

/// The default cap of log_escape(), in bytes of output.
inline constexpr size_t kLogEscapeMax = 256;

/// log_escape() - @s as it may appear in a log line.
/// @s:         any bytes (need not be UTF-8)
/// @max_bytes: cap of the result's length in bytes, at least 8; a longer
///             result is cut at a character boundary and ends in "..."
/// Kept as they are: printable ASCII and well-formed UTF-8 of printable
/// characters. Written as \xNN (one per byte): C0 controls, DEL, C1 controls
/// (U+0080-U+009F), bidi controls (U+200E/F, U+202A-U+202E, U+2066-U+2069),
/// U+2028/U+2029, and every byte of an ill-formed UTF-8 sequence (overlong,
/// surrogate, > U+10FFFF, truncated). A backslash becomes "\\" so that the
/// result reads back unambiguously.
/// Return: the escaped text (pure, thread-safe, never throws but bad_alloc).
std::string log_escape(std::string_view s, size_t max_bytes = kLogEscapeMax);

}  // namespace osh

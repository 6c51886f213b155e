// log_escape(): a UTF-8 decoder that keeps what is printable and writes the
// rest as \xNN (see log_escape.h for the rules).
#include "common/log_escape.h"

#include <cstdint>

namespace osh {
namespace {

// Length of the well-formed UTF-8 sequence at s[i] (Unicode 15, table 3-7),
// 0 if ill-formed; *cp gets the code point.
size_t utf8_sequence(std::string_view s, size_t i, uint32_t* cp) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  const uint8_t c = b(0);
  size_t n;
  uint32_t v;
  if (c >= 0xc2 && c <= 0xdf) n = 2, v = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef) n = 3, v = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4) n = 4, v = c & 0x07;
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xc0) != 0x80) return 0;
    v = (v << 6) | (b(k) & 0x3f);
  }
  if ((n == 3 && v < 0x800) || (n == 4 && (v < 0x10000 || v > 0x10ffff))) return 0;  // overlong, too big
  if (v >= 0xd800 && v <= 0xdfff) return 0;                                           // surrogate
  *cp = v;
  return n;
}

bool unsafe_code_point(uint32_t v) {
  return (v >= 0x80 && v <= 0x9f) || v == 0x200e || v == 0x200f || (v >= 0x202a && v <= 0x202e) ||
         (v >= 0x2066 && v <= 0x2069) || v == 0x2028 || v == 0x2029;
}

void append_hex(std::string* out, std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char c : bytes) {
    out->append("\\x");
    out->push_back(kHex[c >> 4]);
    out->push_back(kHex[c & 15]);
  }
}

}  // namespace

std::string log_escape(std::string_view s, size_t max_bytes) {
  if (max_bytes < 8) max_bytes = 8;
  const size_t limit = max_bytes - 3;  // room for "..."
  std::string out;
  size_t last_fit = 0;  // length at the last piece boundary that leaves room for "..."
  out.reserve(s.size() < max_bytes ? s.size() : max_bytes);
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    std::string piece;
    size_t used = 1;
    uint32_t cp = 0;
    if (c == '\\') {
      piece = "\\\\";
    } else if (c >= 0x20 && c < 0x7f) {
      piece.assign(1, static_cast<char>(c));
    } else if (c >= 0x80 && (used = utf8_sequence(s, i, &cp)) != 0 && !unsafe_code_point(cp)) {
      piece.assign(s.substr(i, used));
    } else {
      if (used == 0) used = 1;  // ill-formed: one byte at a time
      append_hex(&piece, s.substr(i, used));
    }
    out += piece;
    i += used;
    if (out.size() > max_bytes) {  // does not fit whole: cut at the last boundary with room for "..."
      out.resize(last_fit);
      out.append("...");
      return out;
    }
    if (out.size() <= limit) last_fit = out.size();
  }
  return out;
}

}  // namespace osh

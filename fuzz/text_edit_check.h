// The rules of the managed-block editors, shared by fuzz/hosts_fuzz.cc,
// fuzz/ssh_config_fuzz.cc and their corpus replay in tests/names
// (names_corpus_test.cc): names::HostsFile::render()/strip() (the hosts
// file) and names::SshConfigInclude::with_block() (the user's ssh config).
//
// Inputs (any bytes):
//   hosts:      selector:u8  file-text   entries = kHostsEntrySets[selector % 4]
//   ssh config: selector:u8  file-text   include = kIncludePaths[selector % 2]
//
// A "marker line" below is a line (split after each '\n', the terminator
// kept) that equals a marker once trailing spaces, tabs, '\r' and '\n' are
// removed; this file finds them on its own, not through hosts_file.cc.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "names/hosts_file.h"
#include "names/ssh_config.h"

namespace osh::fuzz {

/// The entry sets a hosts input selects from (all valid: render() must not
/// throw). The empty set writes an empty block.
inline const std::vector<names::HostEntry> kHostsEntrySets[4] = {
    {},
    {{"198.18.0.2", {"sbx-1.local"}}},
    {{"198.18.0.2", {"sbx-1.local"}}, {"fd00:6f73:6800::2", {"sbx-1.local", "sbx-1"}}},
    {{"198.18.0.3", {"other.local"}}},
};

/// The include paths an ssh-config input selects from.
inline const char* const kIncludePaths[2] = {"/var/lib/openshell-tunnel/ssh_config",
                                             "/run/osh state/ssh_config"};

namespace detail {

inline std::vector<std::string_view> lines_of(std::string_view t) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos < t.size()) {
    const size_t nl = t.find('\n', pos);
    const size_t end = nl == std::string_view::npos ? t.size() : nl + 1;
    out.push_back(t.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

inline bool is_marker(std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r' || line.back() == ' ' ||
                           line.back() == '\t'))
    line.remove_suffix(1);
  return line == names::HostsFile::kBeginMarker || line == names::HostsFile::kEndMarker;
}

/// The text before the first marker line and after the last one (the
/// whole text twice when it has none).
inline std::pair<std::string, std::string> outside_markers(std::string_view t) {
  const auto lines = lines_of(t);
  size_t first = lines.size(), last = lines.size();
  for (size_t i = 0; i < lines.size(); ++i)
    if (is_marker(lines[i])) {
      if (first == lines.size()) first = i;
      last = i;
    }
  if (first == lines.size()) return {std::string(t), std::string(t)};
  std::string head, tail;
  for (size_t i = 0; i < first; ++i) head += lines[i];
  for (size_t i = last + 1; i < lines.size(); ++i) tail += lines[i];
  return {head, tail};
}

/// Whether the lines of @sub are a subsequence of the lines of @full
/// (byte for byte, in order).
inline bool lines_subsequence(std::string_view sub, std::string_view full) {
  const auto s = lines_of(sub), f = lines_of(full);
  size_t j = 0;
  for (const auto& l : f)
    if (j < s.size() && s[j] == l) ++j;
  return j == s.size();
}

/// How often @needle (whole lines) starts a line of @hay.
inline size_t count_lines(std::string_view hay, std::string_view needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string_view::npos; p = hay.find(needle, p + 1))
    if (p == 0 || hay[p - 1] == '\n') ++n;
  return n;
}

inline bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
inline bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

/// Rules of strip() alone; "" or the broken rule.
inline std::string check_strip(std::string_view x) {
  using names::HostsFile;
  const std::string s = HostsFile::strip(x);
  if (HostsFile::strip(s) != s) return "strip is not idempotent";
  if (!lines_subsequence(s, x)) return "strip changed or reordered a line it kept";
  const auto [head, tail] = outside_markers(x);
  if (head == x) {
    if (s != x) return "strip changed a text without marker lines";
    return "";
  }
  if (!starts_with(s, head)) return "strip lost a line before the first marker line";
  if (!ends_with(s, tail)) return "strip lost a line after the last marker line";
  return "";
}

}  // namespace detail

/// check_hosts() - the rules of the hosts-file editor for one input:
///   - render() does not throw for valid entries; strip() never throws;
///   - the rendered text has the block exactly once, and keeps the text
///     before the first marker line; strip() is idempotent, keeps lines byte
///     for byte and in order, and keeps everything outside the markers;
///   - render is idempotent, and replacing another block gives the same
///     text as rendering directly;
///   - strip(render(x)) == strip(x) when x has a block; for x without one
///     it is x itself (x + "\n" if x did not end its last line).
/// Return: "" or the first broken rule (one line).
inline std::string check_hosts(std::span<const uint8_t> input) {
  using names::HostsFile;
  using namespace detail;
  const auto& entries = kHostsEntrySets[input.empty() ? 0 : input[0] % 4];
  const auto& other = kHostsEntrySets[input.empty() ? 1 : (input[0] + 1) % 4];
  const std::string_view x = input.empty() ? std::string_view()
                                           : std::string_view(reinterpret_cast<const char*>(input.data()) + 1,
                                                              input.size() - 1);
  try {
    if (std::string e = check_strip(x); !e.empty()) return e;
    const std::string block = HostsFile::render("", entries);
    const std::string r = HostsFile::render(x, entries);
    if (count_lines(r, block) != 1) return "rendered text does not hold the block exactly once";
    if (!starts_with(r, outside_markers(x).first)) return "render lost a line before the first marker";
    if (HostsFile::render(r, entries) != r) return "render is not idempotent";
    if (HostsFile::render(HostsFile::render(x, other), entries) != r)
      return "replacing another block differs from rendering directly";
    const std::string s = HostsFile::strip(x);
    const std::string back = HostsFile::strip(r);
    if (s == x) {
      const std::string want = (x.empty() || x.back() == '\n') ? std::string(x) : std::string(x) + "\n";
      if (back != want) return "strip(render(x)) is not x for a text without a block";
    } else if (back != s) {
      return "strip(render(x)) differs from strip(x)";
    }
  } catch (const std::exception& e) {
    return std::string("an exception escaped: ") + e.what();
  }
  return "";
}

/// check_ssh_config() - the rules of the ssh-config Include editor:
///   - with_block() puts exactly one block, holding the quoted Include of
///     the include file, at the very top, followed by strip(x);
///   - it is idempotent; strip() of its result is strip(x) (x itself when x
///     had no block), with strip()'s rules (check_hosts) on x;
///   - nothing throws.
/// Return: "" or the first broken rule (one line).
inline std::string check_ssh_config(std::span<const uint8_t> input) {
  using names::HostsFile;
  using names::SshConfigInclude;
  using namespace detail;
  const std::string path = kIncludePaths[input.empty() ? 0 : input[0] % 2];
  const std::string_view x = input.empty() ? std::string_view()
                                           : std::string_view(reinterpret_cast<const char*>(input.data()) + 1,
                                                              input.size() - 1);
  try {
    if (std::string e = check_strip(x); !e.empty()) return e;
    const std::string block = std::string(HostsFile::kBeginMarker) + "\nInclude \"" + path + "\"\n" +
                              std::string(HostsFile::kEndMarker) + "\n";
    const std::string w = SshConfigInclude::with_block(x, path);
    const std::string s = HostsFile::strip(x);
    if (w != block + s) return "with_block is not the block followed by the stripped text";
    if (SshConfigInclude::with_block(w, path) != w) return "with_block is not idempotent";
    if (HostsFile::strip(w) != s) return "strip(with_block(x)) differs from strip(x)";
  } catch (const std::exception& e) {
    return std::string("an exception escaped: ") + e.what();
  }
  return "";
}

}  // namespace osh::fuzz

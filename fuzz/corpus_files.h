// The files of one committed corpus directory, for the replay tests of the
// normal build (tests/names/names_corpus_test.cc, tests/cli/state_corpus_test.cc).
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

namespace osh::fuzz {

/// corpus_files() - every regular file of @dir as (name, bytes), sorted by
/// name. Throws std::filesystem::filesystem_error if @dir cannot be read.
inline std::vector<std::pair<std::string, std::vector<uint8_t>>> corpus_files(const std::filesystem::path& dir) {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream f(e.path(), std::ios::binary);
    out.emplace_back(e.path().filename().string(),
                     std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>()));
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace osh::fuzz

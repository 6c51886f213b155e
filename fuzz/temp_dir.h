// A private temporary directory for harnesses whose code under test reads
// files (fuzz/config_harness.h, fuzz/state_check.h).
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace osh::fuzz {

class TempDir {
 public:
  /// Creates /dev/shm/osh-<name>.XXXXXX (/tmp when there is no /dev/shm:
  /// the fuzzer rewrites the files for every input). Removed with its
  /// contents on destruction (left behind if the fuzzer crashes).
  /// Throws std::runtime_error if it cannot.
  explicit TempDir(const std::string& name) {
    std::string tmpl = (std::filesystem::is_directory("/dev/shm") ? "/dev/shm/osh-" : "/tmp/osh-") + name +
                       ".XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error(name + ": mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace osh::fuzz

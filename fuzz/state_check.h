// state.json as fuzz input: the engine of fuzz/state_fuzz.cc and of the
// corpus replay in tests/cli (state_corpus_test.cc).
//
// cli::RunState::load() reads <dir>/state.json, so each input (any bytes)
// is written there, in a private temp directory, and loaded. The rules (a
// violation is returned as one line):
//   - load() returns; nothing escapes (a corrupt file is an empty state);
//   - the state has pid >= 0 and each sandbox record's id is its key;
//   - it round-trips: save() into a second directory, then load() from
//     there, gives an equal state (what `up` wrote, `down` reads back).
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>

#include "cli/state.h"
#include "fuzz/temp_dir.h"

namespace osh::fuzz {

/// Whether two states hold the same fields.
inline bool same_state(const cli::RunState& a, const cli::RunState& b) {
  if (a.pid != b.pid || a.identity.boot_id != b.identity.boot_id ||
      a.identity.start_time != b.identity.start_time || a.tun_name != b.tun_name ||
      a.hosts_file != b.hosts_file || a.ssh_config != b.ssh_config || a.ssh_include != b.ssh_include ||
      a.sandboxes.size() != b.sandboxes.size())
    return false;
  for (auto ia = a.sandboxes.begin(), ib = b.sandboxes.begin(); ia != a.sandboxes.end(); ++ia, ++ib) {
    const auto &ra = ia->second, &rb = ib->second;
    if (ia->first != ib->first || ra.id != rb.id || ra.name != rb.name || ra.v4 != rb.v4 || ra.v6 != rb.v6)
      return false;
  }
  return true;
}

class StateHarness {
 public:
  StateHarness() = default;
  StateHarness(const StateHarness&) = delete;
  StateHarness& operator=(const StateHarness&) = delete;

  /// run() - writes the input as state.json, loads it, checks the rules.
  /// @loaded: if not null, set to the loaded state (for tests).
  /// Return: "" or the first broken rule. Thread: one at a time.
  std::string run(std::span<const uint8_t> input, cli::RunState* loaded = nullptr) {
    namespace fs = std::filesystem;
    const fs::path in = root_.path() / "in", out = root_.path() / "out";
    try {
      fs::create_directories(in);
      {
        std::ofstream f(in / "state.json", std::ios::binary | std::ios::trunc);
        f.write(reinterpret_cast<const char*>(input.data()), static_cast<std::streamsize>(input.size()));
        if (!f) throw std::runtime_error("state harness: cannot write the input");
      }
      fs::remove_all(out);
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("state harness: ") + e.what());
    }
    cli::RunState a, b;
    try {
      a = cli::RunState::load(in);
    } catch (const std::exception& e) {
      return std::string("load threw: ") + e.what();
    }
    if (loaded) *loaded = a;
    if (a.pid < 0) return "loaded a negative pid";
    for (const auto& [id, r] : a.sandboxes)
      if (r.id != id) return "a sandbox record's id is not its key";
    try {
      a.save(out);
      b = cli::RunState::load(out);
    } catch (const std::exception& e) {
      return std::string("save/load of a loaded state threw: ") + e.what();
    }
    if (!same_state(a, b)) return "the loaded state does not round-trip through save()";
    return "";
  }

 private:
  TempDir root_{"state-fuzz"};
};

}  // namespace osh::fuzz

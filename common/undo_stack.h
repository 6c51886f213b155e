// UndoStack: how a multi-step set-up is taken down again, written once.
// Each step that changed something pushes how to undo it; unwind() runs the
// undo steps newest first, whether the set-up finished, failed half-way or
// the program is stopping (OpenVPN 3's tunnetlink create/destroy). `up`
// builds its tunnel this way (cli/up.cc), and tun/link_config records its
// netlink changes in one.
#pragma once

#include <spdlog/spdlog.h>

#include <exception>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace osh {

/// A stack of named undo steps. Not thread-safe: one owner thread pushes and
/// unwinds. Destruction unwinds what is left.
class UndoStack {
 public:
  UndoStack() = default;
  UndoStack(const UndoStack&) = delete;
  UndoStack& operator=(const UndoStack&) = delete;
  ~UndoStack() { unwind(); }

  /// Records @undo, described by @what (for the log), to run before every
  /// step pushed earlier.
  void push(std::string what, std::function<void()> undo) {
    steps_.push_back({std::move(what), std::move(undo)});
  }

  /// Runs every recorded step newest first and forgets them. Never throws:
  /// a step that throws is logged (error level, with its @what) and the
  /// next one still runs. A step may push no new steps.
  void unwind() noexcept {
    while (!steps_.empty()) {
      Step step = std::move(steps_.back());
      steps_.pop_back();
      try {
        step.undo();
      } catch (const std::exception& e) {
        spdlog::error("undoing {}: {}", step.what, e.what());
      } catch (...) {
        spdlog::error("undoing {}: unknown error", step.what);
      }
    }
  }

  /// Number of recorded steps.
  std::size_t size() const noexcept { return steps_.size(); }

 private:
  struct Step {
    std::string what;
    std::function<void()> undo;
  };
  std::vector<Step> steps_;
};

}  // namespace osh

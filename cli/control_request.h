// The control socket's requests (cli/control.h, issue 4.4) as a pure
// function of the request line, so that parsing and dispatch can be tested
// and fuzzed (fuzz/control_fuzz.cc) without a running tunnel; up.cc's
// handle_control() is this with the tunnel's status and down.
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

namespace osh::cli {

/// What a control request can do. Each returns the fields of its answer
/// (an object; "ok": true is added); either may throw, which becomes an
/// {"ok": false, "error": ...} answer. An empty one is a command this caller
/// may not use: {"ok": false, "denied": true, "error": ...}.
struct ControlCommands {
  std::function<nlohmann::json()> status;  ///< {"cmd": "status"}
  std::function<nlohmann::json()> down;    ///< {"cmd": "down"}
  /// Why an empty command is refused, after the command's name in the error.
  std::string denied_why = "is not allowed for this caller";
};

/// answer_control_request() - the one answer to one request line.
///
/// The request is a JSON object {"cmd": "status"|"down"}; anything else
/// (not JSON, not an object, "cmd" missing or not a string, an unknown
/// command) is answered {"ok": false, "error": "..."} without calling a
/// command. The answer is one line of JSON: an object with a boolean "ok",
/// valid UTF-8 (invalid bytes in what a command returns are replaced by
/// U+FFFD), no newline. Calls at most one command, once. Never throws.
/// Thread: the caller's (the control server's thread).
std::string answer_control_request(const std::string& request, const ControlCommands& commands) noexcept;

}  // namespace osh::cli

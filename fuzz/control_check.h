// Control-socket requests as fuzz input: the engine of fuzz/control_fuzz.cc
// and of the corpus replay in tests/cli (state_corpus_test.cc).
//
// Each input (any bytes) is one request line for
// cli::answer_control_request() (cli/control_request.h), answered three
// times: by commands that return fixed objects, by commands whose answer
// holds the raw request bytes (often invalid UTF-8), and by commands that
// throw. The rules (a violation is returned as one line):
//   - every request gets exactly one answer: a non-empty line without '\n'
//     that parses (strictly, so valid UTF-8) as a JSON object with a
//     boolean "ok";
//   - a command runs at most once, and only the one a JSON object's string
//     "cmd" names ("status" or "down"); then "ok" is true unless it threw;
//     every other request runs none and gets "ok": false with an "error";
//   - a fourth time with no commands (a caller allowed neither): nothing
//     runs, and a request naming a command is answered "denied": true.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/control_request.h"

namespace osh::fuzz {

/// check_control() - the rules above for one request; "" or the broken rule.
inline std::string check_control(std::span<const uint8_t> input) {
  using nlohmann::json;
  const std::string request(reinterpret_cast<const char*>(input.data()), input.size());
  // The command the request names, found here without control_request.cc.
  std::string want;
  try {
    const json j = json::parse(request);
    if (j.is_object() && j.contains("cmd") && j["cmd"].is_string()) {
      want = j["cmd"].get<std::string>();
      if (want != "status" && want != "down") want.clear();
    }
  } catch (const std::exception&) {
  }
  for (int variant = 0; variant < 4; ++variant) {
    int status_calls = 0, down_calls = 0;
    auto body = [&](int* calls, const char* name) {
      return [&, calls, name]() -> json {
        ++*calls;
        if (variant == 2) throw std::runtime_error(std::string(name) + " broke");
        if (variant == 1) return json{{"echo", request}, {"list", {request, 1, nullptr}}};
        return json{{"pid", 1}, {"what", name}};
      };
    };
    cli::ControlCommands commands;
    if (variant != 3) {
      commands.status = body(&status_calls, "status");
      commands.down = body(&down_calls, "down");
    }
    std::string answer;
    try {
      answer = cli::answer_control_request(request, commands);
    } catch (...) {
      return "answer_control_request threw";
    }
    if (answer.empty()) return "empty answer";
    if (answer.find('\n') != std::string::npos) return "the answer is more than one line";
    json a;
    try {
      a = json::parse(answer);
    } catch (const std::exception& e) {
      return std::string("the answer is not valid UTF-8 JSON: ") + e.what();
    }
    if (!a.is_object() || !a.contains("ok") || !a["ok"].is_boolean()) return "the answer has no boolean \"ok\"";
    if (status_calls > 1 || down_calls > 1) return "a command ran more than once";
    const bool runs = variant != 3;
    if (status_calls != (runs && want == "status" ? 1 : 0)) return "status ran when not asked, or not when asked";
    if (down_calls != (runs && want == "down" ? 1 : 0)) return "down ran when not asked, or not when asked";
    const bool ok = a["ok"].get<bool>();
    if (ok != (!want.empty() && variant < 2)) return "\"ok\" does not say whether the command ran";
    if (variant == 3 && !want.empty() && !(a.contains("denied") && a["denied"] == true))
      return "a command the caller may not use is not answered \"denied\"";
    if (!ok && !(a.contains("error") && a["error"].is_string())) return "a failure without an \"error\" string";
  }
  return "";
}

}  // namespace osh::fuzz

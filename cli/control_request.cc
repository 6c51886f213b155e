#include "cli/control_request.h"

#include <exception>

namespace osh::cli {

using nlohmann::json;

namespace {

// One line of valid UTF-8 JSON whatever the strings hold (dump() would
// throw on invalid UTF-8; replace makes it U+FFFD). No indent: no newline.
std::string one_line(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string failure(const std::string& error) { return one_line(json{{"ok", false}, {"error", error}}); }

}  // namespace

std::string answer_control_request(const std::string& request, const ControlCommands& commands) noexcept {
  try {
    json req;
    try {
      req = json::parse(request);
    } catch (const std::exception&) {
      return failure("request is not JSON");
    }
    if (!req.is_object()) return failure("request is not a JSON object");
    const auto it = req.find("cmd");
    if (it == req.end() || !it->is_string()) return failure("request has no \"cmd\" string");
    const std::string cmd = it->get<std::string>();
    const std::function<json()>* run = cmd == "status" ? &commands.status
                                       : cmd == "down" ? &commands.down
                                                       : nullptr;
    if (!run) return failure("unknown command '" + cmd + "'");
    if (!*run)
      return one_line(
          json{{"ok", false}, {"denied", true}, {"error", "'" + cmd + "' " + commands.denied_why}});
    json answer;
    try {
      answer = (*run)();
    } catch (const std::exception& e) {
      return failure(cmd + " failed: " + e.what());
    }
    if (!answer.is_object()) answer = json::object();
    answer["ok"] = true;
    return one_line(answer);
  } catch (...) {
    // Only allocation failures get here; a fixed answer still needs none.
    return R"({"ok":false,"error":"internal error"})";
  }
}

}  // namespace osh::cli

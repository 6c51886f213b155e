#include "peers/common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <iterator>
#include <mutex>

namespace osh::peers {

std::shared_ptr<spdlog::logger> PeerLogger(const std::string& name) {
  static std::mutex mu;
  std::lock_guard lock(mu);
  if (auto existing = spdlog::get(name)) return existing;
  return spdlog::stderr_color_mt(name);
}

const char* StatusCodeName(int code) {
  static constexpr const char* kNames[] = {
      "OK",           "CANCELLED",         "UNKNOWN",        "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND",     "ALREADY_EXISTS", "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",         "UNAVAILABLE",    "DATA_LOSS",
      "UNAUTHENTICATED"};
  if (code < 0 || code >= static_cast<int>(std::size(kNames))) return "UNKNOWN_CODE";
  return kNames[code];
}

bool SetLogLevel(std::string_view level) {
  static constexpr std::string_view kNames[] = {"trace", "debug", "info", "warn",
                                                "error", "critical", "off"};
  for (std::string_view name : kNames) {
    if (name == level) {
      spdlog::set_level(spdlog::level::from_str(std::string(level)));
      return true;
    }
  }
  return false;
}

}  // namespace osh::peers

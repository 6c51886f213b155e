// Theory of operation: TunError formats "<step>: <strerror(errno)>" once, at
// construction, so what() is cheap and always says what failed and why.
#include "tun/tun_error.h"

#include <cstring>

namespace osh::tun {

namespace {
std::string format(const std::string& what_failed, int err, const std::string& detail) {
  std::string reason = !detail.empty() ? detail : err != 0 ? std::string(std::strerror(err)) : "";
  if (reason.empty()) reason = "unknown error";
  return what_failed + ": " + reason;
}
}  // namespace

TunError::TunError(const std::string& what_failed, int err, const std::string& detail)
    : std::runtime_error(format(what_failed, err, detail)), err_(err) {}

}  // namespace osh::tun

// The exception type of tun/ setup code.
#pragma once

#include <stdexcept>
#include <string>

namespace osh::tun {

/// A TUN or link setup step failed. what() says which step and why, e.g.
/// "open /dev/net/tun: No such file or directory" or
/// "add address 198.18.0.1/16 to osh0: File exists".
class TunError : public std::runtime_error {
 public:
  /// @param what_failed  the step, e.g. "open /dev/net/tun"
  /// @param err          errno value (positive), or 0 if there is none
  /// @param detail       reason text; when empty, strerror(err) is used
  TunError(const std::string& what_failed, int err, const std::string& detail = {});

  /// The errno value of the failure (positive), or 0 if not an OS error.
  int error_code() const noexcept { return err_; }

 private:
  int err_;
};

}  // namespace osh::tun

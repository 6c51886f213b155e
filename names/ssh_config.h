// `ssh <sandbox>.<domain>` without flags (issue 4.7): an OpenSSH config file
// for `Host *.<domain>` that disables host-key pinning, as upstream's own
// `sandbox connect` does (protocol §3.3: the sandbox's host key changes with
// every supervisor start), included from the user's ssh config through a
// managed block at its top (an Include inside a Host block would be scoped).
#pragma once

#include <filesystem>
#include <string>

namespace osh::names {

class SshConfigInclude {
 public:
  /// @param ssh_config    the user's ssh config (e.g. /root/.ssh/config)
  /// @param include_file  the file we own (e.g. <state-dir>/ssh_config)
  /// @param domain        names are <sandbox>.<domain>
  SshConfigInclude(std::filesystem::path ssh_config, std::filesystem::path include_file,
                   std::string domain);

  /// Writes the include file and puts the managed Include block at the top
  /// of the ssh config (creating it, mode 0600, and its directory, 0700, if
  /// missing). Idempotent. @throws std::system_error on I/O errors.
  void install();
  /// Removes the block and the include file. Idempotent; never throws
  /// (errors are logged).
  void remove() noexcept;

  /// Content of the include file.
  static std::string render_include(const std::string& domain);
  /// `original` with the managed block (replacing any old one) at its top.
  static std::string with_block(std::string_view original, const std::filesystem::path& include_file);

 private:
  std::filesystem::path ssh_config_, include_file_;
  std::string domain_;
};

}  // namespace osh::names

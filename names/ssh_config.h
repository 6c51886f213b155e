// `ssh <sandbox>.<domain>` without flags (issue 4.7, 14.1): an OpenSSH config
// file (the include target) with one Host block per sandbox the tunnel
// serves, included from the user's ssh config through a managed block at
// its top (an Include inside a Host block would be scoped).
//
// Host keys: where the gateway gives the sandbox's host key fingerprint
// (0.1 Sandbox.host_key_fingerprint, "SHA256:..."), the host is checked
// strictly against it: OpenSSH cannot pin a bare fingerprint, so its
// KnownHostsCommand runs `openshell-tunnel known-hosts EXPECTED %f %H %t %K`,
// which prints the offered key as a known_hosts line only when its
// fingerprint (%f) is the gateway's (known_hosts_line()). Without a
// fingerprint (0.0 gateways) that host alone is not pinned, as upstream's
// own `sandbox connect` does (protocol §3.3: the key changes with every
// supervisor start). Nothing is said about any other host (no `*.local`).
//
// The text functions are pure (unit-tested, fuzzed); the *_at functions do
// the I/O relative to an open directory and are run by the user's file
// helper (cli/user_files.h) as the user who owns the files.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace osh::names {

/// One Host block of the include target.
struct SshHost {
  std::string name;         ///< "<sandbox>.<domain>", e.g. "demo.local"
  std::string fingerprint;  ///< the gateway's "SHA256:<base64>"; "" = not given
};

class SshConfigInclude {
 public:
  /// File name of the include target, next to the ssh config it is included
  /// from (~/.ssh/openshell-tunnel.conf for ~/.ssh/config).
  static constexpr char kIncludeName[] = "openshell-tunnel.conf";

  /// <directory of ssh_config>/openshell-tunnel.conf.
  static std::filesystem::path include_path(const std::filesystem::path& ssh_config);

  /// Content of the include target: a Host block per host, in order. Hosts
  /// whose name is not a plain DNS name (valid_host_name()) are left out; a
  /// fingerprint that is not valid_fingerprint() counts as none.
  /// @param program  absolute path of openshell-tunnel, run by ssh as the
  ///                 KnownHostsCommand (pinned hosts only).
  /// @throws std::invalid_argument if `program` is not absolute or holds a
  ///         '"' or a control character.
  static std::string render_include(const std::vector<SshHost>& hosts, const std::string& program);

  /// `original` with the managed block (replacing any old one) at its top.
  static std::string with_block(std::string_view original, const std::filesystem::path& include_file);

  /// "SHA256:" followed by 43 unpadded base64 characters (OpenSSH's format).
  static bool valid_fingerprint(std::string_view fp);
  /// Letters, digits, '-', '_' and '.', 1..253 characters, no leading '-'/'.'.
  static bool valid_host_name(std::string_view name);

  /// The known_hosts line "<host> <type> <key>\n" for the key ssh was
  /// offered, or nullopt when its fingerprint `offered` is not `expected`
  /// (or `expected` is not valid, or a field holds whitespace/control
  /// characters). `openshell-tunnel known-hosts`'s whole decision.
  static std::optional<std::string> known_hosts_line(std::string_view expected, std::string_view offered,
                                                     std::string_view host, std::string_view type,
                                                     std::string_view key);

  /// Writes the include target (0600 if new) and puts the managed Include
  /// block at the top of the ssh config (0600 if new), both entries of the
  /// directory `dirfd` (opened by the caller without following a symlink).
  /// Neither file is followed if it is a symlink, nor used if not regular.
  /// Idempotent; files are created owned by the calling process's uid.
  /// @param ssh_config  path of the ssh config, for the Include line and messages
  /// @throws std::system_error on I/O errors (ELOOP for a symlink).
  static void install_at(int dirfd, const std::filesystem::path& ssh_config, std::string_view include_text);
  /// Rewrites the include target only (the sandbox set changed).
  static void write_include_at(int dirfd, const std::filesystem::path& ssh_config,
                               std::string_view include_text);
  /// Removes the block from the ssh config and the include target.
  /// Idempotent. @throws std::system_error on I/O errors.
  static void remove_at(int dirfd, const std::filesystem::path& ssh_config);
};

}  // namespace osh::names

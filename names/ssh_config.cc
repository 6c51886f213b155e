#include "names/ssh_config.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>

#include "names/hosts_file.h"

namespace osh::names {

namespace fs = std::filesystem;

namespace {

bool is_base64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

// A known_hosts field: printable, no blanks (what ssh gave us in %H/%t/%K).
bool plain_field(std::string_view s) {
  if (s.empty() || s.size() > 16384) return false;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return false;
  }
  return true;
}

// An ssh_config argument in double quotes; '%' is doubled (ssh expands
// tokens in KnownHostsCommand).
std::string quoted_program(const std::string& program) {
  if (program.empty() || program[0] != '/')
    throw std::invalid_argument("ssh include: program path is not absolute: " + program);
  std::string out = "\"";
  for (const char c : program) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || u < 0x20 || u == 0x7f)
      throw std::invalid_argument("ssh include: program path has a quote or control character");
    if (c == '%') out += '%';
    out += c;
  }
  return out + "\"";
}

}  // namespace

fs::path SshConfigInclude::include_path(const fs::path& ssh_config) {
  return ssh_config.parent_path() / kIncludeName;
}

bool SshConfigInclude::valid_fingerprint(std::string_view fp) {
  constexpr std::string_view kPrefix = "SHA256:";
  if (fp.size() != kPrefix.size() + 43 || fp.substr(0, kPrefix.size()) != kPrefix) return false;
  for (const char c : fp.substr(kPrefix.size()))
    if (!is_base64_char(c)) return false;
  return true;
}

bool SshConfigInclude::valid_host_name(std::string_view name) {
  if (name.empty() || name.size() > 253 || name[0] == '-' || name[0] == '.') return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

std::string SshConfigInclude::render_include(const std::vector<SshHost>& hosts, const std::string& program) {
  const std::string prog = quoted_program(program);
  std::string out =
      "# Written by openshell-tunnel up; removed by openshell-tunnel down.\n"
      "# One Host block per sandbox the tunnel serves. A host whose key fingerprint the\n"
      "# gateway gives is checked strictly against it (KnownHostsCommand); one without\n"
      "# (an OpenShell 0.0 gateway) is not pinned, as upstream's `sandbox connect` does:\n"
      "# its key changes with every supervisor start.\n";
  for (const SshHost& h : hosts) {
    if (!valid_host_name(h.name)) continue;
    out += "\nHost " + h.name + "\n";
    if (valid_fingerprint(h.fingerprint)) {
      out += "  StrictHostKeyChecking yes\n"
             "  UserKnownHostsFile /dev/null\n"
             "  GlobalKnownHostsFile /dev/null\n"
             "  CheckHostIP no\n"
             "  UpdateHostKeys no\n"
             "  FingerprintHash sha256\n"
             "  KnownHostsCommand " + prog + " known-hosts " + h.fingerprint + " %f %H %t %K\n";
    } else {
      out += "  StrictHostKeyChecking no\n"
             "  UserKnownHostsFile /dev/null\n"
             "  GlobalKnownHostsFile /dev/null\n"
             "  LogLevel ERROR\n";
    }
    out += "  ServerAliveInterval 15\n"
           "  ServerAliveCountMax 3\n";
  }
  return out;
}

std::string SshConfigInclude::with_block(std::string_view original, const fs::path& include_file) {
  std::string block;
  block += HostsFile::kBeginMarker;
  block += "\nInclude \"" + include_file.string() + "\"\n";
  block += HostsFile::kEndMarker;
  block += "\n";
  return block + HostsFile::strip(original);
}

std::optional<std::string> SshConfigInclude::known_hosts_line(std::string_view expected, std::string_view offered,
                                                              std::string_view host, std::string_view type,
                                                              std::string_view key) {
  if (!valid_fingerprint(expected) || offered != expected) return std::nullopt;
  if (!plain_field(host) || !plain_field(type) || !plain_field(key)) return std::nullopt;
  return std::string(host) + " " + std::string(type) + " " + std::string(key) + "\n";
}

void SshConfigInclude::write_include_at(int dirfd, const fs::path& ssh_config, std::string_view include_text) {
  replace_text_file_at(dirfd, kIncludeName, include_text, 0600, include_path(ssh_config));
}

void SshConfigInclude::install_at(int dirfd, const fs::path& ssh_config, std::string_view include_text) {
  // The config is read first: a symlink there fails before anything is written.
  const std::string name = ssh_config.filename().string();
  const auto old = read_text_file_at(dirfd, name, ssh_config);
  write_include_at(dirfd, ssh_config, include_text);
  const std::string next = with_block(old.value_or(""), include_path(ssh_config));
  if (old && *old == next) return;
  replace_text_file_at(dirfd, name, next, 0600, ssh_config);
}

void SshConfigInclude::remove_at(int dirfd, const fs::path& ssh_config) {
  const std::string name = ssh_config.filename().string();
  if (auto old = read_text_file_at(dirfd, name, ssh_config)) {
    const std::string next = HostsFile::strip(*old);
    if (next != *old) replace_text_file_at(dirfd, name, next, 0600, ssh_config);
  }
  if (::unlinkat(dirfd, kIncludeName, 0) != 0 && errno != ENOENT)
    throw std::system_error(errno, std::generic_category(), "remove " + include_path(ssh_config).string());
}

}  // namespace osh::names

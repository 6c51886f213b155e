#include "names/ssh_config.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <fstream>

#include "names/hosts_file.h"

namespace osh::names {

namespace fs = std::filesystem;

SshConfigInclude::SshConfigInclude(fs::path ssh_config, fs::path include_file, std::string domain)
    : ssh_config_(std::move(ssh_config)), include_file_(std::move(include_file)),
      domain_(std::move(domain)) {}

std::string SshConfigInclude::render_include(const std::string& domain) {
  return "# Written by openshell-tunnel up; removed by openshell-tunnel down.\n"
         "# Sandbox host keys change on every supervisor start (as with upstream's\n"
         "# `openshell sandbox connect`), so they are not pinned.\n"
         "Host *." + domain + "\n"
         "  StrictHostKeyChecking no\n"
         "  UserKnownHostsFile /dev/null\n"
         "  GlobalKnownHostsFile /dev/null\n"
         "  LogLevel ERROR\n"
         "  ServerAliveInterval 15\n"
         "  ServerAliveCountMax 3\n";
}

std::string SshConfigInclude::with_block(std::string_view original, const fs::path& include_file) {
  std::string block;
  block += HostsFile::kBeginMarker;
  block += "\nInclude \"" + include_file.string() + "\"\n";
  block += HostsFile::kEndMarker;
  block += "\n";
  return block + HostsFile::strip(original);
}

void SshConfigInclude::install() {
  fs::create_directories(include_file_.parent_path());
  replace_text_file(include_file_, render_include(domain_));
  const fs::path dir = ssh_config_.parent_path();
  if (!dir.empty() && !fs::exists(dir)) {
    fs::create_directories(dir);
    ::chmod(dir.c_str(), 0700);
  }
  const auto old = read_text_file(ssh_config_);
  const std::string next = with_block(old.value_or(""), include_file_);
  if (old && *old == next) return;
  replace_text_file(ssh_config_, next);
  if (!old) ::chmod(ssh_config_.c_str(), 0600);
}

void SshConfigInclude::remove() noexcept {
  try {
    if (auto old = read_text_file(ssh_config_)) {
      const std::string next = HostsFile::strip(*old);
      if (next != *old) replace_text_file(ssh_config_, next);
    }
    std::error_code ec;
    fs::remove(include_file_, ec);
  } catch (const std::exception& e) {
    spdlog::error("removing the ssh config include from {}: {}", ssh_config_.string(), e.what());
  }
}

}  // namespace osh::names

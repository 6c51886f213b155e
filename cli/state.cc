#include "cli/state.h"

#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "cli/setup_check.h"
#include "cli/user_files.h"
#include "names/hosts_file.h"
#include "tun/firewall.h"
#include "tun/host_network.h"
#include "tun/link_config.h"

namespace osh::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A whole number in [0, max] (0 when absent). json::value() would convert a
// float or a negative number (1e300 into an int is undefined behaviour;
// fuzz/state_fuzz.cc checks it). @throws std::out_of_range otherwise.
uint64_t unsigned_field(const json& j, const char* key, uint64_t max) {
  const auto it = j.find(key);
  if (it == j.end()) return 0;
  if (!it->is_number_unsigned() || it->get<uint64_t>() > max)
    throw std::out_of_range(std::string(key) + " is not a whole number in [0, " + std::to_string(max) + "]");
  return it->get<uint64_t>();
}

}  // namespace

RunState RunState::load(const fs::path& dir) {
  RunState st;
  const fs::path file = dir / "state.json";
  try {
    auto text = names::read_text_file(file);
    if (!text) return st;
    json j = json::parse(*text);
    st.pid = static_cast<int>(unsigned_field(j, "pid", std::numeric_limits<int>::max()));
    st.identity.boot_id = j.value("boot_id", "");
    st.identity.start_time = unsigned_field(j, "start_time", std::numeric_limits<uint64_t>::max());
    st.tun_name = j.value("tun_name", "");
    st.hosts_file = j.value("hosts_file", "");
    st.ssh_config = j.value("ssh_config", "");
    st.ssh_uid = j.value("ssh_uid", int64_t{-1});
    st.ssh_include = j.value("ssh_include", "");
    if (j.contains("sandboxes") && j["sandboxes"].is_object()) {
      for (auto& [id, v] : j["sandboxes"].items()) {
        st.sandboxes[id] = SandboxRecord{id, v.value("name", ""), v.value("v4", ""), v.value("v6", "")};
      }
    }
  } catch (const std::exception& e) {
    spdlog::warn("ignoring unreadable state file {}: {}", file.string(), e.what());
    return RunState{};
  }
  return st;
}

void RunState::save(const fs::path& dir) const {
  json j;
  j["pid"] = pid;
  j["boot_id"] = identity.boot_id;
  j["start_time"] = identity.start_time;
  j["tun_name"] = tun_name;
  j["hosts_file"] = hosts_file;
  j["ssh_config"] = ssh_config;
  j["ssh_uid"] = ssh_uid;
  j["ssh_include"] = ssh_include;
  j["sandboxes"] = json::object();
  for (const auto& [id, r] : sandboxes) j["sandboxes"][id] = {{"name", r.name}, {"v4", r.v4}, {"v6", r.v6}};
  fs::create_directories(dir);
  ::chmod(dir.c_str(), kStateDirMode);
  const fs::path file = dir / "state.json";
  // replace: a sandbox name or id that is not UTF-8 (from the gateway) must
  // not make the state unsaveable.
  names::replace_text_file(file, j.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
  ::chmod(file.c_str(), 0600);
}

bool tunnel_process_alive(int pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  // The executable's name, not comm: comm is cut at 15 bytes and is "exe"
  // for a process started through /proc/self/exe.
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec);
  if (ec) return true;  // cannot tell (another user's process): assume it is ours, be safe
  return exe.filename().string().rfind("openshell-tunnel", 0) == 0;
}

std::optional<ProcessIdentity> process_identity(int pid) {
  if (pid <= 0) return std::nullopt;
  ProcessIdentity id;
  {
    std::ifstream f("/proc/sys/kernel/random/boot_id");
    if (!std::getline(f, id.boot_id) || id.boot_id.empty()) return std::nullopt;
  }
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return std::nullopt;
  // "pid (comm) state ppid ...": field 3 (state) follows the last ')'.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  std::string field;
  for (int n = 3; n <= 22; ++n) {
    if (!(rest >> field)) return std::nullopt;
  }
  try {
    size_t used = 0;
    id.start_time = std::stoull(field, &used);
    if (used != field.size()) return std::nullopt;
  } catch (const std::exception&) {
    return std::nullopt;
  }
  return id;
}

bool recorded_tunnel_alive(const RunState& st) {
  if (st.pid <= 0) return false;
  if (st.identity.boot_id.empty()) return tunnel_process_alive(st.pid);  // an older state file
  const auto now = process_identity(st.pid);
  return now && now->boot_id == st.identity.boot_id && now->start_time == st.identity.start_time;
}

StateLock::Result StateLock::acquire(const fs::path& dir, std::string* error) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    *error = "creating " + dir.string() + ": " + ec.message();
    return Result::kError;
  }
  ::chmod(dir.c_str(), kStateDirMode);
  const fs::path file = dir / "lock";
  ScopedFd fd(::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) {
    *error = "opening " + file.string() + ": " + std::strerror(errno);
    return Result::kError;
  }
  while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return Result::kHeld;
    *error = "flock " + file.string() + ": " + std::strerror(errno);
    return Result::kError;
  }
  fd_ = std::move(fd);
  return Result::kAcquired;
}

std::optional<uid_t> ssh_config_owner(const RunState& st) {
  if (st.ssh_config.empty()) return std::nullopt;
  if (st.ssh_uid >= 0) return static_cast<uid_t>(st.ssh_uid);
  struct stat sb {};
  if (::lstat(st.ssh_config.c_str(), &sb) != 0 || !S_ISREG(sb.st_mode)) return std::nullopt;
  return sb.st_uid;
}

bool cleanup_stale(const RunState& st, UserFiles* files) {
  if (!st.tun_name.empty()) {
    // Deleted only if it is still a TUN no process holds: the name may
    // belong by now to a live tunnel (another state directory's) or to
    // something else entirely.
    try {
      if (!recorded_link_is_stale(tun::read_host_network(), st.tun_name))
        spdlog::info("interface {} of the earlier tunnel is gone or in use by something else: left alone",
                     st.tun_name);
      else if (tun::remove_stale_link(st.tun_name))
        spdlog::info("removed stale interface {}", st.tun_name);
    } catch (const std::exception& e) {
      spdlog::warn("removing stale interface {}: {}", st.tun_name, e.what());
    }
    // Its firewall table (tun/firewall.h), unless a live process holds the
    // interface of that name (then the table may be that tunnel's).
    try {
      const tun::HostNetwork net = tun::read_host_network();
      const bool in_use = std::any_of(net.links.begin(), net.links.end(),
                                      [&](const tun::HostLink& l) { return l.name == st.tun_name; });
      if (!in_use && tun::remove_stale_firewall(st.tun_name))
        spdlog::info("removed the stale firewall table of {}", st.tun_name);
    } catch (const std::exception& e) {
      spdlog::warn("removing the stale firewall table of {}: {}", st.tun_name, e.what());
    }
  }
  if (!st.hosts_file.empty()) {
    try {
      names::HostsFile(st.hosts_file).remove_block();
    } catch (const std::exception& e) {
      spdlog::warn("removing the names block from {}: {}", st.hosts_file, e.what());
    }
  }
  if (!st.ssh_include.empty()) {
    // An older version's include file, in the (root-owned) state directory.
    std::error_code ec;
    fs::remove(st.ssh_include, ec);
  }
  if (st.ssh_config.empty()) return true;
  const std::optional<uid_t> owner = ssh_config_owner(st);
  if (!files || !owner || files->uid() != *owner) {
    spdlog::warn("the ssh Include block in {} was written for {}; left in place (`openshell-tunnel down` "
                 "removes it as that user)", st.ssh_config,
                 owner ? "uid " + std::to_string(*owner) : std::string("an unknown user"));
    return false;
  }
  try {
    files->remove(st.ssh_config);
    return true;
  } catch (const std::exception& e) {
    spdlog::warn("removing the ssh Include from {}: {}", st.ssh_config, e.what());
    return false;
  }
}

}  // namespace osh::cli

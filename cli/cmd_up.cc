// `openshell-tunnel up`: flags, help, and `-d` (run in the background); the
// tunnel itself is in up.cc.
#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/control.h"
#include "cli/gateway_config.h"
#include "cli/log_setup.h"
#include "cli/privileges.h"
#include "cli/stream_flags.h"
#include "cli/up.h"
#include "cli/user_files.h"

namespace osh::cli {
namespace {

std::vector<std::string> g_args;

// `up -d`: re-executes this binary without -d as a session leader that logs
// to --log-file (default <state-dir>/tunnel.log, rotating: cli/log_setup.h),
// and waits until its control socket answers (up) or it exits (failed: show
// the end of its log).
int detach(const UpOptions& o) {
  namespace fs = std::filesystem;
  fs::create_directories(o.state_dir);
  std::vector<std::string> args;
  for (const auto& a : g_args)
    if (a != "-d" && a != "--detach") args.push_back(a);
  std::string log = log_options().file;
  if (log.empty()) {
    log = (fs::path(o.state_dir) / "tunnel.log").string();
    args.push_back("--log-file");
    args.push_back(log);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    fmt::print(stderr, "error: fork: {}\n", std::strerror(errno));
    return kExitSystem;
  }
  if (pid == 0) {
    ::setsid();
    int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (null >= 0) ::dup2(null, 0);
    if (out >= 0) {
      ::dup2(out, 1);
      ::dup2(out, 2);
    }
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    ::execv(ec ? "/proc/self/exe" : self.c_str(), argv.data());
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  const std::string sock = control_socket_path(o.state_dir);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      fmt::print(stderr, "error: the tunnel exited during start-up (status {}); end of {}:\n",
                 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), log);
      std::ifstream in(log);
      std::vector<std::string> lines;
      for (std::string l; std::getline(in, l);) lines.push_back(l);
      for (size_t i = lines.size() > 15 ? lines.size() - 15 : 0; i < lines.size(); ++i)
        fmt::print(stderr, "  {}\n", lines[i]);
      return WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : kExitSystem;
    }
    std::string err;
    if (control_request(sock, R"({"cmd":"status"})", std::chrono::milliseconds(500), &err)) {
      fmt::print("✓ tunnel is up in the background (pid {}); log: {}\n"
                 "  `openshell-tunnel status` shows it, `openshell-tunnel down` stops it.\n", pid, log);
      return kExitOk;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // polling the child's start-up
  }
  fmt::print(stderr, "error: the tunnel (pid {}) did not come up within 30 s; see {}\n", pid, log);
  return kExitSystem;
}

}  // namespace

void set_program_args(int argc, char** argv) { g_args.assign(argv, argv + argc); }

void add_up_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("up", "Bring the tunnel up (foreground, or -d for the background)");
  auto opts = std::make_shared<UpOptions>();
  auto gw = std::make_shared<GatewayFlags>();
  auto background = std::make_shared<bool>(false);
  add_gateway_flags(cmd, *gw);
  cmd->add_flag("-d,--detach", *background, "run in the background (log: --log-file, default <state-dir>/tunnel.log)");
  cmd->add_option("--tun-name", opts->tun_name, "TUN interface name")->capture_default_str();
  cmd->add_option("--prefix4", opts->prefix4, "IPv4 prefix for sandbox addresses")->capture_default_str();
  cmd->add_option("--prefix6", opts->prefix6, "IPv6 prefix for sandbox addresses")->capture_default_str();
  cmd->add_option("--domain", opts->domain, "DNS suffix: <sandbox>.<domain>")->capture_default_str();
  cmd->add_option("--hosts-file", opts->hosts_file,
                  "hosts file for the managed names block (\"\" to disable)")->capture_default_str();
  cmd->add_option("--state-dir", opts->state_dir,
                  "state (stable addresses, pid), lock, control socket")->capture_default_str();
  cmd->add_option("--ssh-config", opts->ssh_config,
                  "ssh config that gets an Include of openshell-tunnel.conf beside it, one Host block per "
                  "sandbox (default ~/.ssh/config of the --user, else of root)");
  cmd->add_flag("--no-ssh-config", opts->no_ssh_config, "do not touch any ssh config");
  auto user_name = std::make_shared<std::string>();
  cmd->add_option("--user", *user_name,
                  "the user the tunnel serves besides root: their ~/.ssh/config gets the Include "
                  "(default $OPENSHELL_TUNNEL_USER, else $SUDO_USER, else root only)");
  auto allow_users = std::make_shared<std::string>();
  cmd->add_option("--allow-users", *allow_users,
                  "local users (names or uids, comma-separated) whose processes may open connections "
                  "through the tunnel and read `status`; root always may (default: the --user and root)");
  cmd->add_option("--max-connections-per-user", opts->max_connections_per_user,
                  "TCP connections one local user may have through the tunnel at once; past it a new "
                  "one is reset (0 = no cap)")
      ->capture_default_str();
  cmd->add_flag("--allow-forwarding", opts->allow_forwarding,
                "let packets routed through this machine (other namespaces, containers, VMs) reach the "
                "tunnel; by default the firewall drops them");
  cmd->add_option("--dns", opts->dns,
                  "names via the hosts file, systemd-resolved (~<domain> to the tunnel's DNS), or both")
      ->capture_default_str()->check(CLI::IsMember({"hosts", "resolver", "both"}));
  cmd->add_option("--mtu", opts->mtu, "TUN MTU in bytes")
      ->capture_default_str()->check(CLI::Range(1280, 65535));
  add_stream_flags(cmd, opts->forward);
  cmd->add_option("--refresh-ms", opts->refresh_ms, "how often the sandbox list is re-read")
      ->capture_default_str()->check(CLI::Range(100, 600000));
  cmd->add_option("--keepalive-s", opts->keepalive_s,
                  "TCP keepalive towards clients: first probe after this many idle seconds (0 = off); "
                  "connections of a vanished client are released after 4 unanswered probes")
      ->capture_default_str();
  add_token_idle_flag(cmd, opts->forward);
  cmd->callback([cmd, opts, gw, background, exit_code, user_name, allow_users] {
    // The served user (--user; OPENSHELL_TUNNEL_USER is the service's
    // EnvironmentFile, as there is no $SUDO_USER under systemd): their
    // ~/.ssh/config gets the Include and their ~/.config/openshell holds
    // the gateway configuration, unless --ssh-config / --config-dir say
    // otherwise.
    std::string name = *user_name;
    const char* source = "--user";
    if (name.empty()) {
      if (const char* u = std::getenv("OPENSHELL_TUNNEL_USER"); u && *u) {
        name = u;
        source = "OPENSHELL_TUNNEL_USER";
      } else if (const char* s = std::getenv("SUDO_USER"); s && *s) {
        name = s;
        source = "SUDO_USER";
      }
    }
    if (!name.empty()) {
      std::string err;
      opts->user = lookup_user(name, &err);
      if (!opts->user) {
        fmt::print(stderr, "error: {}={}: {}\n", source, name, err);
        *exit_code = kExitUsage;
        return;
      }
      if (opts->user->uid != 0) {
        if (opts->ssh_config.empty()) opts->ssh_config = opts->user->home + "/.ssh/config";
        if (source != std::string("SUDO_USER") && cmd->count("--config-dir") == 0)
          gw->config_dir = opts->user->home + "/.config/openshell";
      } else {
        opts->user.reset();  // root is always served
      }
    }
    // Who may use the tunnel (tun/firewall.h, the control socket): the
    // served user and root unless --allow-users names others; root always.
    if (cmd->count("--allow-users") > 0) {
      std::string err;
      std::optional<std::vector<uid_t>> uids = parse_allow_users(*allow_users, &err);
      if (!uids) {
        fmt::print(stderr, "error: --allow-users: {}\n", err);
        *exit_code = kExitUsage;
        return;
      }
      opts->allowed_uids = std::move(*uids);
    } else if (opts->user) {
      opts->allowed_uids.push_back(opts->user->uid);
    }
    if (std::find(opts->allowed_uids.begin(), opts->allowed_uids.end(), 0) == opts->allowed_uids.end())
      opts->allowed_uids.insert(opts->allowed_uids.begin(), 0);
    // Whose OpenShell files root may read (issue 14.1): the served user's in
    // their home, root's elsewhere; a file owned by anyone else (a symlink
    // to another user's token or key) is refused. An explicit --config-dir
    // is the administrator's choice and not checked.
    if (::geteuid() == 0 && cmd->count("--config-dir") == 0) {
      const bool in_home = opts->user && !opts->user->home.empty() && opts->user->home != "/" &&
                           gw->config_dir.rfind(opts->user->home + "/", 0) == 0;
      gw->files_owner = in_home ? opts->user->uid : 0;
    }
    if (!resolve_for_command(*gw, &opts->gateway, "error")) {
      *exit_code = kExitUsage;
      return;
    }
    // --max-buffer-mib: the channel is created with its quota (relay/forward.h).
    opts->gateway.grpc_memory_quota = opts->forward.max_buffer_bytes;
    opts->gateway.forward_transport = opts->forward.transport;
    // SIGHUP: the same flags and environment, the config files read again.
    opts->reload_gateway = [gw](std::string* error) -> std::optional<relay::GatewayOptions> {
      try {
        return resolve_gateway(*gw);
      } catch (const ConfigError& e) {
        *error = e.what();
        return std::nullopt;
      }
    };
    if (*background) {
      *exit_code = detach(*opts);
      return;
    }
    // The user's file helper (cli/user_files.h): forked while this process
    // can still become the user, before any thread and before run_up takes
    // the state lock.
    std::unique_ptr<UserFiles> files;
    if (!opts->no_ssh_config) {
      std::string why;
      files = opts->user ? UserFiles::start(opts->user->uid, opts->user->gid, &why) : UserFiles::start(0, 0, &why);
      if (!files) spdlog::warn("no ssh Include: cannot start the user's file helper: {}", why);
      opts->user_files = files.get();
    }
    // Before any thread exists (docs/THREAT_MODEL.md "Privileges").
    if (std::string why = drop_privileges(); !why.empty())
      spdlog::warn("could not drop privileges ({}); running with the ones it was started with", why);
    start_log_writer();  // rotations off the confined data-plane threads
    *exit_code = run_up(*opts);
    opts->user_files = nullptr;
  });
}

}  // namespace osh::cli

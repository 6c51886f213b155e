// `openshell-tunnel up`: brings the tunnel up and runs it until SIGINT,
// SIGTERM or `openshell-tunnel down`; SIGHUP re-reads the gateway
// configuration (Tunnel::reload in up.cc).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "relay/forward.h"
#include "relay/gateway_client.h"

namespace osh::cli {

class UserFiles;

/// The one local user the tunnel serves besides root (issue 14 items 1, 2):
/// whose ~/.ssh/config gets the Include (written as that user) and who may
/// open connections through the tunnel and read `status`.
struct ServedUser {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;   ///< passwd pw_dir
};

/// Looks `name` up in the passwd database. nullopt (and *error set) when
/// there is no such user. Any thread (getpwnam_r).
std::optional<ServedUser> lookup_user(const std::string& name, std::string* error);

/// Parses --allow-users: comma-separated user names or numeric uids (a uid
/// need not be in the passwd database), e.g. "alice,1001". Empty entries
/// are ignored. nullopt (and *error naming the entry) for an unknown name.
/// Root is not added here (run_up() always allows it). Any thread.
std::optional<std::vector<uid_t>> parse_allow_users(const std::string& list, std::string* error);

struct UpOptions {
  relay::GatewayOptions gateway;           ///< resolved by cli/gateway_config
  /// SIGHUP: resolves the gateway configuration again (the same flags and
  /// environment, the OpenShell config files re-read); nullopt with *error
  /// set when it is broken. Empty = SIGHUP only re-detects the gateway.
  std::function<std::optional<relay::GatewayOptions>(std::string* error)> reload_gateway;
  std::string tun_name = "osh0";
  std::string prefix4 = "198.18.0.0/16";   ///< RFC 2544 benchmark range (design.md §4)
  std::string prefix6 = "fd00:6f73:6800::/64";
  std::string domain = "local";
  std::string hosts_file = "/etc/hosts";   ///< "" disables the hosts block
  std::string state_dir = "/var/lib/openshell-tunnel";  ///< state.json, control.sock, lock
  /// The ssh config that gets the Include block; its Include target is
  /// openshell-tunnel.conf beside it. "" = ~/.ssh/config of the served user
  /// (set by cmd_up.cc), else of root.
  std::string ssh_config;
  bool no_ssh_config = false;              ///< opt out of the ssh Include
  /// The served user: --user, else $OPENSHELL_TUNNEL_USER, else $SUDO_USER;
  /// nullopt = only root (said once at start-up). Set by cmd_up.cc.
  std::optional<ServedUser> user;
  /// Local uids that may open connections through the tunnel (socket owner,
  /// nft `meta skuid`; tun/firewall.h) and read `status` (SO_PEERCRED on the
  /// control socket). Root is always among them. Set by cmd_up.cc from
  /// --allow-users, default: the served user and root.
  std::vector<uid_t> allowed_uids{0};
  /// TCP connections one socket owner may have through the tunnel at once
  /// (nft `ct count` per `meta skuid`); past it a new one is reset and
  /// counted (`status`: firewall.uid_cap_hits). 0 = no cap. Above what one
  /// user's 100 parallel downloads to one sandbox need (vm_limits): the
  /// relay queues past its 20 streams per sandbox (relay/forward.h).
  uint32_t max_connections_per_user = 128;
  /// --allow-forwarding: packets routed through this machine (other
  /// namespaces, containers, hosts) may reach the tunnel; off by default.
  bool allow_forwarding = false;
  /// The helper that writes the ssh config and its Include target as the
  /// served user (root without one), forked by cmd_up.cc before privileges
  /// are dropped (cli/user_files.h); not owned. nullptr = no ssh Include.
  UserFiles* user_files = nullptr;
  std::string dns = "both";                ///< hosts | resolver | both
  uint32_t mtu = 65000;                    ///< TUN MTU, bytes (large: fewer, bigger segments; lwip-notes.md)
  /// The stream settings (caps, queue, settle window, extensions, token
  /// idle time), with relay's defaults (cli/stream_flags.h binds the flags).
  relay::ForwardOptions forward;
  uint32_t refresh_ms = 2000;              ///< how often the sandbox list is re-read
  uint32_t keepalive_s = 120;              ///< TCP keepalive idle time towards clients; 0 = off
};

/// Process exit codes (README "Exit codes").
enum ExitCode : int {
  kExitOk = 0,
  kExitUsage = 1,        ///< bad flags or configuration
  kExitGateway = 2,      ///< the gateway could not be reached or refused us
  kExitSystem = 3,       ///< TUN, netlink, hosts file, state or other local failure
  kExitNotRunning = 4,   ///< status/down: no tunnel is running
  kExitLinkGone = 5,     ///< up: its TUN was deleted while it ran (cleaned up; tun/link_watch.h)
};

/// Runs `up` in the foreground. Blocks until SIGINT, SIGTERM or a `down`
/// request; SIGHUP reloads (opts.reload_gateway) and goes on. Tells systemd
/// READY=1 once the tunnel is up, RELOADING=1/READY=1 around a reload and
/// STOPPING=1 (sd_notify; nothing when $NOTIFY_SOCKET is unset). Returns an
/// ExitCode. Expects SIGINT/SIGTERM/SIGHUP to be blocked in every thread
/// (main does it).
int run_up(const UpOptions& opts);

/// The control socket and state of a tunnel using `state_dir`.
std::string control_socket_path(const std::string& state_dir);

}  // namespace osh::cli

// Theory of operation
// ===================
// `up` composes the folders (design.md §2) and then supervises them:
//   1. state: flock(2) on <state-dir>/lock, held for the daemon's life (held
//      by another process: refuse, exit 3); <state-dir>/state.json says
//      whether a previous one died without cleaning up (then clean up), and
//      gets this process's pid, boot id and start time at once (cli/state.h);
//      then the setup check (cli/setup_check.h): a gateway address inside a
//      prefix, or a prefix overlapping a local address or route, is refused
//      (exit 1, one line); a stale TUN of our own is deleted; a host with
//      IPv6 off gets an IPv4-only tunnel (one warning);
//   2. gateway: Health, then ListSandboxes (relay/GatewayClient);
//   3. addresses: the ones in the state file first (stable across restarts),
//      new sandboxes from the address plan (AddressPlan);
//   4. TUN: create; its firewall table (tun/firewall.h: forwarded packets
//      dropped, only the allowed uids' sockets let out through it, a per-uid
//      connection cap) before the link is up; MTU, addresses, link up
//      (tun/), each change undone on exit; then watched (tun/link_watch.h):
//      what something else removes is put back; the TUN's deletion stops
//      the tunnel (exit 5). The firewall table is checked on every refresh
//      tick and put back if something removed it (`nft flush ruleset`);
//   5. stack (lwIP behind the TUN fd) and relay (one ForwardTcp per connection);
//   6. names: hosts-file block, ssh Include block; state saved; control socket.
// Then the main thread loops: sigtimedwait(refresh interval) for SIGINT or
// SIGTERM (stop; `down` on the control socket raises SIGTERM) or SIGHUP
// (reload: the gateway configuration is resolved again, the bearer token
// replaced, the gateway re-detected; Tunnel::reload), and on each timeout
// re-reads the sandbox list: new sandboxes get addresses and
// names within one interval, deleted ones lose them (their connections are
// reset by the stack), phases are tracked for `status`. If the gateway
// cannot be reached, the tunnel stays up and says since when; new
// connections fail fast (EHOSTUNREACH) until it is back. A gateway given by
// name is resolved again when it becomes unreachable (then at most every
// 30 s while it stays so, and on SIGHUP), as gRPC re-resolves then, on a
// worker thread (cli/gateway_lookup.h; the result is applied on a later
// tick, so a hung DNS lookup never delays a stop or a refresh): an
// address inside a prefix is logged as an error and shown in `status`
// (gateway.conflict); the tunnel keeps running (the name may move back).
// Teardown is written once: every step of the set-up pushes its undo onto
// one UndoStack (common/undo_stack.h) as soon as it has changed something,
// and the stack unwinds newest first on a stop and after a failed set-up
// alike: control socket, ssh Include, resolved registration, hosts block,
// stack (resets live connections), streams and tokens, TUN link
// configuration, firewall table, TUN; the state file keeps the addresses and
// forgets the pid. A table left by a run that died is replaced atomically
// when the next run installs its own, and removed by `down`'s cleanup
// (cli/state.cc cleanup_stale()).
// The control socket (cli/control.h) serves root everything, the allowed
// uids (UpOptions::allowed_uids) only `status`, and refuses everyone else.
#include "cli/up.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <pwd.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <optional>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "cli/addressing.h"
#include "cli/control.h"
#include "cli/control_request.h"
#include "cli/gateway_lookup.h"
#include "cli/relay_upstream.h"
#include "cli/setup_check.h"
#include "cli/state.h"
#include "cli/user_files.h"
#include "common/log_escape.h"
#include "common/log_limiter.h"
#include "common/undo_stack.h"
#include "names/dns_responder.h"
#include "names/hosts_file.h"
#include "names/resolver_registration.h"
#include "names/ssh_config.h"
#include "relay/gateway_client.h"
#include "stack/stack.h"
#include "tun/firewall.h"
#include "tun/host_network.h"
#include "tun/link_config.h"
#include "tun/link_watch.h"
#include "tun/tun_device.h"

namespace osh::cli {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::system_clock;

std::string iso_time(Clock::time_point t) {
  const std::time_t tt = Clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Without a served user (UpOptions::user): root's own ssh config.
std::string default_ssh_config() {
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/root") + "/.ssh/config";
}

// One line of every counter, at exit (the vm-tests grep it).
void log_counters(const stack::StackCounters& c, const relay::ForwardStats& f) {
  spdlog::info(
      "counters: conns_opened={} refused_rst={} refused_unreachable={} resets={} "
      "syn_held={} syn_absorbed={} bytes_up={} bytes_down={} bytes_down_by_reference={} rx_packets={} tx_packets={} "
      "drop_not_sandbox={} drop_malformed={} drop_fragment={} drop_unsupported={} "
      "drop_tx_error={} drop_after_close={} echo_replies={} dns_queries={} dns_dropped={} streams_opened={} "
      "stream_open_failed={} queue_timeouts={} open_retries={} tokens_minted={} late_refusals={} "
      "loopback_fallbacks={} token_cap_hits={} sandbox_cap_hits={} rate_limit_hits={} "
      "relay_capacity_hits={} late_fallbacks={} loopback_memory_hits={} pending_cap_refusals={} "
      "stream_cap_refusals={} open_timeouts={} syn_timeouts={} oversize_frames={} frames_sent={} "
      "frame_bytes_sent={} frames_received={} frame_bytes_received={}",
      c.conns_opened.load(), c.refused_rst.load(), c.refused_unreachable.load(), c.resets.load(),
      c.syn_held.load(), c.syn_absorbed.load(), c.bytes_up.load(), c.bytes_down.load(),
      c.bytes_down_by_reference.load(), c.rx_packets.load(), c.tx_packets.load(), c.drop_not_sandbox.load(), c.drop_malformed.load(),
      c.drop_fragment.load(), c.drop_unsupported.load(), c.drop_tx_error.load(),
      c.drop_after_close.load(), c.echo_replies.load(), c.dns_queries.load(), c.dns_dropped.load(), f.opened,
      f.open_failed, f.queue_timeouts, f.retries, f.tokens, f.late_refusals, f.loopback_fallbacks,
      f.token_cap_hits, f.sandbox_cap_hits, f.rate_limit_hits, f.relay_capacity_hits,
      f.late_fallbacks, f.loopback_memory_hits, f.pending_cap_refusals, f.stream_cap_refusals,
      f.open_timeouts, c.syn_timeouts.load(), f.oversize_frames, f.frames_sent, f.frame_bytes_sent,
      f.frames_received, f.frame_bytes_received);
}

json counters_json(const stack::StackCounters& c, const relay::ForwardStats& f) {
  return {{"rx_packets", c.rx_packets.load()},
          {"tx_packets", c.tx_packets.load()},
          {"connections_active", c.active.load()},
          {"connections_opened", c.conns_opened.load()},
          {"refused_rst", c.refused_rst.load()},
          {"refused_unreachable", c.refused_unreachable.load()},
          {"resets", c.resets.load()},
          {"syn_absorbed", c.syn_absorbed.load()},
          {"syn_timeouts", c.syn_timeouts.load()},
          {"bytes_up", c.bytes_up.load()},
          {"bytes_down", c.bytes_down.load()},
          {"bytes_down_by_reference", c.bytes_down_by_reference.load()},
          {"frames_held", c.frames_held.load()},
          {"frame_bytes_held", c.frame_bytes_held.load()},
          {"echo_replies", c.echo_replies.load()},
          {"dns_queries", c.dns_queries.load()},
          {"dns_dropped", c.dns_dropped.load()},
          {"drops",
           {{"not_sandbox", c.drop_not_sandbox.load()},
            {"malformed", c.drop_malformed.load()},
            {"fragment", c.drop_fragment.load()},
            {"unsupported", c.drop_unsupported.load()},
            {"tx_error", c.drop_tx_error.load()},
            {"after_close_bytes", c.drop_after_close.load()}}},
          {"streams",
           {{"opened", f.opened},
            {"open_failed", f.open_failed},
            {"active", f.active_now},
            {"queued", f.queued_now},
            {"queue_timeouts", f.queue_timeouts},
            {"open_retries", f.retries},
            {"tokens_minted", f.tokens},
            {"tokens_pooled", f.tokens_pooled},
            {"tokens_revoked", f.tokens_revoked},
            {"late_refusals", f.late_refusals},
            {"loopback_fallbacks", f.loopback_fallbacks},
            {"late_fallbacks", f.late_fallbacks},
            {"loopback_memory_hits", f.loopback_memory_hits},
            {"settle_window_us", f.settle_window_us},
            {"token_cap_hits", f.token_cap_hits},
            {"sandbox_cap_hits", f.sandbox_cap_hits},
            {"rate_limit_hits", f.rate_limit_hits},
            {"relay_capacity_hits", f.relay_capacity_hits},
            {"pending_cap_refusals", f.pending_cap_refusals},
            {"stream_cap_refusals", f.stream_cap_refusals},
            {"open_timeouts", f.open_timeouts},
            {"oversize_frames", f.oversize_frames},
            {"frames_sent", f.frames_sent},
            {"frame_bytes_sent", f.frame_bytes_sent},
            {"frames_received", f.frames_received},
            {"frame_bytes_received", f.frame_bytes_received},
            {"transport", relay::to_string(f.transport)},
            {"h2_connects", f.h2_connects},
            {"h2_connect_failures", f.h2_connect_failures},
            {"h2_window_growths", f.h2_window_growths},
            {"h2_window_shrinks", f.h2_window_shrinks},
            {"h2_bytes_buffered", f.h2_bytes_buffered}}}};
}

// The running tunnel: everything `up` built, and the state `status` reports.
class Tunnel {
 public:
  explicit Tunnel(const UpOptions& o) : o_(o), gw_(o.gateway) {}

  int run();

 private:
  struct Sandbox {
    relay::SandboxInfo info;
    SandboxAddresses addr;
  };

  bool check_previous_run();
  /// The setup check of step 1 (cli/setup_check.h) on the live machine.
  /// @return kExitOk, kExitUsage (refused; one line on stderr) or
  ///         kExitSystem (a stale own TUN could not be deleted).
  int check_setup();
  /// Starts resolving the gateway's name again on gateway_lookup_'s
  /// thread (a literal is never looked up); the result is applied by
  /// collect_gateway_recheck() on a later tick. Main thread; never blocks.
  void recheck_gateway();
  /// Applies a finished re-resolution, if any: updates gateway_conflict_
  /// (logged once per change). Main thread; never blocks.
  void collect_gateway_recheck();
  /// The warning for a host without IPv6 (printed once; sets ipv6_ false).
  void ipv6_off(const std::string& why);
  SetupPlan setup_plan() const;
  void reload();
  void apply_sandboxes(const std::vector<relay::SandboxInfo>& list, bool initial);
  void refresh();
  void write_names();
  /// The Include target's text for the sandboxes now (names::SshConfigInclude).
  std::string ssh_include_text();
  /// Rewrites the Include target (as the user) when its text changed.
  void write_ssh_include();
  void save_state();
  /// One control request from a peer with uid `peer_uid` (SO_PEERCRED):
  /// root may do everything, the allowed uids only `status`. Control thread.
  std::string handle_control(const std::string& request, uid_t peer_uid);
  bool allowed(uid_t uid) const;
  json status_json();
  void print_table();

  const UpOptions o_;
  const std::filesystem::path state_dir_{o_.state_dir};
  /// One daemon per state directory (issue 14.4): taken first in
  /// check_previous_run(), released last (declared before everything else).
  StateLock lock_;
  relay::GatewayClient gw_;
  std::optional<AddressPlan> plan_;
  bool hosts_written_ = false;  ///< the last write_names() of the hosts block succeeded
  std::optional<tun::IpPrefix> p4_, p6_;
  RunState state_;
  std::optional<names::HostsFile> hosts_;
  std::optional<names::DnsResponder> dns_;
  /// The ssh config holding our Include block ("" = none) and the text of
  /// its Include target last written (both main thread only).
  std::string ssh_config_, ssh_text_;
  /// This binary, ssh's KnownHostsCommand for pinned hosts ("" = unknown).
  std::string self_exe_;
  // What bring_up() builds, each taken down by a step of undo_.
  std::optional<tun::TunDevice> dev_;
  std::optional<tun::Firewall> firewall_;  // only this machine's allowed uids reach the TUN (issue 14.2)
  std::atomic<uint64_t> firewall_repairs_{0};
  std::optional<tun::LinkConfig> link_;
  std::optional<tun::LinkWatch> link_watch_;  // repairs the TUN's configuration (issue 15.4)
  std::atomic<bool> link_gone_{false};         // the TUN was deleted: stop, exit kExitLinkGone
  std::optional<RelayUpstream> upstream_;
  std::optional<stack::Stack> stack_;
  std::optional<names::ResolverRegistration> resolver_;
  std::optional<ControlServer> control_;
  std::string tun_name_;
  /// The TUN's checksum offload: "checksum" or "off (why)" (status "tun_offload").
  std::string tun_offload_;
  const Clock::time_point started_ = Clock::now();

  std::mutex mu_;  // guards the members below (refresh vs. control thread)
  std::map<std::string, Sandbox> sandboxes_;  // by id
  bool gateway_ok_ = true;
  Clock::time_point gateway_since_ = Clock::now();
  std::string gateway_version_, gateway_error_;
  /// Listed sandboxes left without addresses: the prefixes are full.
  size_t unaddressed_ = 0;
  /// A gateway address inside a prefix after a re-resolution ("" if none).
  std::string gateway_conflict_;
  /// IPv6 in use: false on a host with IPv6 off (set before any thread but
  /// the main one exists, read-only afterwards).
  bool ipv6_ = true;
  /// Next re-resolution of the gateway's name while it is unreachable.
  std::chrono::steady_clock::time_point next_resolve_{};
  /// The re-resolutions, off the main thread (getaddrinfo may block for
  /// the resolver's timeouts when DNS is down). Its destructor waits for a
  /// lookup still running; the lookup touches nothing of the Tunnel.
  GatewayLookup gateway_lookup_;
  /// The served sandboxes' names by id (for RelayUpstream).
  std::unordered_map<std::string, std::string> sandbox_names();

  /// Steps 4-6 of the theory of operation; each change pushes its undo
  /// onto undo_ as soon as it is made. @throws on the first failure (what
  /// was done so far is still on undo_).
  void bring_up(const std::vector<relay::SandboxInfo>& list);
  /// The one teardown: runs undo_ (newest first), also after a failed
  /// bring_up(). Declared last so that its destructor runs first.
  UndoStack undo_;
};

bool Tunnel::check_previous_run() {
  // The lock before anything else: of two `up`s on one state directory
  // exactly one gets past here; the other changes nothing and exits 3.
  std::string err;
  switch (lock_.acquire(state_dir_, &err)) {
    case StateLock::Result::kAcquired: break;
    case StateLock::Result::kHeld: {
      const RunState other = RunState::load(state_dir_);
      const std::string who = recorded_tunnel_alive(other) && other.pid != ::getpid()
                                  ? fmt::format("pid {}", other.pid)
                                  : std::string("starting, stopping or cleaning up");
      fmt::print(stderr, "error: another openshell-tunnel holds the state directory {} ({}); "
                 "stop it with `openshell-tunnel down --state-dir {}`\n",
                 state_dir_.string(), who, state_dir_.string());
      return false;
    }
    case StateLock::Result::kError:
      fmt::print(stderr, "error: state directory: {}\n", err);
      return false;
  }
  state_ = RunState::load(state_dir_);
  if (state_.pid != 0 && state_.pid != ::getpid() && recorded_tunnel_alive(state_)) {
    // Only a tunnel of a version without the lock can run unlocked.
    fmt::print(stderr, "error: a tunnel is already running (pid {}, state {}); stop it with "
               "`openshell-tunnel down`\n", state_.pid, state_dir_.string());
    return false;
  }
  if (state_.pid != 0) {
    fmt::print("! a previous tunnel (pid {}) did not stop cleanly: cleaning up after it\n", state_.pid);
    if (cleanup_stale(state_, o_.user_files)) {
      state_.ssh_config.clear();
      state_.ssh_uid = -1;
      state_.ssh_include.clear();
    }
  }
  // Recorded before any setup, with the identity that tells this process
  // from a later one with the same pid: a crash from here on is cleaned up
  // by the next `up` or `down`. Pushed first, so run last: whatever
  // happened, no tunnel runs any more (a failed start included).
  // The TUN is not ours yet: a name left from the previous run would make a
  // crash before bring_up() clean up an interface this process never had.
  state_.pid = ::getpid();
  state_.identity = process_identity(state_.pid).value_or(ProcessIdentity{});
  state_.tun_name.clear();
  save_state();
  undo_.push("the state file", [this] {
    state_.pid = 0;
    state_.identity = {};
    save_state();
  });
  return true;
}

SetupPlan Tunnel::setup_plan() const {
  return SetupPlan{*p4_, ipv6_ ? p6_ : std::nullopt, o_.tun_name};
}

void Tunnel::ipv6_off(const std::string& why) {
  if (!ipv6_) return;
  ipv6_ = false;
  spdlog::warn("IPv6 is off on this host ({}): the tunnel runs IPv4-only, sandbox names get IPv4 "
               "addresses only", why);
}

int Tunnel::check_setup() {
  const SetupPlan plan = setup_plan();
  const relay::Endpoint& ep = o_.gateway.endpoint;
  std::vector<std::string> conflicts;
  std::string err;
  if (auto addrs = relay::resolve_host(ep.host, &err))
    conflicts = gateway_conflicts(*addrs, ep.to_string(), plan);
  else  // the Health call that follows names the failure
    spdlog::debug("setup check: {}", err);
  tun::HostNetwork net;
  try {
    net = tun::read_host_network();
  } catch (const std::exception& e) {
    spdlog::warn("setup check: cannot read this machine's addresses and routes ({}); not checked", e.what());
  }
  for (std::string& c : host_conflicts(net, plan)) conflicts.push_back(std::move(c));
  if (!conflicts.empty()) {
    fmt::print(stderr, "error: {}\n", refusal_line(conflicts));
    return kExitUsage;
  }
  for (const std::string& name : stale_links_to_remove(net, plan)) {
    try {
      if (tun::remove_stale_link(name))
        fmt::print("! removed stale interface {} (a TUN no process holds, left by an earlier tunnel)\n", name);
    } catch (const std::exception& e) {
      fmt::print(stderr, "error: removing stale interface {}: {}\n", name, e.what());
      return kExitSystem;
    }
  }
  return kExitOk;
}

void Tunnel::recheck_gateway() {
  const relay::Endpoint& ep = o_.gateway.endpoint;
  if (tun::IpAddress::parse(ep.host)) return;  // a literal never moves: checked at start
  gateway_lookup_.start(ep.host);
}

void Tunnel::collect_gateway_recheck() {
  std::optional<GatewayLookup::Result> r = gateway_lookup_.poll();
  if (!r) return;
  const relay::Endpoint& ep = o_.gateway.endpoint;
  if (!r->addrs) {
    spdlog::debug("gateway re-resolution: {}", r->error);
    return;
  }
  const std::vector<std::string> c = gateway_conflicts(*r->addrs, ep.to_string(), setup_plan());
  const std::string line = c.empty() ? std::string{} : refusal_line(c);
  std::lock_guard lk(mu_);
  if (line == gateway_conflict_) return;
  if (!line.empty())
    spdlog::error("{}; connections fail until the name resolves elsewhere or the tunnel restarts with "
                  "another prefix", line);
  else
    spdlog::info("gateway {} resolves outside the tunnel's prefixes again", ep.to_string());
  gateway_conflict_ = line;
}

void Tunnel::apply_sandboxes(const std::vector<relay::SandboxInfo>& list, bool initial) {
  std::vector<std::string> added, removed, unaddressed;
  bool changed = false;
  {
    std::lock_guard lk(mu_);
    std::map<std::string, Sandbox> next;
    for (const auto& sb : list) {
      if (sb.id.empty() || sb.name.empty()) continue;
      Sandbox s{sb, {}};
      auto old = sandboxes_.find(sb.id);
      if (old != sandboxes_.end()) {
        s.addr = old->second.addr;
        if (old->second.info.name != sb.name || old->second.info.host_key_fingerprint != sb.host_key_fingerprint)
          changed = true;
      } else {
        // Stable addresses: the ones this sandbox had in the state file.
        auto rec = state_.sandboxes.find(sb.id);
        bool restored = false;
        if (rec != state_.sandboxes.end()) {
          auto v4 = tun::IpAddress::parse(rec->second.v4);
          auto v6 = tun::IpAddress::parse(rec->second.v6);
          restored = v4 && v6 && plan_->restore(sb.id, *v4, *v6);
          if (restored) s.addr = SandboxAddresses{*v4, *v6};
        }
        if (!restored) {
          std::optional<SandboxAddresses> a = plan_->assign(sb.id);
          if (!a) {  // the prefixes are full: this one stays unreachable (status shows how many)
            unaddressed.push_back(sb.name);
            continue;
          }
          s.addr = *a;
        }
        added.push_back(sb.name);
        changed = true;
      }
      next.emplace(sb.id, std::move(s));
    }
    for (const auto& [id, s] : sandboxes_) {
      if (!next.contains(id)) {
        plan_->release(id);
        state_.sandboxes.erase(id);
        removed.push_back(s.info.name);
        changed = true;
      }
    }
    sandboxes_ = std::move(next);
    for (const auto& [id, s] : sandboxes_)
      state_.sandboxes[id] = SandboxRecord{id, s.info.name, s.addr.v4.to_string(), s.addr.v6.to_string()};
    if (unaddressed.size() != unaddressed_) {  // one warning per change, not one per refresh
      if (!unaddressed.empty())
        OSH_LOG_LIMITED(spdlog::level::warn,
                        "{} sandbox(es) get no address, the prefixes hold {} (first: {}); start the tunnel "
                        "with a larger --prefix4/--prefix6", unaddressed.size(), plan_->capacity(),
                        log_escape(unaddressed.front()));
      else
        spdlog::info("every sandbox has an address again");
      unaddressed_ = unaddressed.size();
    }
  }
  if (!changed) return;
  if (!initial) {
    for (const auto& n : added) spdlog::info("sandbox {}.{} added", log_escape(n), o_.domain);
    for (const auto& n : removed)
      spdlog::info("sandbox {}.{} removed: its connections are reset", log_escape(n), o_.domain);
  }
  std::vector<stack::Route> routes;
  {
    std::lock_guard lk(mu_);
    for (const auto& [id, s] : sandboxes_) {
      routes.push_back({s.addr.v4, id});
      routes.push_back({s.addr.v6, id});
    }
  }
  if (upstream_) upstream_->set_sandbox_names(sandbox_names());
  if (stack_) stack_->set_routes(std::move(routes));
  if (dns_) {
    names::DnsResponder::NameTable table;
    {
      std::lock_guard lk(mu_);
      for (const auto& [id, s] : sandboxes_) {
        std::string label = s.info.name;
        for (auto& ch : label) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        auto& e = table[label];
        e.first.push_back(s.addr.v4.to_string());
        if (ipv6_) e.second.push_back(s.addr.v6.to_string());  // IPv6 off: AAAA queries get NODATA
      }
    }
    try {
      dns_->set_names(std::move(table));
    } catch (const std::exception& e) {
      spdlog::error("DNS names: {}", log_escape(e.what()));
    }
  }
  write_names();
  write_ssh_include();
  save_state();
}

std::string Tunnel::ssh_include_text() {
  std::vector<names::SshHost> hosts;
  {
    std::lock_guard lk(mu_);
    for (const auto& [id, s] : sandboxes_)
      hosts.push_back({s.info.name + "." + o_.domain, s.info.host_key_fingerprint});
  }
  std::sort(hosts.begin(), hosts.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return names::SshConfigInclude::render_include(hosts, self_exe_);
}

void Tunnel::write_ssh_include() {
  if (ssh_config_.empty()) return;
  try {
    std::string text = ssh_include_text();
    if (text == ssh_text_) return;
    o_.user_files->write_include(ssh_config_, text);
    ssh_text_ = std::move(text);
  } catch (const std::exception& e) {
    spdlog::error("writing the ssh Include target beside {}: {}", ssh_config_, e.what());
  }
}

void Tunnel::write_names() {
  if (!hosts_) return;
  std::vector<names::HostEntry> entries;
  {
    std::lock_guard lk(mu_);
    for (const auto& [id, s] : sandboxes_) {
      const std::string fqdn = s.info.name + "." + o_.domain;
      entries.push_back({s.addr.v4.to_string(), {fqdn}});
      if (ipv6_) entries.push_back({s.addr.v6.to_string(), {fqdn}});
    }
  }
  try {
    hosts_->write_block(entries);
    hosts_written_ = true;
  } catch (const std::exception& e) {
    hosts_written_ = false;
    spdlog::error("writing names to {}: {}", hosts_->path().string(), log_escape(e.what()));  // may quote file lines
  }
}

void Tunnel::save_state() {
  try {
    std::lock_guard lk(mu_);
    state_.save(state_dir_);
  } catch (const std::exception& e) {
    spdlog::error("saving state in {}: {}", state_dir_.string(), e.what());
  }
}

std::unordered_map<std::string, std::string> Tunnel::sandbox_names() {
  std::lock_guard lk(mu_);
  std::unordered_map<std::string, std::string> names;
  for (const auto& [id, s] : sandboxes_) names.emplace(id, s.info.name);
  return names;
}

void Tunnel::refresh() {
  collect_gateway_recheck();  // one started on an earlier tick
  if (firewall_) {
    try {
      if (firewall_->ensure()) {
        ++firewall_repairs_;
        spdlog::warn("firewall table inet {} was removed by something else (nft flush ruleset, a firewall "
                     "manager's reload): put back", firewall_->table());
      }
    } catch (const std::exception& e) {
      spdlog::error("firewall: {}", e.what());
    }
  }
  bool was_ok;
  {
    std::lock_guard lk(mu_);
    was_ok = gateway_ok_;
  }
  relay::CallStatus s;
  if (!was_ok) {
    // Back from an outage: the gateway may have been upgraded to the other
    // protocol generation, so detect it again before listing.
    std::string version;
    s = gw_.health(&version);
    if (s.ok()) {
      std::lock_guard lk(mu_);
      gateway_version_ = version;
    }
  }
  std::vector<relay::SandboxInfo> list;
  if (s.ok()) s = gw_.list_sandboxes(&list);
  {
    std::lock_guard lk(mu_);
    if (s.ok() != gateway_ok_) {
      gateway_ok_ = s.ok();
      gateway_since_ = Clock::now();
      if (s.ok()) spdlog::info("gateway {} is reachable again", o_.gateway.endpoint.to_string());
      else spdlog::warn("gateway {} is unreachable: {}", o_.gateway.endpoint.to_string(), log_escape(s.to_string()));
    }
    gateway_error_ = s.ok() ? "" : s.to_string();
  }
  // Unreachable: gRPC re-resolves the name now, so the setup check repeats
  // (and once more when it is back, to clear a conflict that went away).
  if (const auto now = std::chrono::steady_clock::now(); was_ok != s.ok() || (!s.ok() && now >= next_resolve_)) {
    next_resolve_ = now + std::chrono::seconds(30);
    recheck_gateway();
  }
  if (s.ok()) apply_sandboxes(list, false);
}

// SIGHUP (systemctl reload): what can change without a restart is applied,
// the rest is named in the log. Flags and environment are the process's own
// (systemd reads EnvironmentFile= only at start); the OpenShell config files
// (active_gateway, metadata.json, mtls/, oidc_token.json) are read again.
// Applied: the bearer token (and the token file it is re-read from), then a
// Health call that re-detects the gateway's protocol generation and version,
// then a sandbox-list refresh. Not applied (a warning says "restart"): a
// different endpoint, TLS material, insecure mode, workspace or forced
// protocol generation: those are fixed in the gRPC channel and every stream.
void Tunnel::reload() {
  sd_notify(0, "RELOADING=1\nSTATUS=re-reading the gateway configuration");
  spdlog::info("SIGHUP: re-reading the gateway configuration");
  if (o_.reload_gateway) {
    std::string err;
    if (std::optional<relay::GatewayOptions> next = o_.reload_gateway(&err); !next) {
      spdlog::error("reload: {}; keeping the current configuration", log_escape(err, 1024));
    } else {
      const relay::GatewayOptions& cur = gw_.options();
      auto restart_needed = [](const char* what, const std::string& from, const std::string& to) {
        spdlog::warn("reload: the gateway's {} changed ({} -> {}): restart the tunnel to use it "
                     "(systemctl restart openshell-tunnel); keeping {}", what, log_escape(from), log_escape(to),
                     log_escape(from));
      };
      if (next->endpoint.to_string() != cur.endpoint.to_string())
        restart_needed("endpoint", cur.endpoint.to_string(), next->endpoint.to_string());
      if (next->workspace != cur.workspace) restart_needed("workspace", cur.workspace, next->workspace);
      if (next->force_generation != cur.force_generation)
        restart_needed("forced protocol generation", relay::to_string(cur.force_generation),
                       relay::to_string(next->force_generation));
      if (next->ca_pem != cur.ca_pem || next->client_cert_pem != cur.client_cert_pem ||
          next->client_key_pem != cur.client_key_pem || next->insecure_tls != cur.insecure_tls ||
          next->tls_server_name != cur.tls_server_name)
        restart_needed("TLS settings", "the files read at start", "the files on disk now");
      const bool changed = gw_.set_bearer_token(next->bearer_token, next->bearer_token_file,
                                                next->parse_bearer_token_file);
      spdlog::info("reload: bearer token {}{}", changed ? "replaced" : "unchanged",
                   next->token_source.empty() ? "" : " (" + log_escape(next->token_source) + ")");
    }
  }
  std::string version;
  const relay::CallStatus s = gw_.health(&version);  // re-detects the generation
  {
    std::lock_guard lk(mu_);
    if (s.ok()) gateway_version_ = version;
  }
  if (s.ok())
    spdlog::info("reload: gateway {} answers ({}, protocol {})", o_.gateway.endpoint.to_string(), log_escape(version),
                 relay::to_string(gw_.generation()));
  else
    spdlog::warn("reload: gateway {} does not answer: {}", o_.gateway.endpoint.to_string(), log_escape(s.to_string()));
  recheck_gateway();
  refresh();
  sd_notify(0, "READY=1\nSTATUS=tunnel is up (configuration reloaded)");
}

json Tunnel::status_json() {
  std::map<std::string, stack::SandboxStats> per;
  if (stack_)
    for (auto& st : stack_->sandbox_stats()) per[st.sandbox] = st;
  std::lock_guard lk(mu_);
  json sbs = json::array();
  for (const auto& [id, s] : sandboxes_) {
    const stack::SandboxStats st = per.contains(id) ? per[id] : stack::SandboxStats{};
    sbs.push_back({{"name", s.info.name},
                   {"fqdn", s.info.name + "." + o_.domain},
                   {"id", id},
                   {"phase", relay::phase_name(s.info.phase)},
                   {"ipv4", s.addr.v4.to_string()},
                   {"ipv6", ipv6_ ? s.addr.v6.to_string() : ""},
                   {"connections_active", st.active},
                   {"connections_opened", st.opened},
                   {"bytes_up", st.bytes_up},
                   {"bytes_down", st.bytes_down},
                   {"refused", {{"rst", st.refused}, {"unreachable", st.unreachable}}},
                   {"resets", st.resets}});
  }
  json j = {{"pid", ::getpid()},
            {"tun", tun_name_},
            {"tun_offload", tun_offload_},
            {"started", iso_time(started_)},
            {"uptime_s", std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_).count()},
            {"domain", o_.domain},
            {"ipv6", ipv6_},
            {"gateway",
             {{"endpoint", o_.gateway.endpoint.to_string()},
              {"reachable", gateway_ok_},
              {"since", iso_time(gateway_since_)},
              {"version", gateway_version_},
              {"protocol", relay::to_string(gw_.generation())},
              {"workspace", gw_.options().workspace},
              {"error", gateway_error_},
              {"conflict", gateway_conflict_}}},
            {"sandboxes", sbs},
            {"sandboxes_unaddressed", unaddressed_}};
  if (stack_ && upstream_) {
    j["counters"] = counters_json(stack_->counters(), upstream_->manager().stats());
    const stack::PcbCounts pcbs = stack_->pcb_counts();
    j["counters"]["lwip_pcbs"] = {
        {"active", pcbs.active}, {"time_wait", pcbs.time_wait}, {"listen", pcbs.listen}, {"indexed", pcbs.indexed}};
    // The confined stack's hop to gRPC (stack/upstream_dispatch.h); absent
    // with OPENSHELL_TUNNEL_SECCOMP=none (no dispatch thread).
    if (const auto d = stack_->dispatch_stats())
      j["counters"]["upstream_dispatch"] = {
          {"queued", d->queued},
          {"wakeups", d->wakeups},
          {"direct_sends", d->direct_sends},
          {"direct_read_mores", d->direct_read_mores}};
  }
  if (firewall_) {
    json f = {{"table", "inet " + firewall_->table()},
              {"allowed_uids", o_.allowed_uids},
              {"max_connections_per_user", o_.max_connections_per_user},
              {"allow_forwarding", o_.allow_forwarding},
              {"repairs", firewall_repairs_.load()}};
    if (std::optional<tun::FirewallCounters> c = firewall_->counters()) {
      f["forward_drops"] = c->forward_drops;
      f["refused_uid"] = c->refused_uid;
      f["uid_cap_hits"] = c->uid_cap_hits;
    }
    j["firewall"] = std::move(f);
  }
  if (link_watch_) {
    j["counters"]["tun_repairs"] = link_watch_->repairs();
    j["counters"]["tun_repair_failures"] = link_watch_->repair_failures();
  }
  return j;
}

bool Tunnel::allowed(uid_t uid) const {
  return uid == 0 || std::find(o_.allowed_uids.begin(), o_.allowed_uids.end(), uid) != o_.allowed_uids.end();
}

std::string Tunnel::handle_control(const std::string& request, uid_t peer_uid) {
  if (!allowed(peer_uid))
    return json_answer({{"ok", false},
                        {"denied", true},
                        {"error", fmt::format("uid {} is not allowed to use this tunnel (root and the users of "
                                              "`up --allow-users` are)", peer_uid)}});
  ControlCommands commands;
  commands.status = [this] { return status_json(); };
  commands.denied_why = fmt::format("needs root (uid {} may only read `status`)", peer_uid);
  if (peer_uid == 0) commands.down = [] {
    spdlog::info("down requested on the control socket");
    ::kill(::getpid(), SIGTERM);  // wakes the main thread's sigtimedwait
    return json{{"pid", ::getpid()}};
  };
  return answer_control_request(request, commands);
}

void Tunnel::print_table() {
  std::lock_guard lk(mu_);
  fmt::print("\n  {:<28} {:<16} {:<38} {}\n", "NAME", "IPv4", "IPv6", "PHASE");
  for (const auto& [id, s] : sandboxes_)
    fmt::print("  {:<28} {:<16} {:<38} {}\n", log_escape(s.info.name + "." + o_.domain), s.addr.v4.to_string(),
               ipv6_ ? s.addr.v6.to_string() : "(IPv6 off)", relay::phase_name(s.info.phase));
  if (sandboxes_.empty()) fmt::print("  (the gateway lists no sandboxes yet; new ones appear within {} s)\n",
                                     (o_.refresh_ms + 999) / 1000);
}

// Everything the user could have got wrong, checked before anything is
// touched (exit code 1, one line each).
std::string validate(const UpOptions& o) {
  if (o.tun_name.empty() || o.tun_name.size() > 15)
    return "--tun-name must be 1 to 15 characters (a Linux interface name)";
  if (o.domain.empty() || o.domain.size() > 200 || o.domain.front() == '.' || o.domain.back() == '.')
    return "--domain must be a DNS suffix like 'local' or 'sandboxes.internal'";
  for (char c : o.domain)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.'))
      return "--domain may contain only letters, digits, '-' and '.'";
  if (o.forward.max_streams_per_sandbox == 0 || o.forward.max_streams_per_token == 0)
    return "--max-streams-per-sandbox and --max-streams-per-token must be at least 1";
  return "";
}

int Tunnel::run() {
  if (std::string why = validate(o_); !why.empty()) {
    fmt::print(stderr, "error: {}\n", why);
    return kExitUsage;
  }
  p4_ = tun::IpPrefix::parse(o_.prefix4);
  p6_ = tun::IpPrefix::parse(o_.prefix6);
  if (!p4_ || !p4_->addr.is_v4() || !p6_ || !p6_->addr.is_v6()) {
    fmt::print(stderr, "error: --prefix4 must be an IPv4 prefix and --prefix6 an IPv6 prefix\n");
    return kExitUsage;
  }
  try {
    plan_.emplace(*p4_, *p6_);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return kExitUsage;
  }
  if (!check_previous_run()) return kExitSystem;
  if (tun::ipv6_disabled_on_host()) ipv6_off("net.ipv6.conf.all.disable_ipv6 = 1, or booted with ipv6.disable=1");
  if (const int rc = check_setup(); rc != kExitOk) return rc;
  try {
    dns_.emplace(o_.domain);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: --domain: {}\n", e.what());
    return kExitUsage;
  }

  // Gateway.
  const std::string ep = o_.gateway.endpoint.to_string();
  if (auto s = gw_.health(&gateway_version_); !s.ok()) {
    fmt::print(stderr, "error: {}\n", log_escape(relay::describe_failure(s, o_.gateway), 1024));
    return kExitGateway;
  }
  fmt::print("✓ gateway {} is healthy ({}, protocol {}, workspace {})\n", ep, log_escape(gateway_version_),
             relay::to_string(gw_.generation()), log_escape(gw_.options().workspace));
  std::vector<relay::SandboxInfo> list;
  if (auto s = gw_.list_sandboxes(&list); !s.ok()) {
    fmt::print(stderr, "error: listing sandboxes: {}\n", log_escape(relay::describe_failure(s, o_.gateway), 1024));
    return kExitGateway;
  }

  try {
    bring_up(list);
  } catch (const tun::TunError& e) {
    const bool perm = e.error_code() == EPERM || e.error_code() == EACCES;
    fmt::print(stderr, "error: {}{}\n", e.what(),
               perm ? " (creating a TUN needs root or CAP_NET_ADMIN)" : "");
    undo_.unwind();
    return kExitSystem;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    undo_.unwind();
    return kExitSystem;
  }

  print_table();
  fmt::print("\nTunnel is up. Try: ssh <sandbox>.{} / curl http://<sandbox>.{}:PORT/\n"
             "`openshell-tunnel status` shows it; Ctrl-C or `openshell-tunnel down` stops it.\n",
             o_.domain, o_.domain);
  std::fflush(stdout);

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  // systemd (Type=notify): the tunnel is up; a no-op without $NOTIFY_SOCKET.
  sd_notify(0, fmt::format("READY=1\nSTATUS=tunnel {} is up, names under .{}", tun_name_, o_.domain).c_str());
  int sig;
  for (;;) {
    const timespec ts{static_cast<time_t>(o_.refresh_ms / 1000),
                      static_cast<long>(o_.refresh_ms % 1000) * 1000000L};
    sig = ::sigtimedwait(&set, nullptr, &ts);
    if (sig == SIGHUP) {
      reload();
      continue;
    }
    if (sig > 0) break;
    refresh();
  }
  sd_notify(0, "STOPPING=1");
  if (link_gone_) {
    // The TUN's deletion (LinkWatch) raised the SIGTERM: the same teardown,
    // then a distinct exit code (systemd's Restart=on-failure starts afresh).
    spdlog::error("interface {} was deleted while the tunnel ran; cleaning up and exiting (code {})", tun_name_,
                  static_cast<int>(kExitLinkGone));
    undo_.unwind();
    fmt::print(stderr, "error: interface {} was deleted by something else on the machine; the tunnel "
               "cleaned up and stopped (exit code {})\n", tun_name_, static_cast<int>(kExitLinkGone));
    return kExitLinkGone;
  }
  fmt::print("\nStopping ({})...\n", strsignal(sig));
  std::fflush(stdout);
  undo_.unwind();
  fmt::print("✓ tunnel down, TUN and names removed\n");
  return kExitOk;
}

void Tunnel::bring_up(const std::vector<relay::SandboxInfo>& list) {
  // The state file's step (pid 0) was pushed by check_previous_run(). The
  // names' own steps forget their files once removed; a file whose block
  // could not be removed stays in the state for the next run.

  // Checksum offload (issue 16.5, stack/vnet.h): on unless the environment
  // turns it off or lwIP cannot skip its own checksums (Debian's binary
  // package), where it would not pay.
  const char* offload_env = std::getenv("OPENSHELL_TUNNEL_TUN_OFFLOAD");
  const std::string_view offload_val = offload_env ? offload_env : "";
  const bool offload_off = offload_val == "0" || offload_val == "off";
  if (!offload_val.empty() && !offload_off && offload_val != "1" && offload_val != "on")
    spdlog::warn("OPENSHELL_TUNNEL_TUN_OFFLOAD={}: not one of 0, off, 1, on; checksum offload stays on",
                 log_escape(offload_val));
  dev_.emplace(tun::TunDevice::open(o_.tun_name, !offload_off && stack::lwip_checksum_ctrl()));
  undo_.push("the TUN device", [this] { dev_.reset(); });
  if (dev_->vnet_hdr())
    tun_offload_ = "checksum";
  else if (offload_off)
    tun_offload_ = "off (OPENSHELL_TUNNEL_TUN_OFFLOAD)";
  else if (!stack::lwip_checksum_ctrl())
    tun_offload_ = "off (lwIP build without per-netif checksum control)";
  else
    tun_offload_ = "off (kernel refused: " + dev_->offload_refused() + ")";
  if (!dev_->vnet_hdr() && !dev_->offload_refused().empty())
    spdlog::warn("TUN checksum offload refused by the kernel ({}); every checksum is computed and checked",
                 dev_->offload_refused());
  tun_name_ = dev_->name();
  state_.tun_name = tun_name_;
  // The firewall before the link is up: no moment where forwarded packets
  // or another uid's sockets reach the TUN. Removed before the TUN closes.
  tun::FirewallSpec fw{tun_name_, o_.allowed_uids, o_.max_connections_per_user, o_.allow_forwarding};
  // systemd-resolved asks the responder for every local user (--dns
  // resolver|both): its own user may send DNS there, and nothing else.
  if (o_.dns != "hosts") {
    std::string why;
    if (std::optional<ServedUser> r = lookup_user("systemd-resolve", &why)) {
      fw.dns_uids = {r->uid};
      fw.dns_addrs = {plan_->dns4().to_string()};
      if (ipv6_) fw.dns_addrs.push_back(plan_->dns6().to_string());
    }
  }
  firewall_.emplace(std::move(fw));
  undo_.push("the firewall table", [this] { firewall_.reset(); });
  link_.emplace(dev_->ifindex());
  undo_.push("the TUN link configuration", [this] {
    link_->rollback();
    link_.reset();
  });
  link_->set_mtu(o_.mtu);
  link_->set_txqueuelen(10000);  // a connection storm overflows the default 500 (BENCHMARKS.md)
  link_->add_address({plan_->tunnel4(), p4_->len});
  if (ipv6_) {
    try {
      link_->add_address({plan_->tunnel6(), p6_->len});
    } catch (const tun::TunError& e) {
      // IPv6 turned off for us in a way the host check did not see (EACCES:
      // disable_ipv6 on the link; EAFNOSUPPORT: no IPv6 in the kernel; a
      // read-only /proc/sys in a container): IPv4-only, as on such a host.
      const int err = e.error_code();
      if (err != EACCES && err != EAFNOSUPPORT && err != EADDRNOTAVAIL && err != EROFS && err != EPERM) throw;
      ipv6_off(e.what());
    }
  }
  link_->set_up();
  fmt::print("✓ TUN {} up: {}/{} {} mtu {}, offload {}\n", tun_name_, plan_->tunnel4().to_string(), p4_->len,
             ipv6_ ? plan_->tunnel6().to_string() + "/" + std::to_string(p6_->len) : "(IPv6 off)", o_.mtu,
             tun_offload_);
  fmt::print("✓ firewall table inet {}: forwarded packets {}; uids {} may connect{}\n", firewall_->table(),
             o_.allow_forwarding ? "ALLOWED (--allow-forwarding)" : "dropped", fmt::join(o_.allowed_uids, ", "),
             o_.max_connections_per_user == 0
                 ? std::string(" (no per-user cap)")
                 : fmt::format(", at most {} connections each", o_.max_connections_per_user));
  // From here on a link flap, a removed address or route is put back, and
  // the interface's deletion stops the tunnel (main thread: SIGTERM + flag).
  tun::WatchedLink watched;
  watched.ifindex = dev_->ifindex();
  watched.addresses = {{plan_->tunnel4(), p4_->len}};
  if (ipv6_) watched.addresses.push_back({plan_->tunnel6(), p6_->len});
  link_watch_.emplace(std::move(watched), [this](const std::string&) {
    link_gone_ = true;
    ::kill(::getpid(), SIGTERM);  // wakes the main thread's sigtimedwait
  });
  undo_.push("the TUN link watch", [this] {
    if (link_watch_) spdlog::info("TUN {}: {} repairs of its configuration, {} failed attempts", tun_name_,
                                 link_watch_->repairs(), link_watch_->repair_failures());
    link_watch_.reset();
  });

  upstream_.emplace(gw_, o_.forward);
  undo_.push("the relay", [this] { upstream_.reset(); });  // cancels streams, revokes tokens
  upstream_->set_sandbox_names(sandbox_names());
  stack::StackConfig sc;
  sc.packet_fd = dev_->fd();
  sc.vnet_hdr = dev_->vnet_hdr();
  sc.mtu = o_.mtu;
  sc.peer4 = plan_->tunnel4();
  sc.peer6 = plan_->tunnel6();
  sc.netif4 = plan_->netif4();
  sc.netif6 = plan_->netif6();
  sc.prefix4 = p4_->len;
  sc.prefix6 = p6_->len;
  sc.keepalive_idle_ms = o_.keepalive_s * 1000;
  sc.keepalive_intvl_ms = std::max<uint32_t>(1000, std::min<uint32_t>(15000, o_.keepalive_s * 250));
  sc.keepalive_count = 4;
  // The held-SYN deadline backs up the relay's own open deadline, which
  // answers first (plus a token or health call in flight: 2 x rpc_timeout).
  sc.open_timeout_ms = static_cast<uint32_t>(
      (o_.forward.open_timeout + 2 * o_.gateway.rpc_timeout + std::chrono::seconds(1)).count());
  // The DNS responder answers on the second address of each prefix.
  sc.dns_addrs = {plan_->dns4()};
  if (ipv6_) sc.dns_addrs.push_back(plan_->dns6());
  // Header check under the lwIP core lock, the answer off it (stack.cc "DNS off the lock").
  sc.dns_accept = &names::DnsResponder::header_acceptable;
  sc.dns_handler = [this](std::span<const uint8_t> q) { return dns_->respond(q); };
  // The packet-parsing threads: no capabilities, seccomp allow-list (issue
  // 14.6; OPENSHELL_TUNNEL_SECCOMP=0 leaves the filter out, for debugging).
  sc.confine = confinement_from_env();
  if (sc.confine != Confinement::kSeccomp)
    spdlog::warn("OPENSHELL_TUNNEL_SECCOMP={}: the data-plane threads run without their seccomp filter{}",
                 std::getenv("OPENSHELL_TUNNEL_SECCOMP"),
                 sc.confine == Confinement::kNone ? ", with the process's capabilities and no upstream dispatch thread" : "");
  stack_.emplace(sc, *upstream_);
  undo_.push("the stack", [this] {
    upstream_->set_events(nullptr);
    stack_->stop();  // resets live connections
    upstream_->manager().shutdown();
    log_counters(stack_->counters(), upstream_->manager().stats());
    stack_.reset();
  });
  upstream_->set_events(&stack_->events());
  stack_->start();

  if (!o_.hosts_file.empty() && o_.dns != "resolver") {
    hosts_.emplace(o_.hosts_file);
    state_.hosts_file = o_.hosts_file;
    undo_.push("the names block in " + o_.hosts_file, [this] {
      hosts_->remove_block();
      state_.hosts_file.clear();
    });
  }
  apply_sandboxes(list, true);
  if (hosts_ && hosts_written_) fmt::print("✓ names written to {}\n", o_.hosts_file);
  else if (hosts_) fmt::print("✗ names NOT written to {} (see the error above)\n", o_.hosts_file);
  std::vector<std::string> dns_servers{plan_->dns4().to_string()};
  if (ipv6_) dns_servers.push_back(plan_->dns6().to_string());
  fmt::print("✓ DNS for *.{} answers on {}{} (port 53)\n", o_.domain, dns_servers[0],
             dns_servers.size() > 1 ? " and " + dns_servers[1] : std::string{});
  if (o_.dns != "hosts" && names::ResolverRegistration::available()) {
    try {
      resolver_.emplace(tun_name_, dns_servers, o_.domain);
      undo_.push("the systemd-resolved registration", [this] { resolver_.reset(); });
      if (resolver_->active()) fmt::print("✓ systemd-resolved sends *.{} to the tunnel\n", o_.domain);
    } catch (const std::exception& e) {
      spdlog::warn("systemd-resolved registration failed (names still work through {}): {}",
                   o_.hosts_file.empty() ? "the DNS address" : o_.hosts_file, log_escape(e.what()));
    }
  } else if (o_.dns == "resolver") {
    spdlog::warn("--dns resolver: systemd-resolved is not running; use the DNS address directly");
  }
  if (!o_.no_ssh_config && o_.user_files) {
    // Written by the user's file helper, as the user (cli/user_files.h).
    std::error_code ec;
    const std::string cfg =
        std::filesystem::absolute(o_.ssh_config.empty() ? default_ssh_config() : o_.ssh_config, ec).string();
    self_exe_ = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    try {
      std::string text = ssh_include_text();
      o_.user_files->install(cfg, text);
      ssh_config_ = cfg;
      ssh_text_ = std::move(text);
      state_.ssh_config = cfg;
      state_.ssh_uid = o_.user_files->uid();
      state_.ssh_include.clear();
      undo_.push("the ssh Include in " + cfg, [this] {
        try {
          o_.user_files->remove(ssh_config_);
          state_.ssh_config.clear();
          state_.ssh_uid = -1;
        } catch (const std::exception& e) {
          spdlog::error("removing the ssh Include from {}: {}", ssh_config_, e.what());
        }
        ssh_config_.clear();
      });
      fmt::print("✓ ssh: `ssh <sandbox>.{}` works without flags (Include in {}, hosts in {})\n", o_.domain, cfg,
                 names::SshConfigInclude::include_path(cfg).string());
    } catch (const std::exception& e) {
      spdlog::warn("could not add the ssh Include to {}: {}", log_escape(cfg), log_escape(e.what()));
    }
  }
  save_state();
  control_.emplace(control_socket_path(o_.state_dir),
                   [this](const std::string& req, uid_t uid) { return handle_control(req, uid); },
                   [this](uid_t uid) { return allowed(uid); });
  undo_.push("the control socket", [this] { control_.reset(); });  // first down: no status during teardown
}

}  // namespace

std::string control_socket_path(const std::string& state_dir) {
  return (std::filesystem::path(state_dir) / "control.sock").string();
}

std::optional<ServedUser> lookup_user(const std::string& name, std::string* error) {
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  const int rc = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
  if (rc != 0 || !found) {
    *error = rc != 0 ? std::strerror(rc) : "no such user";
    return std::nullopt;
  }
  return ServedUser{found->pw_name, found->pw_uid, found->pw_gid, found->pw_dir ? found->pw_dir : ""};
}

std::optional<std::vector<uid_t>> parse_allow_users(const std::string& list, std::string* error) {
  std::vector<uid_t> uids;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string item = list.substr(start, end - start);
    start = end + 1;
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (item.empty()) continue;
    if (item.find_first_not_of("0123456789") == std::string::npos && item.size() <= 10) {
      const unsigned long long v = std::stoull(item);
      if (v >= static_cast<uid_t>(-1)) {
        *error = "uid " + item + " is out of range";
        return std::nullopt;
      }
      uids.push_back(static_cast<uid_t>(v));
      continue;
    }
    std::string err;
    std::optional<ServedUser> u = lookup_user(item, &err);
    if (!u) {
      *error = "user '" + item + "': " + err;
      return std::nullopt;
    }
    uids.push_back(u->uid);
  }
  return uids;
}

int run_up(const UpOptions& opts) {
  if (opts.user)
    spdlog::info("serving user {} (uid {}) and root", opts.user->name, opts.user->uid);
  else
    spdlog::info("serving root only (no --user, $OPENSHELL_TUNNEL_USER or $SUDO_USER)");
  Tunnel t(opts);
  return t.run();
}

}  // namespace osh::cli

// `openshell-tunnel status` and `openshell-tunnel down`: clients of the
// daemon's control socket (control.h).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <fmt/ranges.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/control.h"
#include "cli/state.h"
#include "cli/up.h"
#include "common/log_escape.h"
#include "cli/user_files.h"

namespace osh::cli {
namespace {

using json = nlohmann::json;

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.1f} {}", v, units[u]);
}

void print_status(const json& j) {
  fmt::print("openshell-tunnel: up (pid {}, since {}), TUN {} (offload: {})\n", j.value("pid", 0),
             j.value("started", ""), j.value("tun", ""), j.value("tun_offload", "unknown"));
  // Names, versions and errors come from the gateway: escaped for the
  // terminal as for the log (common/log_escape.h).
  const json& g = j["gateway"];
  const auto gv = [&g](const char* key) { return log_escape(g.value(key, "")); };
  if (g.value("reachable", false))
    fmt::print("gateway {}: reachable ({}, protocol {}, workspace {}) since {}\n", gv("endpoint"), gv("version"),
               g.value("protocol", "unknown"), gv("workspace"), gv("since"));
  else
    fmt::print("gateway {}: UNREACHABLE since {}: {}\n", gv("endpoint"), gv("since"), gv("error"));
  if (!g.value("conflict", "").empty()) fmt::print("gateway CONFLICT: {}\n", gv("conflict"));
  if (!j.value("ipv6", true)) fmt::print("IPv6: off on this host (IPv4-only; names have A records only)\n");
  fmt::print("\n  {:<24} {:<15} {:<38} {:<13} {:>6} {:>7} {:>10} {:>10} {:>7} {:>7} {:>6}\n", "NAME", "IPv4",
             "IPv6", "PHASE", "ACTIVE", "OPENED", "UP", "DOWN", "REFUSED", "UNREACH", "RESETS");
  for (const auto& s : j["sandboxes"]) {
    fmt::print("  {:<24} {:<15} {:<38} {:<13} {:>6} {:>7} {:>10} {:>10} {:>7} {:>7} {:>6}\n",
               log_escape(s.value("fqdn", ""), 64), s.value("ipv4", ""), s.value("ipv6", ""), s.value("phase", ""),
               s.value("connections_active", 0), s.value("connections_opened", 0),
               human_bytes(s.value("bytes_up", uint64_t{0})), human_bytes(s.value("bytes_down", uint64_t{0})),
               s["refused"].value("rst", 0), s["refused"].value("unreachable", 0), s.value("resets", 0));
  }
  if (j["sandboxes"].empty()) fmt::print("  (no sandboxes)\n");
  if (const uint64_t n = j.value("sandboxes_unaddressed", uint64_t{0}); n > 0)
    fmt::print("  {} more sandbox(es) have no address: the prefixes are full (a larger --prefix4/--prefix6)\n", n);
  if (j.contains("firewall")) {
    const json& f = j["firewall"];
    const uint32_t cap = f.value("max_connections_per_user", 0u);
    std::vector<std::string> uids;
    for (const auto& u : f.value("allowed_uids", json::array())) uids.push_back(u.dump());
    fmt::print("\nfirewall ({}): uids {} may connect{}; forwarded packets {}\n", f.value("table", ""),
               fmt::join(uids, ", "),
               cap == 0 ? std::string(", no per-user cap") : fmt::format(", at most {} connections each", cap),
               f.value("allow_forwarding", false) ? "allowed (--allow-forwarding)" : "dropped");
    fmt::print("firewall: {} forwarded packets dropped, {} packets of other uids refused, {} connections reset "
               "past the per-user cap, {} times put back\n",
               f.value("forward_drops", 0), f.value("refused_uid", 0), f.value("uid_cap_hits", 0),
               f.value("repairs", 0));
  }
  if (j.contains("counters")) {
    const json& c = j["counters"];
    const json& d = c["drops"];
    const json& st = c["streams"];
    fmt::print("\nstreams: {} active, {} queued, {} opened, {} failed to open, {} queue timeouts, {} retried\n",
               st.value("active", 0), st.value("queued", 0), st.value("opened", 0),
               st.value("open_failed", 0), st.value("queue_timeouts", 0), st.value("open_retries", 0));
    fmt::print("tokens: {} pooled, {} minted, {} revoked\n", st.value("tokens_pooled", 0),
               st.value("tokens_minted", 0), st.value("tokens_revoked", 0));
    fmt::print("connects: settle window {:.1f} ms, {} refusals after it (reset), {} loopback fallbacks\n",
               st.value("settle_window_us", 0) / 1000.0, st.value("late_refusals", 0),
               st.value("loopback_fallbacks", 0));
    fmt::print("loopback families: {} moved after the settle window (bytes replayed), {} sent to the remembered family\n",
               st.value("late_fallbacks", 0), st.value("loopback_memory_hits", 0));
    fmt::print("gateway refusals (retried): token cap {}, sandbox cap {}, rate limit {}, relay capacity {}\n",
               st.value("token_cap_hits", 0), st.value("sandbox_cap_hits", 0),
               st.value("rate_limit_hits", 0), st.value("relay_capacity_hits", 0));
    const auto mean_kib = [&st](const char* frames, const char* bytes) {
      const uint64_t n = st.value(frames, uint64_t{0});
      return n == 0 ? 0.0 : static_cast<double>(st.value(bytes, uint64_t{0})) / static_cast<double>(n) / 1024.0;
    };
    fmt::print("data frames: {} sent (mean {:.1f} KiB), {} received (mean {:.1f} KiB)\n",
               st.value("frames_sent", uint64_t{0}), mean_kib("frames_sent", "frame_bytes_sent"),
               st.value("frames_received", uint64_t{0}), mean_kib("frames_received", "frame_bytes_received"));
    if (st.value("transport", std::string()) == "h2")
      fmt::print("stream transport: h2 ({} connections, {} failed; windows grown {}, set back {}; {} KiB unread)\n",
                 st.value("h2_connects", uint64_t{0}), st.value("h2_connect_failures", uint64_t{0}),
                 st.value("h2_window_growths", uint64_t{0}), st.value("h2_window_shrinks", uint64_t{0}),
                 st.value("h2_bytes_buffered", uint64_t{0}) / 1024);
    else if (st.contains("transport"))
      fmt::print("stream transport: {}\n", st.value("transport", std::string()));
    if (const uint64_t n = st.value("oversize_frames", uint64_t{0}); n > 0)
      fmt::print("gateway frames over the 64 KiB receive limit: {} (each ended its stream)\n", n);
    fmt::print("bounds (refused, RST): pending-open cap {}, stream cap {}, open timeouts {}, held SYNs timed out {}\n",
               st.value("pending_cap_refusals", 0), st.value("stream_cap_refusals", 0),
               st.value("open_timeouts", 0), c.value("syn_timeouts", 0));
    fmt::print("drops: not a sandbox {}, malformed {}, fragments {}, unsupported {}, tx errors {}\n",
               d.value("not_sandbox", 0), d.value("malformed", 0), d.value("fragment", 0),
               d.value("unsupported", 0), d.value("tx_error", 0));
    if (c.contains("lwip_pcbs")) {
      const json& p = c["lwip_pcbs"];
      fmt::print("lwIP pcbs: {} active, {} in TIME_WAIT, {} listening\n", p.value("active", 0),
                 p.value("time_wait", 0), p.value("listen", 0));
    }
    if (c.contains("frames_held"))
      fmt::print("download frames: {} sent by reference (no copy), {} frames ({}) held for lwIP's segments now\n",
                 human_bytes(c.value("bytes_down_by_reference", uint64_t{0})), c.value("frames_held", int64_t{0}),
                 human_bytes(static_cast<uint64_t>(std::max<int64_t>(0, c.value("frame_bytes_held", int64_t{0})))));
    if (c.contains("upstream_dispatch")) {
      const json& u = c["upstream_dispatch"];
      fmt::print("upstream dispatch: {} calls queued ({} wake-ups), {} sends queued straight to the relay, {} reads "
                 "resumed in place\n",
                 u.value("queued", uint64_t{0}), u.value("wakeups", uint64_t{0}),
                 u.value("direct_sends", uint64_t{0}), u.value("direct_read_mores", uint64_t{0}));
    }
    if (c.contains("tun_repairs"))
      fmt::print("TUN repairs: {} (link, addresses or routes put back after something else removed them)\n",
                 c.value("tun_repairs", 0));
    if (c.value("tun_repair_failures", 0) > 0)
      fmt::print("TUN repair failures: {} (failed attempts to put it back; retried every 0.5 s to 10 s, see the log)\n",
                 c.value("tun_repair_failures", 0));
  }
}

// The daemon's refusal of this uid (cli/up.cc handle_control): printed; true.
bool refused(const json& answer) {
  if (answer.is_discarded() || !answer.is_object() || !answer.value("denied", false)) return false;
  fmt::print(stderr, "error: {}\n", answer.value("error", "refused"));
  return true;
}

}  // namespace

void add_status_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("status", "Show the running tunnel: gateway, sandboxes, connections");
  auto state_dir = std::make_shared<std::string>("/var/lib/openshell-tunnel");
  auto as_json = std::make_shared<bool>(false);
  cmd->add_option("--state-dir", *state_dir, "the tunnel's state directory")->capture_default_str();
  cmd->add_flag("--json", *as_json, "print JSON (the same fields)");
  cmd->callback([state_dir, as_json, exit_code] {
    std::string err;
    auto resp = control_request(control_socket_path(*state_dir), R"({"cmd":"status"})",
                                std::chrono::milliseconds(3000), &err);
    if (!resp) {
      if (::geteuid() != 0) {
        // state.json is root's: what the socket said is all there is to say.
        fmt::print(stderr, "openshell-tunnel is not running or not reachable ({}); as root, "
                   "`openshell-tunnel status` also says why\n", err);
        *exit_code = kExitNotRunning;
        return;
      }
      // The recorded pid counts only with its boot id and start time
      // (cli/state.h): a pid reused by another process is not the tunnel.
      const RunState st = RunState::load(*state_dir);
      if (st.pid != 0 && !recorded_tunnel_alive(st))
        fmt::print(stderr, "openshell-tunnel is not running (pid {} died without cleaning up; "
                   "`openshell-tunnel down` cleans up)\n", st.pid);
      else if (st.pid != 0)
        fmt::print(stderr, "openshell-tunnel (pid {}) is starting, stopping or not answering ({})\n",
                   st.pid, err);
      else
        fmt::print(stderr, "openshell-tunnel is not running ({})\n", err);
      *exit_code = kExitNotRunning;
      return;
    }
    json j = json::parse(*resp, nullptr, false);
    if (refused(j)) {
      *exit_code = kExitUsage;
      return;
    }
    if (j.is_discarded() || !j.value("ok", false)) {
      fmt::print(stderr, "error: bad answer from the tunnel: {}\n", *resp);
      *exit_code = kExitSystem;
      return;
    }
    j.erase("ok");
    if (*as_json) fmt::print("{}\n", j.dump(2));
    else print_status(j);
    *exit_code = kExitOk;
  });
}

void add_down_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("down", "Stop the running tunnel, or clean up after one that crashed");
  auto state_dir = std::make_shared<std::string>("/var/lib/openshell-tunnel");
  auto timeout_s = std::make_shared<unsigned>(15);
  cmd->add_option("--state-dir", *state_dir, "the tunnel's state directory")->capture_default_str();
  cmd->add_option("--timeout", *timeout_s, "seconds to wait for the tunnel to stop")->capture_default_str();
  cmd->callback([state_dir, timeout_s, exit_code] {
    std::string err;
    auto resp = control_request(control_socket_path(*state_dir), R"({"cmd":"down"})",
                                std::chrono::milliseconds(3000), &err);
    if (resp && refused(json::parse(*resp, nullptr, false))) {
      *exit_code = kExitUsage;
      return;
    }
    if (!resp && ::geteuid() != 0) {
      fmt::print(stderr, "error: `down` needs root ({})\n", err);
      *exit_code = kExitUsage;
      return;
    }
    if (resp) {
      const int pid = json::parse(*resp, nullptr, false).value("pid", 0);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(*timeout_s);
      while (pid > 0 && ::kill(pid, 0) == 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // waiting for another process
      if (pid > 0 && ::kill(pid, 0) == 0) {
        fmt::print(stderr, "error: the tunnel (pid {}) did not stop within {} s\n", pid, *timeout_s);
        *exit_code = kExitSystem;
        return;
      }
      fmt::print("✓ tunnel stopped (pid {})\n", pid);
      *exit_code = kExitOk;
      return;
    }
    RunState st = RunState::load(*state_dir);
    if (recorded_tunnel_alive(st)) {  // pid, boot id and start time all match (cli/state.h)
      fmt::print(stderr, "error: the tunnel (pid {}) runs but does not answer: {}\n", st.pid, err);
      *exit_code = kExitSystem;
      return;
    }
    // Cleaning up under the daemon's lock, so that an `up` starting now
    // cannot build on what is being removed (issue 14.4).
    StateLock lock;
    if (st.pid != 0 || !st.hosts_file.empty() || !st.ssh_config.empty()) {
      std::string lock_err;
      switch (lock.acquire(*state_dir, &lock_err)) {
        case StateLock::Result::kAcquired: break;
        case StateLock::Result::kHeld:
          fmt::print(stderr, "error: another openshell-tunnel holds {}/lock (starting or stopping); "
                     "try again\n", *state_dir);
          *exit_code = kExitSystem;
          return;
        case StateLock::Result::kError:
          fmt::print(stderr, "error: state directory: {}\n", lock_err);
          *exit_code = kExitSystem;
          return;
      }
      st = RunState::load(*state_dir);  // as the last holder of the lock left it
    }
    if (st.pid != 0 || !st.hosts_file.empty() || !st.ssh_config.empty()) {
      // The ssh files are the user's: removed by a helper running as their
      // owner, never by root (cli/user_files.h).
      std::unique_ptr<UserFiles> files;
      if (const std::optional<uid_t> owner = ssh_config_owner(st)) {
        std::string why;
        files = UserFiles::start(*owner, primary_gid(*owner), &why);
        if (!files) fmt::print(stderr, "warning: the ssh Include in {} is left: {}\n", st.ssh_config, why);
      }
      if (cleanup_stale(st, files.get())) {
        st.ssh_config.clear();
        st.ssh_uid = -1;
        st.ssh_include.clear();
      }
      st.pid = 0;
      st.identity = {};
      st.hosts_file.clear();
      try {
        st.save(*state_dir);
      } catch (const std::exception& e) {
        fmt::print(stderr, "warning: saving {}: {}\n", *state_dir, e.what());
      }
      fmt::print("✓ cleaned up after a tunnel that did not stop cleanly\n");
    } else {
      fmt::print("openshell-tunnel is not running; nothing to do\n");
    }
    *exit_code = kExitOk;
  });
}

}  // namespace osh::cli

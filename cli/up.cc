// Theory of operation: `up` composes the folders (design.md §2):
//   1. gateway: Health, then ListSandboxes (relay/GatewayClient);
//   2. addresses: one IPv4 and one IPv6 address per sandbox (AddressPlan);
//   3. TUN: create, MTU, addresses, link up (tun/), each change undone on exit;
//   4. stack: lwIP behind the TUN fd, routes = sandbox addresses (stack/);
//   5. relay: one ForwardTcp stream per connection (RelayUpstream);
//   6. names: `<sandbox>.<domain>` in a managed hosts-file block.
// Then it waits for SIGINT/SIGTERM/SIGHUP and tears down in reverse order:
// names, stack (resets live connections), streams and tokens, TUN.
#include "cli/up.h"

#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <optional>

#include "cli/addressing.h"
#include "cli/hosts_file.h"
#include "cli/relay_upstream.h"
#include "relay/gateway_client.h"
#include "stack/stack.h"
#include "tun/link_config.h"
#include "tun/tun_device.h"

namespace osh::cli {
namespace {

stack::IpAddr to_stack(const tun::IpAddress& a) {
  stack::IpAddr s;
  s.family = a.is_v6() ? 6 : 4;
  s.bytes = a.bytes;
  return s;
}

const char* phase_name(int phase) {
  static const char* const kNames[] = {"UNSPECIFIED", "PROVISIONING", "READY",
                                       "ERROR",       "DELETING",     "UNKNOWN",
                                       "STOPPING",    "STOPPED",      "STARTING"};
  return phase >= 0 && phase <= 8 ? kNames[phase] : "UNKNOWN";
}

// One line of every counter, at exit (and for the vm-tests, which grep it).
void log_counters(const stack::StackCounters& c, const relay::ForwardStats& f) {
  spdlog::info(
      "counters: conns_opened={} refused_rst={} refused_unreachable={} resets={} "
      "syn_held={} syn_absorbed={} bytes_up={} bytes_down={} rx_packets={} tx_packets={} "
      "drop_not_sandbox={} drop_malformed={} drop_fragment={} drop_unsupported={} "
      "drop_tx_error={} drop_after_close={} echo_replies={} streams_opened={} "
      "stream_open_failed={} queue_timeouts={} tokens_minted={}",
      c.conns_opened.load(), c.refused_rst.load(), c.refused_unreachable.load(), c.resets.load(),
      c.syn_held.load(), c.syn_absorbed.load(), c.bytes_up.load(), c.bytes_down.load(),
      c.rx_packets.load(), c.tx_packets.load(), c.drop_not_sandbox.load(), c.drop_malformed.load(),
      c.drop_fragment.load(), c.drop_unsupported.load(), c.drop_tx_error.load(),
      c.drop_after_close.load(), c.echo_replies.load(), f.opened, f.open_failed, f.queue_timeouts,
      f.tokens);
}

int wait_for_signal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

}  // namespace

int run_up(const UpOptions& o) {
  const relay::Endpoint* ep = &o.gateway.endpoint;
  auto p4 = tun::IpPrefix::parse(o.prefix4);
  auto p6 = tun::IpPrefix::parse(o.prefix6);
  if (!p4 || !p4->addr.is_v4() || !p6 || !p6->addr.is_v6()) {
    fmt::print(stderr, "error: --prefix4 must be an IPv4 prefix and --prefix6 an IPv6 prefix\n");
    return kExitUsage;
  }
  std::optional<AddressPlan> plan;
  try {
    plan.emplace(*p4, *p6);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return kExitUsage;
  }

  // 1. Gateway.
  relay::GatewayClient gw(o.gateway);
  std::string version;
  if (auto s = gw.health(&version); !s.ok()) {
    fmt::print(stderr, "error: gateway {} is not reachable: {}\n", ep->to_string(), s.to_string());
    return kExitGateway;
  }
  fmt::print("✓ gateway {} is healthy ({})\n", ep->to_string(), version);
  std::vector<relay::SandboxInfo> sandboxes;
  if (auto s = gw.list_sandboxes(&sandboxes); !s.ok()) {
    fmt::print(stderr, "error: listing sandboxes on {}: {}\n", ep->to_string(), s.to_string());
    return kExitGateway;
  }

  // 2. Addresses.
  std::vector<stack::Route> routes;
  std::vector<HostEntry> hosts;
  struct Row { std::string name, v4, v6, phase; };
  std::vector<Row> rows;
  for (const auto& sb : sandboxes) {
    if (sb.id.empty() || sb.name.empty()) continue;
    SandboxAddresses a = plan->assign(sb.id);
    routes.push_back({to_stack(a.v4), sb.id});
    routes.push_back({to_stack(a.v6), sb.id});
    const std::string fqdn = sb.name + "." + o.domain;
    hosts.push_back({a.v4.to_string(), {fqdn}});
    hosts.push_back({a.v6.to_string(), {fqdn}});
    rows.push_back({fqdn, a.v4.to_string(), a.v6.to_string(), phase_name(sb.phase)});
  }

  try {
    // 3. TUN.
    tun::TunDevice dev = tun::TunDevice::open(o.tun_name);
    tun::LinkConfig link(dev.ifindex());
    link.set_mtu(o.mtu);
    link.add_address({plan->tunnel4(), p4->len});
    link.add_address({plan->tunnel6(), p6->len});
    link.set_up();
    fmt::print("✓ TUN {} up: {}/{} {}/{} mtu {}\n", dev.name(), plan->tunnel4().to_string(), p4->len,
               plan->tunnel6().to_string(), p6->len, o.mtu);

    // 4 + 5. Relay and stack.
    relay::ForwardOptions fo;
    fo.max_streams_per_sandbox = o.max_streams_per_sandbox;
    fo.max_streams_per_token = o.max_streams_per_token;
    fo.queue_timeout = std::chrono::milliseconds(o.queue_timeout_ms);
    RelayUpstream upstream(gw, fo);
    stack::StackConfig sc;
    sc.packet_fd = dev.fd();
    sc.mtu = o.mtu;
    sc.peer4 = to_stack(plan->tunnel4());
    sc.peer6 = to_stack(plan->tunnel6());
    sc.netif4 = to_stack(plan->netif4());
    sc.netif6 = to_stack(plan->netif6());
    sc.prefix4 = p4->len;
    sc.prefix6 = p6->len;
    stack::Stack stk(sc, upstream);
    stk.set_routes(routes);
    upstream.set_events(&stk.events());
    stk.start();

    // 6. Names.
    std::optional<HostsFile> hf;
    if (!o.hosts_file.empty()) {
      hf.emplace(o.hosts_file);
      hf->write_block(hosts);
      fmt::print("✓ names written to {}\n", o.hosts_file);
    }

    fmt::print("\n  {:<28} {:<16} {:<28} {}\n", "NAME", "IPv4", "IPv6", "PHASE");
    for (const auto& r : rows) fmt::print("  {:<28} {:<16} {:<28} {}\n", r.name, r.v4, r.v6, r.phase);
    if (rows.empty()) fmt::print("  (the gateway lists no sandboxes)\n");
    fmt::print("\nTunnel is up. Try: ssh <sandbox>.{} / curl http://<sandbox>.{}:PORT/\n"
               "Press Ctrl-C to stop.\n", o.domain, o.domain);
    std::fflush(stdout);

    const int sig = wait_for_signal();
    fmt::print("\nStopping ({})...\n", strsignal(sig));
    std::fflush(stdout);

    // Teardown, reverse order.
    if (hf) {
      try {
        hf->remove_block();
      } catch (const std::exception& e) {
        spdlog::error("removing the hosts block: {}", e.what());
      }
    }
    upstream.set_events(nullptr);
    stk.stop();
    upstream.manager().shutdown();
    log_counters(stk.counters(), upstream.manager().stats());
    link.rollback();
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return kExitSystem;
  }
  fmt::print("✓ tunnel down, TUN and names removed\n");
  return kExitOk;
}

}  // namespace osh::cli

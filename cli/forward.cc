// Theory of operation: `openshell-tunnel forward [BIND:]LOCAL SANDBOX[:PORT]`
// =========================================================================
// Upstream's `openshell forward service` (protocol §5.2) without a TUN: a
// listening socket on BIND:LOCAL, and for every accepted connection one
// ForwardTcp stream (relay::ForwardManager) to 127.0.0.1:PORT on the
// sandbox's loopback, or to the gateway's SSH target for port 22.
//
// Threads:
//   main       looks the sandbox up, opens the listener, prints the banner,
//              then waits for a signal, re-checking the sandbox every 2 s
//              (GetSandbox by listing, as upstream, protocol §5.2); on a
//              signal, or when the sandbox is gone, not READY or replaced,
//              it stops the loop and the relay.
//   loop       an osh::EventLoop thread running relay::SocketBridge
//              (relay/socket_bridge.cc: the listener, each accepted socket,
//              half-close, back-pressure, RST on a failed stream).
//   relay/gRPC ForwardManager's worker and reactions: they only post stream
//              events to the loop (never block, never touch sockets).
//
// Limits: the relay's caps on streams per sandbox and per token (more
// connections wait in the relay's queue, up to --queue-timeout-ms, then are
// reset).
#include "cli/forward.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <system_error>

#include "cli/up.h"
#include "common/event_loop.h"
#include "common/ip_address.h"
#include "common/scoped_fd.h"
#include "relay/socket_bridge.h"

namespace osh::cli {
namespace {

std::optional<uint16_t> parse_port(std::string_view s, bool allow_zero) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v > 65535) return std::nullopt;
  if (v == 0 && !allow_zero) return std::nullopt;
  return static_cast<uint16_t>(v);
}

bool is_ip_literal(const std::string& s, bool* v6) {
  const auto a = IpAddress::parse(s);
  if (a) *v6 = a->is_v6();
  return a.has_value();
}

// How often a running `forward` re-checks its sandbox (upstream's
// `forward service`, protocol §5.2: every 2 s).
constexpr auto kSandboxRecheck = std::chrono::seconds(2);

// Waits for SIGINT/SIGTERM/SIGHUP (blocked in every thread by main) and
// returns it; every `period` calls `still_ok`, and returns 0 as soon as it
// says false. Thread: main.
int wait_for_signal(std::chrono::milliseconds period, const std::function<bool()>& still_ok) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  for (;;) {
    const auto s = std::chrono::duration_cast<std::chrono::seconds>(period);
    const timespec ts{static_cast<time_t>(s.count()),
                      static_cast<long>(std::chrono::nanoseconds(period - s).count())};
    const int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig > 0) return sig;
    if (errno == EINTR) continue;
    if (!still_ok()) return 0;
  }
}

ScopedFd open_listener(const std::string& bind, uint16_t port, uint16_t* bound_port,
                            std::string* error) {
  const auto addr = IpAddress::parse(bind);
  if (!addr) {
    *error = fmt::format("bind address '{}' is not an IP address", bind);
    return {};
  }
  const bool v6 = addr->is_v6();
  sockaddr_storage ss{};
  socklen_t len = addr->to_sockaddr(port, &ss);
  ScopedFd fd(socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    *error = fmt::format("socket: {}", std::strerror(errno));
    return {};
  }
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (v6) setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
      ::listen(fd.get(), SOMAXCONN) != 0) {
    *error = fmt::format("cannot listen on {}: {}", host_port(bind, port), std::strerror(errno));
    return {};
  }
  len = sizeof ss;
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  *bound_port = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                         : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

}  // namespace

// ---- parsing and lookup ----

std::optional<ForwardSpec> parse_forward_spec(std::string_view local, std::string_view target,
                                              std::string* error) {
  ForwardSpec s;
  std::string_view port_text = local;
  if (!local.empty() && local.front() == '[') {
    const size_t close = local.find(']');
    if (close == std::string_view::npos || close + 1 >= local.size() || local[close + 1] != ':') {
      *error = fmt::format("'{}': expected [IPv6]:PORT", local);
      return std::nullopt;
    }
    s.bind = std::string(local.substr(1, close - 1));
    port_text = local.substr(close + 2);
  } else if (const size_t colon = local.rfind(':'); colon != std::string_view::npos) {
    if (local.find(':') != colon) {
      *error = fmt::format("'{}': write an IPv6 bind address in brackets, [ADDR]:PORT", local);
      return std::nullopt;
    }
    s.bind = std::string(local.substr(0, colon));
    port_text = local.substr(colon + 1);
  }
  bool v6 = false;
  if (!is_ip_literal(s.bind, &v6)) {
    *error = fmt::format("'{}': the bind address must be an IP address", local);
    return std::nullopt;
  }
  auto lp = parse_port(port_text, true);
  if (!lp) {
    *error = fmt::format("'{}': the local port must be a number from 0 to 65535", local);
    return std::nullopt;
  }
  s.local_port = *lp;

  const size_t colon = target.rfind(':');
  s.sandbox = std::string(target.substr(0, colon));
  if (s.sandbox.empty()) {
    *error = fmt::format("'{}': the sandbox name is missing", target);
    return std::nullopt;
  }
  if (colon != std::string_view::npos) {
    auto tp = parse_port(target.substr(colon + 1), false);
    if (!tp) {
      *error = fmt::format("'{}': the sandbox port must be a number from 1 to 65535", target);
      return std::nullopt;
    }
    s.target_port = *tp;
  } else if (s.local_port == 0) {
    *error = "with local port 0, name the sandbox port: SANDBOX:PORT";
    return std::nullopt;
  } else {
    s.target_port = s.local_port;
  }
  return s;
}

std::optional<relay::SandboxInfo> find_ready_sandbox(relay::GatewayClient& gw,
                                                     const std::string& name, std::string* error) {
  relay::SandboxInfo sb;
  if (auto st = gw.get_sandbox(name, &sb); !st.ok()) {
    *error = st.not_found()
                 ? fmt::format("sandbox '{}' not found on gateway {}", name,
                               gw.options().endpoint.to_string())
                 : "looking up the sandbox: " + relay::describe_failure(st, gw.options());
    return std::nullopt;
  }
  if (!sb.may_be_reachable()) {
    *error = fmt::format("sandbox '{}' is not ready (phase {})", name, relay::phase_name(sb.phase));
    return std::nullopt;
  }
  return sb;
}

// ---- the command ----

int run_forward(const ForwardCommandOptions& o) {
  relay::GatewayClient gw(o.gateway);
  std::string err;
  const auto sandbox = find_ready_sandbox(gw, o.spec.sandbox, &err);
  if (!sandbox) {
    fmt::print(stderr, "error: {}\n", err);
    return kExitGateway;
  }
  uint16_t port = 0;
  ScopedFd listener = open_listener(o.spec.bind, o.spec.local_port, &port, &err);
  if (!listener) {
    fmt::print(stderr, "error: {}\n", err);
    return kExitSystem;
  }

  relay::ForwardTarget base;
  base.sandbox = {sandbox->id, sandbox->name};
  base.ssh = o.spec.target_port == 22;
  base.host = "127.0.0.1";
  base.port = o.spec.target_port;
  base.service_id = fmt::format("openshell-tunnel-forward:{}:127.0.0.1:{}", o.spec.sandbox,
                                o.spec.target_port);
  const relay::ForwardOptions& fo = o.forward;

  relay::BridgeCounters c;
  int rc = kExitOk;
  try {
    osh::EventLoop loop;
    relay::SocketBridge bridge(loop, "forward", [&](relay::ForwardObserver& obs) {
      return std::make_unique<relay::ForwardManager>(gw, obs, fo);
    });
    if (const int e = bridge.serve(std::move(listener), base); e != 0)
      throw std::system_error(e, std::generic_category(), "epoll_ctl(listener)");
    loop.start();
    const std::string target = base.ssh ? std::string("the SSH target")
                                        : host_port(base.host, base.port);
    fmt::print("✓ Forwarding {} -> {} in sandbox {} via gRPC\nPress Ctrl-C to stop.\n",
               host_port(o.spec.bind, port), target, o.spec.sandbox);
    std::fflush(stdout);
    // Like upstream: the forward ends when its sandbox is gone, no longer
    // READY, replaced by another one of the same name, or cannot be looked up.
    std::string gone;
    const int sig = wait_for_signal(kSandboxRecheck, [&] {
      std::string why;
      const auto now = find_ready_sandbox(gw, o.spec.sandbox, &why);
      if (now && now->id == sandbox->id) return true;
      gone = now ? fmt::format("sandbox '{}' was replaced (id {} -> {})", o.spec.sandbox,
                               sandbox->id, now->id)
                 : why;
      return false;
    });
    if (sig == 0) {
      fmt::print(stderr, "service forward stopped: {}\n", gone);
      rc = kExitGateway;
    } else {
      fmt::print("\nStopping ({})...\n", strsignal(sig));
      std::fflush(stdout);
    }
    // Stops the loop, resets live connections, then shuts the relay down
    // (revokes tokens).
    bridge.shutdown();
    c = bridge.counters();
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return kExitSystem;
  }
  spdlog::info("counters: accepted={} ended_ok={} refused={} reset={} bytes_up={} bytes_down={}",
               c.accepted, c.ok, c.refused, c.reset, c.bytes_up, c.bytes_down);
  return rc;
}

}  // namespace osh::cli

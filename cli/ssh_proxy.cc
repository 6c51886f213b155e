// Theory of operation: `openshell-tunnel ssh-proxy SANDBOX`
// =======================================================
// OpenSSH runs the proxy with its stdin/stdout as the SSH byte stream
// (ProxyCommand). The proxy resolves SANDBOX to its id (GetSandbox by name, must
// be READY), and bridges in_fd/out_fd to one ForwardTcp stream with init.ssh
// (protocol §5.3; the relay mints the CreateSshSession token) with
// relay::SocketBridge::add_pipes (relay/socket_bridge.cc):
//   in_fd  -> stream: read only after the stream is open, at most
//             kBridgeUpWindow bytes whose gRPC write has not completed;
//             EOF -> close_write() (WritesDone: sshd sees FIN, replies flow).
//   stream -> out_fd: one frame at a time, the next read_more() only once the
//             frame is written; the target's FIN (empty data frame) -> out_fd
//             is closed so ssh sees EOF.
// One thread (main) runs an osh::EventLoop: the bridge's fds and a signalfd
// for SIGINT/SIGTERM/SIGHUP (ssh sends SIGHUP to its proxy when it exits).
// out_fd is made non-blocking when it is a pipe or socket (restored before it
// is closed), so a full pipe never stalls the loop; a tty or file is written
// blocking.
// Ending: stream OK -> flush, exit 0; stream error or local I/O error -> one
// line on stderr, exit 2; a signal or ssh gone (EPIPE) -> abort, exit 0.
// The command raises logging to warn unless asked for (ssh shows our stderr).
#include "cli/ssh_proxy.h"

#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "cli/forward.h"
#include "cli/up.h"
#include "common/event_loop.h"
#include "common/scoped_fd.h"
#include "relay/socket_bridge.h"

namespace osh::cli {
namespace {

int fail(const std::string& msg) {
  fmt::print(stderr, "openshell-tunnel ssh-proxy: {}\n", msg);
  return kExitGateway;
}

// The exit code for how the bridged stream ended (one line on stderr for a
// failure).
int exit_code(const relay::BridgeEnd& e, const std::string& sandbox) {
  switch (e.cause) {
    case relay::BridgeEnd::Cause::kStream:
      if (e.end == relay::EndKind::kOk) return kExitOk;
      return fail(e.was_open
                      ? fmt::format("the SSH stream to sandbox '{}' failed: {}", sandbox, e.reason)
                      : fmt::format("could not open the SSH stream to sandbox '{}': {}", sandbox,
                                    e.reason));
    case relay::BridgeEnd::Cause::kReadError:
      return fail(fmt::format("reading stdin: {}", std::strerror(e.error)));
    case relay::BridgeEnd::Cause::kWriteError:
      if (e.error == EPIPE) {
        // ssh stopped reading (it is exiting): not a proxy failure.
        spdlog::debug("ssh-proxy: stdout closed by the reader");
        return kExitOk;
      }
      return fail(fmt::format("writing stdout: {}", std::strerror(e.error)));
  }
  return kExitGateway;
}

int proxy(relay::GatewayClient& gw, const SshProxyOptions& o, relay::SandboxRef sandbox) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  ScopedFd sfd(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sfd) return fail(fmt::format("signalfd: {}", std::strerror(errno)));

  osh::EventLoop loop;
  relay::SocketBridge bridge(loop, "ssh-proxy", [&](relay::ForwardObserver& obs) {
    return std::make_unique<relay::ForwardManager>(gw, obs);
  });
  int rc = kExitOk;
  if (const int e = loop.watch(sfd.get(), EPOLLIN, [&](uint32_t) {
        signalfd_siginfo si{};
        [[maybe_unused]] ssize_t r = ::read(sfd.get(), &si, sizeof si);
        spdlog::debug("ssh-proxy: signal {}: stopping", si.ssi_signo);
        loop.stop();  // bridge.shutdown() below aborts the stream: exit 0
      });
      e != 0)
    return fail(fmt::format("epoll_ctl(signalfd): {}", std::strerror(e)));

  relay::ForwardTarget t;
  t.sandbox = sandbox;
  t.ssh = true;
  t.service_id = "ssh-proxy:" + sandbox.name;
  bridge.add_pipes(ScopedFd(o.in_fd), ScopedFd(o.out_fd), std::move(t), [&](const relay::BridgeEnd& e) {
    rc = exit_code(e, o.sandbox);
    loop.stop();
  });
  loop.run();
  loop.unwatch(sfd.get());
  bridge.shutdown();
  return rc;
}

}  // namespace

int run_ssh_proxy(const SshProxyOptions& o) {
  relay::GatewayClient gw(o.gateway);
  std::string err;
  const auto sandbox = find_ready_sandbox(gw, o.sandbox, &err);
  if (!sandbox) return fail(err);
  try {
    return proxy(gw, o, {sandbox->id, sandbox->name});
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}

}  // namespace osh::cli

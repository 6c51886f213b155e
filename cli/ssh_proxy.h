// `openshell-tunnel ssh-proxy SANDBOX`: an OpenSSH ProxyCommand that carries
// the SSH connection over one ForwardTcp stream to the sandbox's SSH target
// (upstream's `openshell ssh-proxy`, protocol §5.3).
#pragma once

#include <string>

#include "relay/gateway_client.h"

namespace osh::cli {

struct SshProxyOptions {
  relay::GatewayOptions gateway;  ///< resolved by cli/gateway_config
  std::string sandbox;            ///< the sandbox's name
  int in_fd = 0;                  ///< bytes to the sandbox (ssh writes here)
  int out_fd = 1;                 ///< bytes from the sandbox (ssh reads here)
};

/// run_ssh_proxy() - looks the sandbox up (must be READY), opens one
/// ForwardTcp stream to its SSH target (init.ssh, service_id
/// "ssh-proxy:<id>") and pipes in_fd -> stream and stream -> out_fd until the
/// stream ends. EOF on in_fd -> WritesDone (the target sees FIN, replies
/// still flow); the target's FIN (an empty data frame) -> out_fd is closed.
/// Back-pressure: at most relay::kBridgeUpWindow bytes read from in_fd and not yet
/// written to the stream; the next frame is read from the stream only after
/// the previous one is wholly written to out_fd.
/// SIGINT/SIGTERM/SIGHUP (ssh sends SIGHUP when it exits) abort the stream.
/// These signals must be blocked in every thread (main does it).
/// Return: 0 when the stream ended cleanly or on a signal; 2 otherwise
/// (gateway or sandbox lookup failed, the stream was refused or failed, a
/// local read/write failed), after one line on stderr.
int run_ssh_proxy(const SshProxyOptions& opts);

}  // namespace osh::cli

// openshell-mini-supervisor: command-line front end of MiniSupervisor.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>

#include "common/idle_trim.h"
#include "common/malloc_tuning.h"
#include "peers/common/log.h"
#include "peers/common/signals.h"
#include "peers/supervisor/mini_supervisor.h"

int main(int argc, char** argv) {
  // Two arenas, and no heap trimming per freed frame (common/malloc_tuning.h).
  osh::tune_malloc_at_start("openshell-mini-supervisor");
  osh::peers::BlockTerminationSignals();  // before gRPC starts any thread

  CLI::App app{"openshell-mini-supervisor: the sandbox side of the OpenShell relay protocol; "
               "run it inside the sandbox's network namespace"};
  osh::peers::SupervisorConfig config;
  std::string log_level = "info";
  app.add_option("--gateway-endpoint", config.gateway_endpoint, "gateway URL http://HOST:PORT")
      ->envname("OPENSHELL_GATEWAY_ENDPOINT")
      ->required();
  app.add_option("--sandbox-id", config.sandbox_id, "sandbox id sent in the hello")->required();
  app.add_option("--ssh-target", config.ssh_target,
                 "HOST:PORT dialled for SSH-target relays (a real sshd)")
      ->capture_default_str();
  std::string protocol_text = osh::peers::ProtocolName(config.protocol);
  app.add_option("--protocol", protocol_text,
                 "wire generation of the ConnectSupervisor session: 0.0 or 0.1")
      ->check(CLI::IsMember({"0.0", "0.1"}))
      ->capture_default_str();
  app.add_option("--instance-id", config.instance_id, "instance id sent in the hello (default: random UUID)");
  uint32_t max_buffer_mib = static_cast<uint32_t>(config.max_buffer_bytes >> 20);
  app.add_option("--max-buffer-mib", max_buffer_mib,
                 "ceiling of all relays' buffers, MiB (gRPC memory quota: receive windows shrink as "
                 "unread data fills it; 0 = none)")
      ->capture_default_str()->check(CLI::Range(0, 1 << 20));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (!osh::peers::SetLogLevel(log_level)) {
    std::fprintf(stderr, "openshell-mini-supervisor: unknown --log-level '%s'\n", log_level.c_str());
    return 2;
  }
  config.protocol = *osh::peers::ParseProtocol(protocol_text);
  config.max_buffer_bytes = size_t{max_buffer_mib} << 20;
  try {
    osh::peers::MiniSupervisor supervisor(config);
    supervisor.Start();
    const osh::IdleTrimmer trimmer("mini-supervisor");  // memory given back on idle (issue 15.2)
    const int sig = osh::peers::WaitForTerminationSignal();
    osh::peers::PeerLogger("mini-supervisor")->info("signal {} received, stopping", sig);
    supervisor.Stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "openshell-mini-supervisor: %s\n", e.what());
    return 1;
  }
  return 0;
}

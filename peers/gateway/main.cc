// openshell-mini-gateway: command-line front end of MiniGateway.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "common/idle_trim.h"
#include "common/malloc_tuning.h"
#include "peers/common/log.h"
#include "peers/common/signals.h"

#include <signal.h>
#include "peers/gateway/mini_gateway.h"

namespace {

/// Adds the --sandbox and --generate-sandboxes declarations to @sandboxes,
/// then applies --host-key and --sandbox-phase to them (and to those from
/// the config file). @throws std::invalid_argument.
void AddSandboxFlags(const std::vector<std::string>& sandbox_flags,
                     const std::vector<std::string>& generate_flags,
                     const std::vector<std::string>& host_key_flags,
                     const std::vector<std::string>& phase_flags,
                     std::vector<osh::peers::SandboxDecl>& sandboxes) {
  for (const auto& flag : sandbox_flags) sandboxes.push_back(osh::peers::ParseSandboxFlag(flag));
  for (const auto& flag : generate_flags) {
    for (auto& decl : osh::peers::ParseGenerateFlag(flag)) sandboxes.push_back(std::move(decl));
  }
  for (const auto& flag : host_key_flags) {
    osh::peers::ApplyPerSandboxFlag(flag, "--host-key", sandboxes,
                                    [](osh::peers::SandboxDecl& sb, const std::string& value) {
                                      sb.host_key_fingerprint = osh::peers::HostKeyFingerprint(value);
                                    });
  }
  for (const auto& flag : phase_flags) {
    osh::peers::ApplyPerSandboxFlag(flag, "--sandbox-phase", sandboxes,
                                    [](osh::peers::SandboxDecl& sb, const std::string& value) {
                                      sb.phase = osh::peers::ParseSandboxPhase(value);
                                    });
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Two arenas, and no heap trimming per freed frame (common/malloc_tuning.h).
  osh::tune_malloc_at_start("openshell-mini-gateway");
  osh::peers::BlockTerminationSignals();  // before gRPC starts any thread

  CLI::App app{"openshell-mini-gateway: a small OpenShell gateway for tests and demos "
               "(Health, sandboxes, SSH-session tokens, ForwardTcp, supervisor relays)"};
  osh::peers::GatewayConfig defaults;
  std::string listen = defaults.listen;
  std::vector<std::string> sandbox_flags;
  std::string config_file;
  int max_per_token = defaults.max_streams_per_token;
  int max_per_sandbox = defaults.max_streams_per_sandbox;
  int64_t supervisor_wait_ms = defaults.supervisor_wait.count();
  int64_t relay_claim_timeout_ms = defaults.relay_claim_timeout.count();
  int64_t token_ttl_secs = std::chrono::duration_cast<std::chrono::seconds>(defaults.token_ttl).count();
  std::string log_level = "info";
  std::string version;
  std::string protocol_text = osh::peers::ProtocolName(defaults.protocol);
  std::string rate_limit_text;
  std::vector<std::string> generate_flags, host_key_flags, phase_flags;
  int max_pending_per_sandbox = defaults.max_pending_relays_per_sandbox;
  int max_pending = defaults.max_pending_relays;
  uint32_t max_buffer_mib = static_cast<uint32_t>(defaults.max_buffer_bytes >> 20);

  auto* listen_opt = app.add_option("--listen", listen, "listen address ADDR:PORT ([V6]:PORT for IPv6; port 0 = any)")
                         ->capture_default_str();
  auto* protocol_opt = app.add_option("--protocol", protocol_text,
                                      "wire generation of every generation-dependent call: 0.0 or 0.1")
                           ->check(CLI::IsMember({"0.0", "0.1"}))
                           ->capture_default_str();
  app.add_option("--sandbox", sandbox_flags,
                 "declare a sandbox NAME=ID[@WORKSPACE] (repeatable; workspace 'default')");
  app.add_option("--generate-sandboxes", generate_flags,
                 "declare COUNT sandboxes PREFIX-0..PREFIX-(COUNT-1): PREFIX:COUNT[@WORKSPACE] (repeatable)");
  app.add_option("--host-key", host_key_flags,
                 "NAME=SHA256:... or NAME=/path/ssh_host_key.pub: the sandbox's sshd host key "
                 "fingerprint (NAME '*' = every sandbox; repeatable)");
  app.add_option("--sandbox-phase", phase_flags,
                 "NAME=PHASE: report a fixed phase (READY, ERROR, STOPPED, COMPLETED (0.1), ...; "
                 "'auto' = from the supervisor session; repeatable)");
  app.add_option("--config", config_file,
                 "JSON config: {\"sandboxes\":[{\"name\":..,\"id\":..}], \"max_streams_per_token\":3, "
                 "\"max_streams_per_sandbox\":20}; flags given explicitly override it; "
                 "SIGHUP re-reads its sandboxes")
      ->check(CLI::ExistingFile);
  std::string record_tokens;
  app.add_option("--record-tokens", record_tokens,
                 "TEST ONLY: append every minted SSH-session token to this file");
  auto* token_opt = app.add_option("--max-streams-per-token", max_per_token,
                                   "concurrent ForwardTcp streams per SSH-session token")
                        ->capture_default_str();
  auto* sandbox_opt = app.add_option("--max-streams-per-sandbox", max_per_sandbox,
                                     "concurrent ForwardTcp streams per sandbox")
                          ->capture_default_str();
  auto* wait_opt = app.add_option("--supervisor-wait-ms", supervisor_wait_ms,
                                  "how long ForwardTcp waits for a supervisor session (ms)")
                       ->capture_default_str();
  auto* claim_opt = app.add_option("--relay-claim-timeout-ms", relay_claim_timeout_ms,
                                   "how long ForwardTcp waits for the relay open result, and then "
                                   "for the relay claim (ms)")
                        ->capture_default_str();
  auto* ttl_opt = app.add_option("--token-ttl-secs", token_ttl_secs,
                                 "SSH-session token lifetime in seconds (0 = no expiry)")
                      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str();
  auto* version_opt = app.add_option("--version-string,--health-version", version,
                                     "version reported by Health (default: 0.1.11 with --protocol 0.1, "
                                     "0.0.111 with 0.0)");
  bool tunnel_extensions = false;
  app.add_flag("--tunnel-extensions", tunnel_extensions,
               "offer the project's ForwardTcp extensions (connect-ack, fin-frame, relay-error) to "
               "calls that ask in x-osh-tunnel-ext metadata; off: upstream behaviour for every call");
  auto* rate_opt = app.add_option("--rate-limit", rate_limit_text,
                                  "global limit on client calls N/SECONDS (token bucket; over it: "
                                  "RESOURCE_EXHAUSTED \"gRPC rate limit exceeded\"); default off");
  auto* pending_sb_opt = app.add_option("--max-pending-relays-per-sandbox", max_pending_per_sandbox,
                                        "unclaimed relays per sandbox")
                             ->capture_default_str();
  auto* pending_opt = app.add_option("--max-pending-relays", max_pending, "unclaimed relays in all")
                          ->capture_default_str();
  auto* buffer_opt = app.add_option("--max-buffer-mib", max_buffer_mib,
                                    "ceiling of all streams' buffers, MiB (gRPC memory quota: receive "
                                    "windows shrink as unread data fills it; 0 = none)")
                        ->capture_default_str()->check(CLI::Range(0, 1 << 20));
  std::string tls_cert, tls_key, client_ca, bearer_token, supervisor_listen;
  app.add_option("--tls-cert", tls_cert, "PEM server certificate (chain): serve TLS on --listen");
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
  app.add_option("--client-ca", client_ca,
                 "PEM CA bundle: require and verify client certificates (mTLS; needs --tls-cert)");
  app.add_option("--bearer-token", bearer_token,
                 "require 'authorization: Bearer TOKEN' on every client method except Health");
  app.add_option("--supervisor-listen", supervisor_listen,
                 "extra plaintext ADDR:PORT for mini-supervisors when --listen serves TLS "
                 "(client methods are refused there)");
  CLI11_PARSE(app, argc, argv);

  if (!osh::peers::SetLogLevel(log_level)) {
    std::fprintf(stderr, "openshell-mini-gateway: unknown --log-level '%s'\n", log_level.c_str());
    return 2;
  }
  try {
    osh::peers::GatewayConfig config;
    if (!config_file.empty()) osh::peers::LoadGatewayConfigFile(config_file, config);
    if (listen_opt->count() > 0) config.listen = listen;
    if (token_opt->count() > 0) config.max_streams_per_token = max_per_token;
    if (sandbox_opt->count() > 0) config.max_streams_per_sandbox = max_per_sandbox;
    if (wait_opt->count() > 0) config.supervisor_wait = std::chrono::milliseconds(supervisor_wait_ms);
    if (claim_opt->count() > 0) {
      config.relay_claim_timeout = std::chrono::milliseconds(relay_claim_timeout_ms);
    }
    if (ttl_opt->count() > 0) config.token_ttl = std::chrono::seconds(token_ttl_secs);
    if (version_opt->count() > 0) config.version = version;
    if (protocol_opt->count() > 0) config.protocol = *osh::peers::ParseProtocol(protocol_text);
    if (tunnel_extensions) config.tunnel_extensions = true;
    if (rate_opt->count() > 0) config.rate_limit = osh::peers::ParseRateLimit(rate_limit_text);
    if (pending_sb_opt->count() > 0) config.max_pending_relays_per_sandbox = max_pending_per_sandbox;
    if (pending_opt->count() > 0) config.max_pending_relays = max_pending;
    if (buffer_opt->count() > 0) config.max_buffer_bytes = size_t{max_buffer_mib} << 20;
    if (!tls_cert.empty()) config.tls_cert_file = tls_cert;
    if (!tls_key.empty()) config.tls_key_file = tls_key;
    if (!client_ca.empty()) config.client_ca_file = client_ca;
    if (!bearer_token.empty()) config.bearer_token = bearer_token;
    if (!supervisor_listen.empty()) config.supervisor_listen = supervisor_listen;
    AddSandboxFlags(sandbox_flags, generate_flags, host_key_flags, phase_flags, config.sandboxes);
    config.record_tokens_file = record_tokens;

    osh::peers::MiniGateway gateway(config);
    gateway.Start();
    const osh::IdleTrimmer trimmer("mini-gateway");  // memory given back on idle (issue 15.2)
    std::string security = config.tls_cert_file.empty() ? "h2c" : "TLS";
    if (!config.client_ca_file.empty()) security += ", client certificates required";
    if (!config.bearer_token.empty()) security += ", bearer token required";
    std::printf("mini-gateway listening on %s (%s; protocol %s; %zu sandboxes)\n",
                gateway.bound_address().c_str(), security.c_str(),
                osh::peers::ProtocolName(config.protocol), config.sandboxes.size());
    if (gateway.supervisor_port() != 0) {
      std::printf("mini-gateway supervisor listener on port %u (h2c)\n", gateway.supervisor_port());
    }
    std::fflush(stdout);
    int sig;
    while ((sig = osh::peers::WaitForTerminationOrReload()) == SIGHUP) {
      // Reload the declared sandboxes: --config (if any) plus --sandbox flags.
      try {
        osh::peers::GatewayConfig fresh;
        if (!config_file.empty()) osh::peers::LoadGatewayConfigFile(config_file, fresh);
        AddSandboxFlags(sandbox_flags, generate_flags, host_key_flags, phase_flags, fresh.sandboxes);
        fresh.protocol = config.protocol;
        osh::peers::ValidateGatewayConfig(fresh);
        gateway.SetSandboxes(fresh.sandboxes);
        osh::peers::PeerLogger("mini-gateway")->info("SIGHUP: reloaded, {} sandboxes", fresh.sandboxes.size());
      } catch (const std::exception& e) {
        osh::peers::PeerLogger("mini-gateway")->error("SIGHUP: reload failed, keeping the old sandboxes: {}", e.what());
      }
    }
    osh::peers::PeerLogger("mini-gateway")->info("signal {} received", sig);
    gateway.Shutdown(std::chrono::milliseconds(2000));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "openshell-mini-gateway: %s\n", e.what());
    return 1;
  }
  return 0;
}

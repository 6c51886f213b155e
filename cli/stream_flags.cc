#include "cli/stream_flags.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace osh::cli {

void add_stream_flags(CLI::App* cmd, relay::ForwardOptions& fo) {
  cmd->add_option("--max-streams-per-sandbox", fo.max_streams_per_sandbox,
                  "concurrent ForwardTcp streams per sandbox; more connections wait")
      ->capture_default_str()->check(CLI::Range(size_t{1}, size_t{1000000}));
  cmd->add_option("--max-streams-per-token", fo.max_streams_per_token,
                  "concurrent streams per SSH-session token")
      ->capture_default_str()->check(CLI::Range(size_t{1}, size_t{1000000}));
  cmd->add_option_function<uint32_t>(
         "--queue-timeout-ms", [&fo](const uint32_t& ms) { fo.queue_timeout = std::chrono::milliseconds(ms); },
         "how long a connection may wait for a stream slot before it is refused")
      ->default_str(std::to_string(fo.queue_timeout.count()));
  cmd->add_option("--max-pending-opens", fo.max_pending_opens,
                  "connections waiting for a stream slot at once, all sandboxes together; more are "
                  "refused (RST)")
      ->capture_default_str()->check(CLI::Range(size_t{1}, size_t{1000000}));
  cmd->add_option("--max-streams", fo.max_streams,
                  "streams open at once, all sandboxes together; more connections are refused (RST)")
      ->capture_default_str()->check(CLI::Range(size_t{1}, size_t{1000000}));
  cmd->add_option_function<uint32_t>(
         "--open-timeout-ms", [&fo](const uint32_t& ms) { fo.open_timeout = std::chrono::milliseconds(ms); },
         "how long a connection may wait for its stream to open (queue, token, gateway) before it "
         "is refused")
      ->default_str(std::to_string(fo.open_timeout.count()))->check(CLI::Range(100, 600000));
  const int32_t settle_default =
      fo.connect_settle ? static_cast<int32_t>(fo.connect_settle->count()) : -1;
  cmd->add_option_function<int32_t>(
         "--connect-settle-ms",
         [&fo](const int32_t& ms) {
           if (ms < 0) fo.connect_settle.reset();
           else fo.connect_settle = std::chrono::milliseconds(ms);
         },
         "after the gateway's response headers, hold a new connection this long for a "
         "refusal from the sandbox (-1: adaptive, at most 25 ms; 0: none; ignored when the "
         "gateway confirms connects itself)")
      ->default_str(std::to_string(settle_default))->check(CLI::Range(-1, 60000));
  cmd->add_option_function<uint32_t>(
         "--max-buffer-mib", [&fo](const uint32_t& mib) { fo.max_buffer_bytes = size_t{mib} << 20; },
         "ceiling of the buffers of all streams together, MiB (0: the h2 transport's 256 MiB, "
         "grpc's none): the h2 connection's receive window (past it the gateway's sends wait), or "
         "grpc's memory quota (windows shrink as unread data fills it; gRPC resets streams when it "
         "is exhausted); each open stream takes 4 MiB of it (more connections wait)")
      ->default_str(std::to_string(fo.max_buffer_bytes >> 20))->check(CLI::Range(0, 1 << 20));
  cmd->add_option_function<std::string>(
         "--forward-transport",
         [&fo](const std::string& t) {
           fo.transport = t == "h2" ? relay::ForwardTransport::kH2 : relay::ForwardTransport::kGrpc;
         },
         "what carries the ForwardTcp streams: h2 (the tunnel's own HTTP/2 client: a receive "
         "window per stream that grows only as the client reads) or grpc (grpc++'s channel)")
      ->default_str(relay::to_string(fo.transport))
      ->check(CLI::IsMember({"h2", "grpc"}));
  cmd->add_flag_callback("--no-tunnel-ext", [&fo] { fo.request_extensions = false; },
                         "do not ask the gateway for the project's ForwardTcp extensions (connect-ack, "
                         "fin-frame, relay-error): behave exactly as against upstream");
}

void add_token_idle_flag(CLI::App* cmd, relay::ForwardOptions& fo) {
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(fo.token_idle_timeout).count();
  cmd->add_option_function<uint32_t>(
         "--token-idle-s", [&fo](const uint32_t& s) { fo.token_idle_timeout = std::chrono::seconds(s); },
         "revoke pooled SSH-session tokens unused this long")
      ->default_str(std::to_string(secs))->check(CLI::Range(1, 86400));
}

}  // namespace osh::cli

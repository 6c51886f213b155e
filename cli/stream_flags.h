// The stream flags shared by `up` and `forward`, bound straight into
// relay::ForwardOptions so that each setting has exactly one default: the
// one written in relay/forward.h (issue 13.4).
#pragma once

#include "relay/forward.h"

namespace CLI {
class App;
}

namespace osh::cli {

/// add_stream_flags() - adds to @cmd the caps of the gateway's streams
/// (--max-streams-per-sandbox, --max-streams-per-token, --queue-timeout-ms;
/// protocol §2.8), the global bounds (--max-pending-opens, --max-streams,
/// --open-timeout-ms; issue 14.5) and the connection semantics against an upstream gateway
/// (--connect-settle-ms, --no-tunnel-ext; docs/ARCHITECTURE.md "Connection
/// semantics"). Each writes its field of @fo when given; --help shows @fo's
/// values at the time of the call as the defaults. @fo must outlive parsing.
/// Thread: the parsing thread.
void add_stream_flags(CLI::App* cmd, relay::ForwardOptions& fo);

/// add_token_idle_flag() - `up`'s --token-idle-s, bound to
/// @fo.token_idle_timeout (whole seconds, 1..86400).
void add_token_idle_flag(CLI::App* cmd, relay::ForwardOptions& fo);

}  // namespace osh::cli

// The project's ForwardTcp extensions (docs/ARCHITECTURE.md "Connection
// semantics"). Upstream gateways ignore request metadata they do not know,
// so the client always asks and learns from the response headers alone
// which behaviour it is talking to. The mini peers (peers/common/) define
// the same strings; relay/ cannot include peers/, so they are repeated there.
#pragma once

#include <string_view>

namespace osh::relay {

/// Request and response metadata key. The client sends the extensions it
/// wants, comma-separated; the gateway answers, in its response initial
/// metadata under the same key, the subset it turned on for this call.
inline constexpr char kTunnelExtKey[] = "x-osh-tunnel-ext";
/// Response headers only once the target connected; a failed dial is a
/// trailers-only UNAVAILABLE with the OS error text.
inline constexpr char kExtConnectAck[] = "connect-ack";
/// An empty data frame gateway->client means "the target sent FIN"; the
/// call stays open until both directions ended.
inline constexpr char kExtFinFrame[] = "fin-frame";
/// A lost relay ends the call UNAVAILABLE "relay lost" instead of OK.
inline constexpr char kExtRelayError[] = "relay-error";
/// What the tunnel asks for on every ForwardTcp (unless told not to).
inline constexpr char kTunnelExtRequest[] = "connect-ack,fin-frame,relay-error";

/// The extensions a gateway confirmed for one call.
struct TunnelExt {
  bool connect_ack = false;
  bool fin_frame = false;
  bool relay_error = false;
};

/// parse_tunnel_ext() - reads a kTunnelExtKey value ("connect-ack,fin-frame";
/// spaces around items and letter case ignored, unknown items ignored).
/// "" = none. Several header values: parse each and OR them. Thread: any.
TunnelExt parse_tunnel_ext(std::string_view value);

}  // namespace osh::relay

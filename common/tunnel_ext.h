// The project's ForwardTcp extensions and how a call negotiates them.
//
// Upstream OpenShell's ForwardTcp (protocol §2.4, §2.6) gives a client no
// "target connected" signal, no target FIN before the client half-closes
// (0.0 supervisors), and ends a lost relay with OK. The mini-gateway can do
// better, but only for a client that asks, so that a client written for
// upstream sees exactly upstream's behaviour:
//
//   request metadata   x-osh-tunnel-ext: connect-ack,fin-frame,relay-error
//   response headers   x-osh-tunnel-ext: <the subset turned on for this call>
//
// The request value is a comma-separated token list (spaces around tokens
// and letter case are ignored; unknown tokens are ignored, as upstream
// ignores metadata it does not know; several header values are merged). The
// gateway answers in its response *initial* metadata with the tokens it
// turned on, in the order below. An upstream gateway never sends the header,
// so a client learns from the response headers alone which behaviour it gets.
// A call that fails before its headers (trailers-only) carries no answer.
//
//   connect-ack  response headers go out only after the supervisor's
//                RelayOpenResult{success}: headers mean "target connected".
//                A failed dial ends the call trailers-only with UNAVAILABLE
//                and the supervisor's OS error text ("Connection refused (os
//                error 111)"). Default (upstream): headers as soon as
//                RelayOpen is sent, before the dial.
//   fin-frame    an EMPTY TcpForwardFrame.data from the gateway means "the
//                target sent FIN"; the call stays open until both directions
//                ended (the client half-closes with WritesDone as usual) and
//                then ends OK. Default: the target's FIN ends the call with OK
//                (0.1) or is held until the client half-closes (0.0).
//   relay-error  a lost relay (supervisor gone, RelayStream failed) ends the
//                call with UNAVAILABLE "relay lost". Default: OK.
//
// Header-only and dependency-free (common/) so that the tunnel's relay/ and
// the mini peers in peers/ share these exact strings.
#pragma once

#include <string>
#include <string_view>

namespace osh::tunnel_ext {

/// The metadata key, in request metadata (asked) and response initial
/// metadata (confirmed). Lower case, as HTTP/2 requires.
inline constexpr std::string_view kHeader = "x-osh-tunnel-ext";
/// Response headers mean "target connected" (RelayOpenResult{success}).
inline constexpr std::string_view kConnectAck = "connect-ack";
/// An empty data frame gateway -> client is the target's FIN.
inline constexpr std::string_view kFinFrame = "fin-frame";
/// A lost relay ends the call UNAVAILABLE "relay lost" instead of OK.
inline constexpr std::string_view kRelayError = "relay-error";
/// The status message of a lost relay under relay-error.
inline constexpr std::string_view kRelayLostMessage = "relay lost";

/// A set of extensions (what a client asks for, or a call turned on).
struct Extensions {
  bool connect_ack = false;
  bool fin_frame = false;
  bool relay_error = false;

  bool any() const { return connect_ack || fin_frame || relay_error; }
  bool operator==(const Extensions&) const = default;
};

namespace detail {
inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}
inline std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}
}  // namespace detail

/// ParseInto() - adds the known tokens of one header value @value
/// ("connect-ack, fin-frame") to @set. Unknown and empty tokens are ignored.
/// Thread: any.
inline void ParseInto(std::string_view value, Extensions& set) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    const std::string_view token = detail::Trim(value.substr(0, comma));
    if (detail::EqualsIgnoreCase(token, kConnectAck)) set.connect_ack = true;
    if (detail::EqualsIgnoreCase(token, kFinFrame)) set.fin_frame = true;
    if (detail::EqualsIgnoreCase(token, kRelayError)) set.relay_error = true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
}

/// Parse() - the known tokens of one header value. Thread: any.
inline Extensions Parse(std::string_view value) {
  Extensions set;
  ParseInto(value, set);
  return set;
}

/// What the tunnel asks for on every ForwardTcp (unless told not to).
inline constexpr std::string_view kRequestAll = "connect-ack,fin-frame,relay-error";

/// Format() - the header value for @set: its tokens in the order
/// connect-ack, fin-frame, relay-error, joined by ","; "" for none.
/// Thread: any.
inline std::string Format(const Extensions& set) {
  std::string out;
  auto add = [&out](std::string_view token) {
    if (!out.empty()) out += ',';
    out += token;
  };
  if (set.connect_ack) add(kConnectAck);
  if (set.fin_frame) add(kFinFrame);
  if (set.relay_error) add(kRelayError);
  return out;
}

}  // namespace osh::tunnel_ext

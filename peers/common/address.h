// Address rules shared by the mini-gateway and the mini-supervisor: the
// loopback-only target check (protocol §2.2, repeated by the supervisor in
// §3.2), "host:port" parsing and gateway endpoint URLs (protocol §4.1).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/ip_address.h"

namespace osh::peers {

/// TrimAscii() - @text without leading and trailing ASCII whitespace
/// (space, \t, \n, \v, \f, \r). Upstream trims target hosts and tokens
/// before checking them (protocol §2.2, §2.1 step 6).
/// Return: a view into @text. Thread: any.
std::string_view TrimAscii(std::string_view text);

/// Outcome of NormalizeLoopbackHost().
enum class LoopbackCheck {
  kOk,           ///< host is loopback; LoopbackHost::host holds the normal form
  kEmpty,        ///< host is empty after trimming
  kNotLoopback,  ///< anything else: hostname, non-loopback IP, "[::1]", "::ffff:127.0.0.1"
};

/// Result of NormalizeLoopbackHost(): the check and, for kOk, the host to dial.
struct LoopbackHost {
  LoopbackCheck check = LoopbackCheck::kNotLoopback;
  std::string host;  ///< normalized host ("127.0.0.1", "::1", ...) when check == kOk
};

/// NormalizeLoopbackHost() - the TCP-target host rule of protocol §2.2.
/// @raw: the host as received in TcpRelayTarget.host.
///
/// The host is trimmed. "localhost" in any letter case becomes "127.0.0.1".
/// Otherwise it must be an IP literal (IPv4 dotted quad, or IPv6 in any
/// textual form, without brackets or zone) that is in 127.0.0.0/8 or equal to
/// ::1; it is returned in its canonical text form (inet_ntop). Bracketed
/// "[::1]", IPv4-mapped "::ffff:127.0.0.1", hostnames and any other address
/// are kNotLoopback, exactly as upstream's gateway.
/// Return: see LoopbackHost. Thread: any. Errors: none (reported in .check).
LoopbackHost NormalizeLoopbackHost(std::string_view raw);

/// LoopbackCheckMessage() - upstream's INVALID_ARGUMENT text for @check
/// (protocol §2.3): "tcp target host is required" / "tcp target host must be
/// loopback"; empty for kOk. Thread: any.
const char* LoopbackCheckMessage(LoopbackCheck check);

/// A parsed "host:port"; host is kept without brackets.
struct HostPort {
  std::string host;
  uint16_t port = 0;
};

/// ParseHostPort() - parses "HOST:PORT", "[IPV6]:PORT" (bracketed IPv6).
/// @text: the string; the port is decimal 0..65535 (0 allowed, e.g. for
///        listening on an ephemeral port).
/// Return: the parts, or std::nullopt if the text is malformed (no port,
///         empty host, unbracketed IPv6, port out of range).
/// Thread: any.
std::optional<HostPort> ParseHostPort(std::string_view text);

/// "host:port" is formatted by osh::host_port() (common/ip_address.h), the
/// tree's one formatter.
using osh::host_port;

/// GrpcTargetFromEndpoint() - turns a gateway endpoint URL into a gRPC target.
/// @url: "http://HOST:PORT" (an optional trailing "/" is accepted); IPv6 hosts
///       are bracketed ("http://[::1]:17670"). The mini peers speak plaintext
///       HTTP/2 (h2c) only, so "https://" is rejected.
/// Return: "HOST:PORT" ("[::1]:17670" for IPv6), usable with grpc::CreateChannel.
/// @throws std::invalid_argument with a readable message on any other form.
/// Thread: any.
std::string GrpcTargetFromEndpoint(std::string_view url);

}  // namespace osh::peers

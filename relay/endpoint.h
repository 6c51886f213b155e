// Gateway endpoint URLs, as the OpenShell CLI writes them (protocol §4.1):
// `http://host:port` (h2c) or `https://host:port` (TLS).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace osh::relay {

struct Endpoint {
  bool tls = false;
  std::string host;     ///< without brackets for IPv6 literals
  uint16_t port = 0;
  /// gRPC target string: "host:port", or "[v6]:port".
  std::string grpc_target() const;
  std::string to_string() const;
};

/// Parses `http://HOST[:PORT][/]` or `https://...`; the port defaults to 17670
/// (upstream default, protocol §4.1). nullopt with `*error` set otherwise.
std::optional<Endpoint> parse_endpoint(std::string_view url, std::string* error);

}  // namespace osh::relay

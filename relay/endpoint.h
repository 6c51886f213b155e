// Gateway endpoint URLs, as the OpenShell CLI writes them (protocol §4.1):
// `http://host:port` (h2c) or `https://host:port` (TLS).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_address.h"

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

/// resolve_host() - every address `host` stands for: the host itself when it
/// is an IP literal (no lookup), else getaddrinfo(AF_UNSPEC, SOCK_STREAM)
/// through the system resolver (hosts file, DNS), duplicates dropped, in the
/// resolver's order. gRPC's own resolver (c-ares by default) asks the same
/// DNS servers but may skip the hosts file (GRPC_DNS_RESOLVER=native uses
/// getaddrinfo too).
/// @param host   Endpoint::host (no brackets)
/// @param error  set to the resolver's message when nullopt is returned
/// Return: at least one address, or nullopt when the name does not resolve.
/// Thread: any; blocks for the lookup (seconds when a DNS server does not
/// answer: the resolver's own timeouts).
std::optional<std::vector<IpAddress>> resolve_host(const std::string& host, std::string* error);

}  // namespace osh::relay

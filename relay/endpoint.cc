#include "relay/endpoint.h"

#include "common/ip_address.h"

#include <netdb.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <memory>

namespace osh::relay {

std::string Endpoint::grpc_target() const { return host_port(host, port); }

std::string Endpoint::to_string() const {
  return std::string(tls ? "https://" : "http://") + grpc_target();
}

std::optional<Endpoint> parse_endpoint(std::string_view url, std::string* error) {
  Endpoint ep;
  auto fail = [&](std::string why) -> std::optional<Endpoint> {
    if (error) *error = "invalid gateway endpoint '" + std::string(url) + "': " + why;
    return std::nullopt;
  };
  if (url.starts_with("http://")) {
    url.remove_prefix(7);
  } else if (url.starts_with("https://")) {
    ep.tls = true;
    url.remove_prefix(8);
  } else {
    return fail("must start with http:// or https://");
  }
  while (url.ends_with('/')) url.remove_suffix(1);
  if (url.find('/') != std::string_view::npos) return fail("a path is not allowed");
  std::string_view port_text;
  if (url.starts_with('[')) {
    const size_t close = url.find(']');
    if (close == std::string_view::npos) return fail("unterminated '[' in IPv6 address");
    ep.host = std::string(url.substr(1, close - 1));
    std::string_view rest = url.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return fail("expected ':' after ']'");
      port_text = rest.substr(1);
    }
  } else {
    const size_t colon = url.rfind(':');
    if (colon != std::string_view::npos) {
      ep.host = std::string(url.substr(0, colon));
      port_text = url.substr(colon + 1);
    } else {
      ep.host = std::string(url);
    }
  }
  if (ep.host.empty()) return fail("missing host");
  if (port_text.empty()) {
    ep.port = 17670;
  } else {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), v);
    if (ec != std::errc() || p != port_text.data() + port_text.size() || v == 0 || v > 65535)
      return fail("port must be 1..65535");
    ep.port = static_cast<uint16_t>(v);
  }
  return ep;
}

std::optional<std::vector<IpAddress>> resolve_host(const std::string& host, std::string* error) {
  if (auto literal = IpAddress::parse(host)) return std::vector<IpAddress>{*literal};
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* raw = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &raw); rc != 0) {
    if (error) *error = "resolving " + host + ": " + ::gai_strerror(rc);
    return std::nullopt;
  }
  const std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(raw, &::freeaddrinfo);
  std::vector<IpAddress> out;
  for (const addrinfo* ai = list.get(); ai != nullptr; ai = ai->ai_next) {
    IpAddress a;
    if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(sockaddr_in))
      a = IpAddress::v4(reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(ai->ai_addr)->sin_addr));
    else if (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof(sockaddr_in6))
      a = IpAddress::v6(reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in6*>(ai->ai_addr)->sin6_addr));
    else
      continue;
    if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
  }
  if (out.empty()) {
    if (error) *error = "resolving " + host + ": no IPv4 or IPv6 address";
    return std::nullopt;
  }
  return out;
}

}  // namespace osh::relay

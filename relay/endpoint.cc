#include "relay/endpoint.h"

#include "common/ip_address.h"

#include <charconv>

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

}  // namespace osh::relay

#include "peers/common/address.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <stdexcept>

namespace osh::peers {
namespace {

bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::optional<uint16_t> ParsePort(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  unsigned value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value > 65535) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(value);
}

}  // namespace

std::string_view TrimAscii(std::string_view text) {
  while (!text.empty() && IsAsciiSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsAsciiSpace(text.back())) text.remove_suffix(1);
  return text;
}

LoopbackHost NormalizeLoopbackHost(std::string_view raw) {
  const std::string host(TrimAscii(raw));
  if (host.empty()) return {LoopbackCheck::kEmpty, {}};
  if (EqualsIgnoreCase(host, "localhost")) return {LoopbackCheck::kOk, "127.0.0.1"};

  const auto ip = IpAddress::parse(host);
  if (!ip) return {LoopbackCheck::kNotLoopback, {}};
  // 127.0.0.0/8; for IPv6 only ::1 itself: IPv4-mapped ::ffff:127.0.0.1
  // fails, as upstream's Ipv6Addr::is_loopback() does.
  static const IpAddress kV6Loopback = *IpAddress::parse("::1");
  const bool loopback = ip->is_v4() ? ip->bytes[0] == 127 : *ip == kV6Loopback;
  if (!loopback) return {LoopbackCheck::kNotLoopback, {}};
  return {LoopbackCheck::kOk, ip->to_string()};
  return {LoopbackCheck::kNotLoopback, {}};
}

const char* LoopbackCheckMessage(LoopbackCheck check) {
  switch (check) {
    case LoopbackCheck::kOk:
      return "";
    case LoopbackCheck::kEmpty:
      return "tcp target host is required";
    case LoopbackCheck::kNotLoopback:
      return "tcp target host must be loopback";
  }
  return "tcp target host must be loopback";
}

std::optional<HostPort> ParseHostPort(std::string_view text) {
  HostPort out;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() ||
        text[close + 1] != ':') {
      return std::nullopt;
    }
    out.host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    out.host = std::string(text.substr(0, colon));
    if (out.host.find(':') != std::string::npos) return std::nullopt;  // unbracketed IPv6
    port_text = text.substr(colon + 1);
  }
  if (out.host.empty()) return std::nullopt;
  const auto port = ParsePort(port_text);
  if (!port) return std::nullopt;
  out.port = *port;
  return out;
}

std::string GrpcTargetFromEndpoint(std::string_view url) {
  constexpr std::string_view kHttp = "http://";
  constexpr std::string_view kHttps = "https://";
  const std::string shown(url);
  if (url.substr(0, kHttps.size()) == kHttps) {
    throw std::invalid_argument("gateway endpoint '" + shown +
                                "': https is not supported by the mini peers; use http://HOST:PORT");
  }
  if (url.substr(0, kHttp.size()) != kHttp) {
    throw std::invalid_argument("gateway endpoint '" + shown + "' must look like http://HOST:PORT");
  }
  std::string_view rest = url.substr(kHttp.size());
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  const auto hp = ParseHostPort(rest);
  if (!hp || hp->port == 0) {
    throw std::invalid_argument("gateway endpoint '" + shown + "' must look like http://HOST:PORT");
  }
  return host_port(hp->host, hp->port);
}

}  // namespace osh::peers

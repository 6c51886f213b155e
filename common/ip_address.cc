// Theory of operation: parsing and formatting delegate to inet_pton /
// inet_ntop (strict numeric literals only); the rest is plain byte work.
#include "common/ip_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace osh {

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  // INET6_ADDRSTRLEN (46) bounds every valid literal; longer input is invalid.
  char buf[INET6_ADDRSTRLEN + 1];
  if (text.empty() || text.size() >= sizeof buf) return std::nullopt;
  text.copy(buf, text.size());
  buf[text.size()] = '\0';

  IpAddress a;
  if (text.find(':') == std::string_view::npos) {
    if (inet_pton(AF_INET, buf, a.bytes.data()) != 1) return std::nullopt;
    a.family = AF_INET;
  } else {
    if (inet_pton(AF_INET6, buf, a.bytes.data()) != 1) return std::nullopt;
    a.family = AF_INET6;
  }
  return a;
}

IpAddress IpAddress::v4(const std::array<uint8_t, 4>& b) { return v4(b.data()); }

IpAddress IpAddress::v6(const std::array<uint8_t, 16>& b) { return v6(b.data()); }

IpAddress IpAddress::v4(const uint8_t* p) {
  IpAddress a;
  a.family = AF_INET;
  std::memcpy(a.bytes.data(), p, 4);
  return a;
}

IpAddress IpAddress::v6(const uint8_t* p) {
  IpAddress a;
  a.family = AF_INET6;
  std::memcpy(a.bytes.data(), p, 16);
  return a;
}

socklen_t IpAddress::to_sockaddr(uint16_t port, sockaddr_storage* out) const {
  *out = sockaddr_storage{};
  if (is_v4()) {
    auto* a = reinterpret_cast<sockaddr_in*>(out);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    std::memcpy(&a->sin_addr, bytes.data(), 4);
    return sizeof *a;
  }
  if (is_v6()) {
    auto* a = reinterpret_cast<sockaddr_in6*>(out);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    std::memcpy(&a->sin6_addr, bytes.data(), 16);
    return sizeof *a;
  }
  return 0;
}

std::string IpAddress::to_string() const {
  if (family != AF_INET && family != AF_INET6) return {};
  char buf[INET6_ADDRSTRLEN];
  if (inet_ntop(family, bytes.data(), buf, sizeof buf) == nullptr) return {};
  return buf;
}

std::size_t IpAddressHash::operator()(const IpAddress& a) const noexcept {
  uint64_t h = 1469598103934665603ull ^ static_cast<uint64_t>(a.family);  // FNV-1a
  for (std::size_t i = 0; i < a.size(); ++i) h = (h ^ a.bytes[i]) * 1099511628211ull;
  return static_cast<std::size_t>(h);
}

std::string host_port(std::string_view host, uint16_t port) {
  std::string out;
  out.reserve(host.size() + 8);
  if (host.find(':') != std::string_view::npos) {
    out.append("[").append(host).append("]");
  } else {
    out.append(host);
  }
  out.append(":").append(std::to_string(port));
  return out;
}

std::string host_port(const IpAddress& addr, uint16_t port) {
  return host_port(addr.size() ? addr.to_string() : std::string("?"), port);
}

}  // namespace osh

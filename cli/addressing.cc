#include "cli/addressing.h"

#include <stdexcept>

namespace osh::cli {
namespace {
constexpr uint64_t kFirstSandboxIndex = 16;  // .0 network, .1 tunnel, .2 DNS, .3 netif, rest spare

uint64_t fnv1a(const std::string& s, uint64_t salt) {
  uint64_t h = 1469598103934665603ull ^ salt;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

uint64_t host_count(const tun::IpPrefix& p) {
  const unsigned host_bits = p.addr.bits() - p.len;
  return host_bits >= 63 ? (uint64_t{1} << 62) : (uint64_t{1} << host_bits);
}
}  // namespace

AddressPlan::AddressPlan(const tun::IpPrefix& p4, const tun::IpPrefix& p6)
    : p4_(p4.network()), p6_(p6.network()), hosts4_(host_count(p4_)), hosts6_(host_count(p6_)) {
  if (!p4_.addr.is_v4() || p4_.len > 24) throw std::invalid_argument("IPv4 prefix must be /24 or larger");
  if (!p6_.addr.is_v6() || p6_.len > 112) throw std::invalid_argument("IPv6 prefix must be /112 or larger");
}

SandboxAddresses AddressPlan::assign(const std::string& id) {
  if (auto it = by_id_.find(id); it != by_id_.end()) return it->second;
  // Usable v4 indexes: [16, hosts4 - 2] (the last one is the broadcast address).
  const uint64_t span4 = hosts4_ - 1 - kFirstSandboxIndex;
  const uint64_t span6 = hosts6_ - kFirstSandboxIndex;
  if (used4_.size() >= span4) throw std::runtime_error("IPv4 prefix is full");
  uint64_t i4 = kFirstSandboxIndex + fnv1a(id, 4) % span4;
  while (used4_.contains(i4)) i4 = kFirstSandboxIndex + (i4 - kFirstSandboxIndex + 1) % span4;
  uint64_t i6 = kFirstSandboxIndex + fnv1a(id, 6) % span6;
  while (used6_.contains(i6)) i6 = kFirstSandboxIndex + (i6 - kFirstSandboxIndex + 1) % span6;
  used4_.emplace(i4, id);
  used6_.emplace(i6, id);
  SandboxAddresses a{p4_.nth(i4), p6_.nth(i6)};
  by_id_.emplace(id, a);
  return a;
}

void AddressPlan::release(const std::string& id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  std::erase_if(used4_, [&](const auto& kv) { return kv.second == id; });
  std::erase_if(used6_, [&](const auto& kv) { return kv.second == id; });
  by_id_.erase(it);
}

}  // namespace osh::cli

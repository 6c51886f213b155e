#include "cli/addressing.h"

#include <algorithm>
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
// Offset of `a` from the network address of `p` (low 62 bits at most).
uint64_t host_index(const tun::IpPrefix& p, const tun::IpAddress& a) {
  uint64_t v = 0;
  const size_t n = a.size();
  for (size_t i = n >= 8 ? n - 8 : 0; i < n; ++i) v = (v << 8) | a.bytes[i];
  uint64_t base = 0;
  for (size_t i = n >= 8 ? n - 8 : 0; i < n; ++i) base = (base << 8) | p.addr.bytes[i];
  return v - base;
}
}  // namespace

bool AddressPlan::restore(const std::string& id, const tun::IpAddress& v4, const tun::IpAddress& v6) {
  if (by_id_.contains(id) || !p4_.contains(v4) || !p6_.contains(v6)) return false;
  const uint64_t i4 = host_index(p4_, v4), i6 = host_index(p6_, v6);
  if (i4 < kFirstSandboxIndex || i4 >= hosts4_ - 1 || i6 < kFirstSandboxIndex || i6 >= hosts6_) return false;
  if (p4_.nth(i4) != v4 || p6_.nth(i6) != v6) return false;  // v6 beyond the low 62 bits
  if (used4_.contains(i4) || used6_.contains(i6)) return false;
  used4_.emplace(i4, id);
  used6_.emplace(i6, id);
  by_id_.emplace(id, SandboxAddresses{v4, v6});
  return true;
}

AddressPlan::AddressPlan(const tun::IpPrefix& p4, const tun::IpPrefix& p6)
    : p4_(p4.network()), p6_(p6.network()), hosts4_(host_count(p4_)), hosts6_(host_count(p6_)) {
  if (!p4_.addr.is_v4() || p4_.len > 24) throw std::invalid_argument("IPv4 prefix must be /24 or larger");
  if (!p6_.addr.is_v6() || p6_.len > 112) throw std::invalid_argument("IPv6 prefix must be /112 or larger");
}

uint64_t AddressPlan::capacity() const {
  return std::min(hosts4_ - 1 - kFirstSandboxIndex, hosts6_ - kFirstSandboxIndex);
}

std::optional<SandboxAddresses> AddressPlan::assign(const std::string& id) {
  if (auto it = by_id_.find(id); it != by_id_.end()) return it->second;
  // Usable v4 indexes: [16, hosts4 - 2] (the last one is the broadcast address).
  const uint64_t span4 = hosts4_ - 1 - kFirstSandboxIndex;
  const uint64_t span6 = hosts6_ - kFirstSandboxIndex;
  // Either range full: the probes below would never end.
  if (used4_.size() >= span4 || used6_.size() >= span6) return std::nullopt;
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

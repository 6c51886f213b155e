// Theory of operation: the setup check is a handful of prefix comparisons
// (IpPrefix::overlaps: two prefixes nest or are disjoint) over a snapshot.
// Rules, from issue 15.5:
//   - the gateway: every address the endpoint resolves to must lie outside
//     both prefixes, or the tunnel's own route captures the gRPC channel;
//   - addresses: no interface address's subnet may overlap a prefix (the
//     kernel's connected route would compete with ours);
//   - routes: no main-table route may overlap a prefix, except default
//     routes (/0, and /1 halves: OpenVPN's def1 replaces the default route
//     by 0.0.0.0/1 + 128.0.0.0/1, and ::/1 + 8000::/1), which every prefix
//     overlaps and which lose to the more specific prefix route anyway;
//   - a stale interface of the tunnel's own (a TUN named like ours that no
//     process holds) is excepted: `up` deletes it instead.
// The IPv6 prefix takes part only when IPv6 is on (SetupPlan::prefix6).
#include "cli/setup_check.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

namespace osh::cli {
namespace {

// "osh0" -> "osh", "osh%d" -> "osh", "tunnel" -> "" (no numbered siblings).
std::string_view stem_of(std::string_view tun_name) {
  if (const auto pct = tun_name.find("%d"); pct != std::string_view::npos) return tun_name.substr(0, pct);
  std::size_t end = tun_name.size();
  while (end > 0 && std::isdigit(static_cast<unsigned char>(tun_name[end - 1])) != 0) --end;
  return end == tun_name.size() ? std::string_view{} : tun_name.substr(0, end);
}

// The prefixes of `plan` with their flag names.
std::vector<std::pair<const char*, tun::IpPrefix>> prefixes(const SetupPlan& plan) {
  std::vector<std::pair<const char*, tun::IpPrefix>> out{{"--prefix4", plan.prefix4.network()}};
  if (plan.prefix6) out.emplace_back("--prefix6", plan.prefix6->network());
  return out;
}

bool is_default_route(const tun::IpPrefix& dst) { return dst.len <= 1; }

bool on_stale_link(const tun::HostNetwork& net, int ifindex, std::string_view tun_name) {
  for (const tun::HostLink& l : net.links)
    if (l.index == ifindex) return is_stale_own_link(l, tun_name);
  return false;
}

// True if `ifindex` carries an address or route overlapping a prefix.
bool link_overlaps(const tun::HostNetwork& net, int ifindex, const SetupPlan& plan) {
  for (const auto& [flag, p] : prefixes(plan)) {
    for (const tun::HostAddress& a : net.addresses)
      if (a.ifindex == ifindex && p.overlaps(a.addr)) return true;
    for (const tun::HostRoute& r : net.routes)
      if (r.ifindex == ifindex && !is_default_route(r.dst) && p.overlaps(r.dst)) return true;
  }
  return false;
}

}  // namespace

bool is_stale_own_link(const tun::HostLink& link, std::string_view tun_name) {
  if (link.kind != "tun" || link.carrier) return false;
  if (link.name == tun_name) return true;
  const std::string_view stem = stem_of(tun_name);
  if (stem.empty() || link.name.size() <= stem.size() || !link.name.starts_with(stem)) return false;
  return std::all_of(link.name.begin() + static_cast<std::ptrdiff_t>(stem.size()), link.name.end(),
                     [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; });
}

bool recorded_link_is_stale(const tun::HostNetwork& net, std::string_view recorded) {
  if (recorded.empty()) return false;
  for (const tun::HostLink& l : net.links)
    if (l.name == recorded) return is_stale_own_link(l, recorded);
  return false;
}

std::vector<std::string> stale_links_to_remove(const tun::HostNetwork& net, const SetupPlan& plan) {
  std::vector<std::string> out;
  for (const tun::HostLink& l : net.links)
    if (is_stale_own_link(l, plan.tun_name) && (l.name == plan.tun_name || link_overlaps(net, l.index, plan)))
      out.push_back(l.name);
  return out;
}

std::vector<std::string> host_conflicts(const tun::HostNetwork& net, const SetupPlan& plan) {
  std::vector<std::string> out;
  for (const auto& [flag, p] : prefixes(plan)) {
    for (const tun::HostAddress& a : net.addresses) {
      if (!p.overlaps(a.addr) || on_stale_link(net, a.ifindex, plan.tun_name)) continue;
      out.push_back(fmt::format("{} {} overlaps address {} on {}", flag, p.to_string(), a.addr.to_string(),
                                net.link_name(a.ifindex)));
    }
    for (const tun::HostRoute& r : net.routes) {
      if (is_default_route(r.dst) || !p.overlaps(r.dst) || on_stale_link(net, r.ifindex, plan.tun_name))
        continue;
      out.push_back(fmt::format("{} {} overlaps route {}{}", flag, p.to_string(), r.dst.to_string(),
                                r.ifindex != 0 ? " dev " + net.link_name(r.ifindex) : std::string{}));
    }
  }
  return out;
}

std::vector<std::string> gateway_conflicts(const std::vector<IpAddress>& addrs, std::string_view endpoint,
                                           const SetupPlan& plan) {
  std::vector<std::string> out;
  for (const IpAddress& a : addrs)
    for (const auto& [flag, p] : prefixes(plan))
      if (p.contains(a))
        out.push_back(fmt::format("the gateway {} ({}) is inside {} {}", endpoint, a.to_string(), flag,
                                  p.to_string()));
  return out;
}

std::string refusal_line(const std::vector<std::string>& conflicts) {
  if (conflicts.empty()) return {};
  std::string line = conflicts.front();
  if (conflicts.size() > 1)
    line += fmt::format("; and {} more, e.g. {}", conflicts.size() - 1, conflicts[1]);
  line += " (the tunnel's route would take that traffic); pick a free range with --prefix4/--prefix6";
  return line;
}

}  // namespace osh::cli

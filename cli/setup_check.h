// `up`'s setup check (issue 15.5): before anything is changed, the prefixes
// the tunnel is about to route are compared with the gateway's addresses and
// with the addresses and routes already on the machine. A gateway inside a
// prefix would have its traffic captured by the tunnel's own route (every
// connection then fails with EHOSTUNREACH); a prefix overlapping a local
// subnet or route would take traffic away from it. Pure functions of plain
// values: the machine's side comes from tun::read_host_network(), the
// gateway's from relay::resolve_host(), so the decisions are unit-tested on
// made-up snapshots (tests/cli/setup_check_test.cc).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_address.h"
#include "tun/host_network.h"
#include "tun/ip_prefix.h"

namespace osh::cli {

/// What `up` is about to claim.
struct SetupPlan {
  tun::IpPrefix prefix4;                 ///< --prefix4
  std::optional<tun::IpPrefix> prefix6;  ///< --prefix6; nullopt when IPv6 is off on the host
  std::string tun_name;                  ///< --tun-name ("osh0"; may hold one "%d")
};

/// is_stale_own_link() - true for an interface left over by a tunnel: a TUN
/// (link kind "tun") without carrier, i.e. no process holds it (a TUN gets
/// carrier when a descriptor attaches), named `tun_name` or with the same
/// stem and a number ("osh0" -> "osh1", "osh12"; "osh%d" -> "osh3").
/// A live tunnel's TUN has carrier and is never stale.
bool is_stale_own_link(const tun::HostLink& link, std::string_view tun_name);

/// recorded_link_is_stale() - whether the interface a state file names
/// (`recorded`, the TUN a tunnel that died had) may be deleted: it is in
/// `net` under that exact name and is_stale_own_link() (a TUN no process
/// holds). Anything else under that name (a live tunnel's TUN, with carrier,
/// e.g. one of another state directory that took the name since; a dummy,
/// veth, ...) is left alone, as is an empty name.
bool recorded_link_is_stale(const tun::HostNetwork& net, std::string_view recorded);

/// stale_links_to_remove() - the stale own links (is_stale_own_link()) that
/// `up` deletes before it creates its TUN: the one named `plan.tun_name`
/// (TUNSETIFF would otherwise attach to it, persistent, with its old
/// addresses), and every other one that carries an address or route
/// overlapping a prefix (its route could win over ours).
/// Return: interface names, in the snapshot's order.
std::vector<std::string> stale_links_to_remove(const tun::HostNetwork& net, const SetupPlan& plan);

/// host_conflicts() - each address or main-table route of `net` that overlaps
/// a prefix of `plan` (IpPrefix::overlaps: an address stands for its on-link
/// subnet; a route counts whether it lies inside the prefix or covers it).
/// Excepted: default routes, meaning /0 and the two /1 halves that VPN
/// clients install instead of one (OpenVPN's def1); and every address and
/// route of a stale own link (is_stale_own_link()), which `up` removes.
/// Return: one text per conflict naming both sides, e.g. "--prefix4
/// 198.18.0.0/16 overlaps address 198.18.5.1/24 on dum0"; empty when none.
std::vector<std::string> host_conflicts(const tun::HostNetwork& net, const SetupPlan& plan);

/// gateway_conflicts() - each gateway address inside a prefix of `plan`.
/// @param addrs     every address the gateway endpoint resolves to
/// @param endpoint  the endpoint as the user wrote it, for the text
///                  ("http://gw.example:17670")
/// Return: one text per address inside a prefix, e.g. "the gateway
/// http://gw:17670 (198.18.77.7) is inside --prefix4 198.18.0.0/16";
/// empty when none.
std::vector<std::string> gateway_conflicts(const std::vector<IpAddress>& addrs, std::string_view endpoint,
                                           const SetupPlan& plan);

/// refusal_line() - the one line `up` prints for `conflicts` (not empty):
/// the first, then how many more and the second ("...; and 2 more, e.g.
/// ..."), then what to do about it. Gateway conflicts are expected first.
std::string refusal_line(const std::vector<std::string>& conflicts);

}  // namespace osh::cli

// The tunnel's firewall (issue 14 items 2 and 5): one nftables table of its
// own per TUN, installed right after the TUN exists and removed with it, so
// that only this machine's own processes, and of those only the allowed
// users, reach the tunnel.
//
// Rules (firewall_ruleset() builds them; docs/THREAT_MODEL.md says why):
//   - forward hook: every packet routed out of or in on the TUN is dropped.
//     Other network namespaces (containers, VMs behind a bridge, Docker's
//     default forwarding) reach the sandbox prefixes, the DNS responder
//     included (it lives on the TUN's second address), only through this
//     hook, never through the output hook;
//   - output hook, packets leaving through the TUN: a socket owned by a uid
//     outside the allowed set is refused (TCP: a reset; anything else, DNS
//     over UDP included: ICMP administratively prohibited). Packets without a
//     socket (the kernel's own resets and ICMP errors) pass;
//   - output hook: DNS queries (port 53) to the responder's addresses from a
//     `dns_uids` socket (systemd-resolved's user) pass before that refusal;
//   - output hook: past `max_conns_per_uid` tracked TCP connections of one
//     socket owner (`meta skuid` keyed `ct count`), a new one is reset.
// Every refusal is counted in a named counter (FirewallCounters).
// Interfaces are matched by name (iifname/oifname), so a link flap or a
// repaired address (tun/link_watch.h) leaves the rules as they are.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct nft_ctx;

namespace osh::tun {

/// What the table allows.
struct FirewallSpec {
  std::string tun_name;             ///< the TUN's interface name, e.g. "osh0"
  std::vector<uid_t> allowed_uids;  ///< socket owners that may use the tunnel (root is added)
  uint32_t max_conns_per_uid = 0;   ///< TCP connections per socket owner; 0 = no cap
  /// Leave forwarded packets alone (no forward chain): other namespaces and
  /// hosts routed through this one reach the sandboxes (`up --allow-forwarding`).
  bool allow_forwarding = false;
  /// Socket owners that may send DNS queries (UDP and TCP port 53) to the
  /// responder's addresses (`dns_addrs`) and nothing else: systemd-resolved's
  /// own user when `up --dns resolver|both` routes `~<domain>` to the tunnel
  /// (resolved then asks on behalf of every local user, as it does for any
  /// name). Empty = none.
  std::vector<uid_t> dns_uids;
  /// The DNS responder's addresses (the second address of each prefix, as
  /// text: "198.18.0.2", "fd00:6f73:6800::2"). Used only with `dns_uids`.
  std::vector<std::string> dns_addrs;
};

/// The counters of the table's refusals, in packets.
struct FirewallCounters {
  uint64_t forward_drops = 0;  ///< forwarded packets dropped (other namespaces)
  uint64_t refused_uid = 0;    ///< packets of a uid outside the allowed set refused
  uint64_t uid_cap_hits = 0;   ///< connections reset past the per-uid cap
};

/// The table's name for `tun_name`: "openshell_tunnel_" + the name with
/// letters and digits kept, '_' doubled, every other byte as '_' and two hex
/// digits (an nft identifier; one-to-one, so two TUNs never share a table).
std::string firewall_table_name(const std::string& tun_name);

/// The nft script that replaces the table (family inet) of `spec.tun_name`
/// in one transaction: an existing table of that name (a previous run's that
/// died) is deleted first. Pure; root is always in the allowed set (it can
/// remove the table anyway). @throws std::invalid_argument for an empty or
/// over-long (> 15) TUN name or one with a '"' or '\\'.
std::string firewall_ruleset(const FirewallSpec& spec);

/// The installed table. Owns it: the destructor deletes it. Thread-safe
/// (one mutex around the libnftables context).
class Firewall {
 public:
  /// Installs firewall_ruleset(spec) through libnftables (needs
  /// CAP_NET_ADMIN in the current network namespace).
  /// @throws TunError naming nft's error message when it fails.
  explicit Firewall(FirewallSpec spec);
  /// Deletes the table (errors logged, not thrown).
  ~Firewall();
  Firewall(const Firewall&) = delete;
  Firewall& operator=(const Firewall&) = delete;

  /// Reads the table's counters. nullopt if the table is gone or cannot be read.
  std::optional<FirewallCounters> counters();
  /// Puts the table back if something else removed it (`nft flush ruleset`,
  /// a firewall manager's reload). Checks only that the table exists.
  /// @return true if it was missing and was installed again.
  /// @throws TunError if installing it again fails.
  bool ensure();
  const std::string& table() const { return table_; }

 private:
  /// Runs one nft command; "" on success, else nft's error message. *out gets
  /// the command's output (JSON). Caller holds mu_.
  std::string run(const std::string& cmd, std::string* out = nullptr);
  FirewallSpec spec_;
  std::string table_;
  std::mutex mu_;
  nft_ctx* ctx_ = nullptr;
};

/// Deletes the table of `tun_name` if it exists (crash cleanup: a tunnel
/// that died left its table behind). @return true if a table was deleted.
/// @throws TunError if it exists and cannot be deleted.
bool remove_stale_firewall(const std::string& tun_name);

}  // namespace osh::tun

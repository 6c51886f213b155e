// Firewall tests: the ruleset text (forward drops, the allowed uids with
// root always among them, the per-uid cap only when set, the atomic replace
// of a stale table) without root; and, in a fresh network namespace (forked
// child), the table installed through libnftables, its counters read back,
// put back after an `nft flush ruleset`, removed by the destructor, and a
// stale one removed by remove_stale_firewall().
#include "tun/firewall.h"

#include <gtest/gtest.h>

#include "netns_child.h"

namespace osh::tun {
namespace {

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

TEST(FirewallTableName, IsAnNftIdentifier) {
  EXPECT_EQ(firewall_table_name("osh0"), "openshell_tunnel_osh0");
  EXPECT_EQ(firewall_table_name("osh-a.b"), "openshell_tunnel_osh_2da_2eb");
  // one-to-one: osh-0 and osh_0 are two TUNs, so two tables
  EXPECT_EQ(firewall_table_name("osh_0"), "openshell_tunnel_osh__0");
  EXPECT_NE(firewall_table_name("osh-0"), firewall_table_name("osh_0"));
}

TEST(FirewallRuleset, DropsForwardedPacketsBothWays) {
  const std::string r = firewall_ruleset({"osh0", {1000}, 0});
  EXPECT_TRUE(has(r, "type filter hook forward priority filter - 10; policy accept;")) << r;
  EXPECT_TRUE(has(r, "iifname \"osh0\" counter name \"forward_drops\" drop")) << r;
  EXPECT_TRUE(has(r, "oifname \"osh0\" counter name \"forward_drops\" drop")) << r;
}

TEST(FirewallRuleset, AllowForwardingLeavesOutTheForwardChain) {
  FirewallSpec spec{"osh0", {1000}, 0};
  spec.allow_forwarding = true;
  const std::string r = firewall_ruleset(spec);
  EXPECT_FALSE(has(r, "hook forward")) << r;
  EXPECT_TRUE(has(r, "meta skuid != { 0, 1000 }")) << r;
}

TEST(FirewallRuleset, RefusesOtherUidsOnTheTunOnly) {
  const std::string r = firewall_ruleset({"osh0", {1000, 1000, 5}, 0});
  EXPECT_TRUE(has(r, "oifname != \"osh0\" accept")) << r;
  // sorted, deduplicated, root added
  EXPECT_TRUE(has(r, "meta skuid != { 0, 5, 1000 } meta l4proto tcp counter name \"refused_uid\" reject with "
                     "tcp reset")) << r;
  EXPECT_TRUE(has(r, "meta skuid != { 0, 5, 1000 } counter name \"refused_uid\" reject with icmpx "
                     "admin-prohibited")) << r;
}

TEST(FirewallRuleset, RootOnlyWhenNoUserIsGiven) {
  EXPECT_TRUE(has(firewall_ruleset({"osh0", {}, 0}), "meta skuid != { 0 }"));
}

TEST(FirewallRuleset, PerUidCapOnlyWhenSet) {
  const std::string off = firewall_ruleset({"osh0", {1000}, 0});
  EXPECT_FALSE(has(off, "ct count")) << off;
  EXPECT_FALSE(has(off, "set uid_conns")) << off;
  const std::string on = firewall_ruleset({"osh0", {1000}, 48});
  EXPECT_TRUE(has(on, "set uid_conns { type uid; size 65535; flags dynamic; }")) << on;
  EXPECT_TRUE(has(on, "meta l4proto tcp ct state new add @uid_conns { meta skuid ct count over 48 } "
                      "counter name \"uid_cap_hits\" reject with tcp reset")) << on;
}

TEST(FirewallRuleset, ResolvedsUserMaySendDnsToTheResponderOnly) {
  FirewallSpec spec{"osh0", {1000}, 0};
  EXPECT_FALSE(has(firewall_ruleset(spec), "dport 53")) << "no DNS exception unless asked";
  spec.dns_uids = {991};
  spec.dns_addrs = {"198.18.0.2", "fd00:6f73:6800::2"};
  const std::string r = firewall_ruleset(spec);
  const std::string v4 = "meta skuid { 991 } ip daddr 198.18.0.2 meta l4proto { tcp, udp } th dport 53 accept";
  const std::string v6 = "meta skuid { 991 } ip6 daddr fd00:6f73:6800::2 meta l4proto { tcp, udp } th dport 53 accept";
  EXPECT_TRUE(has(r, v4)) << r;
  EXPECT_TRUE(has(r, v6)) << r;
  // before the refusal of uids outside the allowed set (first match wins)
  EXPECT_LT(r.find(v6), r.find("refused_uid\" reject")) << r;
  EXPECT_FALSE(has(r, "{ 0, 991, 1000 }")) << "resolved's user is not an allowed user: " << r;
  spec.dns_addrs = {"198.18.0.2; flush ruleset"};
  EXPECT_THROW(firewall_ruleset(spec), std::invalid_argument);
}

TEST(FirewallRuleset, ReplacesAStaleTableInOneTransaction) {
  const std::string r = firewall_ruleset({"osh0", {}, 0});
  EXPECT_EQ(r.rfind("table inet openshell_tunnel_osh0\ndelete table inet openshell_tunnel_osh0\n"
                    "table inet openshell_tunnel_osh0 {\n", 0), 0u) << r;
}

TEST(FirewallRuleset, RefusesBadInterfaceNames) {
  EXPECT_THROW(firewall_ruleset({"", {}, 0}), std::invalid_argument);
  EXPECT_THROW(firewall_ruleset({"a\"b", {}, 0}), std::invalid_argument);
  EXPECT_THROW(firewall_ruleset({"sixteen-chars-xx", {}, 0}), std::invalid_argument);
}

TEST(FirewallNetns, InstallsReadsRepairsAndRemovesTheTable) {
  OSH_REQUIRE_PRIVILEGES();
  OSH_IN_NEW_NETNS(0, []() -> std::string {
    auto listed = [] { return testing::run_command("nft list tables 2>&1"); };
    {
      Firewall fw({"osh9", {1000}, 16});
      if (!has(listed(), "openshell_tunnel_osh9")) return "table not installed: " + listed();
      auto c = fw.counters();
      if (!c) return "counters not readable";
      if (c->forward_drops != 0 || c->refused_uid != 0 || c->uid_cap_hits != 0) return "counters not zero";
      if (fw.ensure()) return "ensure() reinstalled a table that was there";
      if (!fw.counters()) return "counters not readable after ensure()";
      testing::run_command("nft flush ruleset");
      if (fw.counters()) return "counters of a flushed table";
      if (!fw.ensure()) return "ensure() did not see the flushed table";
      if (!has(listed(), "openshell_tunnel_osh9")) return "table not put back: " + listed();
    }
    if (has(listed(), "openshell_tunnel_osh9")) return "table left after the destructor: " + listed();
    // A run that died: its table is replaced by the next one, removed by cleanup.
    { Firewall first({"osh9", {}, 0}); Firewall second({"osh9", {}, 0}); }
    testing::run_command("nft add table inet openshell_tunnel_osh9");
    if (!remove_stale_firewall("osh9")) return "stale table not removed";
    if (remove_stale_firewall("osh9")) return "removed a table that was not there";
    return {};
  });
}

}  // namespace
}  // namespace osh::tun

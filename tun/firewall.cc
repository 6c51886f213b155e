// Theory of operation: the rules are text (firewall_ruleset(), checked by
// unit tests without root) handed to libnftables, which compiles them into
// one netlink batch: the table is replaced atomically, never half there.
// Counters are read back as nft's JSON output (`list counters table ...`).
// A libnftables context is not thread-safe; one per Firewall, behind a mutex
// (the main thread installs, checks and removes; `status` reads counters on
// the control thread).
#include "tun/firewall.h"

#include <fmt/format.h>
#include <nftables/libnftables.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "tun/tun_error.h"

namespace osh::tun {
namespace {

// Counter names: FirewallCounters' fields.
constexpr const char* kForwardDrops = "forward_drops";
constexpr const char* kRefusedUid = "refused_uid";
constexpr const char* kUidCapHits = "uid_cap_hits";

// Priority: before the usual `filter` chains (0), so a distribution's own
// accept rules cannot let a forwarded packet through first (a drop in any
// base chain is final; an accept is not).
constexpr const char* kPriority = "filter - 10";

// An nftables context with its output and errors buffered (not printed).
nft_ctx* new_context() {
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!ctx) throw TunError("nft_ctx_new", 0, "cannot create a libnftables context");
  nft_ctx_buffer_output(ctx);
  nft_ctx_buffer_error(ctx);
  return ctx;
}

std::string run_on(nft_ctx* ctx, const std::string& cmd, std::string* out) {
  const int rc = nft_run_cmd_from_buffer(ctx, cmd.c_str());
  // Always taken: the buffer accumulates until read, and an unread `list`
  // would come back in front of the next command's output.
  const char* o = nft_ctx_get_output_buffer(ctx);
  if (out) *out = o ? o : "";
  if (rc == 0) return {};
  const char* e = nft_ctx_get_error_buffer(ctx);
  std::string err = e && *e ? e : "nft command failed";
  while (!err.empty() && std::isspace(static_cast<unsigned char>(err.back()))) err.pop_back();
  return err;
}

struct Context {
  nft_ctx* ctx = new_context();
  ~Context() { nft_ctx_free(ctx); }
};

}  // namespace

std::string firewall_table_name(const std::string& tun_name) {
  std::string t = "openshell_tunnel_";
  // One-to-one (two TUNs never share a table): letters and digits as they
  // are, '_' doubled, anything else as '_' and two hex digits.
  for (char c : tun_name) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u)) t.push_back(c);
    else if (c == '_') t += "__";
    else t += fmt::format("_{:02x}", u);
  }
  return t;
}

std::string firewall_ruleset(const FirewallSpec& spec) {
  const std::string& dev = spec.tun_name;
  if (dev.empty() || dev.size() > 15 || dev.find_first_of("\"\\") != std::string::npos)
    throw std::invalid_argument("firewall: bad interface name '" + dev + "'");
  std::vector<uid_t> uids = spec.allowed_uids;
  uids.push_back(0);
  std::sort(uids.begin(), uids.end());
  uids.erase(std::unique(uids.begin(), uids.end()), uids.end());
  std::string set;
  for (uid_t u : uids) set += (set.empty() ? "" : ", ") + std::to_string(u);
  const std::string t = firewall_table_name(dev);
  // `table` (add) then `delete`: removes a table left by a run that died,
  // and never fails when there is none; all of it is one transaction.
  std::string r = fmt::format("table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n", fmt::arg("t", t));
  r += fmt::format("  counter {} {{ }}\n  counter {} {{ }}\n  counter {} {{ }}\n", kForwardDrops, kRefusedUid,
                   kUidCapHits);
  if (spec.max_conns_per_uid > 0) r += "  set uid_conns { type uid; size 65535; flags dynamic; }\n";
  if (!spec.allow_forwarding)
    r += fmt::format(
        "  chain forward {{\n"
        "    type filter hook forward priority {prio}; policy accept;\n"
        "    iifname \"{dev}\" counter name \"{fd}\" drop\n"
        "    oifname \"{dev}\" counter name \"{fd}\" drop\n"
        "  }}\n",
        fmt::arg("prio", kPriority), fmt::arg("dev", dev), fmt::arg("fd", kForwardDrops));
  r += fmt::format(
      "  chain output {{\n"
      "    type filter hook output priority {prio}; policy accept;\n"
      "    oifname != \"{dev}\" accept\n",
      fmt::arg("prio", kPriority), fmt::arg("dev", dev));
  if (!spec.dns_uids.empty()) {
    std::string dns_set;
    for (uid_t u : spec.dns_uids) dns_set += (dns_set.empty() ? "" : ", ") + std::to_string(u);
    for (const std::string& a : spec.dns_addrs) {
      if (a.find_first_not_of("0123456789abcdefABCDEF.:") != std::string::npos || a.empty())
        throw std::invalid_argument("firewall: bad DNS address '" + a + "'");
      const char* family = a.find(':') != std::string::npos ? "ip6" : "ip";
      r += fmt::format("    meta skuid {{ {} }} {} daddr {} meta l4proto {{ tcp, udp }} th dport 53 accept\n",
                       dns_set, family, a);
    }
  }
  r += fmt::format(
      "    meta skuid != {{ {set} }} meta l4proto tcp counter name \"{ru}\" reject with tcp reset\n"
      "    meta skuid != {{ {set} }} counter name \"{ru}\" reject with icmpx admin-prohibited\n",
      fmt::arg("set", set), fmt::arg("ru", kRefusedUid));
  if (spec.max_conns_per_uid > 0)
    r += fmt::format(
        "    meta l4proto tcp ct state new add @uid_conns {{ meta skuid ct count over {n} }} "
        "counter name \"{cap}\" reject with tcp reset\n",
        fmt::arg("n", spec.max_conns_per_uid), fmt::arg("cap", kUidCapHits));
  r += "  }\n}\n";
  return r;
}

Firewall::Firewall(FirewallSpec spec)
    : spec_(std::move(spec)), table_(firewall_table_name(spec_.tun_name)) {
  const std::string rules = firewall_ruleset(spec_);  // may throw: before the context exists
  ctx_ = new_context();
  std::lock_guard lk(mu_);
  if (std::string err = run(rules); !err.empty()) {
    nft_ctx_free(ctx_);
    throw TunError("install firewall table inet " + table_, 0, err);
  }
}

Firewall::~Firewall() {
  std::lock_guard lk(mu_);
  if (std::string err = run("delete table inet " + table_); !err.empty())
    spdlog::warn("removing firewall table inet {}: {}", table_, err);
  nft_ctx_free(ctx_);
}

std::string Firewall::run(const std::string& cmd, std::string* out) { return run_on(ctx_, cmd, out); }

std::optional<FirewallCounters> Firewall::counters() {
  std::string out;
  {
    std::lock_guard lk(mu_);
    nft_ctx_output_set_flags(ctx_, NFT_CTX_OUTPUT_JSON);
    const std::string err = run("list counters table inet " + table_, &out);
    nft_ctx_output_set_flags(ctx_, 0);
    if (!err.empty()) {
      spdlog::debug("firewall counters of inet {}: {}", table_, err);
      return std::nullopt;
    }
  }
  // {"nftables": [{"metainfo": ...}, {"counter": {"name": ..., "packets": N, ...}}, ...]}
  const nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded() || !j.contains("nftables") || !j["nftables"].is_array()) {
    spdlog::debug("firewall counters of inet {}: unexpected output '{}'", table_, out);
    return std::nullopt;
  }
  FirewallCounters c;
  for (const auto& item : j["nftables"]) {
    if (!item.is_object() || !item.contains("counter")) continue;
    const auto& k = item["counter"];
    const std::string name = k.value("name", "");
    const uint64_t packets = k.value("packets", uint64_t{0});
    if (name == kForwardDrops) c.forward_drops = packets;
    else if (name == kRefusedUid) c.refused_uid = packets;
    else if (name == kUidCapHits) c.uid_cap_hits = packets;
  }
  return c;
}

bool Firewall::ensure() {
  std::lock_guard lk(mu_);
  if (run("list table inet " + table_).empty()) return false;
  if (std::string err = run(firewall_ruleset(spec_)); !err.empty())
    throw TunError("reinstall firewall table inet " + table_, 0, err);
  return true;
}

bool remove_stale_firewall(const std::string& tun_name) {
  Context c;
  const std::string t = firewall_table_name(tun_name);
  if (!run_on(c.ctx, "list table inet " + t, nullptr).empty()) return false;  // none (or unreadable)
  if (std::string err = run_on(c.ctx, "delete table inet " + t, nullptr); !err.empty())
    throw TunError("delete stale firewall table inet " + t, 0, err);
  return true;
}

}  // namespace osh::tun

// The tunnel's DNS responder, message layer only: one UDP query datagram in,
// one response datagram out. It answers A and AAAA for <sandbox>.<domain>
// from a name table, NXDOMAIN for other names in the domain and REFUSED for
// anything else (design.md §4). The datagrams are carried elsewhere (the
// stack's UDP hook, StackConfig::dns_handler, wired up in cli/up.cc); the DNS
// wire format is read and written with ldns, whose types stay in the .cc.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace osh::names {

/// Authoritative responder for one domain (e.g. "local": names are
/// "<sandbox>.local"). Rules, in the order they are applied (RFC 1035 §4.1,
/// RFC 6891 for EDNS0, RFC 2308 for negative answers):
///
/// | query                                           | response                          |
/// |-------------------------------------------------|-----------------------------------|
/// | fails header_acceptable() (shorter than the 12-byte header, longer than 512 bytes, QR set, QDCOUNT != 1, ANCOUNT or NSCOUNT != 0, ARCOUNT > 1) | none (empty vector), nothing parsed |
/// | opcode other than QUERY                         | NOTIMP                            |
/// | header readable, rest malformed                 | FORMERR, header only              |
/// | OPT with version > 0                            | BADVERS (extended rcode 16)       |
/// | class not IN, or name outside the domain        | REFUSED, AA clear                 |
/// | AXFR/IXFR for a name in the domain              | REFUSED, AA clear (no transfers)  |
/// | <label>.<domain>, label known, type A / AAAA    | NOERROR, AA, the addresses        |
/// | known label with no address of that family, or any other type (MX, TXT, ANY...) | NOERROR, AA, no answer (NODATA, no SOA) |
/// | the apex <domain>, type SOA                     | NOERROR, AA, the SOA              |
/// | the apex, any other type                        | NODATA                            |
/// | any other name under the domain (unknown label, or deeper names such as x.<label>.<domain>) | NXDOMAIN, AA, no SOA |
///
/// Every response has QR set, RA clear, and the query's ID, opcode, RD and CD
/// bits. The question is echoed byte for byte as parsed, so DNS 0x20 mixed
/// case survives; names match case-insensitively. Answer owners are the
/// question's name; the SOA is "<domain>. TTL IN SOA <domain>.
/// hostmaster.<domain>. SERIAL 3600 600 86400 TTL", where SERIAL starts at 1
/// and grows with every set_names() call.
///
/// EDNS0: if the query had an OPT record, the response carries one with UDP
/// payload size kEdnsPayload (1232), version 0 and the query's DO bit; EDNS
/// options are not echoed. Size limit: 512 bytes without EDNS, otherwise the
/// requester's payload size clamped to [512, 1232]. A response over the limit
/// is sent with TC set and the answer and authority sections removed (the
/// client retries over TCP, which this responder does not serve). With one
/// or two addresses per name, real responses are around 100 bytes.
///
/// Response size (no amplification beyond what the answer needs): a
/// response is the query's header and question (the question as received,
/// so never longer than the query's), an OPT record without options only if
/// the query had one, and only the records the answer needs, every name in
/// them a compression pointer (plus "hostmaster" for the SOA RNAME):
/// REFUSED, FORMERR, NOTIMP, BADVERS, NXDOMAIN and NODATA are never larger
/// than the query (issue 14.8: negative answers carry no SOA, although RFC
/// 2308 §3 asks for one for negative caching: with it a 25-byte query got a
/// 72-byte NXDOMAIN; resolvers then do not cache the negative answer, which
/// costs one more query, not a wrong answer); positive answers add 16 bytes
/// per A and 28 per AAAA record, and the apex's SOA, asked for, kSoaBytes;
/// nothing answers a datagram that fails header_acceptable().
///
/// Thread safety: respond() and set_names() may be called from any threads
/// concurrently; set_names() swaps an immutable table under a mutex and
/// respond() works on the table it found when it started.
class DnsResponder {
 public:
  /// Sandbox label (lower case) -> {IPv4 literals, IPv6 literals}.
  using NameTable =
      std::map<std::string, std::pair<std::vector<std::string>, std::vector<std::string>>>;

  /// EDNS0 UDP payload size advertised in responses, bytes (DNS flag day
  /// 2020 value).
  static constexpr uint16_t kEdnsPayload = 1232;
  /// Response size limit without EDNS0, bytes (RFC 1035 §4.2.1).
  static constexpr uint16_t kClassicPayload = 512;
  /// Largest query datagram answered, bytes: the RFC 1035 §4.2.1 UDP limit.
  /// A query is one question (a name of at most 255 octets) and at most one
  /// OPT record, which fits with room to spare.
  static constexpr size_t kMaxQueryBytes = 512;
  /// Bytes the SOA record of a negative answer adds (owner and MNAME are
  /// compression pointers, RNAME "hostmaster" + a pointer, 20 bytes of
  /// timers, 10 of type/class/TTL/RDLENGTH).
  static constexpr size_t kSoaBytes = 47;

  /// The header pre-check: whether a datagram may be parsed at all. Reads
  /// the 12-byte header only (RFC 1035 §4.1.1), O(1), and is what respond()
  /// applies first; the stack calls it under the lwIP core lock to drop a
  /// datagram before copying it (StackConfig::dns_accept).
  /// @param query  the UDP payload as received; any bytes, any length
  /// @return false (drop, send nothing) if it is shorter than the header or
  ///         longer than kMaxQueryBytes, has QR set (a response: answering it
  ///         starts reflection loops), QDCOUNT != 1, ANCOUNT != 0,
  ///         NSCOUNT != 0 or ARCOUNT > 1 (a query carries one question and at
  ///         most one OPT record, RFC 6891 §6.1.1; anything else is not a
  ///         query this responder answers, and dropping it before ldns sees
  ///         it bounds the parsing cost of a datagram). Thread: any.
  static bool header_acceptable(std::span<const uint8_t> query) noexcept;

  /// @param domain  the managed suffix, e.g. "local" or "sandbox.example";
  ///                case-insensitive, a trailing '.' is ignored.
  /// @param ttl_s   TTL of every record, and the SOA MINIMUM (negative
  ///                caching TTL), in seconds.
  /// @throws std::invalid_argument if domain is empty, the root, or not a
  ///         valid domain name (label > 63 octets, name > 255 octets).
  explicit DnsResponder(std::string domain, uint32_t ttl_s = 5);
  ~DnsResponder();

  DnsResponder(const DnsResponder&) = delete;
  DnsResponder& operator=(const DnsResponder&) = delete;

  /// Replaces the name table. Keys are matched case-insensitively (they are
  /// lower-cased here). The order of addresses is kept in answers.
  /// Thread: any.
  /// @throws std::invalid_argument (naming the entry) if an address is not
  ///         a numeric literal of its family; the old table stays in force.
  void set_names(NameTable names);

  /// Answers one query datagram (rules in the class comment).
  /// @param query  the UDP payload as received; any bytes, any length.
  /// @return the response datagram, or an empty vector when nothing must be
  ///         sent. Never throws (an allocation failure also gives an empty
  ///         vector) and never reads outside `query`. Thread: any.
  std::vector<uint8_t> respond(std::span<const uint8_t> query) const noexcept;

  /// The managed domain, lower case, without a trailing dot.
  const std::string& domain() const noexcept { return domain_; }
  /// Record TTL, seconds.
  uint32_t ttl_s() const noexcept { return ttl_s_; }

  // Opaque; defined in the .cc.
  struct Table;  // parsed name table and SOA serial
  struct Dname;  // the domain as an ldns name

 private:

  std::string domain_;
  uint32_t ttl_s_;
  std::unique_ptr<const Dname> dname_;
  mutable std::mutex mu_;
  std::shared_ptr<const Table> table_;  // guarded by mu_; never null
};

}  // namespace osh::names

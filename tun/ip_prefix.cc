// Theory of operation: IpPrefix is a plain value. Parsing delegates the
// address part to IpAddress::parse (common/ip_address.h; inet_pton: no host
// names, no zone ids, no leading zeros in IPv4 octets) and the length to
// std::from_chars. Prefix
// arithmetic (network(), contains(), overlaps(), nth()) works bit by bit on the
// network-order byte array, so IPv4 and IPv6 share one code path; nth() adds
// a 64-bit index to the low-order bytes and refuses indexes that would carry
// into the network bits.
#include "tun/ip_prefix.h"

#include <charconv>
#include <stdexcept>

namespace osh::tun {

std::optional<IpPrefix> IpPrefix::parse(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto addr = IpAddress::parse(text.substr(0, slash));
  if (!addr) return std::nullopt;

  const std::string_view len_text = text.substr(slash + 1);
  if (len_text.empty() || len_text.size() > 3) return std::nullopt;
  unsigned len = 0;
  const char* first = len_text.data();
  const char* last = first + len_text.size();
  auto [ptr, ec] = std::from_chars(first, last, len);  // digits only, no sign
  if (ec != std::errc{} || ptr != last || len > addr->bits()) return std::nullopt;
  return IpPrefix{*addr, static_cast<uint8_t>(len)};
}

IpPrefix IpPrefix::network() const {
  IpPrefix p = *this;
  const unsigned total = addr.bits();
  for (unsigned bit = len; bit < total; ++bit)
    p.addr.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  return p;
}

bool IpPrefix::contains(const IpAddress& a) const {
  if (a.family != addr.family || addr.family == 0) return false;
  const unsigned full = len / 8;
  for (unsigned i = 0; i < full; ++i)
    if (a.bytes[i] != addr.bytes[i]) return false;
  if (const unsigned rest = len % 8; rest != 0) {
    const auto mask = static_cast<uint8_t>(0xffu << (8 - rest));
    if ((a.bytes[full] & mask) != (addr.bytes[full] & mask)) return false;
  }
  return true;
}

bool IpPrefix::overlaps(const IpPrefix& other) const {
  if (addr.family != other.addr.family || addr.family == 0) return false;
  // The shorter prefix contains the longer one's network, or they are disjoint.
  return len <= other.len ? contains(other.addr) : other.contains(addr);
}

IpAddress IpPrefix::nth(uint64_t host_index) const {
  if (addr.family != AF_INET && addr.family != AF_INET6)
    throw std::invalid_argument("IpPrefix::nth on an unset prefix");
  const unsigned host_bits = addr.bits() - len;
  if (host_bits < 64 && (host_index >> host_bits) != 0)
    throw std::out_of_range("host index " + std::to_string(host_index) +
                            " outside " + to_string());

  IpAddress out = network().addr;
  // Add host_index to the address as a big-endian integer. Host bits are all
  // zero after network(), and the index fits in them, so no carry reaches the
  // network bits; the carry loop only propagates within the host part.
  unsigned carry = 0;
  for (std::size_t i = addr.size(); i-- > 0;) {
    const unsigned sum = out.bytes[i] + static_cast<unsigned>(host_index & 0xff) + carry;
    out.bytes[i] = static_cast<uint8_t>(sum);
    carry = sum >> 8;
    host_index >>= 8;
    if (host_index == 0 && carry == 0) break;
  }
  return out;
}

std::string IpPrefix::to_string() const {
  return addr.to_string() + "/" + std::to_string(len);
}

}  // namespace osh::tun

// The pcb index of stack/lwip/pcb_index.h: a hash map from 4-tuple to pcb,
// kept by lwIP's extension-slot callbacks. Part of osh_lwip (source build).
#include "pcb_index.h"

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <unordered_map>

#include "lwip/tcp.h"

namespace {

struct Key {
  u16_t remote_port;
  u16_t local_port;
  ip_addr_t remote_ip;
  ip_addr_t local_ip;
};

size_t hash_addr(const ip_addr_t& a) {
  size_t h = IP_GET_TYPE(&a);
  if (IP_IS_V6_VAL(a)) {
    for (u32_t w : ip_2_ip6(&a)->addr) h = h * 1000003u ^ w;
  } else {
    h = h * 1000003u ^ ip4_addr_get_u32(ip_2_ip4(&a));
  }
  return h;
}

struct KeyHash {
  size_t operator()(const Key& k) const noexcept {
    const size_t ports = (size_t{k.remote_port} << 16) | k.local_port;
    return std::hash<size_t>{}(ports ^ (hash_addr(k.remote_ip) * 31u) ^ (hash_addr(k.local_ip) * 1000003u));
  }
};

struct KeyEq {
  bool operator()(const Key& a, const Key& b) const noexcept {
    return a.remote_port == b.remote_port && a.local_port == b.local_port && ip_addr_cmp(&a.remote_ip, &b.remote_ip) &&
           ip_addr_cmp(&a.local_ip, &b.local_ip);
  }
};

using Map = std::unordered_map<Key, tcp_pcb*, KeyHash, KeyEq>;
using Entry = Map::value_type;  // a pcb's slot data: its node (stable until erased)

Map& index() {
  static Map* m = new Map;  // never destroyed: lwIP's thread may outlive static destructors
  return *m;
}
bool on = false;
u8_t slot = 0;

Key key_of(const tcp_pcb* p) { return Key{p->remote_port, p->local_port, p->remote_ip, p->local_ip}; }

// tcp_free(): the pcb leaves the index (data is null if a newer pcb of the
// same 4-tuple took its entry).
void pcb_destroyed(u8_t, void* data) {
  if (!data) return;
  const Key k = static_cast<Entry*>(data)->first;
  index().erase(k);
}
constexpr tcp_ext_arg_callbacks kPcbCallbacks{pcb_destroyed, nullptr};

// tcp_listen_input(): @npcb is registered in tcp_active_pcbs, 4-tuple set.
err_t passive_open(u8_t id, tcp_pcb_listen*, tcp_pcb* npcb) {
  auto [it, fresh] = index().try_emplace(key_of(npcb), npcb);
  if (!fresh && it->second != npcb) {
    // An older pcb of this 4-tuple lives on outside tcp_active_pcbs (a
    // TIME_WAIT pcb, or one removed and about to be freed): the entry is
    // the new one's now, and the old one's tcp_free() must not erase it.
    tcp_ext_arg_set(it->second, id, nullptr);
    it->second = npcb;
  }
  tcp_ext_arg_set_callbacks(npcb, id, &kPcbCallbacks);
  tcp_ext_arg_set(npcb, id, &*it);
  return ERR_OK;
}
constexpr tcp_ext_arg_callbacks kListenerCallbacks{nullptr, passive_open};

tcp_pcb* find(u16_t src_port, u16_t dst_port, const ip_addr_t* src, const ip_addr_t* dst) {
  const Map& m = index();
  const auto it = m.find(Key{src_port, dst_port, *src, *dst});
  if (it == m.end()) return nullptr;
  tcp_pcb* p = it->second;
  const bool active = p->state != CLOSED && p->state != LISTEN && p->state != TIME_WAIT;
  // The 4-tuple again: tcp_pcb_remove() clears local_port of a pcb it unlinks.
  if (active && p->remote_port == src_port && p->local_port == dst_port && ip_addr_cmp(&p->remote_ip, src) &&
      ip_addr_cmp(&p->local_ip, dst))
    return p;
  return nullptr;
}

}  // namespace

extern "C" int osh_pcb_index_lookup(tcp_pcb** pcb, u16_t src_port, u16_t dst_port, const ip_addr_t* src,
                                    const ip_addr_t* dst) {
  if (!on) return 0;
  *pcb = find(src_port, dst_port, src, dst);
  return 1;
}

extern "C" void osh_pcb_index_watch(tcp_pcb* lpcb) {
  if (!on) {
    slot = tcp_ext_arg_alloc_id();
    on = true;
  }
  tcp_ext_arg_set_callbacks(lpcb, slot, &kListenerCallbacks);
}

extern "C" size_t osh_pcb_index_size(void) { return index().size(); }

extern "C" void osh_pcb_index_verify(const tcp_pcb* walked, u16_t src_port, u16_t dst_port, const ip_addr_t* src,
                                     const ip_addr_t* dst) {
  if (!on) return;
  const tcp_pcb* indexed = find(src_port, dst_port, src, dst);
  if (indexed == walked) return;
  std::fprintf(stderr, "pcb index: port %u -> %u: the walk found %p, the index %p\n", unsigned{src_port},
               unsigned{dst_port}, static_cast<const void*>(walked), static_cast<const void*>(indexed));
  std::abort();
}

/* An index of lwIP's active TCP pcbs by 4-tuple (openshell-tunnel; the
 * source build of lwIP only, cmake/lwip.cmake).
 *
 * Why: lwIP 2.1's tcp_input() finds a segment's pcb by walking
 * tcp_active_pcbs, moving the one it finds to the front. With thousands of
 * connections every SYN (a miss: the whole list) and every segment of an
 * idle connection (near the end of the list) walks thousands of pcbs, about
 * a cache miss each: with 10,000 idle connections open, on the order of 1 ms per
 * segment, and the close of all of them kept the stack thread busy for
 * seconds, so the connections made right after timed out
 * (docs/ARCHITECTURE.md "lwIP's pcb lookup", docs/BENCHMARKS.md "pcb index").
 *
 * How: stack/lwip/tcp_in-pcb-index.patch makes tcp_input() ask
 * osh_pcb_index_lookup() first and walk only when the index is off. Every
 * pcb enters the index when lwIP creates it from a watched listener (the
 * listener's extension slot, passive_open callback: all of the tunnel's
 * pcbs are passive opens of listeners the adapter watches) and leaves it in
 * tcp_free() (the pcb's destroy callback), so the index holds every live
 * pcb the listeners made; a lookup returns the indexed pcb only while it is
 * in a state of tcp_active_pcbs (not CLOSED, LISTEN or TIME_WAIT) with the
 * same 4-tuple, else NULL. With OSH_PCB_INDEX_VERIFY (the sanitizer builds)
 * tcp_input() also walks and osh_pcb_index_verify() aborts on a difference.
 *
 * Threads: all functions run under lwIP's core lock. */
#ifndef OSH_LWIP_PCB_INDEX_H
#define OSH_LWIP_PCB_INDEX_H

#include "lwip/ip_addr.h"
#include "lwip/arch.h"

#ifndef OSH_PCB_INDEX_VERIFY
#define OSH_PCB_INDEX_VERIFY 0
#endif

#ifdef __cplusplus
extern "C" {
#endif

struct tcp_pcb;

/** Looks up the active pcb of a segment (ports in host order; src/dst as the
 * segment carries them: the remote end, then the local one). Returns 0 while
 * no listener is watched (the caller walks), else 1 with *pcb set to the
 * active pcb of that 4-tuple or NULL. */
int osh_pcb_index_lookup(struct tcp_pcb **pcb, u16_t src_port, u16_t dst_port, const ip_addr_t *src,
                         const ip_addr_t *dst);

/** Indexes every pcb that lwIP creates from listener @lpcb from now on, and
 * turns the index on for the rest of the process (lookups answer from then
 * on: every listener must be watched). Uses one extension slot
 * (LWIP_TCP_PCB_NUM_EXT_ARGS), allocated on the first call. */
void osh_pcb_index_watch(struct tcp_pcb *lpcb);

/** The number of pcbs indexed (live pcbs made by watched listeners). */
size_t osh_pcb_index_size(void);

/** Aborts the process when the index answers differently from the walk
 * that found @walked (OSH_PCB_INDEX_VERIFY builds). */
void osh_pcb_index_verify(const struct tcp_pcb *walked, u16_t src_port, u16_t dst_port, const ip_addr_t *src,
                          const ip_addr_t *dst);

#ifdef __cplusplus
}
#endif

#endif /* OSH_LWIP_PCB_INDEX_H */

/* The project's lwIP options, for lwIP 2.1.3 built from Debian's own source
 * package (OSH_LWIP=source, stack/lwip/README.md, cmake/lwip.cmake).
 *
 * It starts from Debian's port/include/lwipopts.h (the file liblwip-dev
 * installs as /usr/include/lwip/lwipopts.h) and keeps every option the same,
 * except those marked CHANGED (with the reason) or DROPPED (options of the
 * socket API, which this build leaves out). Options not named here have
 * lwIP's defaults (src/include/lwip/opt.h), as in Debian's build.
 *
 * Whatever is set here shapes lwIP's structures: every translation unit that
 * includes lwIP headers must see this file (osh_lwip's include path puts it
 * before the port's own lwipopts.h; stack/lwip_adapter.cc checks
 * OSH_LWIPOPTS_H). */
#ifndef OSH_LWIPOPTS_H
#define OSH_LWIPOPTS_H

/* An OS is present (kept): lwIP's tcpip thread, timers, sys_arch (the
 * port's pthread implementation, port/sys_arch.c). */
#define NO_SYS    0

/* CHANGED: no sequential (netconn) or socket API (Debian: both on, with
 * LWIP_COMPAT_SOCKETS 0, LWIP_SOCKET_OFFSET 1, LWIP_POLL 1,
 * LWIP_SOCKET_OPEN_COUNT 1, LWIP_SOCKET_SELECT 0, the external socket
 * headers posix/sockets.h and posix/inet.h, LWIP_SO_SNDTIMEO,
 * LWIP_SO_RCVTIMEO, LWIP_SO_RCVBUF, LWIP_SO_LINGER: all DROPPED with them).
 * The tunnel uses only the raw TCP API under the core lock, and the socket
 * layer pulls the system's networking headers into lwIP (lwip-notes.md
 * "Header clashes"). */
#define LWIP_NETCONN 0
#define LWIP_SOCKET  0

/* Use glibc malloc()/free() (kept): nothing is preallocated, pools are
 * plain heap blocks, so larger windows and queues cost memory only while
 * data is in flight (an idle connection is one tcp_pcb). */
#define MEM_LIBC_MALLOC   1
#define MEMP_MEM_MALLOC   1
#define MEM_USE_POOLS     0

/* CHANGED (Debian: 1): segments may be pbuf chains. With 1, tcp_write()
 * always copies (TCP_WRITE_FLAG_COPY forced) into a pbuf of a whole MSS
 * (up to 64 KiB with the large-MTU MSS, stack/lwip_adapter.cc, even for a
 * 64-byte write). The netif output callback copies or gathers the chain
 * (stack/lwip_adapter.cc, never one pbuf assumed). */
#define LWIP_NETIF_TX_SINGLE_PBUF 0

/* CHANGED (Debian: 0, lwIP's default): two extension slots per pcb. One:
 * the adapter writes large download frames into lwIP by reference, without
 * a copy (tcp_write without TCP_WRITE_FLAG_COPY), and keeps each frame in
 * the pcb's slot until no segment points into it any more; the slot's
 * destroy callback (called from tcp_free, for every way a pcb ends) frees
 * what is left (stack/lwip_adapter.cc "Frames by reference"). Two: the pcb
 * index (pcb_index.h) enters each pcb a listener makes (passive_open) and
 * removes it in tcp_free. */
#define LWIP_TCP_PCB_NUM_EXT_ARGS 2

/* Randomize local ports (kept). */
#define LWIP_RANDOMIZE_INITIAL_LOCAL_PORTS  1

/* ARP queueing (kept; the tunnel's netif has no link layer). */
#define ARP_QUEUEING    1
#define ARP_QUEUE_LEN   10

/* Loopback without lwIP's loop interface (kept). */
#define LWIP_NETIF_LOOPBACK   1
#define LWIP_HAVE_LOOPIF      0

/* IPv4 forwarding (kept; the I2 input path never routes, ARCHITECTURE.md). */
#define IP_FORWARD  1

/* IPv6 (kept): SLAAC, router solicitations, forwarding, MLD groups and six
 * addresses per netif. lwIP's own RS and MLD reports never leave
 * (the output filter, stack/gate.h judge_output). */
#define LWIP_IPV6_DUP_DETECT_ATTEMPTS 1
#define LWIP_IPV6_SEND_ROUTER_SOLICIT 1
#define LWIP_IPV6_AUTOCONFIG          1
#define LWIP_IPV6_FORWARD             1
#define MEMP_NUM_MLD6_GROUP           16
#define LWIP_IPV6_NUM_ADDRESSES       6

/* TCP. TCP_MSS is kept at 1460: larger segments come from the run-time MSS
 * rewrite and pcb->mss (lwip-notes.md "Run-time workarounds"), the same
 * code for both builds. */
#define TCP_MSS         1460
#define LWIP_WND_SCALE  1

/* CHANGED (Debian: 0xFFFF, i.e. 64 KiB): the receive window offered to each
 * client, bytes. One window is what a client may send before the tunnel
 * acknowledges it to lwIP (tcp_recved after the gRPC write, or early,
 * StackConfig::early_ack_bytes), so it bounds an upload's bytes in flight
 * per round trip; 64 KiB capped uploads (docs/BENCHMARKS.md). lwIP keeps no
 * buffer of this size: received segments are the pbufs the stack fed in.
 * Measured with bench.sh (docs/BENCHMARKS.md "lwIP from source"). The
 * cmake cache variable OSH_LWIP_TCP_WND overrides it (for measuring). */
#ifndef OSH_LWIP_TCP_WND
#define OSH_LWIP_TCP_WND (512 * 1024)
#endif
#define TCP_WND         OSH_LWIP_TCP_WND

/* CHANGED (Debian: 1): the window scale lwIP announces, the smallest that
 * represents TCP_WND (init.c checks TCP_WND <= 0xFFFF << TCP_RCV_SCALE). */
#if TCP_WND <= (0xFFFF << 1)
#define TCP_RCV_SCALE   1
#elif TCP_WND <= (0xFFFF << 2)
#define TCP_RCV_SCALE   2
#elif TCP_WND <= (0xFFFF << 3)
#define TCP_RCV_SCALE   3
#elif TCP_WND <= (0xFFFF << 4)
#define TCP_RCV_SCALE   4
#elif TCP_WND <= (0xFFFF << 5)
#define TCP_RCV_SCALE   5
#else
#define TCP_RCV_SCALE   6
#endif

/* Send buffer = window, as Debian has it (the value changes with TCP_WND):
 * the bytes from the sandbox lwIP holds unacknowledged by the client. The
 * stack asks the relay for the next frame once lwIP took the last
 * (conn.cc), so this is most of a download's bytes in flight in the
 * tunnel. TCP_SND_QUEUELEN keeps lwIP's default (4 * TCP_SND_BUF / TCP_MSS
 * pbufs, a limit, not an allocation). */
#define TCP_SND_BUF     TCP_WND

/* CHANGED (Debian: lwIP's default, TCP_SND_BUF / 2): the netconn API's
 * "writable" mark, unused here; init.c requires it below 0xFFFF - 4 MSS. */
#define TCP_SNDLOWAT    LWIP_MIN(LWIP_MAX(((TCP_SND_BUF) / 2), (2 * TCP_MSS) + 1), 0xFFFF - 4 * TCP_MSS - 1)

/* CHANGED (Debian: 1): no checksum while tcp_write() copies. With the
 * TUN's checksum offload (issue 16.5, stack/vnet.h) lwIP generates no TCP
 * checksum at all, and the sum taken on copy (a second pass over the bytes,
 * lwip_chksum_copy) would be wasted; without it the checksum is taken once
 * per segment in tcp_output_segment instead (and again per retransmission). */
#define LWIP_CHECKSUM_ON_COPY   0
/* CHANGED (Debian: 0): NETIF_SET_CHECKSUM_CTRL() may turn checking and
 * generating off per netif. The netif starts with all of it on (lwIP's
 * default); with the TUN's checksum offload the adapter turns TCP
 * generation off, and TCP checking off for each segment the kernel vouches
 * for (lwip_adapter.cc). The cost is one flag test per checksum. */
#define LWIP_CHECKSUM_CTRL_PER_NETIF 1

/* No statistics (kept). */
#define LWIP_STATS          0
#define LWIP_STATS_DISPLAY  0

/* TCP keepalive (kept; StackConfig::keepalive_*), SO_REUSE (kept). */
#define LWIP_TCP_KEEPALIVE          1
#define SO_REUSE                    1
#define LWIP_MULTICAST_TX_OPTIONS   1

/* Modules (kept). */
#define LWIP_ARP              1
#define LWIP_ETHERNET         1
#define LWIP_IPV4             1
#define LWIP_ICMP             1
#define LWIP_IGMP             1
#define LWIP_RAW              1
#define LWIP_UDP              1
#define LWIP_UDPLITE          1
#define LWIP_TCP              1
#define LWIP_IPV6             1
#define LWIP_ICMP6            1
#define LWIP_IPV6_MLD         1

/* Don't abort the whole stack when an error is detected (kept); LWIP_ASSERT
 * stays compiled in, as in Debian's build. */
#define LWIP_NOASSERT_ON_ERROR   1

/* Core locking (kept): the stack thread calls the raw API under
 * LOCK_TCPIP_CORE (stack/lwip_adapter.h CoreLock). */
#define LWIP_TCPIP_CORE_LOCKING   1

#if defined __LP64__
#define MEM_ALIGNMENT            8
#else
#define MEM_ALIGNMENT            4
#endif

/* The port's core-lock functions (kept; port/sys_arch.c). Declared without
 * extern "C", as Debian's file does: C++ includes lwIP inside extern "C". */
#if !NO_SYS
void sys_check_core_locking(void);
#define LWIP_ASSERT_CORE_LOCKED()  sys_check_core_locking()
void sys_mark_tcpip_thread(void);
#define LWIP_MARK_TCPIP_THREAD()   sys_mark_tcpip_thread()

#if LWIP_TCPIP_CORE_LOCKING
void sys_lock_tcpip_core(void);
#define LOCK_TCPIP_CORE()          sys_lock_tcpip_core()
void sys_unlock_tcpip_core(void);
#define UNLOCK_TCPIP_CORE()        sys_unlock_tcpip_core()
#endif
#endif

/* Debian's LWIP_DEBUG block (every *_DEBUG off) is DROPPED: LWIP_DEBUG is
 * never defined here, and lwIP's defaults are off. */

#endif /* OSH_LWIPOPTS_H */

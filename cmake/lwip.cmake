# lwIP for stack/ (and the tests and fuzzers that reach into it): the target
# osh_lwip, from one of two Debian sources (stack/lwip/README.md):
#
#   OSH_LWIP=source  Debian 12's source package lwip 2.1.3+dfsg1-2
#                    (scripts/fetch-lwip.sh: apt-get source, into a cache
#                    outside the checkout), compiled here into a static
#                    library with the project's options, stack/lwip/lwipopts.h
#                    (window scaling, 512 KiB window and send buffer, no
#                    forced single-pbuf copy). Defines OSH_LWIP_SOURCE.
#   OSH_LWIP=system  Debian's binary package liblwip-dev (pkg-config lwip):
#                    its compile-time options (64 KiB window, lwip-notes.md).
#
# The source files and the port are Debian's choice (debian/rules runs the
# package's lib/CMakeLists.txt: src/Filelists.cmake's lwipnoapps_SRCS and
# the unix port, port/). osh_lwip takes the same core, IPv4, IPv6, API and
# generic-netif files and the port's sys_arch.c; it leaves out what the
# tunnel never links (PPP, 6LoWPAN, the port's tap/serial netif drivers)
# and lwIP's own warning set (-Werror with -pedantic and more, meant for
# lwIP's developers). src/Filelists.cmake itself is not included: it also
# writes into the source tree and adds a documentation target to `all`.
set(OSH_LWIP "source" CACHE STRING
    "lwIP: 'source' (Debian's source package with stack/lwip/lwipopts.h) or 'system' (liblwip-dev)")
set_property(CACHE OSH_LWIP PROPERTY STRINGS source system)

if(OSH_LWIP STREQUAL "system")
  pkg_check_modules(LWIP REQUIRED IMPORTED_TARGET lwip)
  add_library(osh_lwip INTERFACE)
  target_link_libraries(osh_lwip INTERFACE PkgConfig::LWIP)
  return()
endif()
if(NOT OSH_LWIP STREQUAL "source")
  message(FATAL_ERROR "OSH_LWIP is '${OSH_LWIP}'; 'source' or 'system'")
endif()

set(OSH_LWIP_SOURCE_DIR "" CACHE PATH
    "lwIP's source tree for OSH_LWIP=source (empty: scripts/fetch-lwip.sh's cache, fetched at configure)")
set(OSH_LWIP_TCP_WND "" CACHE STRING
    "TCP_WND of the source build, bytes (empty: stack/lwip/lwipopts.h's default)")
# Fetches on the first configure (no-op once the tree is there; needs the
# deb-src entry scripts/install-deps.sh writes).
execute_process(
  COMMAND ${PROJECT_SOURCE_DIR}/scripts/fetch-lwip.sh ${OSH_LWIP_SOURCE_DIR}
  OUTPUT_VARIABLE _lwip_dir
  OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _lwip_rc)
if(NOT _lwip_rc EQUAL 0 OR NOT EXISTS "${_lwip_dir}/src/core/tcp.c")
  message(FATAL_ERROR "lwIP's source is missing (scripts/fetch-lwip.sh failed; run scripts/install-deps.sh "
                      "as root, or configure with -DOSH_LWIP=system)")
endif()
message(STATUS "lwIP: built from Debian's source package in ${_lwip_dir}")

set(_s ${_lwip_dir}/src)
# One change to lwIP's code (stack/lwip/pcb_index.h): tcp_input() finds the
# active pcb of a segment in an index instead of walking every pcb. Patched
# into a copy in the build tree; the cached source stays Debian's.
set(_tcp_in ${CMAKE_CURRENT_BINARY_DIR}/lwip-patched/tcp_in.c)
set(_tcp_in_patch ${PROJECT_SOURCE_DIR}/stack/lwip/tcp_in-pcb-index.patch)
add_custom_command(
  OUTPUT ${_tcp_in}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_CURRENT_BINARY_DIR}/lwip-patched
  COMMAND patch --quiet --force --output=${_tcp_in} ${_s}/core/tcp_in.c ${_tcp_in_patch}
  DEPENDS ${_s}/core/tcp_in.c ${_tcp_in_patch}
  COMMENT "lwIP: tcp_in.c with stack/lwip/tcp_in-pcb-index.patch"
  VERBATIM)
add_library(osh_lwip STATIC
  # core (lwipcore_SRCS)
  ${_s}/core/init.c ${_s}/core/def.c ${_s}/core/dns.c ${_s}/core/inet_chksum.c ${_s}/core/ip.c
  ${_s}/core/mem.c ${_s}/core/memp.c ${_s}/core/netif.c ${_s}/core/pbuf.c ${_s}/core/raw.c
  ${_s}/core/stats.c ${_s}/core/sys.c ${_s}/core/altcp.c ${_s}/core/altcp_alloc.c
  ${_s}/core/altcp_tcp.c ${_s}/core/tcp.c ${_tcp_in} ${_s}/core/tcp_out.c
  ${_s}/core/timeouts.c ${_s}/core/udp.c
  # IPv4 (lwipcore4_SRCS)
  ${_s}/core/ipv4/autoip.c ${_s}/core/ipv4/dhcp.c ${_s}/core/ipv4/etharp.c ${_s}/core/ipv4/icmp.c
  ${_s}/core/ipv4/igmp.c ${_s}/core/ipv4/ip4_frag.c ${_s}/core/ipv4/ip4.c ${_s}/core/ipv4/ip4_addr.c
  # IPv6 (lwipcore6_SRCS)
  ${_s}/core/ipv6/dhcp6.c ${_s}/core/ipv6/ethip6.c ${_s}/core/ipv6/icmp6.c ${_s}/core/ipv6/inet6.c
  ${_s}/core/ipv6/ip6.c ${_s}/core/ipv6/ip6_addr.c ${_s}/core/ipv6/ip6_frag.c ${_s}/core/ipv6/mld6.c
  ${_s}/core/ipv6/nd6.c
  # API (lwipapi_SRCS; netconn and sockets compile to nothing with lwipopts.h)
  ${_s}/api/api_lib.c ${_s}/api/api_msg.c ${_s}/api/err.c ${_s}/api/if_api.c ${_s}/api/netbuf.c
  ${_s}/api/netdb.c ${_s}/api/netifapi.c ${_s}/api/sockets.c ${_s}/api/tcpip.c
  # generic netif (lwipnetif_SRCS)
  ${_s}/netif/ethernet.c ${_s}/netif/bridgeif.c ${_s}/netif/bridgeif_fdb.c
  # the unix port (lwipportunix_SRCS: threads, semaphores, mailboxes, time, core lock)
  ${_lwip_dir}/port/sys_arch.c
  # the project's pcb index (the patched tcp_in.c calls it)
  ${PROJECT_SOURCE_DIR}/stack/lwip/pcb_index.cc)
# stack/lwip first: its lwipopts.h, not the port's, is the one every file sees.
target_include_directories(osh_lwip SYSTEM PUBLIC
  ${PROJECT_SOURCE_DIR}/stack/lwip ${_s}/include ${_lwip_dir}/port/include)
target_compile_definitions(osh_lwip PUBLIC OSH_LWIP_SOURCE)
if(OSH_SANITIZE OR OSH_FUZZ)
  # tcp_input() walks as well and aborts where the index answers otherwise.
  target_compile_definitions(osh_lwip PRIVATE OSH_PCB_INDEX_VERIFY=1)
endif()
if(OSH_LWIP_TCP_WND)
  target_compile_definitions(osh_lwip PUBLIC OSH_LWIP_TCP_WND=${OSH_LWIP_TCP_WND})
endif()
target_link_libraries(osh_lwip PUBLIC Threads::Threads)
unset(_s)
unset(_tcp_in)
unset(_tcp_in_patch)

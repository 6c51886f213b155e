// Small socket helpers for the mini peers: an owning fd, resolving a TCP
// target, write_all, and the Rust-style OS error text that upstream puts
// into RelayOpenResult.error (protocol §2.3, §3.2).
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include "common/scoped_fd.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace osh::peers {

using ScopedFd = osh::ScopedFd;  // common/scoped_fd.h

/// OsErrorText() - "<strerror text> (os error <errno>)", the form of Rust's
/// io::Error Display that upstream's supervisor sends, e.g.
/// "Connection refused (os error 111)". Thread: any.
std::string OsErrorText(int err);

/// One address to dial (from getaddrinfo).
struct TargetAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = AF_UNSPEC;
};

/// Result of ResolveTcpTarget(): the addresses in getaddrinfo's order, or
/// the error text.
struct ResolveResult {
  std::vector<TargetAddress> addresses;
  std::string error;  ///< "failed to resolve '<host>': <gai text>"; empty on success
  bool ok() const { return error.empty(); }
};

/// ResolveTcpTarget() - getaddrinfo(@host, @port) for TCP, any family.
/// @host: an IPv4 or IPv6 literal (no brackets) or a name getaddrinfo knows
/// (a name may block on the resolver: call it off the event loop).
/// @port: 1..65535.
/// Return: see ResolveResult.
/// Thread: any.
ResolveResult ResolveTcpTarget(const std::string& host, uint16_t port);

/// WriteAll() - writes all @len bytes of @data to the socket @fd, retrying on
/// EINTR and short writes; uses send(MSG_NOSIGNAL) so a dead peer gives EPIPE
/// instead of SIGPIPE.
/// Return: 0 on success, else the errno of the failed send.
/// Thread: any; blocks while the socket buffer is full.
int WriteAll(int fd, const void* data, size_t len);

/// SetLingerZero() - SO_LINGER {on, 0}: the next close() sends a TCP RST
/// instead of a FIN, so the peer sees the connection reset. Errors ignored.
/// Thread: any.
void SetLingerZero(int fd);

}  // namespace osh::peers

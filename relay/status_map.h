// The one table that turns a ForwardTcp outcome into what the user's TCP
// client sees (design.md §3, protocol §2.3). Unit-tested in
// tests/relay/relay_unit_test.cc; docs/ARCHITECTURE.md repeats it.
#pragma once

#include <string_view>

namespace osh::relay {

/// What the client sees when a stream ends or fails to open.
enum class EndKind {
  kOk,           ///< clean end: FIN after all bytes
  kRefused,      ///< TCP RST to the SYN: connect() fails with ECONNREFUSED
  kUnreachable,  ///< ICMP unreachable: connect() fails with EHOSTUNREACH
  kReset,        ///< RST on an established connection (or to the SYN)
};

const char* to_string(EndKind k);

/// Maps a ForwardTcp final status.
/// @param grpc_code    grpc::StatusCode value
/// @param message      the status message (upstream texts, protocol §2.3)
/// @param established  response headers had arrived (the client's handshake
///                     was completed); any failure then is a reset
EndKind map_forward_status(int grpc_code, std::string_view message, bool established);

/// Maps the status of a CreateSshSession call made to open a stream
/// (NOT_FOUND, FAILED_PRECONDITION, gateway down: unreachable).
EndKind map_session_status(int grpc_code, std::string_view message);

}  // namespace osh::relay

#include "relay/status_map.h"

#include <grpcpp/support/status.h>

namespace osh::relay {

const char* to_string(EndKind k) {
  switch (k) {
    case EndKind::kOk: return "ok";
    case EndKind::kRefused: return "refused";
    case EndKind::kUnreachable: return "unreachable";
    case EndKind::kReset: return "reset";
  }
  return "?";
}

namespace {
bool contains(std::string_view s, std::string_view what) {
  return s.find(what) != std::string_view::npos;
}

// UNAVAILABLE is both "the gateway or the sandbox's supervisor cannot be
// reached" and "the supervisor's dial of the target failed" (protocol §2.3).
// The dial failure carries the OS error text ("... (os error 111)"); the
// others carry the gateway's or gRPC's own wording.
EndKind map_unavailable(std::string_view msg) {
  // The pending-relay caps (32 per sandbox, 256 in all) come wrapped as
  // "supervisor relay failed: ... relay capacity reached" (protocol §2.3).
  // The relay retries them like the stream caps; one still refused at the
  // queue deadline is a queue timeout: RST, as for RESOURCE_EXHAUSTED.
  if (contains(msg, "relay capacity reached")) return EndKind::kRefused;
  if (contains(msg, "supervisor relay failed") || contains(msg, "failed to connect to all addresses") ||
      contains(msg, "Socket closed") || contains(msg, "keepalive") || contains(msg, "relay lost"))
    return EndKind::kUnreachable;
  if (contains(msg, "os error")) return EndKind::kRefused;
  return EndKind::kUnreachable;
}
}  // namespace

EndKind map_forward_status(int code, std::string_view msg, bool established) {
  if (code == grpc::StatusCode::OK) return EndKind::kOk;
  if (established) return EndKind::kReset;
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE: return map_unavailable(msg);
    case grpc::StatusCode::NOT_FOUND:             // sandbox not found
    case grpc::StatusCode::FAILED_PRECONDITION:   // sandbox is not ready
    case grpc::StatusCode::DEADLINE_EXCEEDED:     // relay open timed out
    case grpc::StatusCode::UNAUTHENTICATED:       // token / credentials
    case grpc::StatusCode::PERMISSION_DENIED:
      return EndKind::kUnreachable;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:    // connection caps (§2.8)
    case grpc::StatusCode::INVALID_ARGUMENT:      // bad target
      return EndKind::kRefused;
    default:
      return EndKind::kReset;
  }
}

EndKind map_session_status(int code, std::string_view msg) {
  if (code == grpc::StatusCode::OK) return EndKind::kOk;
  if (code == grpc::StatusCode::RESOURCE_EXHAUSTED || code == grpc::StatusCode::INVALID_ARGUMENT)
    return EndKind::kRefused;
  (void)msg;
  return EndKind::kUnreachable;
}

}  // namespace osh::relay

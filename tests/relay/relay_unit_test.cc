// relay/ units without a network: the status table (docs/ARCHITECTURE.md
// "Error mapping") and endpoint parsing.
#include <grpcpp/support/status.h>
#include <gtest/gtest.h>

#include "relay/endpoint.h"
#include "relay/status_map.h"

namespace osh::relay {
namespace {

using grpc::StatusCode;

TEST(StatusMap, BeforeHeaders) {
  struct Case {
    StatusCode code;
    const char* msg;
    EndKind want;
  } cases[] = {
      {StatusCode::OK, "", EndKind::kOk},
      {StatusCode::UNAVAILABLE, "Connection refused (os error 111)", EndKind::kRefused},
      {StatusCode::UNAVAILABLE, "supervisor relay failed: supervisor session not connected",
       EndKind::kUnreachable},
      {StatusCode::UNAVAILABLE,
       "failed to connect to all addresses; last error: UNKNOWN: ipv4:192.0.2.2:17670: "
       "Failed to connect to remote host: Connection refused",
       EndKind::kUnreachable},
      {StatusCode::UNAVAILABLE, "relay lost", EndKind::kUnreachable},
      {StatusCode::NOT_FOUND, "sandbox not found", EndKind::kUnreachable},
      {StatusCode::FAILED_PRECONDITION, "sandbox is not ready", EndKind::kUnreachable},
      {StatusCode::DEADLINE_EXCEEDED, "relay open timed out", EndKind::kUnreachable},
      {StatusCode::UNAUTHENTICATED, "SSH session token expired", EndKind::kUnreachable},
      {StatusCode::PERMISSION_DENIED, "scope 'sandbox:write' required", EndKind::kUnreachable},
      {StatusCode::RESOURCE_EXHAUSTED, "sandbox SSH connection limit reached", EndKind::kRefused},
      {StatusCode::INVALID_ARGUMENT, "tcp target host must be loopback", EndKind::kRefused},
      {StatusCode::CANCELLED, "", EndKind::kReset},
      {StatusCode::INTERNAL, "fetch sandbox failed", EndKind::kReset},
  };
  for (const auto& c : cases)
    EXPECT_EQ(map_forward_status(c.code, c.msg, false), c.want) << c.code << " " << c.msg;
}

TEST(StatusMap, AfterHeadersEveryFailureIsAReset) {
  EXPECT_EQ(map_forward_status(StatusCode::OK, "", true), EndKind::kOk);
  for (auto code : {StatusCode::UNAVAILABLE, StatusCode::CANCELLED, StatusCode::NOT_FOUND,
                    StatusCode::RESOURCE_EXHAUSTED, StatusCode::INTERNAL})
    EXPECT_EQ(map_forward_status(code, "Connection refused (os error 111)", true), EndKind::kReset);
}

TEST(StatusMap, SessionErrors) {
  EXPECT_EQ(map_session_status(StatusCode::FAILED_PRECONDITION, "sandbox is not ready"),
            EndKind::kUnreachable);
  EXPECT_EQ(map_session_status(StatusCode::NOT_FOUND, "sandbox not found"), EndKind::kUnreachable);
  EXPECT_EQ(map_session_status(StatusCode::UNAVAILABLE, "failed to connect"), EndKind::kUnreachable);
}

TEST(Endpoint, Parses) {
  std::string err;
  auto e = parse_endpoint("http://192.0.2.2:17670", &err);
  ASSERT_TRUE(e) << err;
  EXPECT_FALSE(e->tls);
  EXPECT_EQ(e->grpc_target(), "192.0.2.2:17670");
  e = parse_endpoint("https://gw.example:443/", &err);
  ASSERT_TRUE(e) << err;
  EXPECT_TRUE(e->tls);
  EXPECT_EQ(e->host, "gw.example");
  e = parse_endpoint("http://[::1]:9000", &err);
  ASSERT_TRUE(e) << err;
  EXPECT_EQ(e->host, "::1");
  EXPECT_EQ(e->grpc_target(), "[::1]:9000");
  e = parse_endpoint("https://127.0.0.1", &err);
  ASSERT_TRUE(e) << err;
  EXPECT_EQ(e->port, 17670);
}

TEST(Endpoint, RejectsWithAReason) {
  for (const char* bad : {"192.0.2.2:17670", "ftp://x:1", "http://", "http://h:0", "http://h:70000",
                          "http://h:12x", "http://[::1", "http://h:1/path"}) {
    std::string err;
    EXPECT_FALSE(parse_endpoint(bad, &err)) << bad;
    EXPECT_NE(err.find("invalid gateway endpoint"), std::string::npos) << bad;
  }
}

}  // namespace
}  // namespace osh::relay

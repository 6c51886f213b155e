// Unit tests of the peers' shared helpers and the gateway config parsing.
#include <gtest/gtest.h>

#include <cerrno>
#include <ostream>
#include <set>
#include <stdexcept>

#include "peers/common/address.h"
#include "peers/common/socket.h"
#include "peers/common/uuid.h"
#include "peers/gateway/gateway_config.h"

namespace osh::peers {
namespace {

struct HostCase {
  const char* raw;
  LoopbackCheck check;
  const char* normalized;  // for kOk
};

// Readable, stable test names in ctest: the host with whitespace escaped.
void PrintTo(const HostCase& c, std::ostream* os) {
  *os << '\'';
  for (const char* p = c.raw; *p != '\0'; ++p) {
    if (*p == '\t') {
      *os << "\\t";
    } else if (*p == ' ') {
      *os << '_';
    } else {
      *os << *p;
    }
  }
  *os << '\'';
}

class LoopbackHostTest : public ::testing::TestWithParam<HostCase> {};

TEST_P(LoopbackHostTest, MatchesUpstreamRule) {
  const HostCase& c = GetParam();
  const LoopbackHost got = NormalizeLoopbackHost(c.raw);
  EXPECT_EQ(got.check, c.check) << "host '" << c.raw << "'";
  if (c.check == LoopbackCheck::kOk) {
    EXPECT_EQ(got.host, c.normalized);
  }
}

// Protocol §2.2 (upstream tests sandbox.rs:2626-2705).
INSTANTIATE_TEST_SUITE_P(
    Hosts, LoopbackHostTest,
    ::testing::Values(HostCase{"127.0.0.1", LoopbackCheck::kOk, "127.0.0.1"},
                      HostCase{"127.1.2.3", LoopbackCheck::kOk, "127.1.2.3"},
                      HostCase{"127.255.255.254", LoopbackCheck::kOk, "127.255.255.254"},
                      HostCase{"  127.0.0.1\t", LoopbackCheck::kOk, "127.0.0.1"},
                      HostCase{"localhost", LoopbackCheck::kOk, "127.0.0.1"},
                      HostCase{"LocalHost", LoopbackCheck::kOk, "127.0.0.1"},
                      HostCase{" LOCALHOST ", LoopbackCheck::kOk, "127.0.0.1"},
                      HostCase{"::1", LoopbackCheck::kOk, "::1"},
                      HostCase{"0:0:0:0:0:0:0:1", LoopbackCheck::kOk, "::1"},
                      HostCase{"0000::0001", LoopbackCheck::kOk, "::1"},
                      HostCase{"", LoopbackCheck::kEmpty, ""},
                      HostCase{"   ", LoopbackCheck::kEmpty, ""},
                      HostCase{"[::1]", LoopbackCheck::kNotLoopback, ""},
                      HostCase{"::ffff:127.0.0.1", LoopbackCheck::kNotLoopback, ""},
                      HostCase{"10.0.0.1", LoopbackCheck::kNotLoopback, ""},
                      HostCase{"128.0.0.1", LoopbackCheck::kNotLoopback, ""},
                      HostCase{"0.0.0.0", LoopbackCheck::kNotLoopback, ""},
                      HostCase{"::", LoopbackCheck::kNotLoopback, ""},
                      HostCase{"::2", LoopbackCheck::kNotLoopback, ""},
                      HostCase{"::1%lo", LoopbackCheck::kNotLoopback, ""},
                      HostCase{"example.com", LoopbackCheck::kNotLoopback, ""},
                      HostCase{"localhost.", LoopbackCheck::kNotLoopback, ""},
                      HostCase{"127.1", LoopbackCheck::kNotLoopback, ""},
                      HostCase{"127.0.0.1:22", LoopbackCheck::kNotLoopback, ""}));

TEST(LoopbackHost, Messages) {
  EXPECT_STREQ(LoopbackCheckMessage(LoopbackCheck::kEmpty), "tcp target host is required");
  EXPECT_STREQ(LoopbackCheckMessage(LoopbackCheck::kNotLoopback), "tcp target host must be loopback");
}

TEST(HostPort, Parses) {
  auto hp = ParseHostPort("127.0.0.1:22");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "127.0.0.1");
  EXPECT_EQ(hp->port, 22);
  hp = ParseHostPort("[::1]:17670");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 17670);
  hp = ParseHostPort("0.0.0.0:0");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->port, 0);
  EXPECT_FALSE(ParseHostPort("::1:22"));
  EXPECT_FALSE(ParseHostPort("host"));
  EXPECT_FALSE(ParseHostPort(":22"));
  EXPECT_FALSE(ParseHostPort("host:"));
  EXPECT_FALSE(ParseHostPort("host:65536"));
  EXPECT_FALSE(ParseHostPort("host:-1"));
  EXPECT_FALSE(ParseHostPort("[::1]22"));
  EXPECT_EQ(FormatHostPort("::1", 5), "[::1]:5");
  EXPECT_EQ(FormatHostPort("127.0.0.1", 5), "127.0.0.1:5");
}

TEST(Endpoint, HttpUrlBecomesGrpcTarget) {
  EXPECT_EQ(GrpcTargetFromEndpoint("http://127.0.0.1:17670"), "127.0.0.1:17670");
  EXPECT_EQ(GrpcTargetFromEndpoint("http://gw.example:8080/"), "gw.example:8080");
  EXPECT_EQ(GrpcTargetFromEndpoint("http://[::1]:17670"), "[::1]:17670");
  EXPECT_THROW(GrpcTargetFromEndpoint("https://127.0.0.1:17670"), std::invalid_argument);
  EXPECT_THROW(GrpcTargetFromEndpoint("127.0.0.1:17670"), std::invalid_argument);
  EXPECT_THROW(GrpcTargetFromEndpoint("http://127.0.0.1"), std::invalid_argument);
  EXPECT_THROW(GrpcTargetFromEndpoint("http://127.0.0.1:0"), std::invalid_argument);
  EXPECT_THROW(GrpcTargetFromEndpoint("http://::1:17670"), std::invalid_argument);
}

// RFC 9562 §5.4 text form: 8-4-4-4-12 lower-case hex digits, version
// nibble 4, variant bits 10 (8, 9, a or b).
bool is_uuid_v4(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (s[i] == '-')) return false;
    if (!dash && !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  }
  return s[14] == '4' && (s[19] == '8' || s[19] == '9' || s[19] == 'a' || s[19] == 'b');
}

TEST(Uuid, IsVersion4) {
  EXPECT_FALSE(is_uuid_v4("0f0e0d0c-0b0a-1909-8807-060504030201"));  // version 1
  EXPECT_FALSE(is_uuid_v4("0f0e0d0c-0b0a-4909-c807-060504030201"));  // variant 110
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string id = NewUuidV4();
    EXPECT_TRUE(is_uuid_v4(id)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(Socket, OsErrorTextLooksLikeRust) {
  EXPECT_EQ(OsErrorText(ECONNREFUSED), "Connection refused (os error 111)");
}

TEST(GatewayConfig, SandboxFlag) {
  const SandboxDecl d = ParseSandboxFlag("demo=1234-abcd");
  EXPECT_EQ(d.name, "demo");
  EXPECT_EQ(d.id, "1234-abcd");
  EXPECT_THROW(ParseSandboxFlag("demo"), std::invalid_argument);
  EXPECT_THROW(ParseSandboxFlag("=id"), std::invalid_argument);
  EXPECT_THROW(ParseSandboxFlag("demo="), std::invalid_argument);
}

TEST(GatewayConfig, Json) {
  GatewayConfig c;
  ApplyGatewayConfigJson(R"({"sandboxes":[{"name":"demo","id":"a"},{"name":"two","id":"b"}],
                             "max_streams_per_token":5,"max_streams_per_sandbox":7})",
                         c);
  ASSERT_EQ(c.sandboxes.size(), 2u);
  EXPECT_EQ(c.sandboxes[1].name, "two");
  EXPECT_EQ(c.sandboxes[1].id, "b");
  EXPECT_EQ(c.max_streams_per_token, 5);
  EXPECT_EQ(c.max_streams_per_sandbox, 7);
  EXPECT_NO_THROW(ValidateGatewayConfig(c));
  EXPECT_THROW(ApplyGatewayConfigJson("{", c), std::invalid_argument);
  EXPECT_THROW(ApplyGatewayConfigJson(R"({"max_streams":1})", c), std::invalid_argument);
  EXPECT_THROW(ApplyGatewayConfigJson(R"({"max_streams_per_token":"x"})", c), std::invalid_argument);
  EXPECT_THROW(ApplyGatewayConfigJson(R"({"sandboxes":[{"name":"x"}]})", c), std::invalid_argument);
}

TEST(GatewayConfig, Validation) {
  GatewayConfig c;
  c.sandboxes = {{"a", "1"}, {"b", "1"}};
  EXPECT_THROW(ValidateGatewayConfig(c), std::invalid_argument);
  c.sandboxes = {{"a", "1"}, {"a", "2"}};
  EXPECT_THROW(ValidateGatewayConfig(c), std::invalid_argument);
  c.sandboxes = {{"a", "1"}};
  c.max_streams_per_token = 0;
  EXPECT_THROW(ValidateGatewayConfig(c), std::invalid_argument);
  c.max_streams_per_token = 3;
  c.listen = "nowhere";
  EXPECT_THROW(ValidateGatewayConfig(c), std::invalid_argument);
}

}  // namespace
}  // namespace osh::peers

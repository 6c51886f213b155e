// Unit tests of the peers' shared helpers and the gateway config parsing.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <ostream>
#include <set>
#include <stdexcept>

#include "peers/common/address.h"
#include "peers/common/protocol.h"
#include "peers/common/socket.h"
#include "common/tunnel_ext.h"
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
  EXPECT_EQ(host_port("::1", 5), "[::1]:5");
  EXPECT_EQ(host_port("127.0.0.1", 5), "127.0.0.1:5");
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

TEST(GatewayConfig, SandboxFlagWithWorkspace) {
  const SandboxDecl d = ParseSandboxFlag("demo=1234@team");
  EXPECT_EQ(d.name, "demo");
  EXPECT_EQ(d.id, "1234");
  EXPECT_EQ(d.workspace, "team");
  EXPECT_EQ(ParseSandboxFlag("demo=1234").workspace, "default");
  EXPECT_THROW(ParseSandboxFlag("demo=1234@"), std::invalid_argument);
  EXPECT_THROW(ParseSandboxFlag("demo=@team"), std::invalid_argument);
  // Names are unique per workspace, ids everywhere.
  GatewayConfig c;
  c.sandboxes = {ParseSandboxFlag("a=1"), ParseSandboxFlag("a=2@team")};
  EXPECT_NO_THROW(ValidateGatewayConfig(c));
}

TEST(GatewayConfig, GeneratedSandboxes) {
  const auto many = ParseGenerateFlag("sb:150@team");
  ASSERT_EQ(many.size(), 150u);
  EXPECT_EQ(many[0].name, "sb-000");
  EXPECT_EQ(many[149].name, "sb-149");
  EXPECT_EQ(many[7].workspace, "team");
  EXPECT_EQ(many[7].id.size(), 36u);
  GatewayConfig c;
  c.sandboxes = many;
  for (auto& d : GenerateSandboxes("sb", 150)) c.sandboxes.push_back(d);  // other workspace
  EXPECT_NO_THROW(ValidateGatewayConfig(c));                               // ids differ too
  EXPECT_THROW(ParseGenerateFlag("sb"), std::invalid_argument);
  EXPECT_THROW(ParseGenerateFlag("sb:0"), std::invalid_argument);
  EXPECT_THROW(ParseGenerateFlag("sb:x"), std::invalid_argument);
}

TEST(GatewayConfig, PhasesRateLimitsProtocol) {
  EXPECT_EQ(ParseSandboxPhase("ready"), 2);
  EXPECT_EQ(ParseSandboxPhase("SANDBOX_PHASE_COMPLETED"), 9);
  EXPECT_EQ(ParseSandboxPhase("3"), 3);
  EXPECT_EQ(ParseSandboxPhase("auto"), 0);
  EXPECT_THROW(ParseSandboxPhase("restarting"), std::invalid_argument);
  const RateLimit r = ParseRateLimit("100/2");
  EXPECT_EQ(r.count, 100);
  EXPECT_EQ(r.period.count(), 2000);
  EXPECT_EQ(ParseRateLimit("5/0.5").period.count(), 500);
  EXPECT_EQ(ParseRateLimit("off").count, 0);
  for (const char* bad : {"100", "x/1", "10/0", "-1/1", "1/x"}) {
    EXPECT_THROW(ParseRateLimit(bad), std::invalid_argument) << bad;
  }
  EXPECT_EQ(ParseProtocol("0.0"), Protocol::kV0_0);
  EXPECT_EQ(ParseProtocol("0.1"), Protocol::kV0_1);
  EXPECT_FALSE(ParseProtocol("0.2"));
  GatewayConfig c;
  EXPECT_EQ(c.protocol, Protocol::kV0_1);  // the default generation
  EXPECT_EQ(c.max_pending_relays_per_sandbox, 32);
  EXPECT_EQ(c.max_pending_relays, 256);
  EXPECT_EQ(c.rate_limit.count, 0);  // off
  EXPECT_STREQ(DefaultHealthVersion(Protocol::kV0_0), "0.0.111");
  EXPECT_STREQ(DefaultHealthVersion(Protocol::kV0_1), "0.1.11");
}

TEST(GatewayConfig, JsonGenerationKeys) {
  GatewayConfig c;
  ApplyGatewayConfigJson(R"({"protocol":"0.0","rate_limit":"10/1",
      "max_pending_relays_per_sandbox":4,"max_pending_relays":8,
      "generate_sandboxes":{"prefix":"g","count":3},
      "sandboxes":[{"name":"x","id":"1","workspace":"team","phase":"ERROR",
                    "host_key_fingerprint":"SHA256:abc"}]})",
                         c);
  EXPECT_EQ(c.protocol, Protocol::kV0_0);
  EXPECT_EQ(c.rate_limit.count, 10);
  EXPECT_EQ(c.max_pending_relays_per_sandbox, 4);
  EXPECT_EQ(c.max_pending_relays, 8);
  ASSERT_EQ(c.sandboxes.size(), 4u);
  EXPECT_EQ(c.sandboxes[3].workspace, "team");
  EXPECT_EQ(c.sandboxes[3].phase, 3);
  EXPECT_EQ(c.sandboxes[3].host_key_fingerprint, "SHA256:abc");
  EXPECT_NO_THROW(ValidateGatewayConfig(c));
  EXPECT_THROW(ApplyGatewayConfigJson(R"({"protocol":"1.0"})", c), std::invalid_argument);
  EXPECT_THROW(ApplyGatewayConfigJson(R"({"sandboxes":[{"name":"x","id":"1","color":"red"}]})", c),
               std::invalid_argument);
}

TEST(GatewayConfig, HostKeyFingerprintFromAPublicKeyFile) {
  // The same value `ssh-keygen -lf` prints for this key.
  const std::string path = ::testing::TempDir() + "/osh_host_key.pub";
  std::ofstream(path) << "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f "
                         "root@sandbox\n";
  EXPECT_EQ(HostKeyFingerprint(path), "SHA256:ZkAslGjFiUHdGf/WUL8rQvkib4PTvQatUV0OUQSncCA");
  EXPECT_EQ(HostKeyFingerprint("SHA256:literal"), "SHA256:literal");
  EXPECT_THROW(HostKeyFingerprint("/nonexistent/key.pub"), std::invalid_argument);
  std::remove(path.c_str());
  std::vector<SandboxDecl> sandboxes = {{"a", "1"}, {"b", "2"}};
  ApplyPerSandboxFlag("*=SHA256:all", "--host-key", sandboxes,
                      [](SandboxDecl& sb, const std::string& v) { sb.host_key_fingerprint = v; });
  EXPECT_EQ(sandboxes[1].host_key_fingerprint, "SHA256:all");
  EXPECT_THROW(ApplyPerSandboxFlag("c=x", "--host-key", sandboxes,
                                   [](SandboxDecl&, const std::string&) {}),
               std::invalid_argument);
}

TEST(TunnelExt, ParseAndFormat) {
  EXPECT_EQ(tunnel_ext::Parse(""), tunnel_ext::Extensions{});
  EXPECT_EQ(tunnel_ext::Parse("bogus, ,"), tunnel_ext::Extensions{});
  const auto all = tunnel_ext::Parse(" Relay-Error,connect-ack ,x,fin-frame");
  EXPECT_TRUE(all.connect_ack && all.fin_frame && all.relay_error);
  EXPECT_EQ(tunnel_ext::Format(all), "connect-ack,fin-frame,relay-error");
  EXPECT_EQ(tunnel_ext::Format(all), tunnel_ext::kRequestAll);  // what the tunnel asks for
  EXPECT_EQ(tunnel_ext::Format(tunnel_ext::Parse("fin-frame")), "fin-frame");
  EXPECT_EQ(tunnel_ext::Format({}), "");
  EXPECT_EQ(tunnel_ext::kHeader, "x-osh-tunnel-ext");
}

}  // namespace
}  // namespace osh::peers

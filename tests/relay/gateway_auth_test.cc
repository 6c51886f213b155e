// Gateway configuration and authentication (issue 4.1, protocol §4.1-§4.3):
//  - cli/gateway_config: resolution order, the metadata / token / bundle
//    rules and one clear ConfigError line per malformed file, against config
//    trees in a temp dir (never the real user's or system's config);
//  - relay/GatewayClient against an in-process mini-gateway on 127.0.0.1:0
//    with TLS, mTLS and a bearer token, certificates made by the openssl CLI
//    (make_test_pki.sh): what works, and describe_failure()'s line for what
//    does not; a ForwardTcp stream carries the bearer too.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <mutex>
#include <sstream>
#include <thread>

#include "cli/gateway_config.h"
#include "peers/gateway/gateway_config.h"
#include "peers/gateway/mini_gateway.h"
#include "peers/supervisor/mini_supervisor.h"
#include "relay/forward.h"
#include "relay/gateway_client.h"
#include "relay/gateway_client_impl.h"
#include "relay/h2_channel.h"

namespace osh {
namespace {

namespace fs = std::filesystem;
using cli::ConfigError;
using cli::GatewayFlags;
using cli::resolve_gateway_config;
using namespace std::chrono_literals;

constexpr int kUnauthenticated = 16;

/// A temp directory removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/osh-auth-test.XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    if (!p) throw std::runtime_error("mkdtemp failed");
    path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Mode 0600, as the openshell CLI's secrets must be (tls.key and
// oidc_token.json with group or other access are refused, issue 14.8).
void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// "what() of the ConfigError that fn throws", or "" if it throws none.
template <typename Fn>
std::string config_error(Fn&& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

const char kCert[] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const char kKey[] = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

// ------------------------------------------------------------------------
// Resolution (files only)
// ------------------------------------------------------------------------

class GatewayConfigTest : public ::testing::Test {
 protected:
  std::string user() const { return tmp_.path() + "/user/openshell"; }
  std::string sys() const { return tmp_.path() + "/etc/openshell"; }

  GatewayFlags flags() const {
    GatewayFlags f;
    f.config_dir = user();
    f.system_dir = sys();
    return f;
  }
  void metadata(const std::string& root, const std::string& name, const std::string& json) {
    write_file(fs::path(root) / "gateways" / name / "metadata.json", json);
  }
  void simple(const std::string& root, const std::string& name, const std::string& endpoint,
              const std::string& extra = "") {
    metadata(root, name,
             R"({"name":")" + name + R"(","gateway_endpoint":")" + endpoint +
                 R"(","is_remote":false,"gateway_port":17670)" + extra + "}");
  }
  void active(const std::string& root, const std::string& name) {
    write_file(fs::path(root) / "active_gateway", name + "\n");
  }
  void bundle(const std::string& name, bool ca, bool cert, bool key) {
    const fs::path d = fs::path(user()) / "gateways" / name / "mtls";
    fs::create_directories(d);
    if (ca) write_file(d / "ca.crt", kCert);
    if (cert) write_file(d / "tls.crt", kCert);
    if (key) write_file(d / "tls.key", kKey);
  }
  void token(const std::string& name, const std::string& json) {
    write_file(fs::path(user()) / "gateways" / name / "oidc_token.json", json);
  }
  std::string file(const std::string& root, const std::string& name, const std::string& leaf) {
    return (fs::path(root) / "gateways" / name / leaf).string();
  }

  TempDir tmp_;
};

TEST_F(GatewayConfigTest, EndpointFlagWinsOverEverything) {
  simple(user(), "alpha", "https://alpha.example:443");
  active(user(), "alpha");
  GatewayFlags f = flags();
  f.endpoint = "http://127.0.0.1:9999";
  auto r = resolve_gateway_config(f);
  EXPECT_EQ(r.options.endpoint.to_string(), "http://127.0.0.1:9999");
  EXPECT_EQ(r.source, "--gateway-endpoint/OPENSHELL_GATEWAY_ENDPOINT");
  EXPECT_EQ(r.name, "");  // no stored gateway has this endpoint
  EXPECT_EQ(r.options.workspace, "default");
}

TEST_F(GatewayConfigTest, EndpointFindsItsGatewayByMetadata) {
  simple(user(), "beta", "https://gw.example:8443/");
  simple(user(), "alpha", "https://other.example:8443");
  bundle("beta", true, true, true);
  GatewayFlags f = flags();
  f.endpoint = "https://GW.example:8443";
  auto r = resolve_gateway_config(f);
  EXPECT_EQ(r.name, "beta");
  EXPECT_EQ(r.metadata_file, file(user(), "beta", "metadata.json"));
  EXPECT_EQ(r.options.client_cert_source, file(user(), "beta", "mtls/tls.crt"));
  EXPECT_EQ(r.options.ca_pem, kCert);
  EXPECT_EQ(r.options.client_key_pem, kKey);
}

TEST_F(GatewayConfigTest, EndpointWithNameUsesThatNamesCredentials) {
  simple(user(), "beta", "https://gw.example:8443");
  bundle("gamma", true, false, false);
  GatewayFlags f = flags();
  f.endpoint = "https://gw.example:8443";
  f.name = "gamma";  // no metadata needed (upstream trusts the name)
  auto r = resolve_gateway_config(f);
  EXPECT_EQ(r.name, "gamma");
  EXPECT_EQ(r.metadata_file, "");
  EXPECT_EQ(r.options.ca_source, file(user(), "gamma", "mtls/ca.crt"));
  EXPECT_TRUE(r.options.client_cert_pem.empty());
}

TEST_F(GatewayConfigTest, NameFlagBeatsActiveGateway) {
  simple(user(), "alpha", "http://192.0.2.1:1");
  simple(user(), "beta", "http://192.0.2.2:2");
  active(user(), "alpha");
  GatewayFlags f = flags();
  f.name = "beta";
  auto r = resolve_gateway_config(f);
  EXPECT_EQ(r.name, "beta");
  EXPECT_EQ(r.options.endpoint.to_string(), "http://192.0.2.2:2");
  EXPECT_EQ(r.source, "-g/OPENSHELL_GATEWAY");
}

TEST_F(GatewayConfigTest, UserActiveGatewayBeatsSystemOne) {
  simple(user(), "alpha", "http://192.0.2.1:1");
  simple(sys(), "sysgw", "http://192.0.2.9:9");
  active(user(), "alpha");
  active(sys(), "sysgw");
  auto r = resolve_gateway_config(flags());
  EXPECT_EQ(r.name, "alpha");
  EXPECT_EQ(r.source, user() + "/active_gateway");
}

TEST_F(GatewayConfigTest, SystemActiveGatewayAndMetadataAreTheFallback) {
  simple(sys(), "sysgw", "http://192.0.2.9:9");
  active(sys(), "sysgw");
  auto r = resolve_gateway_config(flags());
  EXPECT_EQ(r.name, "sysgw");
  EXPECT_EQ(r.source, sys() + "/active_gateway");
  EXPECT_EQ(r.metadata_file, file(sys(), "sysgw", "metadata.json"));
}

TEST_F(GatewayConfigTest, UserMetadataShadowsSystemMetadata) {
  simple(sys(), "g", "http://192.0.2.9:9");
  simple(user(), "g", "http://192.0.2.1:1");
  active(sys(), "g");
  auto r = resolve_gateway_config(flags());
  EXPECT_EQ(r.options.endpoint.to_string(), "http://192.0.2.1:1");
}

TEST_F(GatewayConfigTest, BlankActiveGatewayFileIsIgnored) {
  write_file(fs::path(user()) / "active_gateway", "  \n");
  simple(sys(), "sysgw", "http://192.0.2.9:9");
  active(sys(), "sysgw");
  EXPECT_EQ(resolve_gateway_config(flags()).name, "sysgw");
}

TEST_F(GatewayConfigTest, NothingConfiguredIsOneClearLine) {
  const std::string e = config_error([&] { resolve_gateway_config(flags()); });
  EXPECT_EQ(e,
            "no gateway configured: pass --gateway-endpoint URL or -g NAME (or set "
            "OPENSHELL_GATEWAY_ENDPOINT / OPENSHELL_GATEWAY), or select one with `openshell "
            "gateway select` (no " +
                user() + "/active_gateway or " + sys() + "/active_gateway)");
}

TEST_F(GatewayConfigTest, UnknownGatewayNamesBothPlaces) {
  GatewayFlags f = flags();
  f.name = "nope";
  EXPECT_EQ(config_error([&] { resolve_gateway_config(f); }),
            "unknown gateway 'nope' (from -g/OPENSHELL_GATEWAY): no " +
                file(user(), "nope", "metadata.json") + " or " + file(sys(), "nope", "metadata.json") +
                " (register it with `openshell gateway add`)");
}

TEST_F(GatewayConfigTest, MalformedFilesAreOneLineEach) {
  const std::string meta = file(user(), "g", "metadata.json");
  struct Case {
    std::string metadata;
    std::string want;
  } cases[] = {
      {"{not json", meta + ": invalid JSON: parse error at line 1, column 3: syntax error"},
      {"[1,2]", meta + ": expected a JSON object"},
      {R"({"name":"g"})", meta + ": \"gateway_endpoint\" is missing"},
      {R"({"gateway_endpoint":17670})", meta + ": \"gateway_endpoint\" must be a string"},
      {R"({"gateway_endpoint":"ftp://x:1"})",
       meta + ": \"gateway_endpoint\": invalid gateway endpoint 'ftp://x:1': must start with "
              "http:// or https://"},
      {R"({"gateway_endpoint":"http://x:1","auth_mode":5})", meta + ": \"auth_mode\" must be a string"},
      {R"({"gateway_endpoint":"http://x:1","auth_mode":"kerberos"})",
       meta + ": unknown auth_mode \"kerberos\" (expected mtls, plaintext, oidc or cloudflare_jwt)"},
      {R"({"gateway_endpoint":"http://x:1","auth_mode":"cloudflare_jwt"})",
       "gateway 'g' uses edge authentication (auth_mode \"cloudflare_jwt\" in " + meta +
           "), which openshell-tunnel does not support"},
      {R"({"gateway_endpoint":"http://x:1","name":"../up"})", meta + ": invalid gateway name '../up'"},
  };
  active(user(), "g");
  for (const auto& c : cases) {
    metadata(user(), "g", c.metadata);
    const std::string e = config_error([&] { resolve_gateway_config(flags()); });
    EXPECT_TRUE(e.starts_with(c.want)) << "metadata: " << c.metadata << "\n got: " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

TEST_F(GatewayConfigTest, BadActiveGatewayName) {
  write_file(fs::path(user()) / "active_gateway", "../../etc\n");
  EXPECT_EQ(config_error([&] { resolve_gateway_config(flags()); }),
            user() + "/active_gateway: invalid gateway name '../../etc'");
}

TEST_F(GatewayConfigTest, UnreadableMetadataIsAnError) {
  fs::create_directories(fs::path(file(user(), "g", "metadata.json")));  // a directory
  active(user(), "g");
  EXPECT_EQ(config_error([&] { resolve_gateway_config(flags()); }),
            "cannot read " + file(user(), "g", "metadata.json") + ": Is a directory");
}

TEST_F(GatewayConfigTest, OidcTokenIsTheBearer) {
  simple(user(), "o", "https://gw.example:443", R"(,"auth_mode":"oidc")");
  token("o", R"({"access_token":"eyJ.abc.def","refresh_token":"r","expires_at":4102444800,)"
             R"("issuer":"https://idp","client_id":"cli"})");
  GatewayFlags f = flags();
  f.name = "o";
  auto r = resolve_gateway_config(f);
  EXPECT_EQ(r.options.bearer_token, "eyJ.abc.def");
  EXPECT_EQ(r.options.token_source, file(user(), "o", "oidc_token.json"));
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_EQ(r.auth_mode, "oidc");
}

TEST_F(GatewayConfigTest, ExpiredOidcTokenIsUsedWithAWarning) {
  simple(user(), "o", "http://127.0.0.1:80", R"(,"auth_mode":"oidc")");
  token("o", R"({"access_token":"old","expires_at":1000,"issuer":"i","client_id":"c"})");
  GatewayFlags f = flags();
  f.name = "o";
  auto r = resolve_gateway_config(f);
  EXPECT_EQ(r.options.bearer_token, "old");
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_EQ(r.warnings[0], "the OIDC access token in " + file(user(), "o", "oidc_token.json") +
                               " expired at 1970-01-01T00:16:40Z; using it anyway (run `openshell "
                               "gateway login o`: the tunnel re-reads the file when it changes)");
  // Within upstream's 30 s refresh window: "expires at".
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(990));
  auto soon = resolve_gateway_config(f, now);
  ASSERT_EQ(soon.warnings.size(), 1u);
  EXPECT_TRUE(contains(soon.warnings[0], " expires at 1970-01-01T00:16:40Z")) << soon.warnings[0];
}

// OpenSSH's rule for private keys (issue 14.8): a token or key file that
// group or others can read or write is refused, naming the file and the fix.
// up as root for a served user (issue 14.1): a file in the user's config
// that someone else owns (a symlink to another user's token) is refused,
// as is a file under the system dir that is not root's; the token's owner
// also travels to the client for its re-reads.
TEST_F(GatewayConfigTest, FilesOfAnotherOwnerAreRefused) {
  simple(user(), "o", "https://gw.example:443", R"(,"auth_mode":"oidc")");
  token("o", R"({"access_token":"t0k"})");
  GatewayFlags f = flags();
  f.name = "o";
  f.files_owner = ::getuid();  // the files' real owner
  relay::GatewayOptions ok = resolve_gateway_config(f).options;
  EXPECT_EQ(ok.bearer_token, "t0k");
  EXPECT_EQ(ok.bearer_token_file_owner, std::optional<uid_t>(::getuid()));
  f.files_owner = ::getuid() + 4242;  // someone else is served
  const std::string err = config_error([&] { resolve_gateway_config(f); });
  EXPECT_TRUE(contains(err, "owned by uid " + std::to_string(::getuid()) + ", not uid " +
                                std::to_string(::getuid() + 4242) + ": refused")) << err;
}

TEST_F(GatewayConfigTest, SecretsOthersCanReadAreRefused) {
  simple(user(), "o", "https://gw.example:443", R"(,"auth_mode":"oidc")");
  token("o", R"({"access_token":"t0k"})");
  GatewayFlags f = flags();
  f.name = "o";
  const std::string tok = file(user(), "o", "oidc_token.json");
  EXPECT_EQ(resolve_gateway_config(f).options.bearer_token, "t0k");  // 0600
  for (fs::perms extra : {fs::perms::group_read, fs::perms::others_read, fs::perms::others_write}) {
    fs::permissions(tok, fs::perms::owner_read | fs::perms::owner_write | extra);
    const std::string err = config_error([&] { resolve_gateway_config(f); });
    EXPECT_TRUE(contains(err, tok + ": permissions 0")) << err;
    EXPECT_TRUE(contains(err, "are too open")) << err;
    EXPECT_TRUE(contains(err, "`chmod 600 " + tok + "`")) << err;
  }
  fs::permissions(tok, fs::perms::owner_read);  // 0400 is fine
  EXPECT_EQ(resolve_gateway_config(f).options.bearer_token, "t0k");

  simple(user(), "m", "https://gw.example:443");
  bundle("m", true, true, true);
  f.name = "m";
  const std::string key = file(user(), "m", "mtls/tls.key");
  EXPECT_EQ(resolve_gateway_config(f).options.client_key_pem, kKey);
  fs::permissions(key, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                           fs::perms::others_read);
  EXPECT_EQ(config_error([&] { resolve_gateway_config(f); }),
            key + ": permissions 0644 are too open: a private key or token must be readable by its owner "
                  "only (run `chmod 600 " + key + "`)");
  // Certificates are public: any mode.
  fs::permissions(key, fs::perms::owner_read | fs::perms::owner_write);
  fs::permissions(file(user(), "m", "mtls/tls.crt"), fs::perms::all);
  EXPECT_NO_THROW(resolve_gateway_config(f));
}

// A bearer token over http:// to another machine: one warning (issue 14.8);
// loopback and https are quiet.
TEST_F(GatewayConfigTest, PlaintextTokenToARemoteGatewayWarns) {
  token("o", R"({"access_token":"t0k"})");
  GatewayFlags f = flags();
  f.name = "o";
  for (const char* ep : {"http://gw.example:80", "http://192.0.2.7:8080", "http://[2001:db8::1]:80"}) {
    SCOPED_TRACE(ep);
    simple(user(), "o", ep, R"(,"auth_mode":"oidc")");
    auto r = resolve_gateway_config(f);
    ASSERT_EQ(r.warnings.size(), 1u);
    EXPECT_TRUE(contains(r.warnings[0], "the bearer token from " + file(user(), "o", "oidc_token.json") +
                                            " goes to " + r.options.endpoint.to_string() + " in plaintext"))
        << r.warnings[0];
  }
  for (const char* ep : {"http://127.0.0.1:80", "http://127.1.2.3:80", "http://localhost:80", "http://[::1]:80",
                         "https://gw.example:443"}) {
    SCOPED_TRACE(ep);
    simple(user(), "o", ep, R"(,"auth_mode":"oidc")");
    EXPECT_TRUE(resolve_gateway_config(f).warnings.empty());
  }
  // No token, no warning.
  simple(user(), "p", "http://gw.example:80");
  f.name = "p";
  EXPECT_TRUE(resolve_gateway_config(f).warnings.empty());
}

TEST_F(GatewayConfigTest, MalformedOidcTokenFiles) {
  simple(user(), "o", "http://gw.example:80", R"(,"auth_mode":"oidc")");
  GatewayFlags f = flags();
  f.name = "o";
  const std::string tok = file(user(), "o", "oidc_token.json");
  EXPECT_EQ(config_error([&] { resolve_gateway_config(f); }),
            "gateway 'o' uses OIDC (auth_mode \"oidc\" in " + file(user(), "o", "metadata.json") +
                ") but " + tok + " does not exist: run `openshell gateway login o`");
  struct Case {
    std::string json, want;
  } cases[] = {
      {"{", tok + ": invalid JSON: "},
      {"\"t\"", tok + ": expected a JSON object"},
      {R"({"issuer":"i"})", tok + ": \"access_token\" is missing or empty"},
      {R"({"access_token":""})", tok + ": \"access_token\" is missing or empty"},
      {R"({"access_token":42})", tok + ": \"access_token\" must be a string"},
      {R"({"access_token":"a b"})", tok + ": \"access_token\" contains spaces or control characters"},
      {R"({"access_token":"t","expires_at":"tomorrow"})",
       tok + ": \"expires_at\" must be a Unix time in seconds (an integer)"},
      {R"({"access_token":"t","expires_at":-5})",
       tok + ": \"expires_at\" must be a Unix time in seconds (an integer)"},
  };
  for (const auto& c : cases) {
    token("o", c.json);
    const std::string e = config_error([&] { resolve_gateway_config(f); });
    EXPECT_TRUE(e.starts_with(c.want)) << "token: " << c.json << "\n got: " << e;
  }
}

TEST_F(GatewayConfigTest, BundleDirectoryFallbackNames) {
  // No gateway name: OPENSHELL_GATEWAY (= the name flag), else the URL host,
  // 127.0.0.1 and localhost meaning "openshell" (protocol §4.2).
  GatewayFlags f = flags();
  f.endpoint = "https://127.0.0.1:17670";
  EXPECT_EQ(resolve_gateway_config(f).mtls_dir, user() + "/gateways/openshell/mtls");
  f.endpoint = "https://LocalHost:17670";
  EXPECT_EQ(resolve_gateway_config(f).mtls_dir, user() + "/gateways/openshell/mtls");
  f.endpoint = "https://gw.example:17670";
  EXPECT_EQ(resolve_gateway_config(f).mtls_dir, user() + "/gateways/gw.example/mtls");
  f.endpoint = "https://[fd00::1]:17670";
  EXPECT_EQ(resolve_gateway_config(f).mtls_dir, user() + "/gateways/fd00__1/mtls");
  f.name = "my gw";
  EXPECT_EQ(resolve_gateway_config(f).mtls_dir, user() + "/gateways/my_gw/mtls");
  EXPECT_EQ(cli::sanitize_gateway_name("a/b:c d.e-f_g"), "a_b_c_d.e-f_g");
}

TEST_F(GatewayConfigTest, BundleRules) {
  simple(user(), "m", "https://gw.example:443", R"(,"auth_mode":"mtls")");
  GatewayFlags f = flags();
  f.name = "m";
  // No bundle: system roots, no client certificate.
  auto none = resolve_gateway_config(f);
  EXPECT_TRUE(none.options.ca_pem.empty());
  EXPECT_TRUE(none.options.client_cert_pem.empty());
  // CA only.
  bundle("m", true, false, false);
  auto ca_only = resolve_gateway_config(f);
  EXPECT_EQ(ca_only.options.ca_pem, kCert);
  EXPECT_TRUE(ca_only.options.client_cert_pem.empty());
  // Certificate without key.
  bundle("m", true, true, false);
  const std::string dir = file(user(), "m", "mtls");
  EXPECT_EQ(config_error([&] { resolve_gateway_config(f); }),
            dir + ": tls.crt is there but tls.key is missing (a client certificate needs both)");
  // Not PEM.
  write_file(fs::path(dir) / "tls.key", "hello");
  EXPECT_EQ(config_error([&] { resolve_gateway_config(f); }),
            dir + "/tls.key: not a PEM private key (no -----BEGIN ... PRIVATE KEY----- line)");
  write_file(fs::path(dir) / "ca.crt", "{}");
  EXPECT_EQ(config_error([&] { resolve_gateway_config(f); }),
            dir + "/ca.crt: not a PEM certificate (no -----BEGIN CERTIFICATE----- line)");
  // Complete.
  bundle("m", true, true, true);
  auto full = resolve_gateway_config(f);
  EXPECT_EQ(full.options.client_cert_pem, kCert);
  EXPECT_EQ(full.options.client_key_pem, kKey);
  EXPECT_EQ(full.summary(), "gateway m https://gw.example:443 (from -g/OPENSHELL_GATEWAY): mTLS (" +
                                dir + "/tls.crt) with CA " + dir + "/ca.crt");
  // http endpoints never read the bundle.
  simple(user(), "m", "http://gw.example:80");
  write_file(fs::path(dir) / "ca.crt", "{}");
  EXPECT_EQ(resolve_gateway_config(f).mtls_dir, "");
}

TEST_F(GatewayConfigTest, OidcIgnoresAnIncompleteBundlesClientPair) {
  simple(user(), "o", "https://gw.example:443", R"(,"auth_mode":"oidc")");
  token("o", R"({"access_token":"t"})");
  bundle("o", true, true, false);
  GatewayFlags f = flags();
  f.name = "o";
  auto r = resolve_gateway_config(f);
  EXPECT_EQ(r.options.ca_pem, kCert);
  EXPECT_TRUE(r.options.client_cert_pem.empty());
  EXPECT_EQ(r.options.bearer_token, "t");
}

TEST_F(GatewayConfigTest, InsecureSkipsTheBundleAndWarns) {
  bundle("openshell", true, true, true);
  GatewayFlags f = flags();
  f.endpoint = "https://127.0.0.1:17670";
  f.insecure = true;
  auto r = resolve_gateway_config(f);
  EXPECT_TRUE(r.options.insecure_tls);
  EXPECT_TRUE(r.options.client_cert_pem.empty());
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_TRUE(contains(r.warnings[0], "TLS certificate verification is disabled"));
}

TEST_F(GatewayConfigTest, WorkspacePassesThrough) {
  GatewayFlags f = flags();
  f.endpoint = "http://127.0.0.1:1";
  f.workspace = "team-a";
  EXPECT_EQ(resolve_gateway_config(f).options.workspace, "team-a");
}

TEST(GatewayEnv, ReadsTheUpstreamVariables) {
  std::map<std::string, std::string> env = {
      {"OPENSHELL_GATEWAY_ENDPOINT", "https://gw:1"}, {"OPENSHELL_GATEWAY", " prod "},
      {"OPENSHELL_WORKSPACE", "ws"},                  {"OPENSHELL_GATEWAY_INSECURE", "TRUE"},
      {"XDG_CONFIG_HOME", "/x/cfg"},                  {"HOME", "/home/u"},
      {"OPENSHELL_SYSTEM_GATEWAY_DIR", "/opt/osh"}};
  auto lookup = [&](const std::string& k) -> std::optional<std::string> {
    auto it = env.find(k);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  GatewayFlags f;
  cli::load_gateway_env(f, lookup);
  EXPECT_EQ(f.endpoint, "https://gw:1");
  EXPECT_EQ(f.name, "prod");
  EXPECT_EQ(f.workspace, "ws");
  EXPECT_TRUE(f.insecure);
  EXPECT_EQ(f.config_dir, "/x/cfg/openshell");
  EXPECT_EQ(f.system_dir, "/opt/osh");
  EXPECT_TRUE(f.env_warnings.empty());

  env.erase("XDG_CONFIG_HOME");
  env["OPENSHELL_GATEWAY"] = "   ";  // blank: ignored, as upstream
  env["OPENSHELL_SYSTEM_GATEWAY_DIR"] = "rel/dir";
  env["OPENSHELL_GATEWAY_INSECURE"] = "off";
  GatewayFlags g;
  cli::load_gateway_env(g, lookup);
  EXPECT_EQ(g.name, "");
  EXPECT_EQ(g.config_dir, "/home/u/.config/openshell");
  EXPECT_EQ(g.system_dir, "/etc/openshell");
  EXPECT_FALSE(g.insecure);
  ASSERT_EQ(g.env_warnings.size(), 1u);
  EXPECT_EQ(g.env_warnings[0], "ignoring relative OPENSHELL_SYSTEM_GATEWAY_DIR 'rel/dir'");

  env["OPENSHELL_GATEWAY_INSECURE"] = "maybe";
  GatewayFlags h;
  cli::load_gateway_env(h, lookup);
  h.endpoint = "http://127.0.0.1:1";
  EXPECT_EQ(config_error([&] { resolve_gateway_config(h); }),
            "OPENSHELL_GATEWAY_INSECURE='maybe' is not a boolean (use true or false)");
}

// ------------------------------------------------------------------------
// The mini-gateway's TLS / auth configuration
// ------------------------------------------------------------------------

TEST(MiniGatewayAuthConfig, JsonKeysAndValidation) {
  peers::GatewayConfig c;
  peers::ApplyGatewayConfigJson(
      R"({"tls_cert":"/c.pem","tls_key":"/k.pem","client_ca":"/ca.pem","bearer_token":"t0k",)"
      R"("supervisor_listen":"198.51.100.1:17670"})",
      c);
  EXPECT_EQ(c.tls_cert_file, "/c.pem");
  EXPECT_EQ(c.tls_key_file, "/k.pem");
  EXPECT_EQ(c.client_ca_file, "/ca.pem");
  EXPECT_EQ(c.bearer_token, "t0k");
  EXPECT_EQ(c.supervisor_listen, "198.51.100.1:17670");
  EXPECT_NO_THROW(peers::ValidateGatewayConfig(c));

  auto invalid = [](const std::function<void(peers::GatewayConfig&)>& tweak) -> std::string {
    peers::GatewayConfig bad;
    tweak(bad);
    try {
      peers::ValidateGatewayConfig(bad);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(invalid([](auto& b) { b.tls_cert_file = "/c.pem"; }),
            "--tls-cert and --tls-key must be given together");
  EXPECT_EQ(invalid([](auto& b) { b.client_ca_file = "/ca.pem"; }),
            "--client-ca needs TLS: give --tls-cert and --tls-key too");
  EXPECT_EQ(invalid([](auto& b) { b.bearer_token = "a b"; }),
            "--bearer-token must be visible ASCII (no spaces or control characters)");
  EXPECT_EQ(invalid([](auto& b) { b.supervisor_listen = "nope"; }),
            "supervisor listen address 'nope' must be HOST:PORT");
}

TEST(MiniGatewayAuthConfig, UnreadableCertificateFailsStart) {
  TempDir tmp;
  write_file(fs::path(tmp.path()) / "key.pem", "not pem");
  peers::GatewayConfig c;
  c.listen = "127.0.0.1:0";
  c.tls_cert_file = tmp.path() + "/missing.pem";
  c.tls_key_file = tmp.path() + "/key.pem";
  peers::MiniGateway gw(c);
  try {
    gw.Start();
    FAIL() << "Start() accepted a missing certificate";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()),
              "--tls-key '" + tmp.path() + "/key.pem': no PEM block (-----BEGIN ...) found");
  }
}

// ------------------------------------------------------------------------
// Live: GatewayClient <-> mini-gateway with TLS / mTLS / bearer
// ------------------------------------------------------------------------

const char kDemoId[] = "8b1f0c8e-5a3d-4c1e-9f6a-2d7e4b9c0a11";
const char kBearer[] = "s3cret-Token.42";

class AuthLiveTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_ = new TempDir();
    const std::string cmd =
        std::string("bash '") + OSH_TEST_PKI_SCRIPT + "' '" + pki_->path() + "' >/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }
  static std::string pki(const std::string& leaf) { return pki_->path() + "/" + leaf; }
  static std::string pem(const std::string& leaf) { return read_file(pki(leaf)); }

  /// Starts the mini-gateway; TLS when @tls, client CA when @mtls, and the
  /// bearer token when @bearer. Supervisors use the plaintext listener.
  void StartGateway(bool tls, bool mtls, bool bearer) {
    peers::GatewayConfig c;
    c.listen = "127.0.0.1:0";
    c.supervisor_listen = "127.0.0.1:0";
    c.sandboxes = {{"demo", kDemoId}};
    c.supervisor_wait = 2s;
    if (tls) {
      c.tls_cert_file = pki("server.crt");
      c.tls_key_file = pki("server.key");
    }
    if (mtls) c.client_ca_file = pki("ca.crt");
    if (bearer) c.bearer_token = kBearer;
    gateway_ = std::make_unique<peers::MiniGateway>(c);
    gateway_->Start();
    tls_ = tls;
  }

  /// Starts a TLS mini-gateway on [::1] (its certificate has the IP SAN
  /// ::1); returns options for it with the test CA.
  relay::GatewayOptions StartIpv6TlsGateway() {
    peers::GatewayConfig c;
    c.listen = "[::1]:0";
    c.sandboxes = {{"demo", kDemoId}};
    c.tls_cert_file = pki("server.crt");
    c.tls_key_file = pki("server.key");
    gateway_ = std::make_unique<peers::MiniGateway>(c);
    gateway_->Start();
    std::string err;
    auto o = WithCa(relay::GatewayOptions{});
    o.endpoint = *relay::parse_endpoint("https://[::1]:" + std::to_string(gateway_->port()), &err);
    return o;
  }

  relay::GatewayOptions Options() const {
    relay::GatewayOptions o;
    std::string err;
    o.endpoint = *relay::parse_endpoint(
        std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(gateway_->port()), &err);
    o.rpc_timeout = 5s;
    return o;
  }

  static relay::GatewayOptions WithCa(relay::GatewayOptions o, const std::string& ca = "ca.crt") {
    o.ca_pem = pem(ca);
    o.ca_source = pki(ca);
    return o;
  }
  static relay::GatewayOptions WithClient(relay::GatewayOptions o,
                                          const std::string& who = "client") {
    o.client_cert_pem = pem(who + ".crt");
    o.client_key_pem = pem(who + ".key");
    o.client_cert_source = pki(who + ".crt");
    return o;
  }

  /// Health and ListSandboxes; "" when both work, else describe_failure().
  static std::string Check(const relay::GatewayOptions& o) {
    relay::GatewayClient gw(o);
    std::string version;
    relay::CallStatus s = gw.health(&version);
    if (s.ok()) {
      std::vector<relay::SandboxInfo> list;
      s = gw.list_sandboxes(&list);
      if (s.ok() && (list.size() != 1 || list[0].id != kDemoId)) return "wrong sandbox list";
    }
    return s.ok() ? "" : relay::describe_failure(s, o);
  }

  static TempDir* pki_;
  std::unique_ptr<peers::MiniGateway> gateway_;
  bool tls_ = false;
};

TempDir* AuthLiveTest::pki_ = nullptr;

TEST_F(AuthLiveTest, TlsWithTheRightCa) {
  StartGateway(true, false, false);
  EXPECT_EQ(Check(WithCa(Options())), "");
  // The DNS SAN works through the server-name override too.
  auto o = WithCa(Options());
  o.tls_server_name = "gateway.osh.test";
  EXPECT_EQ(Check(o), "");
}

TEST_F(AuthLiveTest, TlsOverIpv6LoopbackChecksTheIpSan) {
  EXPECT_EQ(Check(StartIpv6TlsGateway()), "");
}

TEST_F(AuthLiveTest, TlsWithTheWrongCaSaysCertificateVerifyFailed) {
  StartGateway(true, false, false);
  auto o = WithCa(Options(), "other-ca.crt");
  EXPECT_EQ(Check(o), "TLS handshake with " + o.endpoint.to_string() +
                          " failed: certificate verify failed (is the CA in " + pki("other-ca.crt") +
                          " right?)");
}

TEST_F(AuthLiveTest, TlsWithTheSystemRootsSaysSo) {
  StartGateway(true, false, false);
  auto o = Options();
  EXPECT_EQ(Check(o), "TLS handshake with " + o.endpoint.to_string() +
                          " failed: certificate verify failed (no CA configured and the system "
                          "roots do not trust the gateway's certificate: put its CA in "
                          "mtls/ca.crt of the gateway's config directory)");
}

TEST_F(AuthLiveTest, ServerNameMismatch) {
  StartGateway(true, false, false);
  auto o = WithCa(Options());
  o.tls_server_name = "elsewhere.osh.test";
  EXPECT_EQ(Check(o), "TLS handshake with " + o.endpoint.to_string() +
                          " failed: the server certificate is not valid for 'elsewhere.osh.test' "
                          "(the certificate's subject alternative names must include it)");
}

TEST_F(AuthLiveTest, InsecureAcceptsAnyServerCertificate) {
  StartGateway(true, false, false);
  auto o = Options();
  o.insecure_tls = true;
  EXPECT_EQ(Check(o), "");
}

TEST_F(AuthLiveTest, MtlsWithTheClientCertificate) {
  StartGateway(true, true, false);
  EXPECT_EQ(Check(WithClient(WithCa(Options()))), "");
}

TEST_F(AuthLiveTest, MtlsWithoutAClientCertificate) {
  StartGateway(true, true, false);
  auto o = WithCa(Options());
  // TLS 1.3: the client only sees the connection close after its Finished.
  EXPECT_EQ(Check(o), "TLS handshake with " + o.endpoint.to_string() +
                          " failed: the gateway closed the connection; it probably requires a "
                          "client certificate and none is configured (mtls/tls.crt and "
                          "mtls/tls.key in the gateway's config directory)");
}

TEST_F(AuthLiveTest, MtlsWithAForeignClientCertificate) {
  StartGateway(true, true, false);
  auto o = WithClient(WithCa(Options()), "other-client");
  EXPECT_EQ(Check(o), "TLS handshake with " + o.endpoint.to_string() +
                          " failed: the gateway closed the connection; it probably rejected the "
                          "client certificate from " +
                          pki("other-client.crt") + " (is it signed by the CA the gateway trusts?)");
}

TEST_F(AuthLiveTest, PlaintextClientToTlsGateway) {
  StartGateway(true, false, false);
  auto o = Options();
  o.endpoint.tls = false;
  const std::string got = Check(o);
  EXPECT_TRUE(got.starts_with("gateway " + o.endpoint.to_string() + " is not reachable: UNAVAILABLE"))
      << got;
  EXPECT_TRUE(got.ends_with(" (does the gateway serve TLS? then use https://)")) << got;
}

TEST_F(AuthLiveTest, TlsClientToPlaintextGateway) {
  StartGateway(false, false, false);
  auto o = WithCa(Options());
  o.endpoint.tls = true;
  EXPECT_EQ(Check(o), "TLS handshake with " + o.endpoint.to_string() +
                          " failed: the gateway does not speak TLS there (use http:// for an h2c "
                          "gateway)");
}

TEST_F(AuthLiveTest, BearerTokenOverH2c) {
  StartGateway(false, false, true);
  auto o = Options();
  o.bearer_token = kBearer;
  EXPECT_EQ(Check(o), "");
}

TEST_F(AuthLiveTest, BearerTokenMissingOrWrong) {
  StartGateway(true, false, true);
  auto o = WithCa(Options());
  relay::GatewayClient anon(o);
  std::string version;
  EXPECT_TRUE(anon.health(&version).ok()) << "Health needs no token (protocol §1.5)";
  std::vector<relay::SandboxInfo> list;
  relay::CallStatus s = anon.list_sandboxes(&list);
  EXPECT_EQ(s.code, kUnauthenticated);
  EXPECT_EQ(s.message, "missing authorization header");
  EXPECT_EQ(relay::describe_failure(s, o),
            "gateway " + o.endpoint.to_string() +
                " refused the call: missing authorization header (it needs a bearer token: "
                "auth_mode \"oidc\" and oidc_token.json in the gateway's config directory)");

  o.bearer_token = "wrong";
  o.token_source = "/cfg/gateways/g/oidc_token.json";
  relay::GatewayClient bad(o);
  s = bad.list_sandboxes(&list);
  EXPECT_EQ(s.code, kUnauthenticated);
  EXPECT_EQ(s.message, "invalid token");
  EXPECT_EQ(relay::describe_failure(s, o),
            "gateway " + o.endpoint.to_string() +
                " refused the credentials: invalid token (the bearer token from "
                "/cfg/gateways/g/oidc_token.json is wrong or expired: run `openshell gateway "
                "login`)");
  relay::SshSession session;
  EXPECT_EQ(bad.create_ssh_session({kDemoId, "demo"}, &session).code, kUnauthenticated);
  EXPECT_EQ(bad.revoke_ssh_session("x").code, kUnauthenticated);
}

TEST(DescribeFailure, OtherCases) {
  std::string err;
  const relay::Endpoint ep = *relay::parse_endpoint("https://gw.example:443", &err);
  EXPECT_EQ(relay::describe_failure({16, "missing client certificate"}, ep),
            "gateway https://gw.example:443 refused the call: missing client certificate (put "
            "tls.crt and tls.key in mtls/ of the gateway's config directory)");
  EXPECT_EQ(relay::describe_failure({7, "scope 'sandbox:read' required"}, ep),
            "gateway https://gw.example:443 denied the call: scope 'sandbox:read' required");
  EXPECT_EQ(relay::describe_failure({4, "Deadline Exceeded"}, ep),
            "gateway https://gw.example:443 did not answer in time: DEADLINE_EXCEEDED: Deadline "
            "Exceeded");
  EXPECT_EQ(relay::describe_failure({13, "boom"}, ep), "gateway https://gw.example:443: INTERNAL: boom");
}

TEST_F(AuthLiveTest, UnreachableGateway) {
  StartGateway(false, false, false);
  auto o = Options();
  gateway_->Shutdown(0ms);
  const std::string got = Check(o);
  EXPECT_TRUE(got.starts_with("gateway " + o.endpoint.to_string() + " is not reachable: UNAVAILABLE"))
      << got;
}

/// Records stream events for the ForwardTcp test.
class Recorder : public relay::ForwardObserver {
 public:
  void on_open_ok(relay::StreamId) override { opened_ = true; }
  void on_data(relay::StreamId, std::string) override {}
  void on_remote_fin(relay::StreamId) override {}
  void on_write_done(relay::StreamId, size_t) override {}
  void on_closed(relay::StreamId, relay::EndKind kind, std::string reason) override {
    std::lock_guard lock(mu_);
    kind_ = kind;
    reason_ = std::move(reason);
    closed_ = true;
  }
  bool opened() const { return opened_; }
  bool closed() const { return closed_; }
  relay::EndKind kind() {
    std::lock_guard lock(mu_);
    return kind_;
  }
  std::string reason() {
    std::lock_guard lock(mu_);
    return reason_;
  }

 private:
  std::atomic<bool> opened_{false}, closed_{false};
  std::mutex mu_;
  relay::EndKind kind_ = relay::EndKind::kOk;
  std::string reason_;
};

template <typename Pred>
bool Eventually(Pred pred, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

TEST_F(AuthLiveTest, ForwardTcpStreamsCarryTheBearerOverMtls) {
  StartGateway(true, true, true);
  // A target that accepts (the kernel completes the handshake from the backlog).
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 8), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const uint16_t target_port = ntohs(a.sin_port);

  peers::SupervisorConfig sc;
  sc.gateway_endpoint = "http://127.0.0.1:" + std::to_string(gateway_->supervisor_port());
  sc.sandbox_id = kDemoId;
  sc.initial_backoff = 50ms;
  peers::MiniSupervisor sup(sc);
  sup.Start();
  ASSERT_TRUE(Eventually([&] { return gateway_->IsSupervisorConnected(kDemoId); }));

  for (const auto transport : {relay::ForwardTransport::kGrpc, relay::ForwardTransport::kH2}) {
  SCOPED_TRACE(relay::to_string(transport));
  auto o = WithClient(WithCa(Options()));
  o.bearer_token = kBearer;
  o.forward_transport = transport;
  relay::GatewayClient gw(o);
  Recorder rec;
  {
    relay::ForwardManager mgr(gw, rec);
    relay::ForwardTarget t;
    t.sandbox = {kDemoId, "demo"};
    t.host = "127.0.0.1";
    t.port = target_port;
    t.service_id = "auth-test";
    mgr.open(1, t);
    EXPECT_TRUE(Eventually([&] { return rec.opened() || rec.closed(); }));
    EXPECT_TRUE(rec.opened()) << "stream closed: " << rec.reason();
    mgr.abort(1);
    EXPECT_TRUE(Eventually([&] { return rec.closed(); }));
    mgr.shutdown(2000ms);
  }
  }
  ::close(lfd);
  sup.Stop();
}

// Health over the ForwardTcp streams' own HTTP/2 channel (relay/h2_channel.h,
// ForwardTransport::kH2): its TLS, mTLS and bearer handling against the
// mini-gateway (grpc++), which the streams above rely on. Returns the
// status code and message; the version on success.
struct H2Answer {
  int code = -1;
  std::string message;
  std::string version;
};
H2Answer H2Health(const relay::GatewayOptions& o, const std::string& bearer = "") {
  class Events final : public relay::h2::CallEvents {
   public:
    void on_initial_metadata(bool, const std::vector<relay::h2::Header>&) override {}
    void on_write_done(bool) override {}
    void on_writes_done_done(bool) override {}
    void on_read_done(bool ok, std::string m, bool) override {
      std::lock_guard lk(mu);
      if (ok) msg = std::move(m);
    }
    void on_done(int c, std::string m) override {
      std::lock_guard lk(mu);
      answer.code = c;
      answer.message = std::move(m);
      cv.notify_all();
    }
    std::mutex mu;
    std::condition_variable cv;
    H2Answer answer;
    std::string msg;
  } ev;
  relay::h2::Channel ch(relay::h2_channel_options(o));
  std::vector<relay::h2::Header> md;
  if (!bearer.empty()) md.emplace_back("authorization", "Bearer " + bearer);
  relay::h2::Call call = ch.create_call("/openshell.v1.OpenShell/Health", md, &ev);
  call.write({{}, nullptr});  // HealthRequest: no fields
  call.writes_done();
  call.read();
  call.start();
  std::unique_lock lk(ev.mu);
  if (!ev.cv.wait_for(lk, 15s, [&] { return ev.answer.code >= 0; })) return {-2, "no answer", ""};
  openshell::v1::HealthResponse r;
  if (ev.answer.code == 0 && r.ParseFromString(ev.msg)) ev.answer.version = r.version();
  return ev.answer;
}

TEST_F(AuthLiveTest, H2ChannelSpeaksMtlsWithTheBearer) {
  StartGateway(true, true, true);
  const auto o = WithClient(WithCa(Options()));
  const auto ok = H2Health(o, kBearer);
  EXPECT_EQ(ok.code, 0) << ok.message;
  EXPECT_FALSE(ok.version.empty());
  const auto no_client = H2Health(WithCa(Options()), kBearer);
  EXPECT_EQ(no_client.code, grpc::StatusCode::UNAVAILABLE) << no_client.message;
  const auto wrong_ca = H2Health(WithClient(WithCa(Options(), "other-ca.crt")), kBearer);
  EXPECT_EQ(wrong_ca.code, grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(wrong_ca.message.find("certificate verify failed"), std::string::npos) << wrong_ca.message;
}

TEST_F(AuthLiveTest, H2ChannelChecksTheServerNameUnlessInsecure) {
  StartGateway(true, false, false);
  auto o = WithCa(Options());
  EXPECT_EQ(H2Health(o).code, 0);  // the IP SAN 127.0.0.1
  o.tls_server_name = "gateway.osh.test";
  EXPECT_EQ(H2Health(o).code, 0);  // the DNS SAN
  o.tls_server_name = "elsewhere.osh.test";
  const auto mismatch = H2Health(o);
  EXPECT_EQ(mismatch.code, grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(mismatch.message.find("mismatch"), std::string::npos) << mismatch.message;
  auto insecure = Options();
  insecure.insecure_tls = true;
  EXPECT_EQ(H2Health(insecure).code, 0);
  auto roots = Options();  // the system roots do not know the test CA
  EXPECT_EQ(H2Health(roots).code, grpc::StatusCode::UNAVAILABLE);
  auto plain = Options();  // h2c to a TLS listener
  plain.endpoint.tls = false;
  EXPECT_EQ(H2Health(plain).code, grpc::StatusCode::UNAVAILABLE);
}

TEST_F(AuthLiveTest, H2ChannelOverIpv6LoopbackAndH2c) {
  StartGateway(false, false, true);
  auto o = Options();
  EXPECT_EQ(H2Health(o, kBearer).code, 0);
  EXPECT_EQ(H2Health(StartIpv6TlsGateway()).code, 0);
}

TEST_F(AuthLiveTest, SupervisorListenerRefusesClientCalls) {
  StartGateway(true, false, false);
  relay::GatewayOptions o;
  std::string err;
  o.endpoint = *relay::parse_endpoint(
      "http://127.0.0.1:" + std::to_string(gateway_->supervisor_port()), &err);
  relay::GatewayClient gw(o);
  std::vector<relay::SandboxInfo> list;
  relay::CallStatus s = gw.list_sandboxes(&list);
  EXPECT_EQ(s.code, kUnauthenticated);
  EXPECT_EQ(s.message, "client calls must use the gateway's TLS listener");
}

TEST_F(AuthLiveTest, ConfigDirEndToEnd) {
  // active_gateway + metadata.json (oidc) + mtls bundle + oidc_token.json,
  // resolved through --config-dir, against an mTLS + bearer gateway.
  StartGateway(true, true, true);
  TempDir cfg;
  const fs::path root = fs::path(cfg.path()) / "openshell";
  write_file(root / "active_gateway", "lab\n");
  write_file(root / "gateways/lab/metadata.json",
             R"({"name":"lab","gateway_endpoint":"https://127.0.0.1:)" +
                 std::to_string(gateway_->port()) +
                 R"(","is_remote":true,"gateway_port":0,"auth_mode":"oidc"})");
  write_file(root / "gateways/lab/oidc_token.json",
             std::string(R"({"access_token":")") + kBearer + R"(","issuer":"i","client_id":"c"})");
  for (const char* f : {"ca.crt", "tls.crt", "tls.key"}) {
    const std::string src = std::string(f) == "ca.crt" ? "ca.crt"
                            : std::string(f) == "tls.crt" ? "client.crt"
                                                          : "client.key";
    write_file(root / "gateways/lab/mtls" / f, pem(src));
  }
  GatewayFlags f;
  f.config_dir = root.string();
  f.system_dir = cfg.path() + "/no-system";
  auto r = resolve_gateway_config(f);
  EXPECT_EQ(r.name, "lab");
  EXPECT_EQ(Check(r.options), "");
  // The same tree with a wrong token: one clear line.
  write_file(root / "gateways/lab/oidc_token.json", R"({"access_token":"nope"})");
  const std::string got = Check(resolve_gateway_config(f).options);
  EXPECT_TRUE(contains(got, "refused the credentials: invalid token (the bearer token from " +
                                (root / "gateways/lab/oidc_token.json").string()))
      << got;
}

}  // namespace
}  // namespace osh

namespace osh {
namespace {

TEST(Generation, FromHealthVersion) {
  using relay::Generation;
  // protocol-0.1 §2: major.minor 0.0 -> old encoding, >= 0.1 -> new one;
  // 0.0.0 (no git metadata) or unparseable -> probe (kUnknown).
  EXPECT_EQ(relay::generation_from_version("0.0.111"), Generation::k0_0);
  EXPECT_EQ(relay::generation_from_version("0.0.53"), Generation::k0_0);
  EXPECT_EQ(relay::generation_from_version("0.1.5"), Generation::k0_1);
  EXPECT_EQ(relay::generation_from_version("0.1.6-dev.3+gdde5529"), Generation::k0_1);
  EXPECT_EQ(relay::generation_from_version("v0.1.11"), Generation::k0_1);
  EXPECT_EQ(relay::generation_from_version("0.2.0"), Generation::k0_1);
  EXPECT_EQ(relay::generation_from_version("1.0.0"), Generation::k0_1);
  EXPECT_EQ(relay::generation_from_version("openshell 0.0.111"), Generation::k0_0);
  EXPECT_EQ(relay::generation_from_version("0.0.0"), Generation::kUnknown);
  EXPECT_EQ(relay::generation_from_version("0.0"), Generation::kUnknown);
  EXPECT_EQ(relay::generation_from_version(""), Generation::kUnknown);
  EXPECT_EQ(relay::generation_from_version("dev"), Generation::kUnknown);
  EXPECT_EQ(relay::generation_from_version("7"), Generation::kUnknown);
  EXPECT_STREQ(relay::to_string(Generation::k0_1), "0.1");
  EXPECT_STREQ(relay::phase_name(9), "COMPLETED");
}

TEST(Generation, ForcedByFlag) {
  GatewayFlags f;
  f.endpoint = "http://127.0.0.1:1";
  f.config_dir.clear();
  f.protocol = "0.0";
  EXPECT_EQ(resolve_gateway_config(f).options.force_generation, relay::Generation::k0_0);
  f.protocol = "0.1";
  EXPECT_EQ(resolve_gateway_config(f).options.force_generation, relay::Generation::k0_1);
  f.protocol = "auto";
  EXPECT_EQ(resolve_gateway_config(f).options.force_generation, relay::Generation::kUnknown);
  EXPECT_EQ(resolve_gateway_config(f).options.workspace, "default");
}

TEST_F(AuthLiveTest, RewrittenOidcTokenFileIsPickedUpWithoutRestart) {
  // The openshell CLI rewrites oidc_token.json on refresh; a running tunnel
  // must use the new token (issue 12.1) without a restart.
  StartGateway(false, false, true);
  TempDir cfg;
  const fs::path root = fs::path(cfg.path()) / "openshell";
  write_file(root / "active_gateway", "lab\n");
  write_file(root / "gateways/lab/metadata.json",
             R"({"name":"lab","gateway_endpoint":"http://127.0.0.1:)" +
                 std::to_string(gateway_->port()) + R"(","auth_mode":"oidc"})");
  const fs::path token_file = root / "gateways/lab/oidc_token.json";
  write_file(token_file, R"({"access_token":"stale-token"})");
  GatewayFlags f;
  f.config_dir = root.string();
  f.system_dir = cfg.path() + "/no-system";
  relay::GatewayClient gw(resolve_gateway_config(f).options);
  std::vector<relay::SandboxInfo> list;
  EXPECT_EQ(gw.list_sandboxes(&list).code, kUnauthenticated);
  // A broken rewrite (mid-write, bad JSON) keeps the previous token.
  std::this_thread::sleep_for(1100ms);
  write_file(token_file, R"({"access_token":)");
  EXPECT_EQ(gw.list_sandboxes(&list).code, kUnauthenticated);
  std::this_thread::sleep_for(1100ms);
  write_file(token_file, std::string(R"({"access_token":")") + kBearer + R"("})");
  std::this_thread::sleep_for(1100ms);  // checked at most once a second
  relay::CallStatus s = gw.list_sandboxes(&list);
  EXPECT_TRUE(s.ok()) << s.to_string();
  EXPECT_EQ(list.size(), 1u);
}

}  // namespace
}  // namespace osh

namespace osh {
namespace {

// GatewayClient against the mini-gateway in either generation (issue 12.1):
// detection, workspaces, paging, tokens, revocation.
class GenerationLiveTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (gateway_) gateway_->Shutdown(200ms);
  }
  void Start(peers::Protocol protocol, const std::function<void(peers::GatewayConfig&)>& tweak = nullptr) {
    peers::GatewayConfig c;
    c.listen = "127.0.0.1:0";
    c.protocol = protocol;
    c.sandboxes = {{"demo", kDemoId}};
    c.sandboxes.push_back({"other", "9c2e1d3f-1111-4222-8333-444455556666", "team"});
    c.sandboxes[0].host_key_fingerprint = "SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    if (tweak) tweak(c);
    gateway_ = std::make_unique<peers::MiniGateway>(c);
    gateway_->Start();
  }
  relay::GatewayOptions Options(const std::string& workspace = "default") const {
    relay::GatewayOptions o;
    std::string err;
    o.endpoint = *relay::parse_endpoint("http://127.0.0.1:" + std::to_string(gateway_->port()), &err);
    o.workspace = workspace;
    return o;
  }
  std::unique_ptr<peers::MiniGateway> gateway_;
};

TEST_F(GenerationLiveTest, DetectsEachGenerationFromHealth) {
  for (auto [protocol, want] : {std::pair{peers::Protocol::kV0_0, relay::Generation::k0_0},
                                std::pair{peers::Protocol::kV0_1, relay::Generation::k0_1}}) {
    Start(protocol);
    relay::GatewayClient gw(Options());
    EXPECT_EQ(gw.generation(), relay::Generation::kUnknown);
    std::string version;
    ASSERT_TRUE(gw.health(&version).ok());
    EXPECT_EQ(gw.generation(), want) << version;
    std::vector<relay::SandboxInfo> list;
    relay::CallStatus s = gw.list_sandboxes(&list);
    ASSERT_TRUE(s.ok()) << s.to_string();
    ASSERT_EQ(list.size(), 1u) << "only the default workspace's sandbox";
    EXPECT_EQ(list[0].name, "demo");
    EXPECT_EQ(list[0].id, kDemoId);
    gateway_->Shutdown(200ms);
    gateway_.reset();
  }
}

TEST_F(GenerationLiveTest, ProbesWhenTheVersionSaysNothing) {
  // protocol-0.1 §2: a build without git metadata reports 0.0.0; the empty
  // ListSandboxes tells the generations apart.
  for (auto [protocol, want] : {std::pair{peers::Protocol::kV0_0, relay::Generation::k0_0},
                                std::pair{peers::Protocol::kV0_1, relay::Generation::k0_1}}) {
    Start(protocol, [](peers::GatewayConfig& c) { c.version = "0.0.0"; });
    relay::GatewayClient gw(Options());
    std::string version;
    relay::CallStatus s = gw.health(&version);
    ASSERT_TRUE(s.ok()) << s.to_string();
    EXPECT_EQ(version, "0.0.0");
    EXPECT_EQ(gw.generation(), want);
    gateway_->Shutdown(200ms);
    gateway_.reset();
  }
}

TEST_F(GenerationLiveTest, ProbeThatCannotDecideIsAnError) {
  // A bearer-protected gateway answers the probe UNAUTHENTICATED: no signal.
  Start(peers::Protocol::kV0_1, [](peers::GatewayConfig& c) {
    c.version = "dev";
    c.bearer_token = "t";
  });
  relay::GatewayClient gw(Options());
  relay::CallStatus s = gw.health(nullptr);
  EXPECT_EQ(s.code, kUnauthenticated);
  EXPECT_NE(s.message.find("could not tell the gateway's protocol generation"), std::string::npos) << s.message;
  EXPECT_EQ(gw.generation(), relay::Generation::kUnknown);
  // With the generation given, no probe is needed.
  auto o = Options();
  o.force_generation = relay::Generation::k0_1;
  o.bearer_token = "t";
  relay::GatewayClient forced(o);
  EXPECT_TRUE(forced.health(nullptr).ok());
  std::vector<relay::SandboxInfo> list;
  EXPECT_TRUE(forced.list_sandboxes(&list).ok());
  EXPECT_EQ(list.size(), 1u);
}

TEST_F(GenerationLiveTest, ListsEveryPageOf150Sandboxes) {
  for (auto protocol : {peers::Protocol::kV0_1, peers::Protocol::kV0_0}) {
    Start(protocol, [](peers::GatewayConfig& c) {
      for (auto& d : peers::GenerateSandboxes("sb", 150)) c.sandboxes.push_back(std::move(d));
    });
    auto o = Options();
    o.list_page_size = 40;  // 151 sandboxes: four pages
    relay::GatewayClient gw(o);
    std::vector<relay::SandboxInfo> list;
    relay::CallStatus s = gw.list_sandboxes(&list);
    ASSERT_TRUE(s.ok()) << s.to_string();
    EXPECT_EQ(list.size(), 151u);
    std::set<std::string> names;
    for (const auto& sb : list) names.insert(sb.name);
    EXPECT_EQ(names.size(), 151u) << "no sandbox twice";
    gateway_->Shutdown(200ms);
    gateway_.reset();
  }
}

TEST_F(GenerationLiveTest, WorkspaceScopesEveryCall) {
  Start(peers::Protocol::kV0_1);
  relay::GatewayClient team(Options("team"));
  std::vector<relay::SandboxInfo> list;
  ASSERT_TRUE(team.list_sandboxes(&list).ok());
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name, "other");
  relay::SandboxInfo sb;
  EXPECT_EQ(team.get_sandbox("demo", &sb).code, 5) << "NOT_FOUND outside its workspace";
  relay::GatewayClient dflt(Options());
  relay::CallStatus s = dflt.get_sandbox("demo", &sb);
  ASSERT_TRUE(s.ok()) << s.to_string();
  EXPECT_EQ(sb.id, kDemoId);
  EXPECT_EQ(sb.host_key_fingerprint, "SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG");
}

TEST_F(GenerationLiveTest, TokensExpireFromTimestampsAndRevokeIsIdempotent) {
  for (auto protocol : {peers::Protocol::kV0_1, peers::Protocol::kV0_0}) {
    Start(protocol, [](peers::GatewayConfig& c) {
      c.token_ttl = 3600s;
      c.sandboxes[0].phase = relay::kPhaseReady;  // no supervisor in this test
    });
    relay::GatewayClient gw(Options());
    relay::SshSession session;
    relay::CallStatus s = gw.create_ssh_session({kDemoId, "demo"}, &session);
    ASSERT_TRUE(s.ok()) << s.to_string();
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    EXPECT_NEAR(static_cast<double>(session.expires_at_ms - now_ms), 3600e3, 60e3);
    EXPECT_EQ(session.host_key_fingerprint, "SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG");
    EXPECT_TRUE(gw.revoke_ssh_session(session.token).ok());
    if (protocol == peers::Protocol::kV0_1) {
      // COMPLETED again, then ALREADY_ABSENT for a token never issued.
      EXPECT_TRUE(gw.revoke_ssh_session(session.token).ok());
      EXPECT_TRUE(gw.revoke_ssh_session("never-issued").ok());
    }
    gateway_->Shutdown(200ms);
    gateway_.reset();
  }
  // No expiry: an absent expiration_time is 0 ("never").
  Start(peers::Protocol::kV0_1, [](peers::GatewayConfig& c) {
    c.token_ttl = 0s;
    c.sandboxes[0].phase = relay::kPhaseReady;
  });
  relay::GatewayClient gw(Options());
  relay::SshSession session;
  ASSERT_TRUE(gw.create_ssh_session({kDemoId, "demo"}, &session).ok());
  EXPECT_EQ(session.expires_at_ms, 0);
}

TEST_F(GenerationLiveTest, CompletedSandboxIsListedWithItsPhase) {
  Start(peers::Protocol::kV0_1, [](peers::GatewayConfig& c) { c.sandboxes[0].phase = 9; });
  relay::GatewayClient gw(Options());
  std::vector<relay::SandboxInfo> list;
  ASSERT_TRUE(gw.list_sandboxes(&list).ok());
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].phase, relay::kPhaseCompleted);
  EXPECT_TRUE(list[0].may_be_reachable());
  EXPECT_FALSE(list[0].ready());
}

TEST_F(GenerationLiveTest, CompletedSandboxWithALiveSupervisorIsReachable) {
  // protocol-0.1 §3: the readiness gate admits COMPLETED and ERROR while the
  // supervisor session lives; without one, FAILED_PRECONDITION, which the
  // tunnel answers as unreachable (EHOSTUNREACH).
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 8), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  Start(peers::Protocol::kV0_1, [](peers::GatewayConfig& c) {
    c.sandboxes[0].phase = relay::kPhaseCompleted;
    c.supervisor_wait = 1s;
  });
  relay::GatewayClient gw(Options());
  relay::ForwardTarget t;
  t.sandbox = {kDemoId, "demo"};
  t.host = "127.0.0.1";
  t.port = ntohs(a.sin_port);
  {
    Recorder rec;
    relay::ForwardManager mgr(gw, rec);
    mgr.open(1, t);
    EXPECT_TRUE(Eventually([&] { return rec.closed(); }));
    EXPECT_EQ(rec.kind(), relay::EndKind::kUnreachable) << rec.reason();
    mgr.shutdown(2000ms);
  }
  peers::SupervisorConfig sc;
  sc.gateway_endpoint = "http://127.0.0.1:" + std::to_string(gateway_->port());
  sc.sandbox_id = kDemoId;
  sc.initial_backoff = 50ms;
  peers::MiniSupervisor sup(sc);
  sup.Start();
  ASSERT_TRUE(Eventually([&] { return gateway_->IsSupervisorConnected(kDemoId); }));
  {
    Recorder rec;
    relay::ForwardManager mgr(gw, rec);
    mgr.open(2, t);
    EXPECT_TRUE(Eventually([&] { return rec.opened() || rec.closed(); }));
    EXPECT_TRUE(rec.opened()) << "stream closed: " << rec.reason();
    mgr.abort(2);
    EXPECT_TRUE(Eventually([&] { return rec.closed(); }));
    mgr.shutdown(2000ms);
  }
  sup.Stop();
  ::close(lfd);
}

}  // namespace
}  // namespace osh

// Replays fuzz/corpus/config (issue 6.2) through cli/gateway_config with
// the fuzzer's own checks (fuzz/config_harness.h): only ConfigError may
// escape, a resolution has a host, a port and, for OIDC, a usable token.
// A few seeds also pin the outcome they were written for.
//
// DISABLED_* tests describe the correct behaviour for a finding in
// cli/gateway_config.cc (fuzz/README.md "Findings"); they are enabled with
// the fix.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/config_harness.h"

namespace osh::fuzz {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

Bytes seed(const std::string& name) {
  std::ifstream f(fs::path(OSH_CONFIG_CORPUS_DIR) / name, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

TEST(ConfigCorpus, EveryFileKeepsTheContract) {
  ConfigHarness h;
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(OSH_CONFIG_CORPUS_DIR)) {
    if (!e.is_regular_file()) continue;
    SCOPED_TRACE(e.path().string());
    std::ifstream f(e.path(), std::ios::binary);
    const Bytes in((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_EQ(h.run(in, false), "");
    ++files;
  }
  EXPECT_GE(files, 30u);
}

// The seeds do what their names say (so that the corpus keeps covering the
// paths it was written for).
TEST(ConfigCorpus, SeedsReachTheirPaths) {
  ConfigHarness h;
  EXPECT_EQ(h.outcome(seed("h2c_active")), "ok http://127.0.0.1:17670");
  EXPECT_EQ(h.outcome(seed("mtls_full_bundle")), "ok https://gw.example:8443 mtls");
  EXPECT_EQ(h.outcome(seed("oidc_valid_token")), "ok https://gw.example:17670 bearer");
  EXPECT_EQ(h.outcome(seed("oidc_expired_token")), "ok https://gw.example:17670 bearer warned");
  EXPECT_EQ(h.outcome(seed("endpoint_flag_matches_stored")), "ok http://127.0.0.1:17670");
  EXPECT_EQ(h.outcome(seed("meta_bom")), "ok http://127.0.0.1:17670");  // nlohmann skips a UTF-8 BOM
  for (const char* name : {"oidc_token_missing", "oidc_token_with_space", "oidc_expires_negative",
                           "oidc_expires_float", "oidc_expires_string", "oidc_token_not_object",
                           "auth_cloudflare", "auth_unknown", "meta_invalid_json", "meta_array",
                           "meta_endpoint_number", "meta_endpoint_missing", "meta_name_dotdot",
                           "meta_name_slash", "endpoint_bad_port", "endpoint_bad_scheme",
                           "endpoint_flag_garbage", "active_escape", "active_unknown", "nothing",
                           "mtls_cert_without_key", "mtls_key_not_pem"})
    EXPECT_TRUE(h.outcome(seed(name)).starts_with("ConfigError")) << name << ": " << h.outcome(seed(name));
}

// The header promises "one clear line"; today a control character from the
// file (here BEL in auth_mode) is quoted verbatim into the message.
TEST(ConfigCorpus, ConfigErrorsAreOneLineOfText) {
  ConfigHarness h;
  EXPECT_EQ(h.run(seed("auth_unknown"), true), "");
}

}  // namespace
}  // namespace osh::fuzz

// Gateway configuration files as fuzz input: the engine of
// fuzz/config_fuzz.cc and of the corpus replay in tests/cli.
//
// resolve_gateway_config() (cli/gateway_config.h) reads files, so each input
// is written as a config tree into a private temp directory, then resolved:
//
//   input := flags:u8  part0 NUL part1 NUL part2 NUL part3 NUL part4 NUL part5
//
//   part0  <config>/gateways/gw/metadata.json   written if flags & 0x01
//   part1  <config>/gateways/gw/oidc_token.json            flags & 0x02
//   part2  <config>/active_gateway                         flags & 0x04
//   part3  <config>/gateways/gw/mtls/ca.crt                flags & 0x08
//   part4  <config>/gateways/gw/mtls/tls.crt               flags & 0x10
//   part5  <config>/gateways/gw/mtls/tls.key               flags & 0x20
//   flags & 0x40: part2 is passed as --gateway-endpoint instead (the
//                 stored gateway is then found by matching its endpoint)
//   flags & 0x80: --gateway-insecure
//
// Missing parts are empty. The rules (a violation is returned as one line):
//   - resolution returns, or throws ConfigError; nothing else escapes;
//   - a result has a host and a port, a summary, the default workspace, and
//     for auth_mode "oidc" a non-empty bearer token of visible ASCII
//     (it goes into an HTTP header);
//   - strict mode only: a ConfigError's what() is one line without control
//     characters (the header promises "one clear line"; today file contents
//     are quoted verbatim, see fuzz/README.md "Findings").
#pragma once

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/gateway_config.h"
#include "fuzz/temp_dir.h"

namespace osh::fuzz {

class ConfigHarness {
 public:
  ConfigHarness() = default;
  ConfigHarness(const ConfigHarness&) = delete;
  ConfigHarness& operator=(const ConfigHarness&) = delete;

  /// run() - writes the input's files, resolves, checks the rules above.
  /// @strict: also require one-line error messages.
  /// Return: "" or the first broken rule. Thread: one at a time.
  std::string run(std::span<const uint8_t> input, bool strict) {
    const Result res = resolve(input);
    if (!res.foreign.empty()) return res.foreign;
    if (!res.ok) {
      const std::string& m = res.error;
      if (strict && std::any_of(m.begin(), m.end(), [](char c) {
            return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
          }))
        return "ConfigError message is not one line of text: " + m.substr(0, 200);
      return "";
    }
    const auto& o = res.r.options;
    if (o.endpoint.host.empty()) return "resolved an endpoint without a host";
    if (o.endpoint.port == 0) return "resolved an endpoint with port 0";
    if (o.workspace != "default") return "workspace is not the default";
    if (res.r.summary().empty()) return "empty summary";
    std::string mode = res.r.auth_mode;
    mode.erase(0, mode.find_first_not_of(" \t\r\n\v\f"));
    mode.erase(mode.find_last_not_of(" \t\r\n\v\f") + 1);
    std::transform(mode.begin(), mode.end(), mode.begin(), [](unsigned char c) { return std::tolower(c); });
    if (mode == "oidc") {
      const std::string& t = o.bearer_token;
      if (t.empty()) return "OIDC gateway resolved without a bearer token";
      if (!std::all_of(t.begin(), t.end(), [](char c) { return c >= 0x21 && c <= 0x7e; }))
        return "bearer token with spaces or control characters";
    }
    return "";
  }

  /// outcome() - what resolving the input gives, in one line (for tests):
  /// "ok ENDPOINT[ mtls][ bearer][ warned]", "ConfigError: MESSAGE", or the
  /// broken rule for any other exception.
  std::string outcome(std::span<const uint8_t> input) {
    const Result res = resolve(input);
    if (!res.foreign.empty()) return res.foreign;
    if (!res.ok) return "ConfigError: " + res.error;
    const auto& o = res.r.options;
    std::string s = "ok " + o.endpoint.to_string();
    if (!o.client_cert_pem.empty()) s += " mtls";
    if (!o.bearer_token.empty()) s += " bearer";
    if (std::any_of(res.r.warnings.begin(), res.r.warnings.end(),
                    [](const std::string& w) { return w.find("OIDC access token") != std::string::npos; }))
      s += " warned";
    return s;
  }

  /// The fixed clock the token expiry is judged against (2025-01-01T00:00:00Z).
  static constexpr std::chrono::system_clock::time_point kNow{std::chrono::seconds{1735689600}};

 private:
  struct Result {
    bool ok = false;
    cli::GatewayResolution r;
    std::string error;    ///< ConfigError::what()
    std::string foreign;  ///< set when any other exception escaped
  };

  /// Writes the input's files (format: file comment) and resolves them.
  Result resolve(std::span<const uint8_t> input) {
    namespace fs = std::filesystem;
    const uint8_t flags = input.empty() ? 0 : input[0];
    std::vector<std::string> parts(6);
    size_t k = 0;
    for (size_t i = 1; i < input.size(); ++i) {
      if (input[i] == 0 && k + 1 < parts.size()) {
        ++k;
        continue;
      }
      parts[k].push_back(static_cast<char>(input[i]));
    }
    const fs::path user = root_.path() / "user";
    const fs::path sys = root_.path() / "etc";
    std::error_code ec;
    fs::remove_all(user, ec);
    fs::remove_all(sys, ec);
    const fs::path gw = user / "gateways" / "gw";
    fs::create_directories(gw / "mtls");
    fs::create_directories(sys);
    const fs::path files[6] = {gw / "metadata.json", gw / "oidc_token.json", user / "active_gateway",
                               gw / "mtls" / "ca.crt", gw / "mtls" / "tls.crt", gw / "mtls" / "tls.key"};
    for (size_t i = 0; i < 6; ++i) {
      if (i == 2 && (flags & 0x40)) continue;
      if (flags & (1u << i)) write(files[i], parts[i]);
    }
    cli::GatewayFlags f;
    f.config_dir = user.string();
    f.system_dir = sys.string();
    f.insecure = (flags & 0x80) != 0;
    if (flags & 0x40) f.endpoint = parts[2];
    Result res;
    try {
      res.r = cli::resolve_gateway_config(f, kNow);
      res.ok = true;
    } catch (const cli::ConfigError& e) {
      res.error = e.what();
    } catch (const std::exception& e) {
      res.foreign = std::string("an exception other than ConfigError escaped: ") + e.what();
    } catch (...) {
      res.foreign = "a non-std exception escaped";
    }
    return res;
  }

  static void write(const std::filesystem::path& p, const std::string& text) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!out) throw std::runtime_error("config harness: cannot write " + p.string());
    out.close();
    // 0600: the openshell CLI's secrets must be (a group/other-readable
    // tls.key or oidc_token.json is refused, issue 14.8).
    std::filesystem::permissions(p, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  }

  TempDir root_{"config-fuzz"};
};

}  // namespace osh::fuzz

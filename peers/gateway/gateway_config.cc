#include "peers/gateway/gateway_config.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>

#include "peers/common/address.h"

namespace osh::peers {

namespace {

constexpr const char* kPhaseNames[] = {"UNSPECIFIED", "PROVISIONING", "READY",   "ERROR",
                                       "DELETING",    "UNKNOWN",      "STOPPING", "STOPPED",
                                       "STARTING",    "COMPLETED"};
constexpr int kMaxPhase = 9;  // SANDBOX_PHASE_COMPLETED (0.1 only)

std::string Upper(std::string_view text) {
  std::string out(text);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

/// 32-bit FNV-1a, for generated sandbox ids.
uint32_t Fnv1a(std::string_view text) {
  uint32_t h = 2166136261u;
  for (const unsigned char c : text) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

/// Standard base64 decoding (RFC 4648, padding optional). Return: false on
/// a character outside the alphabet.
bool Base64Decode(std::string_view in, std::string* out) {
  uint32_t acc = 0;
  int bits = 0;
  for (const char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+') v = 62;
    else if (c == '/') v = 63;
    else if (c == '=') break;
    else return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return true;
}

/// Standard base64 without padding, as OpenSSH prints fingerprints.
std::string Base64NoPad(const unsigned char* data, size_t n) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    acc = (acc << 8) | data[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 0x3f]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 0x3f]);
  return out;
}

/// One "sandboxes" entry of the JSON config.
SandboxDecl SandboxFromJson(const nlohmann::json& entry) {
  SandboxDecl decl;
  if (!entry.is_object() || !entry.contains("name") || !entry.contains("id")) {
    throw std::invalid_argument("every sandbox needs \"name\" and \"id\"");
  }
  for (const auto& [key, value] : entry.items()) {
    if (key == "name") {
      decl.name = value.get<std::string>();
    } else if (key == "id") {
      decl.id = value.get<std::string>();
    } else if (key == "workspace") {
      decl.workspace = value.get<std::string>();
    } else if (key == "phase") {
      decl.phase = value.is_number() ? value.get<int>() : ParseSandboxPhase(value.get<std::string>());
    } else if (key == "host_key_fingerprint" || key == "host_key_file") {
      decl.host_key_fingerprint = HostKeyFingerprint(value.get<std::string>());
    } else {
      throw std::invalid_argument("unknown sandbox key \"" + key + "\"");
    }
  }
  return decl;
}

/// One "generate_sandboxes" entry of the JSON config.
std::vector<SandboxDecl> GeneratedFromJson(const nlohmann::json& entry) {
  return GenerateSandboxes(entry.at("prefix").get<std::string>(), entry.at("count").get<int>(),
                           entry.value("workspace", std::string(kDefaultWorkspace)));
}

}  // namespace

SandboxDecl ParseSandboxFlag(std::string_view text) {
  const auto eq = text.find('=');
  const auto at = text.find('@', eq == std::string_view::npos ? 0 : eq);
  const bool bad = eq == std::string_view::npos || eq == 0 || eq + 1 == text.size() ||
                   at == eq + 1 || (at != std::string_view::npos && at + 1 == text.size());
  if (bad) {
    throw std::invalid_argument("--sandbox expects NAME=ID[@WORKSPACE], got '" + std::string(text) + "'");
  }
  SandboxDecl decl;
  decl.name = std::string(text.substr(0, eq));
  decl.id = std::string(text.substr(eq + 1, at == std::string_view::npos ? std::string_view::npos
                                                                         : at - eq - 1));
  if (at != std::string_view::npos) decl.workspace = std::string(text.substr(at + 1));
  return decl;
}

std::vector<SandboxDecl> GenerateSandboxes(std::string_view prefix, int count,
                                           std::string_view workspace) {
  if (prefix.empty() || workspace.empty()) {
    throw std::invalid_argument("generated sandboxes need a prefix and a workspace");
  }
  if (count < 1 || count > 100000) {
    throw std::invalid_argument("generated sandbox count must be 1..100000");
  }
  const int width = static_cast<int>(std::to_string(count - 1).size());
  const uint32_t seed = Fnv1a(std::string(prefix) + "@" + std::string(workspace));
  std::vector<SandboxDecl> out;
  out.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    char index[16];
    std::snprintf(index, sizeof index, "%0*d", width, i);
    char id[40];
    std::snprintf(id, sizeof id, "%08x-0000-4000-8000-%012x", seed, static_cast<unsigned>(i));
    SandboxDecl decl;
    decl.name = std::string(prefix) + "-" + index;
    decl.id = id;
    decl.workspace = std::string(workspace);
    out.push_back(std::move(decl));
  }
  return out;
}

std::vector<SandboxDecl> ParseGenerateFlag(std::string_view text) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) {
    throw std::invalid_argument("--generate-sandboxes expects PREFIX:COUNT[@WORKSPACE], got '" +
                                std::string(text) + "'");
  }
  std::string_view rest = text.substr(colon + 1);
  std::string_view workspace = kDefaultWorkspace;
  if (const auto at = rest.find('@'); at != std::string_view::npos) {
    workspace = rest.substr(at + 1);
    rest = rest.substr(0, at);
  }
  int count = 0;
  try {
    size_t used = 0;
    count = std::stoi(std::string(rest), &used);
    if (used != rest.size()) throw std::invalid_argument("trailing characters");
  } catch (const std::exception&) {
    throw std::invalid_argument("--generate-sandboxes: bad COUNT in '" + std::string(text) + "'");
  }
  return GenerateSandboxes(text.substr(0, colon), count, workspace);
}

int ParseSandboxPhase(std::string_view text) {
  std::string name = Upper(text);
  if (name.empty() || name == "AUTO") return 0;
  if (name.rfind("SANDBOX_PHASE_", 0) == 0) name = name.substr(14);
  for (int i = 0; i <= kMaxPhase; ++i) {
    if (name == kPhaseNames[i] || name == std::to_string(i)) return i;
  }
  throw std::invalid_argument("unknown sandbox phase '" + std::string(text) + "'");
}

RateLimit ParseRateLimit(std::string_view text) {
  if (text == "off" || text == "0") return RateLimit{};
  const auto slash = text.find('/');
  const std::string bad = "--rate-limit expects N/SECONDS (e.g. 100/1), got '" + std::string(text) + "'";
  if (slash == std::string_view::npos) throw std::invalid_argument(bad);
  RateLimit limit;
  try {
    size_t used = 0;
    const std::string count(text.substr(0, slash));
    limit.count = std::stoi(count, &used);
    if (used != count.size() || limit.count < 1) throw std::invalid_argument(bad);
    const std::string secs(text.substr(slash + 1));
    const double seconds = std::stod(secs, &used);
    if (used != secs.size() || !(seconds > 0) || seconds > 86400) throw std::invalid_argument(bad);
    limit.period = std::chrono::milliseconds(std::max<int64_t>(1, std::llround(seconds * 1000)));
  } catch (const std::exception&) {
    throw std::invalid_argument(bad);
  }
  return limit;
}

std::string HostKeyFingerprint(const std::string& value) {
  if (value.rfind("SHA256:", 0) == 0) return value;
  std::ifstream in(value);
  std::string line;
  if (!in || !std::getline(in, line)) {
    throw std::invalid_argument("host key '" + value + "': not a SHA256: fingerprint and not a readable file");
  }
  std::istringstream fields(line);
  std::string type, blob64;
  fields >> type >> blob64;
  std::string blob;
  if (blob64.empty() || !Base64Decode(blob64, &blob) || blob.size() < 8) {
    throw std::invalid_argument("host key file '" + value + "': not an OpenSSH public key");
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  unsigned int digest_len = 0;
  if (EVP_Digest(blob.data(), blob.size(), digest, &digest_len, EVP_sha256(), nullptr) != 1) {
    throw std::invalid_argument("host key file '" + value + "': SHA-256 failed");
  }
  return "SHA256:" + Base64NoPad(digest, digest_len);
}

void ApplyPerSandboxFlag(std::string_view text, const char* flag, std::vector<SandboxDecl>& sandboxes,
                         void (*apply)(SandboxDecl&, const std::string& value)) {
  const auto eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == text.size()) {
    throw std::invalid_argument(std::string(flag) + " expects NAME=VALUE, got '" + std::string(text) + "'");
  }
  const std::string_view name = text.substr(0, eq);
  const std::string value(text.substr(eq + 1));
  bool matched = false;
  for (auto& sb : sandboxes) {
    if (name == "*" || sb.name == name) {
      apply(sb, value);
      matched = true;
    }
  }
  if (!matched) {
    throw std::invalid_argument(std::string(flag) + ": no declared sandbox is named '" +
                                std::string(name) + "'");
  }
}

void ApplyGatewayConfigJson(std::string_view json_text, GatewayConfig& config) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("invalid JSON: ") + e.what());
  }
  if (!doc.is_object()) throw std::invalid_argument("config must be a JSON object");
  try {
    for (const auto& [key, value] : doc.items()) {
      if (key == "sandboxes") {
        if (!value.is_array()) throw std::invalid_argument("\"sandboxes\" must be an array");
        for (const auto& entry : value) config.sandboxes.push_back(SandboxFromJson(entry));
      } else if (key == "generate_sandboxes") {
        const auto add = [&config](const nlohmann::json& entry) {
          for (auto& decl : GeneratedFromJson(entry)) config.sandboxes.push_back(std::move(decl));
        };
        if (value.is_array()) {
          for (const auto& entry : value) add(entry);
        } else {
          add(value);
        }
      } else if (key == "protocol") {
        const auto protocol = ParseProtocol(value.get<std::string>());
        if (!protocol) throw std::invalid_argument("\"protocol\" must be \"0.0\" or \"0.1\"");
        config.protocol = *protocol;
      } else if (key == "tunnel_extensions") {
        config.tunnel_extensions = value.get<bool>();
      } else if (key == "rate_limit") {
        config.rate_limit = ParseRateLimit(value.get<std::string>());
      } else if (key == "max_pending_relays_per_sandbox") {
        config.max_pending_relays_per_sandbox = value.get<int>();
      } else if (key == "max_pending_relays") {
        config.max_pending_relays = value.get<int>();
      } else if (key == "max_buffer_mib") {
        config.max_buffer_bytes = size_t{value.get<uint32_t>()} << 20;
      } else if (key == "max_streams_per_token") {
        config.max_streams_per_token = value.get<int>();
      } else if (key == "max_streams_per_sandbox") {
        config.max_streams_per_sandbox = value.get<int>();
      } else if (key == "listen") {
        config.listen = value.get<std::string>();
      } else if (key == "supervisor_wait_ms") {
        config.supervisor_wait = std::chrono::milliseconds(value.get<int64_t>());
      } else if (key == "relay_claim_timeout_ms") {
        config.relay_claim_timeout = std::chrono::milliseconds(value.get<int64_t>());
      } else if (key == "token_ttl_secs") {
        config.token_ttl = std::chrono::seconds(value.get<int64_t>());
      } else if (key == "version") {
        config.version = value.get<std::string>();
      } else if (key == "tls_cert") {
        config.tls_cert_file = value.get<std::string>();
      } else if (key == "tls_key") {
        config.tls_key_file = value.get<std::string>();
      } else if (key == "client_ca") {
        config.client_ca_file = value.get<std::string>();
      } else if (key == "bearer_token") {
        config.bearer_token = value.get<std::string>();
      } else if (key == "supervisor_listen") {
        config.supervisor_listen = value.get<std::string>();
      } else {
        throw std::invalid_argument("unknown config key \"" + key + "\"");
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("bad config value: ") + e.what());
  }
}

void LoadGatewayConfigFile(const std::string& path, GatewayConfig& config) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot read config file '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  try {
    ApplyGatewayConfigJson(text.str(), config);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("config file '" + path + "': " + e.what());
  }
}

void ValidateGatewayConfig(const GatewayConfig& config) {
  if (!ParseHostPort(config.listen)) {
    throw std::invalid_argument("listen address '" + config.listen + "' must be HOST:PORT");
  }
  std::set<std::pair<std::string, std::string>> names;  // (workspace, name)
  std::set<std::string> ids;
  for (const auto& sb : config.sandboxes) {
    if (sb.name.empty() || sb.id.empty() || sb.workspace.empty()) {
      throw std::invalid_argument("every sandbox needs a name, an id and a workspace");
    }
    if (!names.insert({sb.workspace, sb.name}).second) {
      throw std::invalid_argument("duplicate sandbox name '" + sb.name + "' in workspace '" +
                                  sb.workspace + "'");
    }
    const int max_phase = config.protocol == Protocol::kV0_1 ? kMaxPhase : kMaxPhase - 1;
    if (sb.phase < 0 || sb.phase > max_phase) {
      throw std::invalid_argument("sandbox '" + sb.name + "': phase " + std::to_string(sb.phase) +
                                  (sb.phase == kMaxPhase ? " (COMPLETED) needs --protocol 0.1"
                                                         : " is not a SandboxPhase"));
    }
    if (!ids.insert(sb.id).second) {
      throw std::invalid_argument("duplicate sandbox id '" + sb.id + "'");
    }
  }
  if (config.max_streams_per_token < 1 || config.max_streams_per_sandbox < 1 ||
      config.max_pending_relays_per_sandbox < 1 || config.max_pending_relays < 1) {
    throw std::invalid_argument("stream and pending-relay limits must be at least 1");
  }
  if (config.rate_limit.count < 0 || config.rate_limit.period.count() < 1) {
    throw std::invalid_argument("rate limit must be N/SECONDS with N >= 0 and SECONDS > 0");
  }
  if (config.supervisor_wait.count() < 0 || config.relay_claim_timeout.count() < 0 ||
      config.token_ttl.count() < 0) {
    throw std::invalid_argument("timeouts must not be negative");
  }
  if (config.heartbeat_interval.count() < 1) {
    throw std::invalid_argument("heartbeat interval must be at least 1 s");
  }
  if (config.tls_cert_file.empty() != config.tls_key_file.empty()) {
    throw std::invalid_argument("--tls-cert and --tls-key must be given together");
  }
  if (!config.client_ca_file.empty() && config.tls_cert_file.empty()) {
    throw std::invalid_argument("--client-ca needs TLS: give --tls-cert and --tls-key too");
  }
  for (const char c : config.bearer_token) {
    if (c < 0x21 || c > 0x7e) {
      throw std::invalid_argument("--bearer-token must be visible ASCII (no spaces or control characters)");
    }
  }
  if (!config.supervisor_listen.empty() && !ParseHostPort(config.supervisor_listen)) {
    throw std::invalid_argument("supervisor listen address '" + config.supervisor_listen +
                                "' must be HOST:PORT");
  }
}

std::string ReadPemFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::invalid_argument(std::string(what) + " '" + path + "': cannot read: " +
                                std::strerror(errno));
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string pem = text.str();
  if (pem.find("-----BEGIN ") == std::string::npos) {
    throw std::invalid_argument(std::string(what) + " '" + path +
                                "': no PEM block (-----BEGIN ...) found");
  }
  return pem;
}

}  // namespace osh::peers

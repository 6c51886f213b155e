#include "peers/gateway/gateway_config.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "peers/common/address.h"

namespace osh::peers {

SandboxDecl ParseSandboxFlag(std::string_view text) {
  const auto eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == text.size()) {
    throw std::invalid_argument("--sandbox expects NAME=ID, got '" + std::string(text) + "'");
  }
  return SandboxDecl{std::string(text.substr(0, eq)), std::string(text.substr(eq + 1))};
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
        for (const auto& entry : value) {
          SandboxDecl decl;
          decl.name = entry.at("name").get<std::string>();
          decl.id = entry.at("id").get<std::string>();
          config.sandboxes.push_back(std::move(decl));
        }
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
  std::set<std::string> names;
  std::set<std::string> ids;
  for (const auto& sb : config.sandboxes) {
    if (sb.name.empty() || sb.id.empty()) {
      throw std::invalid_argument("every sandbox needs a name and an id");
    }
    if (!names.insert(sb.name).second) {
      throw std::invalid_argument("duplicate sandbox name '" + sb.name + "'");
    }
    if (!ids.insert(sb.id).second) {
      throw std::invalid_argument("duplicate sandbox id '" + sb.id + "'");
    }
  }
  if (config.max_streams_per_token < 1 || config.max_streams_per_sandbox < 1) {
    throw std::invalid_argument("stream limits must be at least 1");
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

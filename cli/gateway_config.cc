// Theory of operation: gateway resolution exactly as the OpenShell CLI does it
// (protocol §4.1-§4.3), in three steps, each failing with one ConfigError line
// that names the file and what is wrong:
//   1. which gateway: endpoint flag/env, else name flag/env, else the user's
//      active_gateway file, else the system's (resolve_gateway_config());
//   2. its metadata.json (user directory shadows the system directory): the
//      endpoint and auth_mode;
//   3. credentials: the OIDC bearer token (oidc_token.json), and for https
//      the mTLS bundle (mtls/ca.crt, tls.crt, tls.key) or insecure mode.
// Only files are read here; nothing is written, no network is used, and the
// environment is read once, when the flags are added (load_gateway_env).
#include "cli/gateway_config.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <nlohmann/json.hpp>

#include "common/ip_address.h"
#include "common/log_escape.h"

namespace osh::cli {
namespace {

constexpr size_t kMaxConfigFileBytes = 1 << 20;  // metadata, tokens, PEM files
/// Upstream refreshes a token this close to expiry (oidc_token.rs).
constexpr std::chrono::seconds kTokenRefreshWindow{30};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n\v\f";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::string join(const std::string& dir, const std::string& leaf) {
  if (dir.empty()) return leaf;
  return dir.back() == '/' ? dir + leaf : dir + "/" + leaf;
}

/// A secret file (tls.key, oidc_token.json) that group or others may read or
/// write is refused, as OpenSSH refuses such a private key (issue 14.8): the
/// tunnel runs as root and would otherwise use a credential every local user
/// can copy or swap. The files are the served user's; their owner is not
/// checked, their mode is (fstat of the open file: no race with a rename).
enum class Secret : bool { kNo, kYes };

/// Whose files resolve_gateway_config() may read (GatewayFlags::files_owner,
/// system_dir), for read_optional(); set for the call by OwnerScope.
/// Thread: the caller's (thread_local).
thread_local std::optional<uid_t> t_files_owner;
thread_local std::string t_system_dir;

struct OwnerScope {
  explicit OwnerScope(const GatewayFlags& f) {
    t_files_owner = f.files_owner;
    t_system_dir = f.system_dir;
  }
  ~OwnerScope() {
    t_files_owner.reset();
    t_system_dir.clear();
  }
};

/// The file's contents; nullopt if it does not exist. Throws ConfigError for
/// any other problem (permissions, a directory, too large, a secret with a
/// mode that lets group or others in).
std::optional<std::string> read_optional(const std::string& path, Secret secret = Secret::kNo) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
    throw ConfigError("cannot read " + path + ": " + std::strerror(errno));
  }
  if (t_files_owner) {
    struct stat st {};
    const bool system = !t_system_dir.empty() && path.rfind(join(t_system_dir, ""), 0) == 0;
    const uid_t want = system ? 0 : *t_files_owner;
    if (::fstat(fd, &st) != 0 || st.st_uid != want) {
      const uid_t got = st.st_uid;
      ::close(fd);
      throw ConfigError(fmt::format("{}: owned by uid {}, not uid {}: refused (a symlink to another user's file?)",
                                    path, got, want));
    }
  }
  if (struct stat st {}; secret == Secret::kYes && ::fstat(fd, &st) == 0 && (st.st_mode & 077) != 0) {
    ::close(fd);
    throw ConfigError(fmt::format("{}: permissions {:04o} are too open: a private key or token must be "
                                  "readable by its owner only (run `chmod 600 {}`)",
                                  path, st.st_mode & 07777, path));
  }
  std::string out;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw ConfigError("cannot read " + path + ": " + std::strerror(err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > kMaxConfigFileBytes) {
      ::close(fd);
      throw ConfigError("cannot read " + path + ": larger than 1 MiB");
    }
  }
  ::close(fd);
  return out;
}

/// nlohmann's message without its "[json.exception.parse_error.101] " tag.
std::string json_reason(const nlohmann::json::exception& e) {
  std::string m = e.what();
  if (m.starts_with("[json.exception.")) {
    const size_t close = m.find("] ");
    if (close != std::string::npos) m.erase(0, close + 2);
  }
  return m;
}

nlohmann::json parse_json_object(const std::string& path, const std::string& text) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(path + ": invalid JSON: " + json_reason(e));
  }
  if (!doc.is_object()) throw ConfigError(path + ": expected a JSON object");
  return doc;
}

/// An optional string member: "" when absent or null; ConfigError otherwise.
std::string optional_string(const nlohmann::json& doc, const char* key, const std::string& path) {
  const auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) return "";
  if (!it->is_string()) throw ConfigError(path + ": \"" + key + "\" must be a string");
  return it->get<std::string>();
}

/// Upstream refuses names that are not a single path component
/// (oidc_token.rs tests: "../escape").
void check_gateway_name(const std::string& name, const std::string& where) {
  const bool bad = name.empty() || name == "." || name == ".." ||
                   std::any_of(name.begin(), name.end(), [](char c) {
                     return c == '/' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
                   });
  if (bad) throw ConfigError(where + ": invalid gateway name '" + name + "'");
}

std::string format_utc(int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm {};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// gateways/<name>/metadata.json, parsed: what the resolution needs.
struct Metadata {
  std::string file;
  std::string name;      ///< "name" if present, else the directory name
  std::string endpoint;  ///< "gateway_endpoint"
  std::string auth_mode;
};

Metadata parse_metadata(const std::string& path, const std::string& text, const std::string& dir_name) {
  const nlohmann::json doc = parse_json_object(path, text);
  Metadata m;
  m.file = path;
  const auto ep = doc.find("gateway_endpoint");
  if (ep == doc.end() || ep->is_null()) throw ConfigError(path + ": \"gateway_endpoint\" is missing");
  if (!ep->is_string()) throw ConfigError(path + ": \"gateway_endpoint\" must be a string");
  m.endpoint = ep->get<std::string>();
  m.name = optional_string(doc, "name", path);
  if (m.name.empty()) m.name = dir_name;
  check_gateway_name(m.name, path);
  m.auth_mode = optional_string(doc, "auth_mode", path);
  return m;
}

/// Loads gateways/<name>/metadata.json from the user directory, else the
/// system directory. nullopt if neither exists.
std::optional<Metadata> load_metadata(const GatewayFlags& f, const std::string& name) {
  for (const std::string* root : {&f.config_dir, &f.system_dir}) {
    if (root->empty()) continue;
    const std::string path = join(join(join(*root, "gateways"), name), "metadata.json");
    if (auto text = read_optional(path)) return parse_metadata(path, *text, name);
  }
  return std::nullopt;
}

/// The trimmed name in an active_gateway file; nullopt if missing or blank.
std::optional<std::string> load_active(const std::string& root, std::string* path_out) {
  if (root.empty()) return std::nullopt;
  const std::string path = join(root, "active_gateway");
  auto text = read_optional(path);
  if (!text) return std::nullopt;
  std::string name = trim(*text);
  if (name.empty()) return std::nullopt;
  check_gateway_name(name, path);
  *path_out = path;
  return name;
}

bool same_endpoint(const relay::Endpoint& a, const relay::Endpoint& b) {
  return a.tls == b.tls && a.port == b.port && lower(a.host) == lower(b.host);
}

/// The stored gateway whose metadata endpoint equals @ep: the active one
/// first, then every gateways/<name>/ (user, then system, by name). Broken
/// metadata of other gateways is skipped with a warning.
std::optional<Metadata> find_by_endpoint(const GatewayFlags& f, const relay::Endpoint& ep,
                                         std::vector<std::string>& warnings) {
  auto matches = [&](const Metadata& m) {
    auto parsed = relay::parse_endpoint(m.endpoint, nullptr);
    return parsed && same_endpoint(*parsed, ep);
  };
  std::string active_path;
  try {
    std::optional<std::string> active = load_active(f.config_dir, &active_path);
    if (!active) active = load_active(f.system_dir, &active_path);
    if (active) {
      if (auto m = load_metadata(f, *active); m && matches(*m)) return m;
    }
  } catch (const ConfigError& e) {
    warnings.push_back(std::string("ignoring while matching the endpoint: ") + e.what());
  }
  for (const std::string* root : {&f.config_dir, &f.system_dir}) {
    if (root->empty()) continue;
    const std::string gw_dir = join(*root, "gateways");
    std::vector<std::string> names;
    if (DIR* d = ::opendir(gw_dir.c_str())) {
      while (dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n != "." && n != "..") names.push_back(n);
      }
      ::closedir(d);
    }
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
      const std::string path = join(join(gw_dir, n), "metadata.json");
      try {
        auto text = read_optional(path);
        if (!text) continue;
        Metadata m = parse_metadata(path, *text, n);
        if (matches(m)) return m;
      } catch (const ConfigError& e) {
        warnings.push_back(std::string("ignoring while matching the endpoint: ") + e.what());
      }
    }
  }
  return std::nullopt;
}

/// Rejects files that are obviously not what they should be, so the user
/// gets the file name instead of a TLS error later.
void check_pem(const std::string& path, const std::string& text, bool key) {
  if (key) {
    if (text.find("-----BEGIN ") == std::string::npos ||
        text.find("PRIVATE KEY-----") == std::string::npos)
      throw ConfigError(path + ": not a PEM private key (no -----BEGIN ... PRIVATE KEY----- line)");
  } else if (text.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    throw ConfigError(path + ": not a PEM certificate (no -----BEGIN CERTIFICATE----- line)");
  }
}

/// access_token of an oidc_token.json document: non-empty, printable ASCII
/// without spaces (it goes into an HTTP header). Throws ConfigError.
std::string access_token(const nlohmann::json& doc, const std::string& path) {
  const std::string token = optional_string(doc, "access_token", path);
  if (token.empty()) throw ConfigError(path + ": \"access_token\" is missing or empty");
  if (!std::all_of(token.begin(), token.end(), [](char c) { return c >= 0x21 && c <= 0x7e; }))
    throw ConfigError(path + ": \"access_token\" contains spaces or control characters");
  return token;
}

/// The OIDC bearer token (protocol §4.3); see the header for the rules.
void load_oidc_token(const GatewayFlags& f, const std::string& name, const Metadata& meta,
                     std::chrono::system_clock::time_point now, GatewayResolution& r) {
  if (f.config_dir.empty())
    throw ConfigError("gateway '" + name + "' uses OIDC (" + meta.file +
                      ") but there is no user config directory for its token (set HOME, "
                      "XDG_CONFIG_HOME or --config-dir)");
  const std::string path = join(join(join(f.config_dir, "gateways"), name), "oidc_token.json");
  auto text = read_optional(path, Secret::kYes);
  if (!text)
    throw ConfigError("gateway '" + name + "' uses OIDC (auth_mode \"oidc\" in " + meta.file +
                      ") but " + path + " does not exist: run `openshell gateway login " + name +
                      "`");
  const nlohmann::json doc = parse_json_object(path, *text);
  const std::string token = access_token(doc, path);
  const auto exp = doc.find("expires_at");
  if (exp != doc.end() && !exp->is_null()) {
    if (!exp->is_number_unsigned() && !(exp->is_number_integer() && exp->get<int64_t>() >= 0))
      throw ConfigError(path + ": \"expires_at\" must be a Unix time in seconds (an integer)");
    const int64_t expires_at = exp->get<int64_t>();
    const int64_t now_s =
        std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    if (now_s + kTokenRefreshWindow.count() >= expires_at) {
      r.warnings.push_back("the OIDC access token in " + path +
                           (now_s >= expires_at ? " expired at " : " expires at ") +
                           format_utc(expires_at) +
                           "; using it anyway (run `openshell gateway login " + name +
                           "`: the tunnel re-reads the file when it changes)");
    }
  }
  r.options.bearer_token = token;
  r.options.token_source = path;
  // The openshell CLI rewrites the file on refresh or login; the client
  // re-reads it when it changes (no restart).
  r.options.bearer_token_file = path;
  r.options.bearer_token_file_owner = f.files_owner;
  r.options.parse_bearer_token_file = [path](const std::string& text) -> std::string {
    try {
      return access_token(parse_json_object(path, text), path);
    } catch (const std::exception&) {
      return {};  // mid-rewrite or broken: the client keeps the previous token
    }
  };
}

/// TLS material for https (protocol §4.2); see the header for the rules.
void load_tls(const GatewayFlags& f, const std::string& bundle_name, bool oidc,
              GatewayResolution& r) {
  auto& o = r.options;
  if (f.insecure) {
    o.insecure_tls = true;
    r.warnings.push_back("TLS certificate verification is disabled (OPENSHELL_GATEWAY_INSECURE / "
                         "--gateway-insecure): do not use in production");
    return;
  }
  if (f.config_dir.empty()) return;  // system roots, no client certificate
  r.mtls_dir = join(join(join(f.config_dir, "gateways"), sanitize_gateway_name(bundle_name)), "mtls");
  const std::string ca_path = join(r.mtls_dir, "ca.crt");
  const std::string cert_path = join(r.mtls_dir, "tls.crt");
  const std::string key_path = join(r.mtls_dir, "tls.key");
  auto ca = read_optional(ca_path);
  auto cert = read_optional(cert_path);
  auto key = read_optional(key_path, Secret::kYes);
  if (ca) {
    check_pem(ca_path, *ca, false);
    o.ca_pem = *ca;
    o.ca_source = ca_path;
  }
  if (cert.has_value() != key.has_value()) {
    // Upstream's OIDC mode ignores an incomplete bundle's client pair.
    if (oidc) return;
    throw ConfigError(r.mtls_dir + ": " + (cert ? "tls.crt" : "tls.key") + " is there but " +
                      (cert ? "tls.key" : "tls.crt") +
                      " is missing (a client certificate needs both)");
  }
  if (cert && oidc && !ca) return;  // upstream: the pair is used only with a complete bundle
  if (cert) {
    check_pem(cert_path, *cert, false);
    check_pem(key_path, *key, true);
    o.client_cert_pem = *cert;
    o.client_key_pem = *key;
    o.client_cert_source = cert_path;
  }
}

/// Whether a gateway host is this machine: "localhost" or a loopback
/// literal (127.0.0.0/8, ::1). A name is not resolved here: any other name
/// counts as remote.
bool loopback_host(const std::string& host) {
  if (lower(host) == "localhost") return true;
  const std::optional<IpAddress> a = IpAddress::parse(host);
  if (!a) return false;
  if (a->is_v4()) return a->bytes[0] == 127;
  static const IpAddress kLoopback6 = *IpAddress::parse("::1");
  return *a == kLoopback6;
}

}  // namespace

std::string sanitize_gateway_name(const std::string& name) {
  std::string out = name;
  for (char& c : out) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
    if (!ok || static_cast<unsigned char>(c) >= 0x80) c = '_';
  }
  return out;
}

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

void load_gateway_env(GatewayFlags& f, const EnvLookup& env) {
  auto non_blank = [&](const char* name) {
    auto v = env(name);
    return v && !trim(*v).empty() ? *v : std::string();
  };
  f.endpoint = non_blank("OPENSHELL_GATEWAY_ENDPOINT");
  f.name = trim(non_blank("OPENSHELL_GATEWAY"));
  f.workspace = env("OPENSHELL_WORKSPACE").value_or("");
  if (auto v = env("OPENSHELL_GATEWAY_INSECURE")) {
    const std::string b = lower(trim(*v));
    if (b.empty() || b == "0" || b == "false" || b == "no" || b == "off" || b == "n" || b == "f") {
      f.insecure = false;
    } else if (b == "1" || b == "true" || b == "yes" || b == "on" || b == "y" || b == "t") {
      f.insecure = true;
    } else {
      f.env_errors.push_back("OPENSHELL_GATEWAY_INSECURE='" + *v +
                             "' is not a boolean (use true or false)");
    }
  }
  if (auto xdg = env("XDG_CONFIG_HOME"); xdg && !xdg->empty()) {
    f.config_dir = join(*xdg, "openshell");
  } else if (auto home = env("HOME"); home && !home->empty()) {
    f.config_dir = join(join(*home, ".config"), "openshell");
  } else {
    f.config_dir.clear();
    f.env_warnings.push_back("neither XDG_CONFIG_HOME nor HOME is set: no user OpenShell config");
  }
  f.system_dir = "/etc/openshell";
  if (auto sys = env("OPENSHELL_SYSTEM_GATEWAY_DIR")) {
    if (sys->empty()) {
      f.env_warnings.push_back("ignoring empty OPENSHELL_SYSTEM_GATEWAY_DIR");
    } else if (sys->front() != '/') {
      f.env_warnings.push_back("ignoring relative OPENSHELL_SYSTEM_GATEWAY_DIR '" + *sys + "'");
    } else {
      f.system_dir = *sys;
    }
  }
}

void add_gateway_flags(CLI::App* cmd, GatewayFlags& f) {
  load_gateway_env(f, process_env());
  cmd->add_option("--gateway-endpoint", f.endpoint,
                  "gateway URL, http://HOST:PORT (h2c) or https://HOST:PORT "
                  "(env OPENSHELL_GATEWAY_ENDPOINT)");
  cmd->add_option("-g,--gateway", f.name,
                  "gateway name from the OpenShell config (env OPENSHELL_GATEWAY; default: the "
                  "active gateway)");
  cmd->add_option("--workspace", f.workspace, "workspace (env OPENSHELL_WORKSPACE; default: default)");
  cmd->add_option("--gateway-protocol", f.protocol,
                  "the gateway's protocol generation: auto (from its Health version), 0.0 "
                  "(OpenShell 0.0.x) or 0.1 (0.1.x and later)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "0.0", "0.1"}));
  cmd->add_flag("--gateway-insecure", f.insecure,
                "skip TLS certificate verification (env OPENSHELL_GATEWAY_INSECURE)");
  cmd->add_option("--config-dir", f.config_dir,
                  "OpenShell config directory (default: $XDG_CONFIG_HOME/openshell, "
                  "~/.config/openshell)")
      ->capture_default_str();
}

std::string GatewayResolution::summary() const {
  std::string s = "gateway " + (name.empty() ? std::string() : name + " ") +
                  options.endpoint.to_string() + " (from " + source + "): ";
  if (!options.endpoint.tls) {
    s += "h2c";
  } else if (options.insecure_tls) {
    s += "TLS without certificate verification";
  } else {
    s += options.client_cert_pem.empty() ? "TLS" : "mTLS (" + options.client_cert_source + ")";
    s += options.ca_pem.empty() ? " with the system roots" : " with CA " + options.ca_source;
  }
  if (!options.bearer_token.empty()) s += ", bearer token from " + options.token_source;
  return s;
}

GatewayResolution resolve_gateway_config(const GatewayFlags& f,
                                         std::chrono::system_clock::time_point now) {
  if (!f.env_errors.empty()) throw ConfigError(f.env_errors.front());
  const OwnerScope owner(f);
  GatewayResolution r;
  r.warnings = f.env_warnings;
  std::optional<Metadata> meta;
  std::string err;

  if (!trim(f.endpoint).empty()) {
    // 1. An explicit endpoint; the name only selects credentials.
    auto ep = relay::parse_endpoint(trim(f.endpoint), &err);
    if (!ep) throw ConfigError(err + " (from --gateway-endpoint or OPENSHELL_GATEWAY_ENDPOINT)");
    r.options.endpoint = *ep;
    r.source = "--gateway-endpoint/OPENSHELL_GATEWAY_ENDPOINT";
    if (!trim(f.name).empty()) {
      r.name = trim(f.name);
      check_gateway_name(r.name, "-g/OPENSHELL_GATEWAY");
      meta = load_metadata(f, r.name);  // optional here, as upstream
    } else {
      meta = find_by_endpoint(f, *ep, r.warnings);
      if (meta) r.name = meta->name;
    }
  } else {
    // 2-4. A gateway name, then its metadata.
    std::string where;
    if (!trim(f.name).empty()) {
      r.name = trim(f.name);
      where = "-g/OPENSHELL_GATEWAY";
      check_gateway_name(r.name, where);
    } else if (auto a = load_active(f.config_dir, &where)) {
      r.name = *a;
    } else if (auto s = load_active(f.system_dir, &where)) {
      r.name = *s;
    } else {
      throw ConfigError(
          "no gateway configured: pass --gateway-endpoint URL or -g NAME (or set "
          "OPENSHELL_GATEWAY_ENDPOINT / OPENSHELL_GATEWAY), or select one with `openshell gateway "
          "select` (no " +
          (f.config_dir.empty() ? std::string() : join(f.config_dir, "active_gateway") + " or ") +
          join(f.system_dir, "active_gateway") + ")");
    }
    r.source = where;
    meta = load_metadata(f, r.name);
    if (!meta) {
      std::string looked;
      if (!f.config_dir.empty())
        looked = join(join(join(f.config_dir, "gateways"), r.name), "metadata.json") + " or ";
      looked += join(join(join(f.system_dir, "gateways"), r.name), "metadata.json");
      throw ConfigError("unknown gateway '" + r.name + "' (from " + where + "): no " + looked +
                        " (register it with `openshell gateway add`)");
    }
    r.name = meta->name;
    auto ep = relay::parse_endpoint(trim(meta->endpoint), &err);
    if (!ep) throw ConfigError(meta->file + ": \"gateway_endpoint\": " + err);
    r.options.endpoint = *ep;
  }

  // 3. Credentials.
  bool oidc = false;
  if (meta) {
    r.metadata_file = meta->file;
    r.auth_mode = meta->auth_mode;
    const std::string mode = lower(trim(meta->auth_mode));
    if (mode == "oidc") {
      oidc = true;
      load_oidc_token(f, r.name, *meta, now, r);
    } else if (mode == "cloudflare_jwt") {
      throw ConfigError("gateway '" + r.name +
                        "' uses edge authentication (auth_mode \"cloudflare_jwt\" in " + meta->file +
                        "), which openshell-tunnel does not support");
    } else if (!mode.empty() && mode != "mtls" && mode != "plaintext") {
      throw ConfigError(meta->file + ": unknown auth_mode \"" + meta->auth_mode +
                        "\" (expected mtls, plaintext, oidc or cloudflare_jwt)");
    }
  }
  if (r.options.endpoint.tls) {
    std::string bundle = r.name;
    if (bundle.empty()) {
      const std::string& host = r.options.endpoint.host;
      bundle = host == "127.0.0.1" || lower(host) == "localhost" ? "openshell" : host;
    }
    load_tls(f, bundle, oidc, r);
  }
  if (!r.options.endpoint.tls && !r.options.bearer_token.empty() && !loopback_host(r.options.endpoint.host))
    r.warnings.push_back("the bearer token from " + r.options.token_source + " goes to " +
                         r.options.endpoint.to_string() +
                         " in plaintext (http://, not loopback): anyone on the path can read and reuse "
                         "it; use https://");
  r.options.workspace = f.workspace.empty() ? "default" : f.workspace;
  if (f.protocol == "0.0") r.options.force_generation = relay::Generation::k0_0;
  else if (f.protocol == "0.1") r.options.force_generation = relay::Generation::k0_1;
  else if (f.protocol != "auto" && !f.protocol.empty())
    throw ConfigError("--gateway-protocol '" + f.protocol + "': use auto, 0.0 or 0.1");
  return r;
}

relay::GatewayOptions resolve_gateway(const GatewayFlags& flags) {
  GatewayResolution r = resolve_gateway_config(flags);
  // Names, paths and endpoints from files and the environment: escaped (issue 14.7).
  for (const auto& w : r.warnings) spdlog::warn("{}", log_escape(w, 1024));
  spdlog::info("{}", log_escape(r.summary(), 1024));
  return std::move(r.options);
}

bool resolve_for_command(const GatewayFlags& flags, relay::GatewayOptions* out, const char* prefix) {
  try {
    *out = resolve_gateway(flags);
    return true;
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "%s: %s\n", prefix, e.what());
    return false;
  }
}

}  // namespace osh::cli

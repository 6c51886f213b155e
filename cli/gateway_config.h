// Which gateway to talk to and how: resolved like the OpenShell CLI does
// (protocol §4): flags, environment, active_gateway files, gateway metadata,
// the per-gateway mTLS bundle and OIDC token.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "relay/gateway_client.h"

namespace CLI {
class App;
}

namespace osh::cli {

/// Gateway selection flags shared by every command that talks to a gateway.
/// add_gateway_flags() fills the defaults from the environment; tests may
/// fill the struct directly (every path is explicit, nothing else is read).
struct GatewayFlags {
  std::string endpoint;   ///< --gateway-endpoint / OPENSHELL_GATEWAY_ENDPOINT
  std::string name;       ///< -g/--gateway / OPENSHELL_GATEWAY
  std::string workspace;  ///< --workspace / OPENSHELL_WORKSPACE ("" = default)
  /// --gateway-protocol: "auto" (detect from Health, protocol-0.1 §2),
  /// "0.0" or "0.1" (skip detection: for a gateway whose version string
  /// misleads).
  std::string protocol = "auto";
  /// --gateway-insecure / OPENSHELL_GATEWAY_INSECURE: accept any server
  /// certificate, send no client certificate (protocol §4.2).
  bool insecure = false;
  /// The user's OpenShell config root: --config-dir, else
  /// $XDG_CONFIG_HOME/openshell, else $HOME/.config/openshell ("" = none).
  /// Holds active_gateway and gateways/<name>/{metadata.json, mtls/,
  /// oidc_token.json}.
  std::string config_dir;
  /// The read-only system config root: $OPENSHELL_SYSTEM_GATEWAY_DIR when it
  /// is an absolute path, else /etc/openshell (active_gateway and
  /// gateways/<name>/metadata.json only; protocol §4.1, §4.2).
  std::string system_dir = "/etc/openshell";
  /// The uid that must own every file read from config_dir (the served
  /// user, when `up` runs as root); a file of anyone else (a symlink to
  /// another user's token or key) is refused, and files under system_dir
  /// must be root's (issue 14.1: root never reads on a user's behalf what
  /// that user could not read). nullopt = not checked (the caller's own
  /// files, read with the caller's own permissions).
  std::optional<uid_t> files_owner;
  /// Problems found while reading the environment: warnings are logged by
  /// resolve_gateway(), the first error is thrown as ConfigError.
  std::vector<std::string> env_warnings;
  std::vector<std::string> env_errors;
};

/// A configuration problem the user must fix; what() is one clear line that
/// names the file or setting and what is wrong with it.
struct ConfigError : std::runtime_error {
  /// Control characters (from quoted file contents) are escaped as \xNN,
  /// so what() is always one line.
  explicit ConfigError(const std::string& what) : std::runtime_error(one_line(what)) {}
  static std::string one_line(const std::string& s) {
    static const char* const kHex = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) {
      if (c < 0x20 || c == 0x7f) {
        out += "\\x";
        out += kHex[c >> 4];
        out += kHex[c & 15];
      } else {
        out += static_cast<char>(c);
      }
    }
    return out;
  }
};

/// Looks up one environment variable; nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

/// The process environment (std::getenv) as an EnvLookup.
EnvLookup process_env();

/// load_gateway_env() - sets @flags' defaults from @env: OPENSHELL_GATEWAY_ENDPOINT,
/// OPENSHELL_GATEWAY (blank values are ignored, as upstream does),
/// OPENSHELL_WORKSPACE, OPENSHELL_GATEWAY_INSECURE (false for "", 0, false,
/// no, off, n, f; true for 1, true, yes, on, y, t; any case; anything else is
/// an env error), XDG_CONFIG_HOME / HOME (config_dir), and
/// OPENSHELL_SYSTEM_GATEWAY_DIR (system_dir; empty or relative values are
/// ignored with a warning, as upstream does). Thread: any.
void load_gateway_env(GatewayFlags& flags, const EnvLookup& env);

/// Adds --gateway-endpoint, -g/--gateway, --workspace, --gateway-insecure and
/// --config-dir to `cmd`, with the environment (load_gateway_env) as defaults.
void add_gateway_flags(CLI::App* cmd, GatewayFlags& flags);

/// The outcome of resolution, with the facts behind it (for logs and tests).
struct GatewayResolution {
  relay::GatewayOptions options;
  std::string name;           ///< gateway name; "" when only an endpoint is known
  std::string source;         ///< how the gateway was chosen, e.g. "-g/OPENSHELL_GATEWAY"
  std::string metadata_file;  ///< the metadata.json used; "" = none
  std::string auth_mode;      ///< metadata's auth_mode ("" = absent: mTLS/none)
  std::string mtls_dir;       ///< the bundle directory looked at (https only)
  std::vector<std::string> warnings;  ///< to show the user (expired token, insecure, ...)
  /// One line: "gateway NAME https://h:p (from SOURCE): mTLS with DIR".
  std::string summary() const;
};

/// resolve_gateway_config() - the OpenShell CLI's resolution (protocol §4.1):
///  1. flags.endpoint (--gateway-endpoint / OPENSHELL_GATEWAY_ENDPOINT); the
///     gateway name is flags.name if set, else the stored gateway whose
///     metadata has the same endpoint (the active one first), else none;
///  2. flags.name (-g / OPENSHELL_GATEWAY);
///  3. <config_dir>/active_gateway;
///  4. <system_dir>/active_gateway.
/// For 2-4 the endpoint comes from gateways/<name>/metadata.json, the user
/// directory first, then the system directory. Credentials (§4.2, §4.3):
///  - auth_mode "oidc": bearer = access_token of <config_dir>/gateways/<name>/
///    oidc_token.json (required); an expired token (expires_at within 30 s)
///    is used anyway with a warning: there is no refresh flow;
///  - auth_mode "cloudflare_jwt" (edge): not supported, ConfigError;
///  - https: the bundle <config_dir>/gateways/<sanitized name>/mtls/{ca.crt,
///    tls.crt, tls.key} (without a name: OPENSHELL_GATEWAY, else the URL host,
///    127.0.0.1 and localhost meaning "openshell"). ca.crt replaces the system
///    roots; tls.crt + tls.key are the client identity (mTLS). With no bundle
///    the system roots are used (upstream requires the bundle outside OIDC
///    mode; we let the handshake decide). tls.crt without tls.key or the
///    other way round is an error, except in OIDC mode, where upstream then
///    ignores both;
///  - flags.insecure on https: any server certificate, no client certificate.
/// @now: the clock for the token expiry check.
/// Return: the options and facts. @throws ConfigError (one line naming the
/// file or setting). Thread: any; reads only the files named above.
GatewayResolution resolve_gateway_config(
    const GatewayFlags& flags,
    std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

/// resolve_gateway() - resolve_gateway_config(), then logs the warnings
/// (spdlog warn) and the summary (info). @throws ConfigError.
relay::GatewayOptions resolve_gateway(const GatewayFlags& flags);

/// resolve_for_command() - resolve_gateway() for a subcommand: on a
/// ConfigError prints "<prefix>: <reason>" on stderr and returns false (the
/// command then exits with code 1). Thread: main.
bool resolve_for_command(const GatewayFlags& flags, relay::GatewayOptions* out, const char* prefix);

/// sanitize_gateway_name() - upstream's directory-name rule for the mTLS
/// bundle (crates/openshell-cli/src/tls.rs): every character outside
/// [A-Za-z0-9._-] becomes '_'. Thread: any.
std::string sanitize_gateway_name(const std::string& name);

}  // namespace osh::cli

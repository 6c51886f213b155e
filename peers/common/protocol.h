// The two generations of upstream OpenShell's wire that the mini peers speak
// (openshell-protocol.md: 0.0.11x; openshell-protocol-0.1.md: 0.1.x).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace osh::peers {

/// Which generation's message types a peer encodes and decodes. Method paths
/// are the same for both (/openshell.v1.OpenShell/<Method>); the messages
/// reuse field numbers with other types, so one peer speaks exactly one.
enum class Protocol {
  kV0_0,  ///< 0.0.11x: openshell::v1 messages (UUID addressing, *_ms times)
  kV0_1,  ///< 0.1.x: openshell::v1::g01 messages (names + workspace selectors, Timestamps)
};

/// The default generation of both peers (the current upstream release line).
inline constexpr Protocol kDefaultProtocol = Protocol::kV0_1;

/// ParseProtocol() - the flag/config value "0.0" or "0.1" (exactly; not a
/// release version). Return: nullopt for anything else. Thread: any.
std::optional<Protocol> ParseProtocol(std::string_view text);

/// ProtocolName() - "0.0" or "0.1".
const char* ProtocolName(Protocol protocol);

/// DefaultHealthVersion() - the HealthResponse.version a gateway of
/// @protocol reports unless configured: "0.0.111" or "0.1.11" (the newest
/// upstream release of each generation, so that a client's version-based
/// detection, protocol-0.1 §2, picks the right generation).
const char* DefaultHealthVersion(Protocol protocol);

}  // namespace osh::peers

#include "peers/common/protocol.h"

namespace osh::peers {

std::optional<Protocol> ParseProtocol(std::string_view text) {
  if (text == "0.0") return Protocol::kV0_0;
  if (text == "0.1") return Protocol::kV0_1;
  return std::nullopt;
}

const char* ProtocolName(Protocol protocol) {
  return protocol == Protocol::kV0_0 ? "0.0" : "0.1";
}

const char* DefaultHealthVersion(Protocol protocol) {
  return protocol == Protocol::kV0_0 ? "0.0.111" : "0.1.11";
}

}  // namespace osh::peers

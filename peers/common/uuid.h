// Random UUIDv4 strings for session tokens, channel ids and instance ids.
#pragma once

#include <string>

namespace osh::peers {

/// NewUuidV4() - a fresh random RFC 4122 version-4 UUID in canonical lower-case
/// form ("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", 36 characters). Upstream uses
/// UUIDv4 for SSH-session tokens, relay channel ids and session ids (protocol
/// §1.4, §1.6).
///
/// Randomness: a per-thread std::mt19937_64 seeded from std::random_device; fine
/// for test peers, not meant as a cryptographic token source.
/// Thread: any. Errors: none.
std::string NewUuidV4();

}  // namespace osh::peers

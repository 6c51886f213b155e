// spdlog loggers for the mini peers: one named logger per module.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <string_view>

namespace osh::peers {

/// PeerLogger() - the spdlog logger called @name (e.g. "mini-gateway"),
/// created on first use as a colour logger on stderr and registered with
/// spdlog, so spdlog::set_level() applies to it. Never null.
/// Thread: any (creation is serialized).
std::shared_ptr<spdlog::logger> PeerLogger(const std::string& name);

/// StatusCodeName() - the canonical name of gRPC status code @code
/// ("OK", "CANCELLED", ..., "UNAUTHENTICATED"), or "UNKNOWN_CODE" outside
/// 0..16. For log lines only. Thread: any.
const char* StatusCodeName(int code);

/// SetLogLevel() - sets the level of every spdlog logger from @level
/// ("trace", "debug", "info", "warn", "error", "critical", "off").
/// Return: false (and nothing changed) for an unknown name. Thread: any.
bool SetLogLevel(std::string_view level);

}  // namespace osh::peers

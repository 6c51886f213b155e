// tun/'s spdlog logger "tun" (private to tun/: included by its .cc files only).
#pragma once

namespace spdlog {
class logger;
}

namespace osh::tun {

/// tun_log() - the logger "tun": a clone of the default logger made (and
/// registered) on first use, or the one already registered under that name.
/// Thread: any.
spdlog::logger& tun_log();

}  // namespace osh::tun

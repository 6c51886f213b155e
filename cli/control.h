// The daemon's control socket (issue 4.4, 14.2): a Unix stream socket every
// local user can connect to (mode 0666, in the state directory, mode 0711:
// kStateDirMode); the handler gets each peer's uid (SO_PEERCRED) and decides
// (up.cc: root may do everything, the allowed users only `status`, others
// nothing). Protocol: the client sends one line, a JSON object
// {"cmd": "status"} or {"cmd": "down"}; the daemon answers one JSON line
// and closes.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "common/event_loop.h"
#include "common/scoped_fd.h"

namespace osh::cli {

class ControlServer {
 public:
  /// Handler: request line and the peer's uid (SO_PEERCRED, from the
  /// kernel: cannot be forged) in, response line out. Runs on the server's
  /// thread (an osh::EventLoop of its own). If it throws, the client gets
  /// {"ok":false,"error":"internal error ..."} and the server keeps running.
  using Handler = std::function<std::string(const std::string& request, uid_t peer_uid)>;
  /// Admit: whether a peer's uid may send a request at all. A refused peer
  /// gets {"ok":false,"denied":true,...} at once, before anything is read
  /// from it, so a uid that may not use the tunnel cannot hold the server's
  /// one thread (nullptr: every peer is read).
  using Admit = std::function<bool(uid_t peer_uid)>;

  /// Binds `path` (removing a stale socket file first), mode 0666, its
  /// directory kStateDirMode, and starts the server's thread. A request line
  /// must arrive whole within 2 s of the accept (one deadline for the line,
  /// not per read: a trickling peer is cut off). @throws std::system_error if it cannot bind.
  ControlServer(std::filesystem::path path, Handler handler, Admit admit = nullptr);
  /// Stops the thread and removes the socket file.
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

 private:
  void serve_one();
  std::filesystem::path path_;
  Handler handler_;
  Admit admit_;
  ScopedFd listen_fd_;  // non-blocking
  osh::EventLoop loop_;
};

/// json_answer() - @j as one line of JSON. Strings that are not UTF-8 (a
/// sandbox name or gateway error from the network) come out with U+FFFD for
/// each bad byte instead of making nlohmann::json throw.
std::string json_answer(const nlohmann::json& j);

/// Sends one request line to the daemon at `path` and returns its answer;
/// nullopt with `*error` set if nobody answers (no daemon, stale socket,
/// permission denied, timeout).
std::optional<std::string> control_request(const std::filesystem::path& path, const std::string& request,
                                           std::chrono::milliseconds timeout, std::string* error);

}  // namespace osh::cli

// Small loopback TCP servers used as relay targets by peers_test.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace osh::peers::testing {

/// A TCP server on 127.0.0.1 (or ::1) port 0. Every accepted connection runs
/// the handler on its own thread; the server closes the fd after the handler
/// returns (a FIN). The destructor stops accepting, shuts every live
/// connection down and joins all threads.
class TcpTestServer {
 public:
  using Handler = std::function<void(int fd)>;
  /// @throws std::runtime_error if the socket cannot be bound.
  explicit TcpTestServer(Handler handler, bool ipv6 = false);
  ~TcpTestServer();
  TcpTestServer(const TcpTestServer&) = delete;
  TcpTestServer& operator=(const TcpTestServer&) = delete;

  uint16_t port() const { return port_; }

 private:
  void AcceptLoop();

  Handler handler_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;
  bool stopping_ = false;       // mu_
  std::set<int> live_;          // mu_
  std::vector<std::thread> conns_;  // mu_
};

/// A loopback TCP port that refuses connections: a socket bound to
/// 127.0.0.1:0 that never listens, held open so nobody else takes the port.
class RefusedPort {
 public:
  /// @throws std::runtime_error if the socket cannot be bound.
  RefusedPort();
  ~RefusedPort();
  RefusedPort(const RefusedPort&) = delete;
  RefusedPort& operator=(const RefusedPort&) = delete;
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

/// Echoes everything until EOF, then returns (the server closes).
void EchoHandler(int fd);

/// The fixed large reply DigestHandler sends after the digest line.
const std::string& BigReply();

/// "len=<n> fnv=<16 hex>\n" for @data (FNV-1a 64).
std::string DigestLine(const std::string& data);

/// Reads until EOF, then writes DigestLine(request) + BigReply() and returns.
void DigestHandler(int fd);

/// The greeting WriteThenCloseHandler sends.
const std::string& Greeting();

/// Writes Greeting() and returns at once (the server closes: target FIN first).
void WriteThenCloseHandler(int fd);

/// Records how a connection ended, for the cancel / relay-lost tests.
class CloseObserver {
 public:
  /// A handler that reads until read() returns 0 (clean FIN) or fails, then
  /// records 0 or the errno.
  TcpTestServer::Handler Handler();
  /// Waits up to @timeout_ms for a connection to end. Return: true and sets
  /// @result (0 = FIN, else errno) if one ended.
  bool Wait(int timeout_ms, int* result);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool ended_ = false;
  int result_ = 0;
};

}  // namespace osh::peers::testing

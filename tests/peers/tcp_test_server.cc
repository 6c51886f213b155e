#include "tcp_test_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <stdexcept>

#include "peers/common/socket.h"

namespace osh::peers::testing {

TcpTestServer::TcpTestServer(Handler handler, bool ipv6) : handler_(std::move(handler)) {
  listen_fd_ = ::socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw std::runtime_error("socket failed");
  sockaddr_storage ss{};
  socklen_t len;
  if (ipv6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof *a;
  }
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
      ::listen(listen_fd_, 64) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    ::close(listen_fd_);
    throw std::runtime_error("bind/listen failed");
  }
  port_ = ntohs(ipv6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                     : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

TcpTestServer::~TcpTestServer() {
  std::vector<std::thread> conns;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);  // wakes accept()
    for (int fd : live_) ::shutdown(fd, SHUT_RDWR);
  }
  acceptor_.join();
  {
    std::lock_guard lock(mu_);
    conns.swap(conns_);
  }
  for (auto& t : conns) t.join();
  ::close(listen_fd_);
}

void TcpTestServer::AcceptLoop() {
  for (;;) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    std::lock_guard lock(mu_);
    if (fd < 0) {
      if (stopping_) return;
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;
    }
    if (stopping_) {
      ::close(fd);
      return;
    }
    live_.insert(fd);
    conns_.emplace_back([this, fd] {
      handler_(fd);
      std::lock_guard inner(mu_);
      live_.erase(fd);
      ::close(fd);
    });
  }
}

RefusedPort::RefusedPort() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd_ >= 0) ::close(fd_);
    throw std::runtime_error("bind failed");
  }
  port_ = ntohs(addr.sin_port);
}

RefusedPort::~RefusedPort() { ::close(fd_); }

void EchoHandler(int fd) {
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return;
    if (WriteAll(fd, buf, static_cast<size_t>(n)) != 0) return;
  }
}

const std::string& BigReply() {
  static const std::string reply = [] {
    std::string s(300 * 1024, '\0');
    for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 1024) % 26);
    return s;
  }();
  return reply;
}

std::string DigestLine(const std::string& data) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  char line[64];
  std::snprintf(line, sizeof line, "len=%zu fnv=%016llx\n", data.size(),
                static_cast<unsigned long long>(h));
  return line;
}

void DigestHandler(int fd) {
  std::string request;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) return;
    if (n == 0) break;
    request.append(buf, static_cast<size_t>(n));
  }
  const std::string reply = DigestLine(request) + BigReply();
  WriteAll(fd, reply.data(), reply.size());
}

const std::string& Greeting() {
  static const std::string greeting = "hello from the target, bye\n";
  return greeting;
}

void WriteThenCloseHandler(int fd) { WriteAll(fd, Greeting().data(), Greeting().size()); }

TcpTestServer::Handler CloseObserver::Handler() {
  return [this](int fd) {
    char buf[4096];
    int result;
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) continue;
      result = n == 0 ? 0 : errno;
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    std::lock_guard lock(mu_);
    ended_ = true;
    result_ = result;
    cv_.notify_all();
  };
}

bool CloseObserver::Wait(int timeout_ms, int* result) {
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return ended_; })) {
    return false;
  }
  *result = result_;
  return true;
}

}  // namespace osh::peers::testing

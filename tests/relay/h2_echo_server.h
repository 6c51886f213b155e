// A small HTTP/2 gRPC echo server on nghttp2, for tests of relay/h2_channel.h
// without gRPC (so that they run in the ThreadSanitizer build: Debian's gRPC
// is not instrumented). One thread, blocking I/O with poll(), h2c on
// 127.0.0.1:0. Every request is answered with :status 200, each message it
// carries echoed back as it arrives, and at the client's END_STREAM the
// trailers grpc-status 0. Test code only.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace osh::relay::testing {

class H2EchoServer {
 public:
  /// How the server answers: kEcho as above; kTrailersOnly: one HEADERS
  /// with grpc-status 5 (NOT_FOUND) and END_STREAM at once, no RST_STREAM
  /// (the client must end its side); kNoTrailers: echo, then END_STREAM on
  /// DATA without any trailers (a broken gateway).
  enum Mode { kEcho, kTrailersOnly, kNoTrailers };
  /// @max_streams: SETTINGS_MAX_CONCURRENT_STREAMS (0: not sent).
  explicit H2EchoServer(Mode mode = kEcho, uint32_t max_streams = 0) : mode_(mode), max_streams_(max_streams) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(lfd_, 16);
    socklen_t len = sizeof a;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~H2EchoServer() {
    stop_ = true;
    thread_.join();
    ::close(lfd_);
  }
  uint16_t port() const { return port_; }
  /// Streams the server saw end (trailers sent).
  int streams_done() const { return done_.load(); }

 private:
  struct Stream {
    std::string in;        // request bytes not yet framed into messages
    std::deque<char> out;  // response bytes (echoed messages) not yet sent
    bool ended = false;    // the client's END_STREAM arrived
    bool trailers = false;
  };
  struct Conn {
    H2EchoServer* srv;
    int fd;
    nghttp2_session* session = nullptr;
    std::map<int32_t, Stream> streams;
  };

  static ssize_t read_out(nghttp2_session*, int32_t id, uint8_t* buf, size_t length, uint32_t* flags,
                          nghttp2_data_source*, void* user) {
    auto& c = *static_cast<Conn*>(user);
    auto& s = c.streams[id];
    size_t n = 0;
    while (n < length && !s.out.empty()) {
      buf[n++] = static_cast<uint8_t>(s.out.front());
      s.out.pop_front();
    }
    if (s.out.empty() && s.ended && c.srv->mode_ == kNoTrailers) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      c.srv->done_++;
      return static_cast<ssize_t>(n);
    }
    if (s.out.empty() && s.ended) {
      *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      static const std::string k0 = "grpc-status", v0 = "0";
      nghttp2_nv t{reinterpret_cast<uint8_t*>(const_cast<char*>(k0.data())),
                   reinterpret_cast<uint8_t*>(const_cast<char*>(v0.data())), k0.size(), v0.size(),
                   NGHTTP2_NV_FLAG_NONE};
      nghttp2_submit_trailer(c.session, id, &t, 1);
      s.trailers = true;
      c.srv->done_++;
      return static_cast<ssize_t>(n);
    }
    if (n == 0) return NGHTTP2_ERR_DEFERRED;
    return static_cast<ssize_t>(n);
  }

  static int on_frame(nghttp2_session* session, const nghttp2_frame* f, void* user) {
    auto& c = *static_cast<Conn*>(user);
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
      c.streams[f->hd.stream_id];
      static const std::string k0 = ":status", v0 = "200", k1 = "content-type", v1 = "application/grpc";
      nghttp2_nv h[] = {{reinterpret_cast<uint8_t*>(const_cast<char*>(k0.data())),
                         reinterpret_cast<uint8_t*>(const_cast<char*>(v0.data())), k0.size(), v0.size(),
                         NGHTTP2_NV_FLAG_NONE},
                        {reinterpret_cast<uint8_t*>(const_cast<char*>(k1.data())),
                         reinterpret_cast<uint8_t*>(const_cast<char*>(v1.data())), k1.size(), v1.size(),
                         NGHTTP2_NV_FLAG_NONE}};
      if (c.srv->mode_ == kTrailersOnly) {
        static const std::string k2 = "grpc-status", v2 = "5";
        nghttp2_nv t[] = {h[0], h[1],
                          {reinterpret_cast<uint8_t*>(const_cast<char*>(k2.data())),
                           reinterpret_cast<uint8_t*>(const_cast<char*>(v2.data())), k2.size(), v2.size(),
                           NGHTTP2_NV_FLAG_NONE}};
        nghttp2_submit_response(session, f->hd.stream_id, t, 3, nullptr);  // HEADERS + END_STREAM
        c.srv->done_++;
        return 0;
      }
      nghttp2_data_provider prd{};
      prd.read_callback = read_out;
      nghttp2_submit_response(session, f->hd.stream_id, h, 2, &prd);
    }
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
      auto it = c.streams.find(f->hd.stream_id);
      if (it != c.streams.end() && c.srv->mode_ != kTrailersOnly) {
        it->second.ended = true;
        nghttp2_session_resume_data(session, f->hd.stream_id);
      }
    }
    return 0;
  }

  static int on_data(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data, size_t len, void* user) {
    auto& c = *static_cast<Conn*>(user);
    auto& s = c.streams[id];
    s.in.append(reinterpret_cast<const char*>(data), len);
    // Whole messages are echoed as they complete (prefix and all).
    while (s.in.size() >= 5) {
      const uint32_t n = (uint32_t{static_cast<uint8_t>(s.in[1])} << 24) |
                         (uint32_t{static_cast<uint8_t>(s.in[2])} << 16) |
                         (uint32_t{static_cast<uint8_t>(s.in[3])} << 8) | uint32_t{static_cast<uint8_t>(s.in[4])};
      if (s.in.size() < 5 + n) break;
      s.out.insert(s.out.end(), s.in.begin(), s.in.begin() + 5 + n);
      s.in.erase(0, 5 + n);
    }
    nghttp2_session_resume_data(session, id);
    return 0;
  }

  static int on_close(nghttp2_session*, int32_t id, uint32_t, void* user) {
    static_cast<Conn*>(user)->streams.erase(id);
    return 0;
  }

  void serve(int fd) {
    Conn c{this, fd};
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    nghttp2_session_server_new(&c.session, cbs, &c);
    nghttp2_session_callbacks_del(cbs);
    const nghttp2_settings_entry limit{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams_};
    nghttp2_submit_settings(c.session, NGHTTP2_FLAG_NONE, &limit, max_streams_ ? 1 : 0);
    std::vector<uint8_t> buf(64 << 10);
    while (!stop_) {
      for (;;) {  // everything nghttp2 has to send (blocking writes)
        const uint8_t* d;
        ssize_t n = nghttp2_session_mem_send(c.session, &d);
        if (n <= 0) break;
        for (ssize_t off = 0; off < n;) {
          const ssize_t w = ::send(fd, d + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
          if (w <= 0) goto out;
          off += w;
        }
      }
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) break;
      if (nghttp2_session_mem_recv(c.session, buf.data(), static_cast<size_t>(n)) < 0) break;
    }
  out:
    nghttp2_session_del(c.session);
    ::close(fd);
  }

  void run() {
    while (!stop_) {
      pollfd p{lfd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) serve(fd);  // one connection at a time: the channel makes one
    }
  }

  const Mode mode_;
  const uint32_t max_streams_;
  int lfd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> done_{0};
  std::thread thread_;
};

}  // namespace osh::relay::testing

// Theory of operation
// ===================
// Why: grpc++ 1.51 gives every stream of a channel the transport-wide
// receive window (SETTINGS_INITIAL_WINDOW_SIZE, at least 4 MiB while its
// memory quota is not nearly exhausted, more with BDP probing), so a
// download whose reader stopped holds megabytes in the tunnel
// (docs/ARCHITECTURE.md "Memory bounds"). This channel speaks gRPC over
// HTTP/2 itself, on nghttp2, for the ForwardTcp streams only (the unary
// calls stay on grpc++), with a window per stream that grows only with
// consumption.
//
// Threads: one EventLoop thread ("osh-h2") owns everything below; the Call
// methods post closures to it, and every CallEvents method is posted too
// (never run inside a Call method or an nghttp2 callback).
//
// Connections: the first call connects (getaddrinfo on the loop thread, then
// each address in turn, non-blocking; TLS with ALPN h2 when the endpoint is
// https; then the client preface and SETTINGS). Calls made meanwhile wait on
// the connection. A connection lost (EOF, I/O error, keepalive timeout, a
// protocol error) ends its calls with UNAVAILABLE; one that got GOAWAY
// keeps its streams to their end and takes no new ones; the next call makes
// a new connection. nghttp2 queues requests past the server's
// SETTINGS_MAX_CONCURRENT_STREAMS.
//
// gRPC on HTTP/2 (gRPC's PROTOCOL-HTTP2.md): a request is HEADERS (:method
// POST, :scheme, :path, :authority, te: trailers, content-type
// application/grpc, the call's metadata) and DATA carrying messages, each a
// 5-byte prefix (compressed flag, big-endian length) and the bytes; the
// client's END_STREAM is WritesDone. The answer is HEADERS (:status 200),
// messages, then trailers (grpc-status, grpc-message), or one trailers-only
// HEADERS. :status other than 200 maps to a status code by gRPC's table,
// a RST_STREAM by its error code, a lost connection to UNAVAILABLE. A
// message over max_message_bytes ends the call with RESOURCE_EXHAUSTED;
// a compressed one (no grpc-accept-encoding is sent) with INTERNAL.
//
// Receive windows: automatic WINDOW_UPDATE is off. A message's bytes are
// given back (nghttp2_session_consume) when the call's reader takes it (a
// read()), not when they arrive: a stream holds at most its window of
// unread data here. A stream starts with stream_window (SETTINGS). Each
// time its reader has taken a quarter window, the time that took decides:
// within grow_within / 4 the window doubles (up to stream_window_max), in
// shrink_after / 4 or more it halves (not below stream_window). So the
// window follows what the reader actually takes - about grow_within of its
// rate - and a reader that never reads keeps the starting window; the
// round trip does not enter (a window-limited stream moves a window per
// round trip, so it grows while the round trip is under grow_within). A
// window never grows past the bytes the reader took in all, so a client
// that took a little quickly and then stopped (its socket buffer full)
// leaves at most that much, or the starting window, unread here. No window
// grows while all streams' windows together are at window_budget; the
// connection-level window is the largest HTTP/2 allows, so streams that
// stopped never hold up the others.
//
// Writes: nghttp2 sizes each DATA frame as the gateway's window allows and
// is told not to copy it (NGHTTP2_DATA_FLAG_NO_COPY); send_data queues the
// frame's 9-byte header and the 5-byte prefix (copied) and the message's
// pieces by reference on the connection's output chain, written with
// writev (TLS: gathered into up to 64 KiB per SSL_write). A write completes
// when its last byte is queued so (what bounds a stream's upload is one
// message plus the peer's window). writes_done() ends the stream with
// END_STREAM once every write is out. Reads: DATA bytes go into a string
// reserved for the message; a message that is one `data` field loses its
// tag and length as they arrive (split_data_field), so the string is the
// frame's payload as it is.
#include "relay/h2_channel.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <optional>
#include <unordered_map>

#include "common/event_loop.h"
#include "common/log_escape.h"

namespace osh::relay::h2 {
namespace {

// grpc::StatusCode values (no gRPC header here).
enum Code : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kResourceExhausted = 8,
  kPermissionDenied = 7,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kUnauthenticated = 16,
};

using Clock = std::chrono::steady_clock;

std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  if (e == 0) return "TLS error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

bool is_ip_literal(const std::string& host) {
  in6_addr a6{};
  in_addr a4{};
  return inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

}  // namespace

int grpc_status_for_http(int s) {
  switch (s) {
    case 400: return kInternal;
    case 401: return kUnauthenticated;
    case 403: return kPermissionDenied;
    case 404: return kUnimplemented;
    case 429:
    case 502:
    case 503:
    case 504: return kUnavailable;
    default: return kUnknown;
  }
}

int grpc_status_for_rst(uint32_t error) {
  switch (error) {
    case NGHTTP2_NO_ERROR:
    case NGHTTP2_PROTOCOL_ERROR:
    case NGHTTP2_INTERNAL_ERROR:
    case NGHTTP2_FLOW_CONTROL_ERROR:
    case NGHTTP2_SETTINGS_TIMEOUT:
    case NGHTTP2_FRAME_SIZE_ERROR:
    case NGHTTP2_COMPRESSION_ERROR:
    case NGHTTP2_CONNECT_ERROR: return kInternal;
    case NGHTTP2_REFUSED_STREAM: return kUnavailable;
    case NGHTTP2_CANCEL: return kCancelled;
    case NGHTTP2_ENHANCE_YOUR_CALM: return kResourceExhausted;
    case NGHTTP2_INADEQUATE_SECURITY: return kPermissionDenied;
    default: return kInternal;
  }
}

std::string percent_decode(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

struct Conn;

struct Call::State {
  // Set at creation, then loop thread only.
  std::weak_ptr<Channel::Impl> ch;
  std::weak_ptr<State> self;  // for events posted from nghttp2's callbacks
  std::string path;
  std::vector<Header> metadata;
  CallEvents* ev = nullptr;

  bool started = false, finished = false, done_reported = false, cancel_requested = false;
  int holds = 0;
  int code = kOk;
  std::string message;
  Conn* conn = nullptr;  // while submitted
  int32_t stream_id = -1;

  // Write side: one message at a time.
  bool write_pending = false;
  Message wmsg;
  char prefix[5] = {};
  size_t wpos = 0;    // bytes of prefix + pieces copied so far
  size_t wtotal = 0;  // 5 + payload
  bool wd_requested = false, wd_sent = false;
  bool es_sent = false;  // our END_STREAM went into a frame (data_source_read's EOF)
  // Cancelled before nghttp2 opened the stream (its HEADERS still queued
  // behind SETTINGS_MAX_CONCURRENT_STREAMS): done without waiting for the
  // close, which comes only once a slot frees; the Conn keeps the State
  // (nghttp2 holds raw pointers to it) until then.
  bool detached = false;
  bool data_deferred = false;

  // Read side.
  struct Rx {
    std::string bytes;
    bool data_field = false;  // bytes is the data field's (CallEvents::on_read_done)
    size_t wire = 0;          // the message's bytes on the wire, prefix included
  };
  std::deque<Rx> messages;  // whole messages, not yet read
  size_t buffered = 0;               // their bytes, prefixes included (not yet consumed)
  std::string cur;                   // the message being received
  size_t cur_need = 0;               // its length, once the prefix is in
  size_t cur_got = 0;                // its bytes received so far
  int cur_kind = 0;                  // 0: not known yet, 1: a data field (cur holds its bytes), 2: other
  char hdr[5] = {};
  size_t hdr_have = 0;
  bool in_message = false;
  size_t unconsumed = 0;  // received DATA payload not yet given back
  bool read_pending = false;
  uint32_t window = 0;  // this stream's receive window
  size_t consumed_since_check = 0;  // bytes taken since window_start
  uint64_t consumed_total = 0;      // bytes taken since the stream began
  Clock::time_point window_start{};

  // Headers.
  bool md_reported = false;
  std::vector<Header> headers;   // response headers being received
  std::vector<Header> trailers;  // or trailers
  int http_status = 0;
};

struct Channel::Impl : std::enable_shared_from_this<Channel::Impl> {
  ChannelOptions opts;
  EventLoop loop;
  SSL_CTX* ssl_ctx = nullptr;
  std::string ssl_ctx_error;
  std::shared_ptr<Conn> current;                               // takes new calls
  std::unordered_map<Conn*, std::shared_ptr<Conn>> conns;      // every live connection
  std::atomic<uint64_t> connects{0}, connect_failures{0}, growths{0}, shrinks{0}, active{0}, buffered{0};
  uint64_t windows_granted = 0;  // sum of the live streams' windows (loop thread)
  /// A stream's window now @w (0: the stream is gone); keeps windows_granted.
  void set_window(Call::State& s, uint32_t w);

  explicit Impl(ChannelOptions o) : opts(std::move(o)) {}
  ~Impl() {
    if (ssl_ctx) SSL_CTX_free(ssl_ctx);
  }

  void init_tls();
  // Loop thread:
  void submit(const std::shared_ptr<Call::State>& s);
  void emit(const std::shared_ptr<Call::State>& s, std::function<void(CallEvents&)> fn) {
    loop.post([s, fn = std::move(fn)] {
      if (s->ev) fn(*s->ev);
    });
  }
  void finish(const std::shared_ptr<Call::State>& s, int code, std::string message);
  void maybe_done(const std::shared_ptr<Call::State>& s);
  void deliver(const std::shared_ptr<Call::State>& s);
  void consume(Call::State& s, size_t n);
};

// What the connection has to write, in order: bytes of its own (frame
// headers, control frames), and payload of writes by reference, each with
// its owner. Written with writev (h2c) or gathered for SSL_write (TLS).
struct OutChain {
  struct Chunk {
    std::string own;  // used when !view
    const char* view = nullptr;
    size_t len = 0;
    std::shared_ptr<const void> keep;
    const char* data() const { return view ? view : own.data(); }
    size_t size() const { return view ? len : own.size(); }
  };
  std::deque<Chunk> chunks;
  size_t front_off = 0;  // bytes of chunks.front() already written
  size_t bytes = 0;      // bytes not yet written

  void append_copy(const void* p, size_t n) {
    if (n == 0) return;
    // Small pieces join the last chunk of our own (a frame header and its
    // prefix; consecutive control frames).
    if (chunks.empty() || chunks.back().view || chunks.back().own.size() + n > (16u << 10) ||
        (chunks.size() == 1 && front_off > 0))
      chunks.emplace_back();
    chunks.back().own.append(static_cast<const char*>(p), n);
    bytes += n;
  }
  void append_view(const char* p, size_t n, std::shared_ptr<const void> keep) {
    if (n == 0) return;
    Chunk c;
    c.view = p;
    c.len = n;
    c.keep = std::move(keep);
    chunks.push_back(std::move(c));
    bytes += n;
  }
  // @n bytes from the front were written.
  void consume(size_t n) {
    bytes -= n;
    while (n > 0) {
      const size_t in_front = chunks.front().size() - front_off;
      if (n < in_front) {
        front_off += n;
        return;
      }
      n -= in_front;
      chunks.pop_front();
      front_off = 0;
    }
  }
};

// One HTTP/2 connection. Loop thread only.
struct Conn : std::enable_shared_from_this<Conn> {
  Channel::Impl& ch;
  int fd = -1;
  SSL* ssl = nullptr;
  nghttp2_session* session = nullptr;
  enum State { kResolving, kConnecting, kTls, kReady, kClosed } state = kResolving;
  std::vector<std::shared_ptr<Call::State>> waiting;  // before kReady
  std::unordered_map<int32_t, std::shared_ptr<Call::State>> streams;
  std::vector<sockaddr_storage> addrs;
  std::vector<socklen_t> addr_lens;
  size_t next_addr = 0;
  std::string last_error;
  OutChain out;       // what the socket did not take yet
  std::string tls_out;  // TLS: the bytes of the SSL_write being retried
  bool goaway = false;
  bool ping_outstanding = false;
  Clock::time_point ping_sent{};
  EventLoop::TimerId connect_timer = 0, keepalive_timer = 0;
  uint32_t interest = 0;
  std::vector<uint8_t> rbuf = std::vector<uint8_t>(64 << 10);

  explicit Conn(Channel::Impl& c) : ch(c) {}
  ~Conn() {
    if (session) nghttp2_session_del(session);
    if (ssl) SSL_free(ssl);
    if (fd >= 0) ::close(fd);
  }

  void start();
  void try_next_address();
  void on_io(uint32_t events);
  void handshake();
  void ready();
  void fail(const std::string& why);
  void submit(const std::shared_ptr<Call::State>& s);
  void read_some();
  void flush();
  void set_interest(uint32_t ev) {
    if (ev == interest || fd < 0) return;
    interest = ev;
    ch.loop.modify(fd, ev);
  }
  // Raw I/O (plain or TLS): bytes moved, 0 if it would block, -1 on EOF or error.
  ssize_t io_read(uint8_t* buf, size_t len);
  ssize_t io_write(const uint8_t* buf, size_t len);
  // Writes from `out`: bytes written, 0 if the socket is full, -1 on error.
  ssize_t write_out();
  void keepalive_tick();
  // After GOAWAY: streams nghttp2 never opened leave for the next connection
  // (this one keeps their State: nghttp2 holds raw pointers to it).
  void requeue_unopened();
  std::vector<std::shared_ptr<Call::State>> zombies;
  bool in_recv = false;  // inside nghttp2_session_mem_recv: no mem_send (nghttp2's rule)
  bool ssl_write_wants_read = false, ssl_read_wants_write = false;
};

// ---- nghttp2 callbacks ----
namespace {

Call::State* state_of(nghttp2_session* session, int32_t stream_id) {
  return static_cast<Call::State*>(nghttp2_session_get_stream_user_data(session, stream_id));
}

// The stream's next DATA frame: how many of the write's bytes it carries
// (at most @length), without copying them (NGHTTP2_DATA_FLAG_NO_COPY: the
// frame is put on the wire by send_data, below); END_STREAM once
// writes_done() was asked and no write is pending.
ssize_t data_source_read(nghttp2_session* /*session*/, int32_t /*stream_id*/, uint8_t* /*buf*/, size_t length,
                         uint32_t* data_flags, nghttp2_data_source* source, void* user_data) {
  auto* s = static_cast<Call::State*>(source->ptr);
  auto& ch = *static_cast<Conn*>(user_data);
  if (s->write_pending) {
    *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    return static_cast<ssize_t>(std::min(length, s->wtotal - s->wpos));
  }
  if (s->wd_requested && !s->wd_sent) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    s->wd_sent = true;
    s->es_sent = true;
    if (auto self = s->self.lock()) ch.ch.emit(self, [](CallEvents& e) { e.on_writes_done_done(true); });
    return 0;
  }
  s->data_deferred = true;
  return NGHTTP2_ERR_DEFERRED;
}

// Puts a DATA frame data_source_read sized on the connection's output:
// its 9-byte header (copied) and @length bytes of the write from wpos on:
// the 5-byte prefix (copied), then the message's pieces by reference (the
// chunk keeps the message's owner alive until the socket took them). The
// write completes when its last byte is queued so.
int send_data(nghttp2_session* /*session*/, nghttp2_frame* /*frame*/, const uint8_t* framehd, size_t length,
              nghttp2_data_source* source, void* user_data) {
  auto* s = static_cast<Call::State*>(source->ptr);
  auto& c = *static_cast<Conn*>(user_data);
  c.out.append_copy(framehd, 9);
  size_t left = length;
  while (left > 0) {
    if (s->wpos < 5) {
      const size_t k = std::min(left, 5 - s->wpos);
      c.out.append_copy(s->prefix + s->wpos, k);
      s->wpos += k;
      left -= k;
      continue;
    }
    size_t pos = s->wpos - 5;
    for (const auto& p : s->wmsg.pieces) {
      if (pos >= p.size()) {
        pos -= p.size();
        continue;
      }
      const size_t k = std::min(left, p.size() - pos);
      c.out.append_view(p.data() + pos, k, s->wmsg.keep);
      s->wpos += k;
      left -= k;
      break;
    }
  }
  if (s->write_pending && s->wpos == s->wtotal) {
    s->write_pending = false;
    s->wmsg = {};
    if (auto self = s->self.lock()) c.ch.emit(self, [](CallEvents& e) { e.on_write_done(true); });
  }
  return 0;
}

int on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame, void*) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  if (auto* s = state_of(session, frame->hd.stream_id)) {
    if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) s->headers.clear();
    else s->trailers.clear();
  }
  return 0;
}

int on_header(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
              const uint8_t* value, size_t valuelen, uint8_t, void*) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  auto* s = state_of(session, frame->hd.stream_id);
  if (!s) return 0;
  std::string n(reinterpret_cast<const char*>(name), namelen);
  std::string v(reinterpret_cast<const char*>(value), valuelen);
  if (n == ":status") {
    s->http_status = std::atoi(v.c_str());
    return 0;
  }
  if (!n.empty() && n[0] == ':') return 0;
  auto& into = frame->headers.cat == NGHTTP2_HCAT_RESPONSE ? s->headers : s->trailers;
  into.emplace_back(std::move(n), std::move(v));
  return 0;
}

// The status in @fields (trailers, or a trailers-only response).
std::pair<int, std::string> status_of(const std::vector<Header>& fields) {
  std::optional<int> code;
  std::string message;
  for (const auto& [n, v] : fields) {
    if (n == "grpc-status") {
      char* end = nullptr;
      const long c = std::strtol(v.c_str(), &end, 10);
      if (end && *end == '\0' && !v.empty() && c >= 0 && c <= 16) code = static_cast<int>(c);
      else code = kUnknown;
    } else if (n == "grpc-message") {
      message = percent_decode(v);
    }
  }
  if (!code) return {kUnknown, "the gateway sent no grpc-status"};
  return {*code, message};
}

}  // namespace

// The callbacks that need the connection (user_data is the Conn).
namespace {
std::shared_ptr<Call::State> find_stream(Conn& c, int32_t id) {
  auto it = c.streams.find(id);
  return it == c.streams.end() ? nullptr : it->second;
}

int on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
  auto& c = *static_cast<Conn*>(user_data);
  auto& ch = c.ch;
  switch (frame->hd.type) {
    case NGHTTP2_PING:
      if (frame->hd.flags & NGHTTP2_FLAG_ACK) c.ping_outstanding = false;
      return 0;
    case NGHTTP2_GOAWAY: {
      // No new streams here. nghttp2 closes the ones it opened past
      // last_stream_id (REFUSED_STREAM: UNAVAILABLE); those still queued
      // (never sent) go to the next connection, after this callback.
      c.goaway = true;
      if (ch.current.get() == &c) ch.current.reset();
      std::weak_ptr<Conn> weak = c.shared_from_this();
      ch.loop.post([weak] {
        if (auto conn = weak.lock()) conn->requeue_unopened();
      });
      return 0;
    }
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
      break;
    default:
      return 0;
  }
  auto s = find_stream(c, frame->hd.stream_id);
  if (!s) return 0;
  const bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  if (frame->hd.type == NGHTTP2_DATA) {
    // END_STREAM on DATA: the gateway ended without trailers.
    if (end && !s->finished) ch.finish(s, kInternal, "the gateway ended the stream without a status");
  } else if (s->finished) {
    // (a stream we ended already: only its END_STREAM matters, below)
  } else if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
    if (s->http_status != 200) {
      ch.finish(s, grpc_status_for_http(s->http_status),
                "the gateway answered HTTP status " + std::to_string(s->http_status));
      if (!end) nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_CANCEL);
    } else if (end) {  // trailers-only
      auto [code, msg] = status_of(s->headers);
      ch.finish(s, code, std::move(msg));
    } else {
      s->md_reported = true;
      ch.emit(s, [h = s->headers](CallEvents& e) { e.on_initial_metadata(true, h); });
    }
  } else if (end) {  // trailers
    auto [code, msg] = status_of(s->trailers);
    ch.finish(s, code, std::move(msg));
  }
  // The gateway's side is done; if ours is not (writes still going, or our
  // END_STREAM held back by its window), end it, as gRPC clients do: the
  // stream closes and the call can end.
  if (end && !s->es_sent) {
    s->es_sent = true;
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
  }
  return 0;
}

// Once the start of the message in cur is in: whether it is exactly one
// `data` field (tag 0x12, a varint length, that many bytes, nothing else).
// If so the tag and length (at most 6 bytes) are erased from cur, which
// then collects the field's bytes only.
void classify_message(Call::State& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.cur.data());
  const size_t have = s.cur.size();
  if (have == 0) return;
  if (p[0] != 0x12) {
    s.cur_kind = 2;
    return;
  }
  uint64_t len = 0;
  for (size_t i = 1; i < have && i <= 5; ++i) {
    len |= uint64_t{p[i] & 0x7fu} << (7 * (i - 1));
    if (!(p[i] & 0x80)) {
      if (i + 1 + len != s.cur_need) {
        s.cur_kind = 2;
        return;
      }
      s.cur.erase(0, i + 1);
      s.cur_kind = 1;
      return;
    }
  }
  if (have > 5) s.cur_kind = 2;  // a varint longer than 5 bytes: not ours
}

int on_data_chunk(nghttp2_session* session, uint8_t, int32_t stream_id, const uint8_t* data, size_t len,
                  void* user_data) {
  auto& c = *static_cast<Conn*>(user_data);
  auto s = find_stream(c, stream_id);
  if (!s) {
    nghttp2_session_consume_connection(session, len);
    return 0;
  }
  if (s->finished) {  // bytes after the end (e.g. past a cancel): given back at once
    nghttp2_session_consume(session, stream_id, len);
    return 0;
  }
  s->unconsumed += len;
  c.ch.buffered.fetch_add(len, std::memory_order_relaxed);
  size_t i = 0;
  while (i < len) {
    if (!s->in_message) {
      const size_t k = std::min(len - i, 5 - s->hdr_have);
      std::memcpy(s->hdr + s->hdr_have, data + i, k);
      s->hdr_have += k;
      i += k;
      if (s->hdr_have < 5) break;
      const uint32_t n = (uint32_t{static_cast<uint8_t>(s->hdr[1])} << 24) |
                         (uint32_t{static_cast<uint8_t>(s->hdr[2])} << 16) |
                         (uint32_t{static_cast<uint8_t>(s->hdr[3])} << 8) | uint32_t{static_cast<uint8_t>(s->hdr[4])};
      if (s->hdr[0] != 0) {
        c.ch.finish(s, kInternal, "the gateway sent a compressed message without grpc-encoding");
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
        return 0;
      }
      if (n > c.ch.opts.max_message_bytes) {
        c.ch.finish(s, kResourceExhausted,
                    "Received message larger than max (" + std::to_string(n) + " vs. " +
                        std::to_string(c.ch.opts.max_message_bytes) + ")");
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
        return 0;
      }
      s->in_message = true;
      s->cur_need = n;
      s->cur_got = 0;
      s->cur_kind = c.ch.opts.split_data_field ? 0 : 2;
      s->cur.clear();
      s->cur.reserve(n);
    }
    const size_t k = std::min(len - i, s->cur_need - s->cur_got);
    s->cur.append(reinterpret_cast<const char*>(data) + i, k);
    s->cur_got += k;
    i += k;
    if (s->cur_kind == 0) classify_message(*s);
    if (s->cur_got == s->cur_need) {
      if (s->cur_kind == 0) s->cur_kind = 2;  // too short to be a data field
      s->buffered += 5 + s->cur_need;
      s->messages.push_back({std::move(s->cur), s->cur_kind == 1, 5 + s->cur_need});
      s->cur = std::string();
      s->in_message = false;
      s->hdr_have = 0;
    }
  }
  c.ch.deliver(s);
  return 0;
}

int on_stream_close(nghttp2_session* session, int32_t stream_id, uint32_t error_code, void* user_data) {
  auto& c = *static_cast<Conn*>(user_data);
  auto s = find_stream(c, stream_id);
  if (!s) return 0;
  c.streams.erase(stream_id);
  // Data not given back yet is the connection's: give it back now (the
  // stream's own window is gone with it).
  if (s->unconsumed > 0) nghttp2_session_consume_connection(session, s->unconsumed);
  c.ch.buffered.fetch_sub(s->unconsumed, std::memory_order_relaxed);
  s->unconsumed = 0;
  c.ch.set_window(*s, 0);
  s->conn = nullptr;
  s->stream_id = -1;
  if (!s->finished) {
    if (error_code == NGHTTP2_NO_ERROR)
      c.ch.finish(s, kInternal, "the gateway ended the stream without a status");
    else
      c.ch.finish(s, grpc_status_for_rst(error_code),
                  "stream reset by the gateway (HTTP/2 error " + std::to_string(error_code) + ")");
  }
  c.ch.maybe_done(s);
  return 0;
}

}  // namespace

// ---- the connection ----

void Conn::start() {
  const auto& ep = ch.opts.endpoint;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(ep.host.c_str(), std::to_string(ep.port).c_str(), &hints, &res);
  if (rc != 0) {
    fail("cannot resolve " + ep.host + ": " + gai_strerror(rc));
    return;
  }
  for (auto* a = res; a; a = a->ai_next) {
    sockaddr_storage ss{};
    std::memcpy(&ss, a->ai_addr, a->ai_addrlen);
    addrs.push_back(ss);
    addr_lens.push_back(a->ai_addrlen);
  }
  ::freeaddrinfo(res);
  std::weak_ptr<Conn> weak = shared_from_this();
  connect_timer = ch.loop.add_timer(ch.opts.connect_timeout, [weak] {
    if (auto c = weak.lock()) {
      c->connect_timer = 0;
      if (c->state != kReady && c->state != kClosed) c->fail("timed out connecting to the gateway");
    }
  });
  try_next_address();
}

void Conn::try_next_address() {
  if (fd >= 0) {
    ch.loop.unwatch(fd);
    ::close(fd);
    fd = -1;
    interest = 0;
  }
  if (next_addr >= addrs.size()) {
    fail("failed to connect to " + ch.opts.endpoint.to_string() + (last_error.empty() ? "" : ": " + last_error));
    return;
  }
  const auto& a = addrs[next_addr];
  const socklen_t len = addr_lens[next_addr];
  ++next_addr;
  fd = ::socket(a.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) {
    last_error = std::strerror(errno);
    return try_next_address();
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  state = kConnecting;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), len) != 0 && errno != EINPROGRESS) {
    last_error = std::strerror(errno);
    return try_next_address();
  }
  Conn* self = this;
  interest = EPOLLOUT;
  if (const int err = ch.loop.watch(fd, EPOLLOUT, [self](uint32_t ev) { self->on_io(ev); }); err != 0) {
    last_error = std::strerror(err);
    return try_next_address();
  }
}

void Conn::on_io(uint32_t events) {
  auto keep = shared_from_this();
  if (state == kConnecting) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      last_error = std::strerror(err);
      return try_next_address();
    }
    if (!(events & EPOLLOUT)) return;
    if (ch.opts.endpoint.tls) {
      if (!ch.ssl_ctx) return fail(ch.ssl_ctx_error);
      ssl = SSL_new(ch.ssl_ctx);
      if (!ssl) return fail(openssl_error());
      SSL_set_fd(ssl, fd);
      SSL_set_connect_state(ssl);
      SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
      const std::string& name =
          ch.opts.tls_server_name.empty() ? ch.opts.endpoint.host : ch.opts.tls_server_name;
      if (!is_ip_literal(name)) SSL_set_tlsext_host_name(ssl, name.c_str());
      if (!ch.opts.insecure_tls) {
        X509_VERIFY_PARAM* p = SSL_get0_param(ssl);
        if (is_ip_literal(name)) X509_VERIFY_PARAM_set1_ip_asc(p, name.c_str());
        else X509_VERIFY_PARAM_set1_host(p, name.c_str(), 0);
        SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
      } else {
        SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
      }
      state = kTls;
      return handshake();
    }
    return ready();
  }
  if (state == kTls) return handshake();
  if (state != kReady) return;
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || (ssl_read_wants_write && (events & EPOLLOUT))) read_some();
  if (state == kReady) flush();
}

void Conn::handshake() {
  ERR_clear_error();
  const int rc = SSL_do_handshake(ssl);
  if (rc == 1) {
    const unsigned char* alpn = nullptr;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (alpn_len != 2 || std::memcmp(alpn, "h2", 2) != 0)
      return fail("TLS handshake with " + ch.opts.endpoint.to_string() + ": the gateway did not select ALPN h2");
    return ready();
  }
  const int e = SSL_get_error(ssl, rc);
  if (e == SSL_ERROR_WANT_READ) return set_interest(EPOLLIN);
  if (e == SSL_ERROR_WANT_WRITE) return set_interest(EPOLLOUT);
  std::string why = openssl_error();
  const long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) why = std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
  fail("TLS handshake with " + ch.opts.endpoint.to_string() + " failed: " + why);
}

void Conn::ready() {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_session_callbacks_set_send_data_callback(cbs, send_data);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  const int rc = nghttp2_session_client_new2(&session, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rc != 0) return fail(std::string("nghttp2: ") + nghttp2_strerror(rc));
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, ch.opts.stream_window},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 64u << 10},
  };
  nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0, 0x7fffffff);
  state = kReady;
  ch.connects.fetch_add(1, std::memory_order_relaxed);
  if (connect_timer) ch.loop.cancel_timer(std::exchange(connect_timer, 0));
  std::weak_ptr<Conn> weak = shared_from_this();
  keepalive_timer = ch.loop.add_timer(
      ch.opts.keepalive,
      [weak] {
        if (auto c = weak.lock()) c->keepalive_tick();
      },
      ch.opts.keepalive);
  set_interest(EPOLLIN);
  auto calls = std::move(waiting);
  waiting.clear();
  for (auto& s : calls) submit(s);
  flush();
}

void Conn::requeue_unopened() {
  if (state != kReady) return;
  std::vector<std::shared_ptr<Call::State>> moved;
  for (auto it = streams.begin(); it != streams.end();) {
    if (nghttp2_session_find_stream(session, it->first) == nullptr && !it->second->finished) {
      nghttp2_session_set_stream_user_data(session, it->first, nullptr);
      zombies.push_back(it->second);
      moved.push_back(it->second);
      it = streams.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& s : moved) {
    ch.set_window(*s, 0);
    s->conn = nullptr;
    s->stream_id = -1;
    s->data_deferred = false;
    ch.submit(s);
  }
}

void Conn::keepalive_tick() {
  if (state != kReady) return;
  if (ping_outstanding) {
    if (Clock::now() - ping_sent >= ch.opts.keepalive_timeout) fail("the gateway did not answer a keepalive ping");
    return;
  }
  // Idle connections too, as the gRPC channel does (keepalive without
  // calls): a gateway that vanished is noticed before the next open.
  nghttp2_submit_ping(session, NGHTTP2_FLAG_NONE, nullptr);
  ping_outstanding = true;
  ping_sent = Clock::now();
  flush();
}

void Conn::submit(const std::shared_ptr<Call::State>& s) {
  if (s->finished) return ch.maybe_done(s);
  const auto& ep = ch.opts.endpoint;
  const std::string scheme = ep.tls ? "https" : "http";
  const std::string authority = ep.grpc_target();
  std::vector<nghttp2_nv> nva;
  auto add = [&nva](const std::string& n, const std::string& v) {
    nva.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())),
                   reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
                   NGHTTP2_NV_FLAG_NONE});
  };
  static const std::string kMethod = ":method", kPost = "POST", kScheme = ":scheme", kPath = ":path",
                           kAuthority = ":authority", kTe = "te", kTrailers = "trailers",
                           kContentType = "content-type", kGrpc = "application/grpc", kUa = "user-agent",
                           kUaValue = "openshell-tunnel (nghttp2)";
  add(kMethod, kPost);
  add(kScheme, scheme);
  add(kPath, s->path);
  add(kAuthority, authority);
  add(kTe, kTrailers);
  add(kContentType, kGrpc);
  add(kUa, kUaValue);
  for (const auto& [n, v] : s->metadata) add(n, v);
  nghttp2_data_provider prd{};
  prd.source.ptr = s.get();
  prd.read_callback = data_source_read;
  const int32_t id = nghttp2_submit_request(session, nullptr, nva.data(), nva.size(), &prd, s.get());
  if (id < 0) {
    if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {  // this connection is used up: the next one takes it
      goaway = true;
      if (ch.current.get() == this) ch.current.reset();
      return ch.submit(s);
    }
    ch.finish(s, kInternal, std::string("nghttp2: ") + nghttp2_strerror(id));
    return ch.maybe_done(s);
  }
  s->conn = this;
  s->stream_id = id;
  ch.set_window(*s, ch.opts.stream_window);
  s->window_start = Clock::now();
  streams[id] = s;
}

ssize_t Conn::io_read(uint8_t* buf, size_t len) {
  if (ssl) {
    ERR_clear_error();
    ssl_read_wants_write = false;
    const int n = SSL_read(ssl, buf, static_cast<int>(len));
    if (n > 0) return n;
    const int e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_WANT_READ) return 0;
    if (e == SSL_ERROR_WANT_WRITE) {  // renegotiation or key update: retried on EPOLLOUT
      ssl_read_wants_write = true;
      return 0;
    }
    last_error = e == SSL_ERROR_ZERO_RETURN ? "the gateway closed the connection" : openssl_error();
    return -1;
  }
  for (;;) {
    const ssize_t n = ::recv(fd, buf, len, 0);
    if (n > 0) return n;
    if (n == 0) {
      last_error = "the gateway closed the connection";
      return -1;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    last_error = std::strerror(errno);
    return -1;
  }
}

ssize_t Conn::io_write(const uint8_t* buf, size_t len) {
  if (ssl) {
    ERR_clear_error();
    ssl_write_wants_read = false;
    const int n = SSL_write(ssl, buf, static_cast<int>(std::min<size_t>(len, 1 << 30)));
    if (n > 0) return n;
    const int e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_WANT_WRITE) return 0;
    if (e == SSL_ERROR_WANT_READ) {  // retried on EPOLLIN (flush follows every read)
      ssl_write_wants_read = true;
      return 0;
    }
    last_error = openssl_error();
    return -1;
  }
  for (;;) {
    const ssize_t n = ::send(fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    last_error = std::strerror(errno);
    return -1;
  }
}

void Conn::read_some() {
  // TLS may hold decrypted bytes epoll cannot see: drain those too.
  for (int i = 0; state == kReady && (i < 16 || (ssl && SSL_pending(ssl) > 0)); ++i) {
    const ssize_t n = io_read(rbuf.data(), rbuf.size());
    if (n == 0) return;
    if (n < 0) return fail(last_error);
    in_recv = true;
    const ssize_t used = nghttp2_session_mem_recv(session, rbuf.data(), static_cast<size_t>(n));
    in_recv = false;
    if (used < 0) return fail(std::string("HTTP/2 error from the gateway: ") + nghttp2_strerror(static_cast<int>(used)));
    if (static_cast<size_t>(n) < rbuf.size() && !ssl) return;  // drained (TLS may hold more decrypted)
  }
}

void Conn::flush() {
  if (state != kReady || in_recv) return;  // on_io flushes after mem_recv
  // nghttp2 hands out one frame per mem_send (DATA by reference, through
  // send_data): they are gathered in `out` and written in batches of up to
  // kBatch, one system call each, rather than one per frame.
  constexpr size_t kBatch = 256u << 10;
  for (;;) {
    while (out.bytes < kBatch) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session, &data);
      if (n < 0) return fail(std::string("nghttp2: ") + nghttp2_strerror(static_cast<int>(n)));
      if (n == 0) break;
      out.append_copy(data, static_cast<size_t>(n));
    }
    if (out.bytes == 0 && tls_out.empty()) break;
    const ssize_t n = write_out();
    if (n < 0) return fail(last_error);
    if (n == 0) break;  // the socket is full: wait for EPOLLOUT
  }
  if (state != kReady) return;
  const bool pending_out = out.bytes > 0 || !tls_out.empty();
  if (!pending_out && !nghttp2_session_want_read(session) && !nghttp2_session_want_write(session))
    return fail("the connection to the gateway ended");
  const bool want_out = (pending_out && !ssl_write_wants_read) || ssl_read_wants_write;
  set_interest(EPOLLIN | (want_out ? uint32_t{EPOLLOUT} : 0u));
}

ssize_t Conn::write_out() {
  if (ssl) {
    // Gather up to 64 KiB (TLS records are at most 16 KiB; OpenSSL copies
    // while it encrypts anyway); a write that would block is retried with
    // the same bytes.
    if (tls_out.empty()) {
      while (!out.chunks.empty() && tls_out.size() < (64u << 10)) {
        const auto& c = out.chunks.front();
        const size_t k = std::min(c.size() - out.front_off, (64u << 10) - tls_out.size());
        tls_out.append(c.data() + out.front_off, k);
        out.consume(k);
      }
    }
    const ssize_t n = io_write(reinterpret_cast<const uint8_t*>(tls_out.data()), tls_out.size());
    if (n > 0) tls_out.erase(0, static_cast<size_t>(n));
    return n;
  }
  iovec iov[64];
  int cnt = 0;
  size_t off = out.front_off;
  for (auto it = out.chunks.begin(); it != out.chunks.end() && cnt < 64; ++it, off = 0) {
    iov[cnt].iov_base = const_cast<char*>(it->data() + off);
    iov[cnt].iov_len = it->size() - off;
    ++cnt;
  }
  for (;;) {
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = static_cast<size_t>(cnt);
    const ssize_t n = ::sendmsg(fd, &mh, MSG_NOSIGNAL);
    if (n > 0) {
      out.consume(static_cast<size_t>(n));
      return n;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    last_error = n == 0 ? "the gateway closed the connection" : std::strerror(errno);
    return -1;
  }
}

void Conn::fail(const std::string& why) {
  if (state == kClosed) return;
  const bool was_ready = state == kReady;
  state = kClosed;
  auto keep = shared_from_this();
  if (!was_ready) ch.connect_failures.fetch_add(1, std::memory_order_relaxed);
  spdlog::debug("h2 connection to {}: {}", ch.opts.endpoint.to_string(), log_escape(why));
  if (connect_timer) ch.loop.cancel_timer(std::exchange(connect_timer, 0));
  if (keepalive_timer) ch.loop.cancel_timer(std::exchange(keepalive_timer, 0));
  if (fd >= 0) ch.loop.unwatch(fd);
  if (ch.current.get() == this) ch.current.reset();
  const std::string msg = was_ready ? "connection to the gateway lost: " + why : why;
  auto calls = std::move(waiting);
  waiting.clear();
  auto live = std::move(streams);
  streams.clear();
  for (auto& [id, s] : live) {
    s->conn = nullptr;
    s->stream_id = -1;
    ch.buffered.fetch_sub(s->unconsumed, std::memory_order_relaxed);
    s->unconsumed = 0;
    ch.set_window(*s, 0);
    ch.finish(s, kUnavailable, msg);
    ch.maybe_done(s);
  }
  for (auto& s : calls) {
    ch.finish(s, kUnavailable, msg);
    ch.maybe_done(s);
  }
  ch.conns.erase(this);  // `keep` holds it to the end of this call
}

// ---- the channel ----

void Channel::Impl::init_tls() {
  if (!opts.endpoint.tls) return;
  ssl_ctx = SSL_CTX_new(TLS_client_method());
  if (!ssl_ctx) {
    ssl_ctx_error = openssl_error();
    return;
  }
  SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ssl_ctx, kAlpn, sizeof kAlpn);
  auto fail = [this](const std::string& what) {
    ssl_ctx_error = what + ": " + openssl_error();
    SSL_CTX_free(ssl_ctx);
    ssl_ctx = nullptr;
  };
  if (!opts.insecure_tls) {
    if (opts.ca_pem.empty()) {
      if (SSL_CTX_set_default_verify_paths(ssl_ctx) != 1) return fail("loading the system's CA certificates");
    } else {
      BIO* bio = BIO_new_mem_buf(opts.ca_pem.data(), static_cast<int>(opts.ca_pem.size()));
      X509_STORE* store = SSL_CTX_get_cert_store(ssl_ctx);
      int n = 0;
      while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
        X509_STORE_add_cert(store, cert);
        X509_free(cert);
        ++n;
      }
      BIO_free(bio);
      ERR_clear_error();
      if (n == 0) return fail("no CA certificate in the configured PEM");
    }
    if (!opts.client_cert_pem.empty()) {
      BIO* bio = BIO_new_mem_buf(opts.client_cert_pem.data(), static_cast<int>(opts.client_cert_pem.size()));
      X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
      bool ok = cert && SSL_CTX_use_certificate(ssl_ctx, cert) == 1;
      if (cert) X509_free(cert);
      while (ok) {  // the rest of the chain
        X509* extra = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
        if (!extra) break;
        if (SSL_CTX_add_extra_chain_cert(ssl_ctx, extra) != 1) X509_free(extra);
      }
      BIO_free(bio);
      ERR_clear_error();
      if (!ok) return fail("the client certificate");
      BIO* kbio = BIO_new_mem_buf(opts.client_key_pem.data(), static_cast<int>(opts.client_key_pem.size()));
      EVP_PKEY* key = PEM_read_bio_PrivateKey(kbio, nullptr, nullptr, nullptr);
      BIO_free(kbio);
      ok = key && SSL_CTX_use_PrivateKey(ssl_ctx, key) == 1 && SSL_CTX_check_private_key(ssl_ctx) == 1;
      if (key) EVP_PKEY_free(key);
      if (!ok) return fail("the client key");
    }
  }
}

void Channel::Impl::submit(const std::shared_ptr<Call::State>& s) {
  if (s->finished) return maybe_done(s);
  if (!current) {
    current = std::make_shared<Conn>(*this);
    conns[current.get()] = current;
    auto c = current;
    c->start();  // may fail at once (resolution): then `current` is reset and `s` below waits on nothing
    if (c->state == Conn::kClosed) {
      finish(s, kUnavailable, c->last_error.empty() ? "failed to connect to the gateway" : c->last_error);
      return maybe_done(s);
    }
  }
  if (current->state == Conn::kReady) {
    current->submit(s);
    current->flush();
  } else {
    current->waiting.push_back(s);
  }
}

void Channel::Impl::finish(const std::shared_ptr<Call::State>& s, int code, std::string message) {
  if (s->finished) return;
  s->finished = true;
  s->code = code;
  s->message = std::move(message);
  if (s->started && !s->md_reported) {
    s->md_reported = true;
    emit(s, [](CallEvents& e) { e.on_initial_metadata(false, {}); });
  }
  if (s->write_pending) {
    s->write_pending = false;
    s->wmsg = {};
    emit(s, [](CallEvents& e) { e.on_write_done(false); });
  }
  if (s->wd_requested && !s->wd_sent) {
    s->wd_sent = true;
    emit(s, [](CallEvents& e) { e.on_writes_done_done(false); });
  }
  deliver(s);
}

void Channel::Impl::set_window(Call::State& s, uint32_t w) {
  windows_granted = windows_granted - s.window + w;
  s.window = w;
}

void Channel::Impl::consume(Call::State& s, size_t n) {
  if (!s.conn || s.stream_id < 0) return;
  nghttp2_session* session = s.conn->session;
  // Each time the reader has taken a quarter window: taken within
  // grow_within / 4, i.e. the reader moves at least window / grow_within,
  // the window doubles (so it follows the reader's rate: about grow_within
  // of it, whatever the round trip, up to stream_window_max; checking every
  // quarter window lets a window-limited stream double about three times a
  // round trip, as fast as slow start); taken in shrink_after / 4 or more,
  // it halves (not below the start). And a window never grows past what the
  // reader has taken in all: a client that read a little quickly and then
  // stopped (its socket buffer filled) is not granted more than that.
  s.consumed_since_check += n;
  s.consumed_total += n;
  if (s.consumed_since_check >= s.window / 4) {
    const auto now = Clock::now();
    const auto took = now - s.window_start;
    uint32_t want = s.window;
    const uint32_t doubled = std::min(s.window * 2, opts.stream_window_max);
    if (took * 4 <= opts.grow_within && s.window < opts.stream_window_max &&
        s.consumed_total >= doubled && windows_granted + (doubled - s.window) <= opts.window_budget) {
      want = doubled;
      growths.fetch_add(1, std::memory_order_relaxed);
    } else if (took * 4 >= opts.shrink_after && s.window > opts.stream_window) {
      want = std::max(s.window / 2, opts.stream_window);
      shrinks.fetch_add(1, std::memory_order_relaxed);
    }
    if (want != s.window) {
      set_window(s, want);
      nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, s.stream_id, static_cast<int32_t>(want));
    }
    s.consumed_since_check = 0;
    s.window_start = now;
  }
  nghttp2_session_consume(session, s.stream_id, n);
  const size_t given = std::min(s.unconsumed, n);
  s.unconsumed -= given;
  buffered.fetch_sub(given, std::memory_order_relaxed);
}

void Channel::Impl::deliver(const std::shared_ptr<Call::State>& s) {
  if (!s->read_pending) return;
  if (!s->messages.empty()) {
    s->read_pending = false;
    Call::State::Rx m = std::move(s->messages.front());
    s->messages.pop_front();
    s->buffered -= m.wire;
    consume(*s, m.wire);
    emit(s, [m = std::move(m)](CallEvents& e) mutable { e.on_read_done(true, std::move(m.bytes), m.data_field); });
    if (s->conn) s->conn->flush();
    return;
  }
  if (s->finished) {
    s->read_pending = false;
    emit(s, [](CallEvents& e) { e.on_read_done(false, {}, false); });
    maybe_done(s);
  }
}

void Channel::Impl::maybe_done(const std::shared_ptr<Call::State>& s) {
  if (!s->finished || s->done_reported || s->holds > 0 || s->read_pending || s->write_pending) return;
  // Still on the connection (it closes soon: RST or END_STREAM queued),
  // unless nghttp2 never opened it (detached: its close may wait long).
  if (s->conn && !s->detached) return;
  s->done_reported = true;
  s->buffered = 0;
  s->messages.clear();
  if (s->started) active.fetch_sub(1, std::memory_order_relaxed);
  loop.post([s, code = s->code, msg = s->message] {
    CallEvents* ev = std::exchange(s->ev, nullptr);
    if (ev) ev->on_done(code, msg);
  });
}

// ---- Call: every method posts to the loop ----

namespace {
// New bytes or END_STREAM for a stream whose data source said "nothing yet".
void resume_writes(Call::State& s) {
  if (!s.conn || !s.data_deferred) return;
  s.data_deferred = false;
  nghttp2_session_resume_data(s.conn->session, s.stream_id);
  s.conn->flush();
}

template <class Fn>
void post_op(const std::shared_ptr<Call::State>& s, Fn&& fn) {
  auto ch = s->ch.lock();
  if (!ch) return;
  Channel::Impl* impl = ch.get();
  ch->loop.post([impl, s, fn = std::forward<Fn>(fn)]() mutable { fn(*impl, s); });
}
}  // namespace

void Call::start() {
  post_op(s_, [](Channel::Impl& ch, const std::shared_ptr<State>& s) {
    if (s->started) return;
    s->started = true;
    ch.active.fetch_add(1, std::memory_order_relaxed);
    if (s->cancel_requested) {
      ch.finish(s, s->code, std::move(s->message));
      return ch.maybe_done(s);
    }
    ch.submit(s);
  });
}

void Call::write(Message msg) {
  post_op(s_, [msg = std::move(msg)](Channel::Impl& ch, const std::shared_ptr<State>& s) mutable {
    if (s->finished || s->wd_requested) {
      ch.emit(s, [](CallEvents& e) { e.on_write_done(false); });
      return;
    }
    size_t total = 0;
    for (auto p : msg.pieces) total += p.size();
    s->wmsg = std::move(msg);
    s->prefix[0] = 0;
    s->prefix[1] = static_cast<char>(total >> 24);
    s->prefix[2] = static_cast<char>(total >> 16);
    s->prefix[3] = static_cast<char>(total >> 8);
    s->prefix[4] = static_cast<char>(total);
    s->wpos = 0;
    s->wtotal = 5 + total;
    s->write_pending = true;
    resume_writes(*s);
  });
}

void Call::writes_done() {
  post_op(s_, [](Channel::Impl& ch, const std::shared_ptr<State>& s) {
    if (s->finished || s->wd_requested) {
      ch.emit(s, [](CallEvents& e) { e.on_writes_done_done(false); });
      return;
    }
    s->wd_requested = true;
    resume_writes(*s);
  });
}

void Call::read() {
  post_op(s_, [](Channel::Impl& ch, const std::shared_ptr<State>& s) {
    s->read_pending = true;
    ch.deliver(s);
  });
}

void Call::add_holds(int n) {
  post_op(s_, [n](Channel::Impl&, const std::shared_ptr<State>& s) { s->holds += n; });
}

void Call::remove_hold() {
  post_op(s_, [](Channel::Impl& ch, const std::shared_ptr<State>& s) {
    --s->holds;
    ch.maybe_done(s);
  });
}

void Call::cancel(int code, std::string message) {
  post_op(s_, [code, message = std::move(message)](Channel::Impl& ch, const std::shared_ptr<State>& s) mutable {
    if (!s->started) {  // start() ends it
      s->cancel_requested = true;
      s->code = code;
      s->message = std::move(message);
      return;
    }
    if (s->finished) return;
    Conn* c = s->conn;
    // As grpc++ after TryCancel: reads fail, buffered messages are dropped
    // (their bytes go back to the connection when the stream closes).
    s->messages.clear();
    s->buffered = 0;
    ch.finish(s, code, std::move(message));
    if (c) {
      if (nghttp2_session_find_stream(c->session, s->stream_id) == nullptr) s->detached = true;
      s->es_sent = true;
      nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->stream_id, NGHTTP2_CANCEL);
      c->flush();
    }
    ch.maybe_done(s);
  });
}

Channel::Channel(ChannelOptions opts) : impl_(std::make_shared<Impl>(std::move(opts))) {
  impl_->init_tls();
  impl_->loop.start([] {
    pthread_setname_np(pthread_self(), "osh-h2");
    // OpenSSL writes with write(): a reset connection must be an error
    // here, not a SIGPIPE for the process (plain sockets use MSG_NOSIGNAL).
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  });
}

Channel::~Channel() {
  impl_->loop.stop();  // joins: no closure runs after this
  // Connections and their calls go with impl_ (no events: the loop is stopped).
  impl_->current.reset();
  impl_->conns.clear();
}

Call Channel::create_call(std::string path, std::vector<Header> metadata, CallEvents* events) {
  auto s = std::make_shared<Call::State>();
  s->ch = impl_;
  s->path = std::move(path);
  s->metadata = std::move(metadata);
  s->ev = events;
  s->self = s;
  return Call(std::move(s));
}

ChannelStats Channel::stats() const {
  ChannelStats st;
  st.connects = impl_->connects.load();
  st.connect_failures = impl_->connect_failures.load();
  st.window_growths = impl_->growths.load();
  st.window_shrinks = impl_->shrinks.load();
  st.calls_active = impl_->active.load();
  st.bytes_buffered = impl_->buffered.load();
  return st;
}

const ChannelOptions& Channel::options() const { return impl_->opts; }

}  // namespace osh::relay::h2

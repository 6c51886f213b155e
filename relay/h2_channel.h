// relay-internal: gRPC calls over HTTP/2 on nghttp2, for the ForwardTcp
// streams (GatewayOptions::forward_transport = kH2; issue 15.1). What grpc++
// 1.51 cannot give a stream - a receive window of its own that grows only
// with consumption - this channel does: see h2_channel.cc for the theory of
// operation. No nghttp2 or OpenSSL type in this header.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "relay/endpoint.h"

namespace osh::relay::h2 {

/// One header field (lower-case name, value).
using Header = std::pair<std::string, std::string>;

/// How the channel reaches the gateway and sizes its windows.
struct ChannelOptions {
  Endpoint endpoint;
  /// TLS (endpoint.tls only), as GatewayOptions: PEM trust anchors ("" =
  /// the system's), the client pair (mTLS; both or neither), accept any
  /// server certificate, the name the certificate must match ("" = the
  /// endpoint's host; IP literals match IP SANs).
  std::string ca_pem, client_cert_pem, client_key_pem, tls_server_name;
  bool insecure_tls = false;
  /// A stream's receive window when it starts, bytes (SETTINGS_INITIAL_
  /// WINDOW_SIZE): what a stream whose reader never reads can hold here.
  uint32_t stream_window = 256u << 10;
  /// The most a stream's window grows to, bytes: 32 MiB carries ~1.8
  /// Gbit/s at 150 ms RTT.
  uint32_t stream_window_max = 32u << 20;
  /// A reader that takes a quarter window within grow_within / 4 doubles
  /// its stream's window (never past the bytes it took in all); one that
  /// needs shrink_after / 4 or more halves it (h2_channel.cc "Receive
  /// windows"). So a window holds about grow_within of what its reader takes.
  std::chrono::milliseconds grow_within{500};
  std::chrono::milliseconds shrink_after{4000};
  /// The most all streams' windows together may grow to, bytes
  /// (ForwardOptions::max_buffer_bytes when set): past it no window grows
  /// (each new stream still gets stream_window; --max-streams bounds those).
  /// The connection-level window is left wide open, so that streams that
  /// stopped never hold up the others (no head-of-line blocking).
  uint64_t window_budget = 256u << 20;
  /// Largest message accepted; a larger one ends the call with
  /// RESOURCE_EXHAUSTED (gateway_client.h kMaxForwardFrameBytes).
  size_t max_message_bytes = (64u << 10) + 1024;
  /// Deliver a message that is exactly one `data` field (tag 0x12) as that
  /// field's bytes (CallEvents::on_read_done): the tag and length never
  /// enter the buffer, so the bytes need no second copy or move to become
  /// the frame's string.
  bool split_data_field = true;
  /// PING every keepalive on every connection; no answer within
  /// keepalive_timeout ends the connection (its calls: UNAVAILABLE). As the
  /// gRPC channel's keepalive (gateway_client.cc channel_arguments).
  std::chrono::milliseconds keepalive{10000};
  std::chrono::milliseconds keepalive_timeout{10000};
  /// TCP connect plus TLS handshake plus the server's SETTINGS.
  std::chrono::milliseconds connect_timeout{20000};
};

/// A call's events, on the channel's loop thread, never from inside a Call
/// method. Order per call: at most one on_initial_metadata; each write,
/// writes_done and read completes exactly once; on_done last, once every
/// operation completed and every hold was removed (grpc++'s callback API
/// rules, which relay/forward.cc's reactor is written to).
class CallEvents {
 public:
  virtual ~CallEvents() = default;
  /// The response headers (@ok, pseudo-headers removed), or !@ok when the
  /// call ended without any (trailers-only, refused, connection lost).
  virtual void on_initial_metadata(bool ok, const std::vector<Header>& headers) = 0;
  virtual void on_write_done(bool ok) = 0;
  virtual void on_writes_done_done(bool ok) = 0;
  /// One whole message (without its 5-byte prefix), or !@ok: no more.
  /// @data_field: @message is exactly one length-delimited field 2 (tag
  /// 0x12, the `data` of TcpForwardFrame in both generations) and holds
  /// only that field's bytes, tag and length removed as it arrived
  /// (ChannelOptions::split_data_field); else the whole message.
  virtual void on_read_done(bool ok, std::string message, bool data_field) = 0;
  /// The call's status: a grpc::StatusCode value and its message.
  virtual void on_done(int code, std::string message) = 0;
};

class Channel;

/// One gRPC call (a bidi stream). Every method is thread-safe, never
/// blocks and never runs an event inline: it posts to the channel's loop.
/// At most one write and one read in flight (grpc++'s rule). Operations
/// issued before start() wait for it.
class Call {
 public:
  /// Bytes of one message, as pieces that must stay valid until
  /// on_write_done: @keep owns them (released on the loop thread).
  struct Message {
    std::vector<std::string_view> pieces;
    std::shared_ptr<const void> keep;
  };
  void start();
  void write(Message msg);
  void writes_done();
  void read();
  void add_holds(int n);
  void remove_hold();
  /// Ends the call with @code (a grpc::StatusCode value; CANCELLED by
  /// default) and @message, resetting the stream (RST_STREAM CANCEL),
  /// unless it ended already.
  void cancel(int code = 1, std::string message = "Cancelled");

  struct State;  ///< h2_channel.cc
  explicit Call(std::shared_ptr<State> s) : s_(std::move(s)) {}

 private:
  std::shared_ptr<State> s_;
};

/// Counters of a channel (status output, tests).
struct ChannelStats {
  uint64_t connects = 0;          ///< connections that reached the SETTINGS exchange
  uint64_t connect_failures = 0;  ///< connections that failed before it
  uint64_t window_growths = 0;    ///< stream windows doubled (the reader kept up)
  uint64_t window_shrinks = 0;    ///< stream windows set back (the reader fell behind)
  uint64_t calls_active = 0;      ///< calls started and not yet done
  /// Received DATA bytes not yet given back to the gateway's window (not
  /// yet read, or a message still incomplete), all calls.
  uint64_t bytes_buffered = 0;
};

/// An HTTP/2 connection to the gateway (h2c or TLS with ALPN h2), made on
/// the first call and again after it is lost or told to go away, run by one
/// loop thread of its own (named "osh-h2"). Thread-safe.
class Channel {
 public:
  explicit Channel(ChannelOptions opts);
  /// Stops the loop thread; calls still open get no more events.
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  /// create_call() - a call to @path (e.g. "/openshell.v1.OpenShell/ForwardTcp")
  /// with request metadata @metadata (lower-case names), reporting to
  /// @events until on_done (@events must outlive that). Nothing is sent
  /// before Call::start().
  Call create_call(std::string path, std::vector<Header> metadata, CallEvents* events);

  ChannelStats stats() const;
  const ChannelOptions& options() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

/// grpc_status_for_http() - the gRPC status code for a response whose
/// :status is @http_status (gRPC's doc/http-grpc-status-mapping.md).
int grpc_status_for_http(int http_status);
/// grpc_status_for_rst() - the gRPC status code for a stream reset with
/// HTTP/2 error code @error (gRPC's PROTOCOL-HTTP2.md "Errors").
int grpc_status_for_rst(uint32_t error);
/// percent_decode() - a grpc-message value (PROTOCOL-HTTP2.md: percent-
/// encoded UTF-8); malformed escapes are kept as they are.
std::string percent_decode(std::string_view s);

}  // namespace osh::relay::h2

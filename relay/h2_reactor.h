// relay-internal: grpc++'s ClientBidiReactor / ClientContext surface that
// relay/forward.cc's ForwardReactor uses, over an h2::Channel call
// (GatewayOptions::forward_transport = kH2). One reactor implementation,
// two transports: the semantics (settle window, late fallback, extensions,
// status mapping) stay in forward.cc.
//
// What carries over from grpc++'s callback API (grpcpp/support/
// client_callback.h) and holds here too: operations may be started from any
// thread, at most one read and one write in flight, each completes exactly
// once, OnDone runs last, once every hold is removed. What is stricter here:
// no reaction ever runs inline inside a Start* call (they all run on the
// channel's loop thread).
#pragma once

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>
#include <grpcpp/support/status.h>
#include <grpcpp/support/string_ref.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "relay/h2_channel.h"

namespace osh::relay {

/// The ClientContext subset ForwardReactor uses. Thread: AddMetadata
/// before the call is bound; TryCancel from any thread; the server's
/// metadata from OnReadInitialMetadataDone on.
class H2Context {
 public:
  void AddMetadata(const std::string& key, const std::string& value) { metadata_.emplace_back(key, value); }
  /// Cancels the call (CANCELLED), also before it is bound (then at bind).
  void TryCancel() {
    std::lock_guard lk(mu_);
    if (call_) call_->cancel();
    else cancel_at_bind_ = true;
  }
  /// The response headers, as grpc::ClientContext gives them.
  const std::multimap<grpc::string_ref, grpc::string_ref>& GetServerInitialMetadata() const { return view_; }

  // For H2BidiReactor:
  std::vector<h2::Header> TakeMetadata() { return std::move(metadata_); }
  void Bind(h2::Call call) {
    std::lock_guard lk(mu_);
    call_.emplace(std::move(call));
    if (cancel_at_bind_) call_->cancel();
  }
  void SetServerInitialMetadata(const std::vector<h2::Header>& headers) {
    headers_ = headers;
    view_.clear();
    for (const auto& [k, v] : headers_) view_.emplace(grpc::string_ref(k), grpc::string_ref(v));
  }

 private:
  std::vector<h2::Header> metadata_;
  std::mutex mu_;
  std::optional<h2::Call> call_;
  bool cancel_at_bind_ = false;
  std::vector<h2::Header> headers_;
  std::multimap<grpc::string_ref, grpc::string_ref> view_;
};

/// ParseFrameInto() - @message (one gRPC message) into @frame: a message
/// that is exactly one `data` field (tag 0x12, as relay/data_frame.h) keeps
/// its string (the tag and length are erased in place: no allocation);
/// anything else is parsed by protobuf. Return: false if it does not parse.
template <class Frame>
bool ParseFrameInto(std::string message, Frame* frame) {
  const auto* p = reinterpret_cast<const unsigned char*>(message.data());
  const size_t n = message.size();
  if (n >= 2 && p[0] == 0x12) {
    uint64_t len = 0;
    size_t i = 1;
    for (int shift = 0; i < n && shift < 35; shift += 7, ++i) {
      len |= uint64_t{p[i] & 0x7fu} << shift;
      if (!(p[i] & 0x80)) {
        ++i;
        if (i + len == n) {
          message.erase(0, i);
          frame->Clear();
          frame->set_data(std::move(message));
          return true;
        }
        break;
      }
    }
  }
  return frame->ParseFromString(message);
}

/// grpc::ClientBidiReactor<grpc::ByteBuffer, Frame>'s surface, on an
/// h2::Channel call. Bind() first (forward.cc bind_call), then the Start*
/// calls as with grpc++.
template <class Frame>
class H2BidiReactor : private h2::CallEvents {
 public:
  ~H2BidiReactor() override = default;

  void Bind(h2::Channel& channel, H2Context* ctx, const std::string& path) {
    ctx_ = ctx;
    call_.emplace(channel.create_call(path, ctx->TakeMetadata(), this));
    ctx->Bind(*call_);
  }
  void StartCall() { call_->start(); }
  /// @buf's slices are referenced (not copied) until the write completes.
  void StartWrite(const grpc::ByteBuffer* buf) {
    auto slices = std::make_shared<std::vector<grpc::Slice>>();
    (void)buf->Dump(slices.get());
    h2::Call::Message m;
    m.pieces.reserve(slices->size());
    for (const auto& s : *slices) m.pieces.emplace_back(reinterpret_cast<const char*>(s.begin()), s.size());
    m.keep = std::move(slices);
    call_->write(std::move(m));
  }
  void StartRead(Frame* frame) {
    read_into_ = frame;
    call_->read();
  }
  void StartWritesDone() { call_->writes_done(); }
  void AddMultipleHolds(int n) { call_->add_holds(n); }
  void RemoveHold() { call_->remove_hold(); }

  virtual void OnReadInitialMetadataDone(bool /*ok*/) {}
  virtual void OnReadDone(bool /*ok*/) {}
  virtual void OnWriteDone(bool /*ok*/) {}
  virtual void OnWritesDoneDone(bool /*ok*/) {}
  virtual void OnDone(const grpc::Status& /*s*/) {}

 private:
  void on_initial_metadata(bool ok, const std::vector<h2::Header>& headers) override {
    if (ok) ctx_->SetServerInitialMetadata(headers);
    OnReadInitialMetadataDone(ok);
  }
  void on_write_done(bool ok) override { OnWriteDone(ok); }
  void on_writes_done_done(bool ok) override { OnWritesDoneDone(ok); }
  void on_read_done(bool ok, std::string message, bool data_field) override {
    if (ok && data_field) {  // the channel kept only the data field's bytes
      read_into_->Clear();
      read_into_->set_data(std::move(message));
    } else if (ok && !ParseFrameInto(std::move(message), read_into_)) {
      ok = false;  // as grpc++: the call ends INTERNAL
      call_->cancel(grpc::StatusCode::INTERNAL, "Failed to parse server response");
    }
    OnReadDone(ok);
  }
  void on_done(int code, std::string message) override {
    OnDone(grpc::Status(static_cast<grpc::StatusCode>(code), message));
  }

  H2Context* ctx_ = nullptr;
  std::optional<h2::Call> call_;
  Frame* read_into_ = nullptr;
};

}  // namespace osh::relay

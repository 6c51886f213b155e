// Reused buffers for frames read from a socket and handed to gRPC without a
// copy (issue 16.2: no allocation and release of a large buffer per frame).
#pragma once

#include <grpcpp/support/slice.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace osh::peers {

/// FramePool - buffers of one size for frames: Take() one, read() into it,
/// ToSlice() it into a grpc::Slice for the frame; when gRPC drops the last
/// reference to that slice (on any of its threads, possibly after the write
/// completed) the buffer goes back to the pool. At most @keep idle buffers
/// are kept (the rest are freed), so the pool holds at most
/// keep * buffer_bytes while idle. Thread-safe. It must outlive every slice
/// it made: use Frames(), which is never destroyed.
class FramePool {
 public:
  struct Block;
  struct Release {
    void operator()(Block* block) const;
  };
  /// A buffer from Take(); back to its pool when destroyed.
  using Buffer = std::unique_ptr<Block, Release>;

  /// FramePool() - @buffer_bytes per buffer; @keep idle buffers at most.
  FramePool(size_t buffer_bytes, size_t keep);
  ~FramePool();
  FramePool(const FramePool&) = delete;
  FramePool& operator=(const FramePool&) = delete;

  /// Frames() - the process's pool of 64 KiB buffers (protocol §2.5's chunk
  /// size), at most 64 kept idle (4 MiB). Never destroyed.
  static FramePool& Frames();

  /// Take() - an idle buffer, or a new one. Thread: any.
  Buffer Take();
  /// Data() - @buffer's buffer_bytes() bytes.
  static char* Data(const Buffer& buffer);
  /// ToSlice() - a slice of @buffer's first @n bytes (@n <= buffer_bytes());
  /// no copy: the buffer returns to the pool when the slice's last reference
  /// is dropped. Thread: any.
  static grpc::Slice ToSlice(Buffer buffer, size_t n);

  size_t buffer_bytes() const { return buffer_bytes_; }
  /// allocations() - buffers allocated so far (Take() without an idle one).
  uint64_t allocations() const;
  /// idle() - buffers waiting in the pool now.
  size_t idle() const;

 private:
  void Put(Block* block);

  const size_t buffer_bytes_;
  const size_t keep_;
  mutable std::mutex mu_;
  std::vector<Block*> idle_;  // mu_
  uint64_t allocations_ = 0;  // mu_
};

}  // namespace osh::peers

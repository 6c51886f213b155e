// FramePool: a mutex-guarded free list of fixed-size blocks. A block is a
// header (its pool) followed by the bytes; ToSlice() wraps the bytes with
// grpc_slice_new_with_user_data(), whose destroy callback, run by gRPC when
// the slice's refcount drops to zero, puts the block back. Before it, every
// frame the mini-supervisor read from a target was copied into a protobuf
// string and again into a freshly allocated 64 KiB slice.
#include "peers/common/frame_pool.h"

#include <grpc/slice.h>

#include <new>

namespace osh::peers {

struct FramePool::Block {
  FramePool* pool;
  char* data() { return reinterpret_cast<char*>(this + 1); }
};

void FramePool::Release::operator()(Block* block) const { block->pool->Put(block); }

FramePool::FramePool(size_t buffer_bytes, size_t keep) : buffer_bytes_(buffer_bytes), keep_(keep) {
  idle_.reserve(keep);
}

FramePool::~FramePool() {
  for (Block* block : idle_) ::operator delete(block);
}

FramePool& FramePool::Frames() {
  static auto* pool = new FramePool(64 * 1024, 64);  // never destroyed: slices may outlive main()
  return *pool;
}

FramePool::Buffer FramePool::Take() {
  {
    std::lock_guard lock(mu_);
    if (!idle_.empty()) {
      Block* block = idle_.back();
      idle_.pop_back();
      return Buffer(block);
    }
    ++allocations_;
  }
  auto* block = static_cast<Block*>(::operator new(sizeof(Block) + buffer_bytes_));
  block->pool = this;
  return Buffer(block);
}

char* FramePool::Data(const Buffer& buffer) { return buffer->data(); }

grpc::Slice FramePool::ToSlice(Buffer buffer, size_t n) {
  Block* block = buffer.release();
  grpc_slice slice = grpc_slice_new_with_user_data(
      block->data(), n, [](void* b) { Release{}(static_cast<Block*>(b)); }, block);
  return grpc::Slice(slice, grpc::Slice::STEAL_REF);
}

uint64_t FramePool::allocations() const {
  std::lock_guard lock(mu_);
  return allocations_;
}

size_t FramePool::idle() const {
  std::lock_guard lock(mu_);
  return idle_.size();
}

void FramePool::Put(Block* block) {
  {
    std::lock_guard lock(mu_);
    if (idle_.size() < keep_) {
      idle_.push_back(block);
      return;
    }
  }
  ::operator delete(block);
}

}  // namespace osh::peers

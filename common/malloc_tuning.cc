// Theory of operation: why the data-path processes set malloc's thresholds
//
// Every frame passes through buffers of 64 KiB and more (the frame's bytes,
// gRPC's slices, protobuf strings), allocated and freed by gRPC's threads.
// glibc's defaults give such memory back to the kernel as soon as it is
// freed: a free that leaves more than M_TRIM_THRESHOLD (128 KiB, raised only
// by the dynamic threshold after an mmap'd block is freed) at the top of an
// arena shrinks the heap (sbrk for the main arena, madvise(MADV_DONTNEED) in
// a thread's arena), and the next frame faults the same pages in again, one
// page fault per 4 KiB and a zeroed page each. Blocks above M_MMAP_THRESHOLD
// cost an mmap and a munmap each. Measured (issue 16): the mini-supervisor
// burned 6.4 CPU s per GiB of upload this way, about 2 s with the thresholds
// raised through GLIBC_TUNABLES.
//
// So the thresholds are set once, high enough that a steady stream of
// frames reuses the same memory: free memory stays in the arenas while the
// process is busy (bounded by the peak of live buffers plus trim_threshold
// per arena), and IdleTrimmer (idle_trim.h) returns it with malloc_trim(0)
// once a busy period is over, and again every 10 s while RSS stays up;
// malloc_trim does not look at the thresholds. The trim threshold is above
// what a busy process frees in one swing, not just per frame: gRPC buffers
// a stream's receive window (at least 4 MiB in grpc++ 1.51, see
// docs/ARCHITECTURE.md "Memory bounds"), several streams' at once, and
// drains it; at 8 MiB the tunnel gave such swings back and faulted 6,000-
// 9,000 pages (24-36 MiB) in again per 512 MiB downloaded (8 % of its CPU
// in clear_page), the mini-gateway up to 14,000. 64 MiB keeps them;
// IdleTrimmer still returns all of it once the load is over. Setting
// either threshold also turns glibc's dynamic adjustment off, so both are
// set together. M_ARENA_MAX is here too: every such process wants it
// (issue 3.3), and it is 1: malloc_trim(0) shrinks the top chunk of the main
// arena only (glibc's mtrim madvises the free bins of the others, never
// their top), so a second arena kept up to the trim threshold (8 MiB then)
// resident after every load, which is vm_memory's whole bound.
#include "common/malloc_tuning.h"

#include <malloc.h>

#include <climits>
#include <cstdio>

namespace osh {

std::string tune_malloc(const MallocTuning& tuning) {
#ifdef OSH_SANITIZED
  // The sanitizers' allocators replace glibc's, and their mallopt() refuses
  // every parameter: there is nothing to tune (and nothing to warn about).
  (void)tuning;
  return "";
#else
  std::string refused;
  const auto set = [&refused](int param, long value, const char* name) {
    if (mallopt(param, static_cast<int>(value)) == 1) return;
    if (!refused.empty()) refused += ", ";
    refused += name;
  };
  const auto clamp = [](size_t bytes) { return static_cast<long>(bytes > INT_MAX ? INT_MAX : bytes); };
  set(M_ARENA_MAX, tuning.arena_max, "M_ARENA_MAX");
  set(M_MMAP_THRESHOLD, clamp(tuning.mmap_threshold), "M_MMAP_THRESHOLD");
  set(M_TRIM_THRESHOLD, clamp(tuning.trim_threshold), "M_TRIM_THRESHOLD");
  return refused.empty() ? refused : "glibc refused " + refused;
#endif
}

void tune_malloc_at_start(const char* program) {
  const std::string error = tune_malloc();
  if (!error.empty()) std::fprintf(stderr, "%s: warning: malloc settings: %s\n", program, error.c_str());
}

}  // namespace osh

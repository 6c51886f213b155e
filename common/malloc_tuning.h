// glibc malloc's settings for the processes that move bulk data: the
// tunnel (`up`, `forward`, `ssh-proxy`), the mini-gateway and the
// mini-supervisor. Set once at start-up; see malloc_tuning.cc for why.
#pragma once

#include <cstddef>
#include <string>

namespace osh {

/// MallocTuning - what tune_malloc() sets (mallopt(3)). The defaults are
/// the measured ones (malloc_tuning.cc, docs/BENCHMARKS.md).
struct MallocTuning {
  /// M_ARENA_MAX (issue 3.3): with one arena per thread, memory freed by one
  /// connection's thread is not reused by another's and RSS grows with the
  /// thread count, not with live data. One arena, because malloc_trim(0)
  /// trims the top chunk of the main arena only: a second arena's top (up
  /// to trim_threshold, then 8 MiB) stayed resident after every load
  /// (MallocTuning.MallocTrimReturnsWhatOtherThreadsFreed; vm_memory). The
  /// lock it costs is measured in docs/BENCHMARKS.md "One malloc arena".
  int arena_max = 1;
  /// M_MMAP_THRESHOLD, bytes: blocks at least this large get an mmap of
  /// their own (and fresh, faulting pages on every allocation). Above every
  /// per-frame buffer (64 KiB frames, gRPC's slices), below glibc's cap of
  /// 32 MiB.
  size_t mmap_threshold = size_t{4} << 20;
  /// M_TRIM_THRESHOLD, bytes: once a free() leaves more than this free at
  /// the top of the heap, glibc returns all of it (down to M_TOP_PAD) to the
  /// kernel at once; less goes back on idle (IdleTrimmer's malloc_trim(0)).
  /// Above what a busy process frees in one swing: gRPC buffers up to a
  /// receive window per stream (at least 4 MiB in grpc++ 1.51) and then
  /// drains it; with 8 MiB the tunnel gave such swings back and faulted them
  /// in again every 0.4 s of a download (docs/BENCHMARKS.md "Trim
  /// threshold").
  size_t trim_threshold = size_t{64} << 20;
};

/// tune_malloc() - applies @tuning with mallopt(). Call once, first thing in
/// main(), before any thread exists (mallopt is not meant to race with
/// allocations in other threads). Setting the thresholds turns glibc's
/// dynamic threshold off (mallopt(3)), so both are always set together.
/// Return: "" on success, else which setting glibc refused (the process
/// works on with glibc's defaults for it; the caller says so).
/// Thread: main, before other threads.
std::string tune_malloc(const MallocTuning& tuning = {});

/// tune_malloc_at_start() - tune_malloc() with the defaults; a refusal is
/// one line on stderr, "@program: warning: malloc settings: ...", and the
/// process goes on. For main() of every data-path process (the tunnel, the
/// mini-gateway, the mini-supervisor). Thread: main, before other threads.
void tune_malloc_at_start(const char* program);

}  // namespace osh

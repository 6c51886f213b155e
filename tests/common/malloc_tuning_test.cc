// tune_malloc(): frame-sized buffers freed and allocated again are not given
// back to the kernel and faulted in per frame (issue 16.2), and
// malloc_trim(0) - what IdleTrimmer calls on idle - still returns them.
// Behaviour, not timing: page-fault counts and RSS.
#include "common/malloc_tuning.h"

#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "common/idle_trim.h"

namespace osh {
namespace {

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = kKiB * kKiB;

long ThreadMinorFaults() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return ru.ru_minflt;
}

// One "frame": a 64 KiB payload and two 60 KiB transport buffers (each below
// glibc's initial 128 KiB mmap threshold, so its dynamic threshold never
// rises), written and freed, as the peers' gRPC threads do per frame.
void OneFrame() {
  constexpr size_t kSizes[] = {64 * kKiB, 60 * kKiB, 60 * kKiB};
  char* blocks[3];
  for (int i = 0; i < 3; ++i) {
    blocks[i] = static_cast<char*>(std::malloc(kSizes[i]));
    ASSERT_NE(blocks[i], nullptr);
    std::memset(blocks[i], i + 1, kSizes[i]);
  }
  for (int i = 2; i >= 0; --i) std::free(blocks[i]);
}

// Minor page faults of @frames frames after a warm-up, on the calling thread.
long FaultsPerFrames(int frames) {
  for (int i = 0; i < 4; ++i) OneFrame();
  const long before = ThreadMinorFaults();
  for (int i = 0; i < frames; ++i) OneFrame();
  return ThreadMinorFaults() - before;
}

TEST(MallocTuning, AppliesEverySetting) {
#ifdef OSH_SANITIZED
  GTEST_SKIP() << "a sanitizer's allocator replaces glibc's malloc";
#endif
  EXPECT_EQ(tune_malloc(), "");
}

TEST(MallocTuning, FrameBuffersAreReusedNotFaultedInPerFrame) {
#ifdef OSH_SANITIZED
  GTEST_SKIP() << "a sanitizer's allocator replaces glibc's malloc";
#endif
  ASSERT_EQ(tune_malloc(), "");
  constexpr int kFrames = 200;
  // Each frame touches 46 pages; given back per free (glibc's defaults: the
  // 184 KiB freed at the top of the heap exceed its 128 KiB trim threshold),
  // they would be faulted in again every frame.
  EXPECT_LT(FaultsPerFrames(kFrames), kFrames) << "main arena";
  long thread_faults = -1;
  std::thread worker([&] { thread_faults = FaultsPerFrames(kFrames); });  // a thread's arena
  worker.join();
  EXPECT_LT(thread_faults, kFrames) << "thread arena";
}

TEST(MallocTuning, MallocTrimStillReturnsFreedMemory) {
#ifdef OSH_SANITIZED
  GTEST_SKIP() << "a sanitizer's allocator replaces glibc's malloc";
#endif
  ASSERT_EQ(tune_malloc(), "");
  malloc_trim(0);
  const size_t start = IdleTrimmer::sample_self().rss;
  constexpr size_t kBlocks = 12;  // 6 MiB: below the 8 MiB trim threshold, kept on free
  std::vector<char*> blocks;
  for (size_t i = 0; i < kBlocks; ++i) {
    blocks.push_back(static_cast<char*>(std::malloc(512 * kKiB)));
    ASSERT_NE(blocks.back(), nullptr);
    std::memset(blocks.back(), 3, 512 * kKiB);
  }
  for (char* b : blocks) std::free(b);
  const size_t kept = IdleTrimmer::sample_self().rss;
  EXPECT_GE(kept, start + 4 * kMiB) << "freed memory stays in the arena while busy";
  malloc_trim(0);  // IdleTrimmer's call on idle
  const size_t trimmed = IdleTrimmer::sample_self().rss;
  EXPECT_LE(trimmed + 4 * kMiB, kept) << "malloc_trim(0) gives it back";
}

}  // namespace
}  // namespace osh

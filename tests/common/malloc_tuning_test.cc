// tune_malloc(): frame-sized buffers freed and allocated again are not given
// back to the kernel and faulted in per frame (issue 16.2), and
// malloc_trim(0) - what IdleTrimmer calls on idle - still returns them.
// Behaviour, not timing: page-fault counts and RSS.
#include "common/malloc_tuning.h"

#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/resource.h>

#include <cstdio>
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

// 12 blocks of 512 KiB (6 MiB: below the trim threshold, so kept on
// free), written and freed on the calling thread. False if malloc failed.
bool TouchAndFreeSixMiB() {
  std::vector<char*> blocks;
  for (size_t i = 0; i < 12; ++i) {
    blocks.push_back(static_cast<char*>(std::malloc(512 * kKiB)));
    if (blocks.back() == nullptr) break;
    std::memset(blocks.back(), 3, 512 * kKiB);
  }
  const bool ok = blocks.back() != nullptr;
  for (char* b : blocks) std::free(b);
  return ok;
}

// The arenas malloc has now (malloc_info's <heap> elements); -1 if unknown.
int MallocArenas() {
  char* text = nullptr;
  size_t size = 0;
  FILE* f = open_memstream(&text, &size);
  if (f == nullptr) return -1;
  const bool ok = malloc_info(0, f) == 0;
  std::fclose(f);
  int n = 0;
  for (const char* p = text; ok && (p = std::strstr(p, "<heap nr=")) != nullptr; ++p) ++n;
  std::free(text);
  return ok ? n : -1;
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
  std::thread worker([&] { thread_faults = FaultsPerFrames(kFrames); });  // another thread (its tcache, the shared arena)
  worker.join();
  EXPECT_LT(thread_faults, kFrames) << "another thread";
}

// A burst of buffered frames, as gRPC holds while a download's HTTP/2
// receive window fills (4 MiB per stream at grpc++ 1.51's default flow
// control, several streams at once) and then drains: 48 MiB in 64 KiB
// blocks (so any threshold below 48 MiB fails), all freed, then allocated
// and written again. With an 8 MiB trim
// threshold the last free() found more than that free at the top of the heap
// and gave all of it back (glibc trims down to M_TOP_PAD, not to the
// threshold), so the next burst faulted every page in again (the tunnel's
// download profile: 8 % of its CPU in clear_page, in bursts every 0.4 s).
// Kept in the arena, next to none fault.
TEST(MallocTuning, ABurstOfBufferedFramesIsReusedNotFaultedInAgain) {
#ifdef OSH_SANITIZED
  GTEST_SKIP() << "a sanitizer's allocator replaces glibc's malloc";
#endif
  ASSERT_EQ(tune_malloc(), "");
  constexpr size_t kBlocks = 768;  // 48 MiB
  constexpr size_t kBlock = 64 * kKiB;
  std::vector<char*> blocks(kBlocks);
  const auto burst = [&] {
    for (char*& b : blocks) {
      b = static_cast<char*>(std::malloc(kBlock));
      ASSERT_NE(b, nullptr);
      std::memset(b, 5, kBlock);
    }
    for (char* b : blocks) std::free(b);
  };
  burst();
  const long before = ThreadMinorFaults();
  burst();
  const long faults = ThreadMinorFaults() - before;
  EXPECT_LT(faults, static_cast<long>(kBlocks * kBlock / (4 * kKiB) / 16))
      << "the second burst faulted " << faults << " pages in again";
  malloc_trim(0);  // what IdleTrimmer does once the burst is over
}

TEST(MallocTuning, MallocTrimStillReturnsFreedMemory) {
#ifdef OSH_SANITIZED
  GTEST_SKIP() << "a sanitizer's allocator replaces glibc's malloc";
#endif
  ASSERT_EQ(tune_malloc(), "");
  malloc_trim(0);
  const size_t start = IdleTrimmer::sample_self().rss;
  ASSERT_TRUE(TouchAndFreeSixMiB());
  const size_t kept = IdleTrimmer::sample_self().rss;
  EXPECT_GE(kept, start + 4 * kMiB) << "freed memory stays in the arena while busy";
  malloc_trim(0);  // IdleTrimmer's call on idle
  const size_t trimmed = IdleTrimmer::sample_self().rss;
  EXPECT_LE(trimmed + 4 * kMiB, kept) << "malloc_trim(0) gives it back";
}

// The same for memory freed by another thread (gRPC's threads free most
// frames): with a second arena, malloc_trim(0) madvises only that arena's
// free bins, never its top chunk (glibc's mtrim trims the top of the main
// arena alone), and free() shrinks it only past M_TRIM_THRESHOLD, so up to
// 8 MiB stayed resident after every load (vm_memory's 8 MiB bound failed
// for the mini-gateway at +9 MiB). One arena: all of it comes back.
TEST(MallocTuning, MallocTrimReturnsWhatOtherThreadsFreed) {
#ifdef OSH_SANITIZED
  GTEST_SKIP() << "a sanitizer's allocator replaces glibc's malloc";
#endif
  ASSERT_EQ(tune_malloc(), "");
  // glibc fixes its arena limit at the first thread's first allocation: a
  // thread of an earlier test in this process (ctest runs each test alone)
  // may have made a second arena before tune_malloc() ran.
  if (const int arenas = MallocArenas(); arenas != 1)
    GTEST_SKIP() << arenas << " arenas exist already: run this test alone (as ctest does)";
  malloc_trim(0);
  const size_t start = IdleTrimmer::sample_self().rss;
  bool touched = false;
  std::thread worker([&touched] { touched = TouchAndFreeSixMiB(); });
  worker.join();
  ASSERT_TRUE(touched);
  const size_t kept = IdleTrimmer::sample_self().rss;
  EXPECT_GE(kept, start + 4 * kMiB) << "freed memory stays in the arena while busy";
  malloc_trim(0);
  const size_t trimmed = IdleTrimmer::sample_self().rss;
  EXPECT_LE(trimmed, start + 1 * kMiB) << "malloc_trim(0) leaves " << (trimmed - start) / kKiB
                                       << " KiB that another thread freed";
}

}  // namespace
}  // namespace osh

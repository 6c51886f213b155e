// common/undo_stack.h: newest first, once, and past a failing step.
#include "common/undo_stack.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace osh {
namespace {

TEST(UndoStack, UnwindsNewestFirstAndOnlyOnce) {
  std::string order;
  UndoStack u;
  u.push("a", [&] { order += 'a'; });
  u.push("b", [&] { order += 'b'; });
  u.push("c", [&] { order += 'c'; });
  EXPECT_EQ(u.size(), 3u);
  u.unwind();
  EXPECT_EQ(order, "cba");
  EXPECT_EQ(u.size(), 0u);
  u.unwind();
  EXPECT_EQ(order, "cba");
}

TEST(UndoStack, AFailingStepDoesNotStopTheOthers) {
  std::string order;
  {
    UndoStack u;
    u.push("a", [&] { order += 'a'; });
    u.push("throws", [] { throw std::runtime_error("boom"); });
    u.push("c", [&] { order += 'c'; });
  }  // the destructor unwinds
  EXPECT_EQ(order, "ca");
}

}  // namespace
}  // namespace osh

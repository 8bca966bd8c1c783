#include "common/memory.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdlib>
#include <cstring>

namespace intgrads {
namespace {

TEST(Memory, FreedLargeBlocksStayMappedForReuse) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's allocator ignores mallopt";
#endif
  ASSERT_TRUE(KeepFreedMemory(32 << 20, 256 << 20));
  // 8 MiB: 64 times glibc's default mmap threshold.
  constexpr size_t kSize = 8 << 20;
  const size_t mapped_before = mallinfo2().hblkhd;
  void* block = std::malloc(kSize);
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kSize);
  EXPECT_EQ(mallinfo2().hblkhd, mapped_before) << "the block was mapped on its own, not taken from the heap";
  std::free(block);
  EXPECT_GE(mallinfo2().fordblks, kSize) << "the freed block went back to the kernel";
}

}  // namespace
}  // namespace intgrads

// glibc's malloc gives large freed blocks back to the kernel at once: a block
// over the mmap threshold (128 KiB at first) is unmapped when freed, and the
// heap's free top is trimmed past 128 KiB. A process that allocates and frees
// the same large buffers again and again (the passes' activations, an
// answer's copies) then pays a page fault for every page of every buffer,
// every time. KeepFreedMemory raises both thresholds, so that blocks up to
// `mmap_threshold` come from the heap and up to `trim_threshold` of freed
// heap stays mapped for reuse. Call it first in main, before any thread
// starts. Returns whether glibc took both.
#pragma once

#include <malloc.h>

#include <cstddef>

namespace intgrads {

inline bool KeepFreedMemory(size_t mmap_threshold, size_t trim_threshold) {
  return mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmap_threshold)) == 1 &&
         mallopt(M_TRIM_THRESHOLD, static_cast<int>(trim_threshold)) == 1;
}

// What the processes that run the passes use (the worker, the command line's
// attribute and explain, the engine benchmark): a pass frees and allocates
// its activations, up to tens of MB each, every time. Blocks up to 32 MiB
// (glibc's largest mmap threshold) from the heap, and 256 MiB of freed heap
// kept: faster passes for a little more resident memory (docs/PERFORMANCE.md,
// "What was tried"). Where the build linked those
// programs with tcmalloc (CMake's INTGRADS_TCMALLOC), malloc is tcmalloc's,
// which keeps freed memory by itself and ignores mallopt: this matters only
// to a build on the C library's malloc.
inline bool KeepFreedMemoryForPasses() { return KeepFreedMemory(32 << 20, 256 << 20); }

}  // namespace intgrads

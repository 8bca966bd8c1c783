// What the hand-written CPU loops share (group_norm_kernel.cc,
// max_pool_kernel.cc): INTGRADS_CLONES builds a function for AVX-512, AVX2
// and the baseline on x86-64, and the loader picks the best one the CPU has;
// INTGRADS_INLINE inlines a helper into each of them.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define INTGRADS_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define INTGRADS_CLONES
#endif
#define INTGRADS_INLINE inline __attribute__((always_inline))

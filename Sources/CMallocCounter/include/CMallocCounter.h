// CMallocCounter: counts heap allocations of the process it is linked into.
//
// It defines malloc, calloc, realloc, memalign, posix_memalign, aligned_alloc and valloc,
// counts each call, and forwards to glibc's __libc_* entry points. An executable that links
// it replaces the allocator for every library in the process (glibc supports replacing
// malloc this way). Only the benchmark executable links it.
#ifndef CMALLOC_COUNTER_H
#define CMALLOC_COUNTER_H
#include <stdint.h>

/// Allocations counted since the process started.
uint64_t cmalloc_counter_allocations(void);
/// Frees counted since the process started.
uint64_t cmalloc_counter_frees(void);

#endif

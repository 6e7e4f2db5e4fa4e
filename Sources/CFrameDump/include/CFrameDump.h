#ifndef CFRAMEDUMP_H
#define CFRAMEDUMP_H

// framedump's own C helpers: the calls its raw output needs that Swift's Glibc module does not
// export (they need _GNU_SOURCE, see fileio.c).

#include <stdint.h>

/// The O_DIRECT open/fcntl flag, which Swift's Glibc module does not export.
int cframedump_o_direct(void);

/// statx(2) with STATX_DIOALIGN on an open descriptor (AT_EMPTY_PATH). Returns 0 and stores
/// stx_dio_mem_align and stx_dio_offset_align (both 0: the file does not do direct I/O);
/// 1 when the kernel, C library or file system does not report them; -1 with errno when
/// statx fails.
int cframedump_statx_dio_alignment(int fd, uint32_t *memoryAlignment, uint32_t *offsetAlignment);

#endif

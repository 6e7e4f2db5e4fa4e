// Direct-I/O helpers for framedump's raw output. _GNU_SOURCE must come before any system
// header: O_DIRECT and statx(2) are declared only with it.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include "CFrameDump.h"

int cframedump_o_direct(void) {
    return O_DIRECT;
}

int cframedump_statx_dio_alignment(int fd, uint32_t *memoryAlignment, uint32_t *offsetAlignment) {
    *memoryAlignment = 0;
    *offsetAlignment = 0;
#if defined(STATX_DIOALIGN)
    struct statx info;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &info) != 0) {
        if (errno == ENOSYS) return 1;
        return -1;
    }
    if (!(info.stx_mask & STATX_DIOALIGN)) return 1;
    *memoryAlignment = info.stx_dio_mem_align;
    *offsetAlignment = info.stx_dio_offset_align;
    return 0;
#else
    (void)fd;
    return 1;
#endif
}

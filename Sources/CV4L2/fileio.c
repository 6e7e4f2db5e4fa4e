// Direct-I/O helpers for framedump's raw output. They live in their own file because
// O_DIRECT and statx(2) are declared only with _GNU_SOURCE, before any system header.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include "CV4L2.h"

int cv4l2_o_direct(void) {
    return O_DIRECT;
}

int cv4l2_statx_dio_alignment(int fd, uint32_t *memoryAlignment, uint32_t *offsetAlignment) {
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

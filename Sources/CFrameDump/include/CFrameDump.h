#ifndef CFRAMEDUMP_H
#define CFRAMEDUMP_H

// framedump's own C helpers: the calls its raw output needs that Swift's Glibc module does not
// export (they need _GNU_SOURCE, see fileio.c), and PNG writing with libpng (png.c).

#include <stdint.h>
#include <stddef.h>

/// The O_DIRECT open/fcntl flag, which Swift's Glibc module does not export.
int cframedump_o_direct(void);

/// statx(2) with STATX_DIOALIGN on an open descriptor (AT_EMPTY_PATH). Returns 0 and stores
/// stx_dio_mem_align and stx_dio_offset_align (both 0: the file does not do direct I/O);
/// 1 when the kernel, C library or file system does not report them; -1 with errno when
/// statx fails.
int cframedump_statx_dio_alignment(int fd, uint32_t *memoryAlignment, uint32_t *offsetAlignment);

// MARK: - PNG

/// Writes an 8-bit RGB24 image (rows of width*3 bytes, `stride` bytes apart) to `path`
/// with libpng. Returns 0, or -1 with a message in `error` (libpng reports its errors
/// through longjmp, which is kept on the C side of the shim).
int cframedump_write_png_rgb24(const char *path, const uint8_t *rgb, uint32_t width, uint32_t height,
                          size_t stride, char *error, size_t errorCapacity);
/// The same with zlib compression level `level` (0-9; -1 for libpng's default, 6) and the
/// PNG_FILTER_* mask `filters` (-1 for libpng's default: adaptive, all filters).
int cframedump_write_png_rgb24_level(const char *path, const uint8_t *rgb, uint32_t width, uint32_t height,
                                size_t stride, int level, int filters, char *error, size_t errorCapacity);
/// Reads a PNG as 8-bit RGB into `rgb` (`capacity` bytes), for tests: 0, -1 when libpng cannot
/// read it, -2 when it is larger than `capacity`. `width` and `height` are set either way.
int cframedump_read_png_rgb24(const char *path, uint8_t *rgb, size_t capacity, uint32_t *width, uint32_t *height);

#endif

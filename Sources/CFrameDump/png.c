#include "CFrameDump.h"
#include <errno.h>
#include <unistd.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cframedump_png_error {
    jmp_buf jump;
    char *message;
    size_t capacity;
};

static void cframedump_png_on_error(png_structp png, png_const_charp message) {
    struct cframedump_png_error *state = png_get_error_ptr(png);
    int saved = errno;
    if (state->message && state->capacity) {
        // libpng's own write function fails after fwrite, so errno says why (ENOSPC, EFBIG...).
        if (saved) snprintf(state->message, state->capacity, "libpng: %s: %s", message, strerror(saved));
        else snprintf(state->message, state->capacity, "libpng: %s", message);
    }
    longjmp(state->jump, 1);
}

static void cframedump_png_on_warning(png_structp png, png_const_charp message) {
    (void)png;
    (void)message;
}

// The picture goes to PATH.part and is renamed to PATH only once it is whole, so a full disk
// (or any failure) leaves no PATH at all, never a truncated one.
int cframedump_write_png_rgb24(const char *path, const uint8_t *rgb, uint32_t width, uint32_t height,
                          size_t stride, char *error, size_t errorCapacity) {
    return cframedump_write_png_rgb24_level(path, rgb, width, height, stride, -1, -1, error, errorCapacity);
}

int cframedump_write_png_rgb24_level(const char *path, const uint8_t *rgb, uint32_t width, uint32_t height,
                                size_t stride, int level, int filters, char *error, size_t errorCapacity) {
    struct cframedump_png_error state;
    state.message = error;
    state.capacity = errorCapacity;
    if (error && errorCapacity) error[0] = 0;

    size_t length = strlen(path);
    char *temporary = malloc(length + 6);
    if (!temporary) {
        if (error && errorCapacity) snprintf(error, errorCapacity, "out of memory");
        return -1;
    }
    memcpy(temporary, path, length);
    memcpy(temporary + length, ".part", 6);

    FILE *file = fopen(temporary, "wb");
    if (!file) {
        if (error && errorCapacity) snprintf(error, errorCapacity, "cannot create %s: %s", temporary, strerror(errno));
        free(temporary);
        return -1;
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, cframedump_png_on_error, cframedump_png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        if (png) png_destroy_write_struct(&png, NULL);
        fclose(file);
        unlink(temporary);
        free(temporary);
        if (error && errorCapacity) snprintf(error, errorCapacity, "libpng: out of memory");
        return -1;
    }
    if (setjmp(state.jump)) {
        png_destroy_write_struct(&png, &info);
        fclose(file);
        unlink(temporary);
        free(temporary);
        return -1;
    }
    errno = 0;
    png_init_io(png, file);
    if (level >= 0) png_set_compression_level(png, level);
    if (filters >= 0) png_set_filter(png, PNG_FILTER_TYPE_BASE, filters);
    png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (uint32_t row = 0; row < height; row++) {
        png_write_row(png, (png_const_bytep)(rgb + (size_t)row * stride));
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(file) != 0) {
        if (error && errorCapacity) snprintf(error, errorCapacity, "cannot write %s: %s", temporary, strerror(errno));
        unlink(temporary);
        free(temporary);
        return -1;
    }
    if (rename(temporary, path) != 0) {
        if (error && errorCapacity) snprintf(error, errorCapacity, "cannot rename %s to %s: %s", temporary, path, strerror(errno));
        unlink(temporary);
        free(temporary);
        return -1;
    }
    free(temporary);
    return 0;
}

int cframedump_read_png_rgb24(const char *path, uint8_t *rgb, size_t capacity, uint32_t *width, uint32_t *height) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&image, path)) return -1;
    image.format = PNG_FORMAT_RGB;
    *width = image.width;
    *height = image.height;
    if (PNG_IMAGE_SIZE(image) > capacity) {
        png_image_free(&image);
        return -2;
    }
    if (!png_image_finish_read(&image, NULL, rgb, 0, NULL)) return -1;
    return 0;
}

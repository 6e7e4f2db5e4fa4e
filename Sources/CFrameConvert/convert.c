#include "CFrameConvert.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <dlfcn.h>
#include <pthread.h>

// libswscale is loaded on the first conversion (dlopen), not at start-up: linked, it and
// libavutil bring some twenty libraries (libva, libvdpau, X11, OpenCL) into every framedump
// command, most of which never converts a picture.
static struct {
    void *handle;
    const char *error;
    __typeof__(&sws_isSupportedInput) isSupportedInput;
    __typeof__(&sws_getContext) getContext;
    __typeof__(&sws_setColorspaceDetails) setColorspaceDetails;
    __typeof__(&sws_getColorspaceDetails) getColorspaceDetails;
    __typeof__(&sws_getCoefficients) getCoefficients;
    __typeof__(&sws_scale) scale;
    __typeof__(&sws_freeContext) freeContext;
} cfc_sws;
static pthread_once_t cfc_sws_once = PTHREAD_ONCE_INIT;
static char cfc_sws_message[512];

#define CFC_STRING2(x) #x
#define CFC_STRING(x) CFC_STRING2(x)
#define CFC_SWSCALE_SONAME "libswscale.so." CFC_STRING(LIBSWSCALE_VERSION_MAJOR)

static void cfc_sws_load(void) {
    void *handle = dlopen(CFC_SWSCALE_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        snprintf(cfc_sws_message, sizeof cfc_sws_message, "cannot load %s: %s (Debian's libswscale%s; tools/setup installs it)",
                 CFC_SWSCALE_SONAME, dlerror(), CFC_STRING(LIBSWSCALE_VERSION_MAJOR));
        cfc_sws.error = cfc_sws_message;
        return;
    }
#define CFC_RESOLVE(field, name) \
    if (!(*(void **)&cfc_sws.field = dlsym(handle, name))) { \
        snprintf(cfc_sws_message, sizeof cfc_sws_message, "%s has no %s", CFC_SWSCALE_SONAME, name); \
        cfc_sws.error = cfc_sws_message; \
        return; \
    }
    CFC_RESOLVE(isSupportedInput, "sws_isSupportedInput")
    CFC_RESOLVE(getContext, "sws_getContext")
    CFC_RESOLVE(setColorspaceDetails, "sws_setColorspaceDetails")
    CFC_RESOLVE(getColorspaceDetails, "sws_getColorspaceDetails")
    CFC_RESOLVE(getCoefficients, "sws_getCoefficients")
    CFC_RESOLVE(scale, "sws_scale")
    CFC_RESOLVE(freeContext, "sws_freeContext")
#undef CFC_RESOLVE
    cfc_sws.handle = handle;
}

struct cfc_scaler {
    struct SwsContext *context;
    int height;
};

cfc_scaler *cfc_scaler_create(int format, int width, int height, int matrix, int fullRange,
                              char *error, size_t errorCapacity) {
    if (error && errorCapacity) error[0] = 0;
    pthread_once(&cfc_sws_once, cfc_sws_load);
    if (!cfc_sws.handle) {
        if (error && errorCapacity) snprintf(error, errorCapacity, "%s", cfc_sws.error ? cfc_sws.error : "libswscale is not loaded");
        return NULL;
    }
    if (!cfc_sws.isSupportedInput((enum AVPixelFormat)format)) {
        if (error && errorCapacity) snprintf(error, errorCapacity, "libswscale cannot read pixel format %d", format);
        return NULL;
    }
    struct SwsContext *context = cfc_sws.getContext(width, height, (enum AVPixelFormat)format, width, height, AV_PIX_FMT_RGB24,
                                                SWS_BILINEAR | SWS_FULL_CHR_H_INT | SWS_ACCURATE_RND,
                                                NULL, NULL, NULL);
    if (!context) {
        if (error && errorCapacity) snprintf(error, errorCapacity, "sws_getContext failed for %dx%d", width, height);
        return NULL;
    }
    // Source: the frame's matrix and range; destination: full-range R'G'B' (the matrix of an
    // RGB destination is not used). Brightness 0, contrast and saturation 1.0 (16.16).
    if (cfc_sws.setColorspaceDetails(context, cfc_sws.getCoefficients(matrix), fullRange ? 1 : 0,
                                 cfc_sws.getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16) < 0) {
        // swscale answers -1 for sources whose colorimetry it does not apply (RGB, for one):
        // then the conversion goes on with its defaults, which are right for those.
    }
    cfc_scaler *scaler = malloc(sizeof *scaler);
    if (!scaler) {
        cfc_sws.freeContext(context);
        if (error && errorCapacity) snprintf(error, errorCapacity, "out of memory");
        return NULL;
    }
    scaler->context = context;
    scaler->height = height;
    return scaler;
}

int cfc_scaler_convert(cfc_scaler *scaler, const uint8_t *const planes[4], const int strides[4],
                       uint8_t *rgb, int rgbStride) {
    uint8_t *dst[4] = { rgb, NULL, NULL, NULL };
    int dstStride[4] = { rgbStride, 0, 0, 0 };
    return cfc_sws.scale(scaler->context, planes, strides, 0, scaler->height, dst, dstStride);
}

int cfc_scaler_details(cfc_scaler *scaler, int *srcRange, int *dstRange) {
    int *inv, *table, brightness, contrast, saturation;
    return cfc_sws.getColorspaceDetails(scaler->context, &inv, srcRange, &table, dstRange, &brightness, &contrast, &saturation);
}

void cfc_scaler_destroy(cfc_scaler *scaler) {
    if (!scaler) return;
    cfc_sws.freeContext(scaler->context);
    free(scaler);
}

void cfc_copy_plane(uint8_t *dst, size_t dstStride, size_t rowBytes, size_t rows,
                    const uint8_t *src, size_t srcStride, size_t srcAvailable, size_t groupBytes) {
    if (groupBytes == 0) groupBytes = 1;
    for (size_t row = 0; row < rows; row++) {
        uint8_t *out = dst + row * dstStride;
        size_t offset = row * srcStride;
        size_t have = 0;
        if (src && offset < srcAvailable) {
            have = srcAvailable - offset;
            if (have > srcStride) have = srcStride;
            if (have > rowBytes) have = rowBytes;
        }
        // A row short by more than its last sample is not the driver's (vivid's NV12 at
        // 641x361 has 180 chroma rows and a few bytes of padding where a 181st would be).
        if (have + groupBytes < rowBytes) have = 0;
        if (have == 0) {
            if (row > 0) memcpy(out, out - dstStride, rowBytes);
            else memset(out, 0, rowBytes);
            continue;
        }
        memcpy(out, src + offset, have);
        for (size_t i = have; i < rowBytes; i++) out[i] = i >= groupBytes ? out[i - groupBytes] : 0;
    }
}

void cfc_pick_bytes(const uint8_t *src, size_t srcStride, size_t pixelBytes, size_t width, size_t height,
                    const int *offsets, int count, uint8_t *const *dst, size_t dstStride) {
    for (size_t row = 0; row < height; row++) {
        const uint8_t *in = src + row * srcStride;
        for (int k = 0; k < count; k++) {
            uint8_t *out = dst[k] + row * dstStride;
            const uint8_t *p = in + offsets[k];
            for (size_t x = 0; x < width; x++) out[x] = p[x * pixelBytes];
        }
    }
}

void cfc_swap_bytes(uint8_t *data, size_t stride, size_t groups, size_t rows, size_t groupBytes, size_t a, size_t b) {
    for (size_t row = 0; row < rows; row++) {
        uint8_t *p = data + row * stride;
        for (size_t g = 0; g < groups; g++, p += groupBytes) {
            uint8_t t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
    }
}

static uint8_t cfc_clamp_round(double value) {
    double scaled = value * 255.0 + 0.5;
    if (scaled <= 0) return 0;
    if (scaled >= 255) return 255;
    return (uint8_t)scaled;
}

// The textbook HSV to RGB: hue in degrees, saturation and value in 0...1.
void cfc_hsv_pixel(int h, int s, int v, int hueSteps, uint8_t rgb[3]) {
    // V4L2_HSV_ENC_180: one step is 2 degrees. V4L2_HSV_ENC_256: the byte's whole range is the
    // circle; V4L2's documentation divides degrees "by 1.41", and vivid's generator puts 120
    // degrees at 85, i.e. 360 degrees at 255.
    double degrees = hueSteps == 180 ? h * 2.0 : h * (360.0 / 255.0);
    while (degrees >= 360.0) degrees -= 360.0;
    double value = v / 255.0, saturation = s / 255.0;
    double chroma = value * saturation;
    double sector = degrees / 60.0;
    double fraction = sector - 2.0 * floor(sector / 2.0); // sector mod 2
    double x = chroma * (1.0 - fabs(fraction - 1.0));
    double r = 0, g = 0, b = 0;
    switch ((int)sector) {
    case 0: r = chroma; g = x; break;
    case 1: r = x; g = chroma; break;
    case 2: g = chroma; b = x; break;
    case 3: g = x; b = chroma; break;
    case 4: r = x; b = chroma; break;
    default: r = chroma; b = x; break;
    }
    double m = value - chroma;
    rgb[0] = cfc_clamp_round(r + m);
    rgb[1] = cfc_clamp_round(g + m);
    rgb[2] = cfc_clamp_round(b + m);
}

void cfc_hsv_to_rgb24(const uint8_t *src, size_t srcStride, size_t pixelBytes, size_t firstByte,
                      size_t width, size_t height, int hueSteps, uint8_t *rgb, size_t rgbStride) {
    // Hue and saturation repeat along a row: a small cache of the last pixel.
    int lastH = -1, lastS = -1, lastV = -1;
    uint8_t last[3] = { 0, 0, 0 };
    for (size_t row = 0; row < height; row++) {
        const uint8_t *in = src + row * srcStride + firstByte;
        uint8_t *out = rgb + row * rgbStride;
        for (size_t x = 0; x < width; x++, in += pixelBytes, out += 3) {
            int h = in[0], s = in[1], v = in[2];
            if (h != lastH || s != lastS || v != lastV) {
                cfc_hsv_pixel(h, s, v, hueSteps, last);
                lastH = h; lastS = s; lastV = v;
            }
            out[0] = last[0]; out[1] = last[1]; out[2] = last[2];
        }
    }
}

void cfc_expand_limited_rgb(uint8_t *rgb, size_t stride, size_t rowBytes, size_t rows) {
    uint8_t table[256];
    for (int i = 0; i < 256; i++) {
        int value = (int)lround((i - 16) * 255.0 / 219.0);
        table[i] = value < 0 ? 0 : value > 255 ? 255 : (uint8_t)value;
    }
    for (size_t row = 0; row < rows; row++) {
        uint8_t *p = rgb + row * stride;
        for (size_t i = 0; i < rowBytes; i++) p[i] = table[p[i]];
    }
}

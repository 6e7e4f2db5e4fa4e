#ifndef CFRAMECONVERT_H
#define CFRAMECONVERT_H
// CFrameConvert: framedump's picture conversion to RGB24 for PNGs.
//
// libswscale (Debian: libswscale-dev) converts the YCbCr, RGB, greyscale and Bayer formats,
// told the frame's colorimetry (YCbCr matrix and quantization range); HSV, which swscale does
// not know, and limited-range R'G'B' are converted here. The byte loops that repack a
// driver's layout into one swscale reads (odd sizes, orders swscale lacks) live here too, so
// a debug build of the Swift code is not slow per byte.
#include <stddef.h>
#include <stdint.h>
#include <libavutil/pixfmt.h>
#include <libswscale/swscale.h>

// MARK: - libswscale

typedef struct cfc_scaler cfc_scaler;

/// A converter of `width` x `height` frames of `format` (an AVPixelFormat) to packed RGB24,
/// with bilinear, full-chroma interpolation and accurate rounding (ffmpeg's
/// `-sws_flags bilinear+full_chroma_int+accurate_rnd`). `matrix` is an SWS_CS_* value (the
/// source's YCbCr matrix), `fullRange` the source's quantization (1 full, 0 limited; ignored
/// by swscale for RGB sources). NULL with a message in `error` on failure.
cfc_scaler *cfc_scaler_create(int format, int width, int height, int matrix, int fullRange,
                              char *error, size_t errorCapacity);
/// Converts one frame: `planes`/`strides` as swscale takes them (up to 4).
/// Returns the number of output rows, or a negative value on failure.
int cfc_scaler_convert(cfc_scaler *scaler, const uint8_t *const planes[4], const int strides[4],
                       uint8_t *rgb, int rgbStride);
void cfc_scaler_destroy(cfc_scaler *scaler);

/// The matrix and range swscale actually uses after set-up, for tests: 0 on success.
int cfc_scaler_details(cfc_scaler *scaler, int *srcRange, int *dstRange);

// MARK: - Repacking

/// Copies a plane of `rows` rows of `rowBytes` bytes into `dst` (stride `dstStride`) from a
/// driver's plane (`src`, stride `srcStride`, `srcAvailable` bytes in all). Where the driver's
/// plane is shorter than needed (odd sizes: a chroma row or the last chroma sample missing), a
/// missing byte repeats the one `groupBytes` before it; a row missing, or short by more than one
/// group, is the row above.
void cfc_copy_plane(uint8_t *dst, size_t dstStride, size_t rowBytes, size_t rows,
                    const uint8_t *src, size_t srcStride, size_t srcAvailable, size_t groupBytes);

/// Picks bytes out of packed pixels: for each of `width` x `height` pixels of `pixelBytes`
/// bytes (rows `srcStride` apart), byte `offsets[k]` goes to plane k (k < count, at most 4),
/// whose rows are `dstStride` apart. For 4:4:4 packed YCbCr (AYUV, VUYA, ...) to planar.
void cfc_pick_bytes(const uint8_t *src, size_t srcStride, size_t pixelBytes, size_t width, size_t height,
                    const int *offsets, int count, uint8_t *const *dst, size_t dstStride);

/// Swaps bytes `a` and `b` of every `groupBytes`-byte group of each row (`width` groups per
/// row), in place: VYUY to UYVY, NV61 chroma to NV16's.
void cfc_swap_bytes(uint8_t *data, size_t stride, size_t groups, size_t rows, size_t groupBytes, size_t a, size_t b);

// MARK: - Colour

/// HSV (V4L2's HSV24/HSV32: bytes H, S, V, after `firstByte` bytes of padding in each pixel of
/// `pixelBytes`) to RGB24. `hueSteps` is 180 (V4L2_HSV_ENC_180: hue in units of 2 degrees,
/// 0...179) or 256 (V4L2_HSV_ENC_256: the whole byte, 0...255, for 0...360 degrees). Saturation
/// and value are full range 0...255 (V4L2: "HSV formats are always full range").
void cfc_hsv_to_rgb24(const uint8_t *src, size_t srcStride, size_t pixelBytes, size_t firstByte,
                      size_t width, size_t height, int hueSteps, uint8_t *rgb, size_t rgbStride);

/// One HSV pixel to R'G'B' (the same arithmetic as cfc_hsv_to_rgb24), for tests.
void cfc_hsv_pixel(int h, int s, int v, int hueSteps, uint8_t rgb[3]);

/// Expands limited-range R'G'B' (16...235) to full range (0...255), in place.
void cfc_expand_limited_rgb(uint8_t *rgb, size_t stride, size_t rowBytes, size_t rows);

#endif

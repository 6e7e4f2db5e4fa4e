// CV4L2: the C shim under FrameBridge.
//
// It exposes <linux/videodev2.h>, libv4l2 and libv4lconvert to Swift, turns the
// VIDIOC_* request macros (which Swift cannot import) into constants, and wraps the
// variadic C calls (ioctl, open, v4l2_ioctl, v4l2_open) in fixed-arity inline functions.
// It also declares the few DRM structures and requests needed to allocate dumb buffers
// on vgem and export them as dmabuf fds, so the package does not need libdrm-dev.
#ifndef CV4L2_H
#define CV4L2_H

#include <stdint.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <linux/videodev2.h>
#include <linux/dma-buf.h>
#include <libv4l2.h>
#include <libv4lconvert.h>
#include <sys/eventfd.h>

// MARK: - VIDIOC request numbers

#define CV4L2_REQ(name) static const unsigned long CV4L2_##name = name;
CV4L2_REQ(VIDIOC_QUERYCAP)
CV4L2_REQ(VIDIOC_ENUM_FMT)
CV4L2_REQ(VIDIOC_G_FMT)
CV4L2_REQ(VIDIOC_S_FMT)
CV4L2_REQ(VIDIOC_TRY_FMT)
CV4L2_REQ(VIDIOC_REQBUFS)
CV4L2_REQ(VIDIOC_CREATE_BUFS)
CV4L2_REQ(VIDIOC_QUERYBUF)
CV4L2_REQ(VIDIOC_QBUF)
CV4L2_REQ(VIDIOC_DQBUF)
CV4L2_REQ(VIDIOC_EXPBUF)
CV4L2_REQ(VIDIOC_STREAMON)
CV4L2_REQ(VIDIOC_STREAMOFF)
CV4L2_REQ(VIDIOC_G_PARM)
CV4L2_REQ(VIDIOC_S_PARM)
CV4L2_REQ(VIDIOC_ENUMINPUT)
CV4L2_REQ(VIDIOC_G_INPUT)
CV4L2_REQ(VIDIOC_S_INPUT)
CV4L2_REQ(VIDIOC_ENUM_FRAMESIZES)
CV4L2_REQ(VIDIOC_ENUM_FRAMEINTERVALS)
CV4L2_REQ(VIDIOC_QUERYCTRL)
CV4L2_REQ(VIDIOC_QUERY_EXT_CTRL)
CV4L2_REQ(VIDIOC_QUERYMENU)
CV4L2_REQ(VIDIOC_G_CTRL)
CV4L2_REQ(VIDIOC_S_CTRL)
CV4L2_REQ(VIDIOC_G_EXT_CTRLS)
CV4L2_REQ(VIDIOC_S_EXT_CTRLS)
CV4L2_REQ(VIDIOC_SUBSCRIBE_EVENT)
CV4L2_REQ(VIDIOC_UNSUBSCRIBE_EVENT)
CV4L2_REQ(VIDIOC_DQEVENT)
CV4L2_REQ(VIDIOC_QUERY_DV_TIMINGS)
CV4L2_REQ(VIDIOC_G_DV_TIMINGS)
CV4L2_REQ(VIDIOC_S_DV_TIMINGS)
CV4L2_REQ(VIDIOC_ENUM_DV_TIMINGS)
CV4L2_REQ(VIDIOC_DV_TIMINGS_CAP)
CV4L2_REQ(VIDIOC_QUERYSTD)
CV4L2_REQ(VIDIOC_G_STD)
CV4L2_REQ(VIDIOC_S_STD)
CV4L2_REQ(VIDIOC_ENUMSTD)
CV4L2_REQ(VIDIOC_ENCODER_CMD)
CV4L2_REQ(VIDIOC_TRY_ENCODER_CMD)
CV4L2_REQ(VIDIOC_DECODER_CMD)
CV4L2_REQ(VIDIOC_TRY_DECODER_CMD)
#undef CV4L2_REQ

// MARK: - Codec control ids (expressions of other macros, which Swift does not import)

static const uint32_t CV4L2_CID_MPEG_VIDEO_GOP_SIZE = V4L2_CID_MPEG_VIDEO_GOP_SIZE;
static const uint32_t CV4L2_CID_MPEG_VIDEO_BITRATE = V4L2_CID_MPEG_VIDEO_BITRATE;
static const uint32_t CV4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME = V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME;
static const uint32_t CV4L2_CID_FWHT_I_FRAME_QP = V4L2_CID_FWHT_I_FRAME_QP;
static const uint32_t CV4L2_CID_FWHT_P_FRAME_QP = V4L2_CID_FWHT_P_FRAME_QP;
static const uint32_t CV4L2_CID_MIN_BUFFERS_FOR_OUTPUT = V4L2_CID_MIN_BUFFERS_FOR_OUTPUT;

// MARK: - dma-buf

static const unsigned long CV4L2_DMA_BUF_IOCTL_SYNC = DMA_BUF_IOCTL_SYNC;
static const unsigned long long CV4L2_DMA_BUF_SYNC_READ = DMA_BUF_SYNC_READ;
static const unsigned long long CV4L2_DMA_BUF_SYNC_WRITE = DMA_BUF_SYNC_WRITE;
static const unsigned long long CV4L2_DMA_BUF_SYNC_START = DMA_BUF_SYNC_START;
static const unsigned long long CV4L2_DMA_BUF_SYNC_END = DMA_BUF_SYNC_END;

// MARK: - DRM dumb buffers (from <drm/drm.h> and <drm/drm_mode.h>, which libdrm-dev ships)

struct cv4l2_drm_mode_create_dumb {
    uint32_t height;
    uint32_t width;
    uint32_t bpp;
    uint32_t flags;
    uint32_t handle;
    uint32_t pitch;
    uint64_t size;
};

struct cv4l2_drm_mode_map_dumb {
    uint32_t handle;
    uint32_t pad;
    uint64_t offset;
};

struct cv4l2_drm_mode_destroy_dumb {
    uint32_t handle;
};

struct cv4l2_drm_prime_handle {
    uint32_t handle;
    uint32_t flags;
    int32_t fd;
};

struct cv4l2_drm_gem_close {
    uint32_t handle;
    uint32_t pad;
};

static const unsigned long CV4L2_DRM_IOCTL_GEM_CLOSE = _IOW('d', 0x09, struct cv4l2_drm_gem_close);
static const unsigned long CV4L2_DRM_IOCTL_PRIME_HANDLE_TO_FD = _IOWR('d', 0x2d, struct cv4l2_drm_prime_handle);
static const unsigned long CV4L2_DRM_IOCTL_MODE_CREATE_DUMB = _IOWR('d', 0xB2, struct cv4l2_drm_mode_create_dumb);
static const unsigned long CV4L2_DRM_IOCTL_MODE_MAP_DUMB = _IOWR('d', 0xB3, struct cv4l2_drm_mode_map_dumb);
static const unsigned long CV4L2_DRM_IOCTL_MODE_DESTROY_DUMB = _IOWR('d', 0xB4, struct cv4l2_drm_mode_destroy_dumb);

// MARK: - Fixed-arity wrappers for variadic calls

/// ioctl(2) on a kernel file descriptor.
static inline int cv4l2_ioctl(int fd, unsigned long request, void *arg) {
    return ioctl(fd, request, arg);
}

/// open(2) with a mode.
static inline int cv4l2_open(const char *path, int flags) {
    return open(path, flags | O_CLOEXEC, 0);
}

/// open(2) with a creation mode.
static inline int cv4l2_open_mode(const char *path, int flags, mode_t mode) {
    return open(path, flags | O_CLOEXEC, mode);
}

/// v4l2_ioctl from libv4l2.
static inline int cv4l2_libv4l2_ioctl(int fd, unsigned long request, void *arg) {
    return v4l2_ioctl(fd, request, arg);
}

/// v4l2_open from libv4l2.
static inline int cv4l2_libv4l2_open(const char *path, int flags) {
    return v4l2_open(path, flags | O_CLOEXEC, 0);
}

/// The thread's errno (a macro in glibc, so not importable as a variable).
static inline int cv4l2_errno(void) { return errno; }
static inline void cv4l2_set_errno(int value) { errno = value; }

/// The value of MAP_FAILED, which is a cast macro.
static inline void *cv4l2_map_failed(void) { return MAP_FAILED; }

#endif
